"""Every reader of files from outside, given malformed input (tests/cli/fuzz.py: random bytes, the file cut
at every 1/16, flipped bytes) or a valid file of the wrong kind: one line, the documented exit status, no
traceback, nothing written."""

from pathlib import Path

import pytest

import sknet.train.trainer
from sknet.cli import main
from tests.cli.fuzz import malformed, one_line_outcome

CONFIGS = Path(__file__).parents[2] / "configs"
TOML = b'model = "sknet_tiny"\ndataset = "synthetic"\nepochs = 2\nlr = 0.05\nschedule = "step"\nstep_epochs = 1\n'


def _wrong_kinds(tmp_path):
    """Valid files that are not configurations: an image, weights, a list, TOML named .yaml."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    return [
        ("an image", (tmp_path / "image.png").read_bytes()),
        ("a list", b"- epochs\n- 2\n"),
        ("TOML as YAML", TOML),
        ("a number", b"3\n"),
    ]


@pytest.fixture
def no_training(monkeypatch):
    """`sknet train` up to the configuration: a configuration that reads is not trained (status 0)."""
    monkeypatch.setattr(sknet.train.trainer, "train", lambda config, **kw: {})


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_files(tmp_path, capsys, no_training, suffix):
    """Was: a binary --config file gave UnicodeDecodeError's traceback, exit 1."""
    valid = (CONFIGS / "fashion_mnist.yaml").read_bytes() if suffix == ".yaml" else TOML
    cases = malformed(valid) + _wrong_kinds(tmp_path)
    refused = 0
    for name, data in cases:
        path = tmp_path / f"config{suffix}"
        path.write_bytes(data)
        out = tmp_path / "run"
        code = main(["train", "--config", str(path), "--output", str(out)])
        err = capsys.readouterr().err
        one_line_outcome(code, err, (0, 2))
        assert not out.exists(), name
        refused += code == 2
    assert refused >= len(cases) // 2  # most are refused; a cut at a line's end can still be a configuration


def test_a_folder_as_config_file_is_named_as_one(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path)]) == 2
    assert "is a folder: give a YAML (.yaml, .yml) or TOML (.toml) file" in capsys.readouterr().err


def test_a_runs_saved_config(tmp_path, capsys, monkeypatch):
    """--resume reads the run's config.yaml: damaged, it is one line too (the run is untouched)."""
    from tests.train.helpers import tiny_run

    run = tmp_path / "run"
    assert main(tiny_run(run)) == 0
    monkeypatch.setattr(sknet.train.trainer, "train", lambda config, **kw: {})
    saved = (run / "config.yaml").read_bytes()
    before = sorted(p.name for p in run.iterdir())
    for name, data in malformed(saved) + _wrong_kinds(tmp_path):
        (run / "config.yaml").write_bytes(data)
        code = main(["train", "--resume", str(run)])
        one_line_outcome(code, capsys.readouterr().err, (0, 2))
        assert sorted(p.name for p in run.iterdir()) == before, name


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A folder of shards (2 classes, 4 val samples) and weights of a model for them (eval's dataset: wds)."""
    pytest.importorskip("webdataset")
    from PIL import Image

    from sknet.models import create_model
    from sknet.weights import save_weights

    root = tmp_path_factory.mktemp("shards")
    for split in ("train", "val"):
        for i in range(4):
            folder = root / "images" / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 12), (60 * i, 0, 0)).save(folder / f"{i}.png")
    assert main(["shards", str(root / "images"), str(root / "out")]) == 0
    meta = {"model": "sknet_tiny", "model_options": {}, "num_classes": 2, "in_chans": 3, "dataset": "wds"}
    save_weights(
        root / "w.safetensors", create_model("sknet_tiny", num_classes=2, in_chans=3), {**meta, "input_size": 16}
    )
    return root / "out", root / "w.safetensors"


@pytest.mark.parametrize("name", ["val-000000.tar", "info.json"])
def test_shards_and_their_index(shards, tmp_path, capsys, name):
    """Was: a cut shard gave tarfile.ReadError's traceback, exit 1. Status 3 (data), or 0 where the change
    left a readable data set (a flipped bit inside an image: skipped as unreadable, or no change at all)."""
    import shutil

    folder, weights = shards
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    valid = (folder / name).read_bytes()
    other = folder / ("info.json" if name.endswith(".tar") else "val-000000.tar")
    wrong = [("weights", weights.read_bytes()), ("a JSON list", b"[1, 2]"), ("the other kind", other.read_bytes())]
    content = _tar_content_end(folder / name) if name.endswith(".tar") else len(valid)
    capsys.readouterr()
    for case, data in malformed(valid) + wrong:
        (copy / name).write_bytes(data)
        argv = ["eval", "--weights", str(weights), "--data-dir", str(copy), "--workers", "0", "--device", "cpu"]
        code = main([*argv, "--progress", "never"])
        one_line_outcome(code, capsys.readouterr().err, (0, 3))
        intact = case.startswith("cut") and len(data) >= content  # only the tar's end padding cut off
        assert code == 3 or case.startswith("flipped") or intact, case
        assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in folder.iterdir())


def _tar_content_end(path):
    """Where the last entry's data of a tar file ends (after it: end-of-archive padding)."""
    import tarfile

    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
        return last.offset_data + last.size


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run's exports (ONNX where installed), an image to predict, and files of other kinds: ONNX and
    TorchScript without sknet's record."""
    import importlib.util

    import torch
    from PIL import Image

    from tests.train.helpers import tiny_run

    root = tmp_path_factory.mktemp("exported")
    assert main(tiny_run(root / "run")) == 0
    formats = {"torchscript": ".pt", "pt2": ".pt2"}
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        formats["onnx"] = ".onnx"
    files = {}
    for fmt, suffix in formats.items():
        files[suffix] = root / f"m{suffix}"
        assert (
            main(
                [
                    "export",
                    "--weights",
                    str(root / "run" / "model.safetensors"),
                    "--format",
                    fmt,
                    "--out",
                    str(files[suffix]),
                ]
            )
            == 0
        )
    Image.new("L", (20, 20), 90).save(root / "x.png")
    with pytest.warns(FutureWarning):  # torch 2.14 marks torch.jit deprecated
        plain = torch.jit.trace(torch.nn.Conv2d(1, 4, 3), torch.randn(1, 1, 16, 16))
    plain.save(str(root / "plain.pt"))
    strangers = [("TorchScript without sknet's record", ".pt", (root / "plain.pt").read_bytes())]
    if ".onnx" in files:
        import onnx

        graph = onnx.load(str(files[".onnx"]))
        del graph.metadata_props[:]
        strangers.append(("ONNX without sknet's record", ".onnx", graph.SerializeToString()))
    return files, root / "x.png", root / "run" / "model.safetensors", strangers


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_exported_files_given_to_predict_and_eval(exported, tmp_path, capsys, suffix):
    files, image, weights, strangers = exported
    if suffix not in files:
        pytest.skip("ONNX needs onnx, onnxscript and onnxruntime")
    valid = files[suffix].read_bytes()
    wrong = [("weights", weights.read_bytes()), ("an image", image.read_bytes())]
    wrong += [(name, data) for name, kind, data in strangers if kind == suffix]
    path = tmp_path / f"model{suffix}"
    capsys.readouterr()
    for case, data in malformed(valid) + wrong:
        path.write_bytes(data)
        for argv in (
            ["predict", str(image), "--weights", str(path)],
            ["eval", "--weights", str(path), "--device", "cpu"],
        ):
            code = main([*argv, "--progress", "never"] if argv[0] == "eval" else argv)
            one_line_outcome(code, capsys.readouterr().err, (0, 4))
            assert code == 4 or case.startswith("flipped"), (case, argv[0])
        assert [p.name for p in tmp_path.iterdir()] == [path.name]


def _layout(root, case):
    """An image folder for `sknet eval`, made malformed as `case` says; returns the --data-dir to give."""
    from PIL import Image

    val = root / "data" / "val"
    for k in range(4):
        (val / f"c{k}").mkdir(parents=True)
        Image.new("L", (8, 8), 50 * k).save(val / f"c{k}" / "a.png")
    if case == "a file as the folder":
        (root / "file").write_bytes(b"x")
        return root / "file"
    if case == "no class folders":
        for k in range(4):
            (val / f"c{k}" / "a.png").rename(val / f"a{k}.png")
            (val / f"c{k}").rmdir()
    elif case == "an empty class":
        (val / "c3" / "a.png").unlink()
    elif case == "a class of junk":
        (val / "c3" / "a.png").write_bytes(b"junk")
    elif case == "a broken link as a class's image":
        (val / "c3" / "a.png").unlink()
        (val / "c3" / "b.png").symlink_to(root / "nowhere.png")
    elif case == "a link loop":
        (val / "c3" / "loop").symlink_to(val)
        (val / "c3" / "a.png").unlink()
    elif case == "five classes":
        (val / "c4").mkdir()
        Image.new("L", (8, 8), 1).save(val / "c4" / "a.png")
    return root / "data"


FOLDER_CASES = ["a file as the folder", "no class folders", "an empty class", "a class of junk",
                "a broken link as a class's image", "a link loop", "five classes"]  # fmt: skip


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory):
    """Weights of a 4-class one-channel model."""
    from tests.train.helpers import tiny_run

    run = tmp_path_factory.mktemp("four") / "run"
    assert main(tiny_run(run)) == 0
    return run / "model.safetensors"


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_image_folders(four_classes, tmp_path, capsys, case):
    data = _layout(tmp_path, case)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    argv = ["eval", "--weights", str(four_classes), "--dataset", "imagefolder"]
    code = main([*argv, "--data-dir", str(data), "--workers", "0", "--progress", "never", "--device", "cpu"])
    one_line_outcome(code, capsys.readouterr().err, (3,))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
