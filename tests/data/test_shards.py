"""WebDataset shards: written from an image folder, read by ranks × workers with every sample once per
epoch, resumed mid-epoch with exactly the batches not yet trained."""

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from sknet.cli.main import main
from sknet.data import LoaderOptions, build_loader
from sknet.errors import DataError

pytest.importorskip("webdataset")


def _folder(root, train=40, val=6):
    """Solid images whose red value encodes the sample's id (5·id) and green its class (100·class)."""
    for split, count, first in (("train", train, 0), ("val", val, train)):
        for i in range(count):
            sample, label = first + i, i % 2
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 10), (5 * sample, 100 * label, 0)).save(folder / f"{sample}.png")
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    assert main(["shards", str(_folder(tmp / "images")), str(tmp / "out"), "--shard-size", "8"]) == 0
    return tmp / "out"


def _ids(loader):
    """The sample ids of each batch, read back from the pixels (and checked against the labels)."""
    mean, std = torch.tensor(loader.info.record.mean), torch.tensor(loader.info.record.std)
    batches = []
    for x, y, skipped in loader:
        assert skipped == []
        pixels = (x[:, :, 2, 2] * std * 255 + mean * 255).round().long()
        assert pixels[:, 1].tolist() == (100 * y).tolist()
        batches.append((pixels[:, 0] // 5).tolist())
    return batches


def _loader(shards, split, rank=0, world_size=2, workers=2, batch_size=4, data_dir=None):
    options = LoaderOptions(batch_size, train=split == "train", image_size=6, workers=workers, seed=3,
                            rank=rank, world_size=world_size)  # fmt: skip
    return build_loader("wds", split, options, data_dir=data_dir or str(shards))


def test_shards_are_written_with_their_index(shards, capsys):
    info = json.loads((shards / "info.json").read_text())
    assert info["classes"] == ["c0", "c1"]
    assert info["splits"]["train"] == {f"train-{i:06d}.tar": 8 for i in range(5)}  # 5 shards of 8
    assert info["splits"]["val"] == {"val-000000.tar": 6}
    assert main(["shards", str(shards.parent / "images"), str(shards)]) == 2  # never overwritten
    err = capsys.readouterr().err
    assert "info.json, " in err and "train-000001.tar and 4 more exist already; pass --overwrite" in err


def test_two_ranks_times_two_workers_see_every_sample_once_per_epoch(shards):
    pattern = str(shards / "train-{000000..000004}.tar")
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            loader = _loader(shards, "train", rank, data_dir=pattern)
            loader.set_epoch(epoch)
            batches = _ids(loader)
            assert len(batches) == len(loader) == 5 and all(len(b) == 4 for b in batches)  # 20 per rank
            seen += [i for b in batches for i in b]
        assert sorted(seen) == list(range(40))  # every training sample exactly once
        if epoch == 0:
            first = seen
    assert seen != first  # another order in the next epoch
    # Evaluation: the 6 val samples split 3 + 3, nothing padded, in their stored order (class by class).
    val = [_ids(_loader(shards, "test", rank)) for rank in (0, 1)]
    assert [i for part in val for b in part for i in b] == [40, 42, 44, 41, 43, 45]


def test_mid_epoch_resume_continues_with_exactly_the_batches_not_yet_trained(shards):
    loader = _loader(shards, "train", rank=1, world_size=2, workers=3)
    loader.set_epoch(4)
    full = _ids(loader)
    for start in (1, 2, 4):
        loader.set_epoch(4, start)
        assert len(loader) == 5 and _ids(loader) == full[start:]
    one_worker = _loader(shards, "train", rank=1, workers=0)
    one_worker.set_epoch(4)
    assert sorted(i for b in _ids(one_worker) for i in b) == sorted(i for b in full for i in b)


def test_training_on_shards_end_to_end_and_missing_package(shards, tmp_path, capsys, monkeypatch):
    argv = ["train", "--model", "resnext_tiny", "--dataset", "wds", "--data-dir",
            str(shards / "train-{000000..000004}.tar"), "--image-size", "16", "--workers", "2", "--batch-size", "8",
            "--epochs", "1", "--progress", "never", "--device", "cpu", "--output", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["val_images"] == 6 and row["skipped_images"] == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "webdataset", None)  # as if not installed
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "webdataset" else object())
    assert main([*argv[:-1], str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert "needs the webdataset package: pip install 'sknet[wds]'" in err and err.count("\n") == 1
    assert main(["shards", str(shards.parent / "images"), str(tmp_path / "out")]) == 2
    assert "pip install 'sknet[wds]'" in capsys.readouterr().err


def _rewrite(source, target, change):
    """A copy of the shard `source` at `target`, each entry's (name, bytes) passed through `change`
    (returning None drops the entry)."""
    import io
    import tarfile

    with tarfile.open(source) as src, tarfile.open(target, "w") as out:
        for member in src:
            entry = change(member.name, src.extractfile(member).read())
            if entry is not None:
                member.name, data = entry
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))


def _copy(shards, tmp_path):
    import shutil

    return Path(shutil.copytree(shards, tmp_path / "copy"))


TRAIN_ARGV = ["train", "--model", "sknet_tiny", "--dataset", "wds", "--image-size", "16", "--workers", "0",
              "--batch-size", "8", "--epochs", "1", "--progress", "never", "--device", "cpu"]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("cut short", "cannot be read (damaged or cut short?)"),  # was tarfile.ReadError's traceback
        ("label out of range", "class 7 is outside the 2 classes of its info.json"),  # was IndexError in the loss
        ("label not a number", "its class b'seven' is not an integer"),
        ("no label", "has no cls entry"),
        ("count wrong", "holds 8 samples; "),
    ],
)
def test_a_damaged_shard_is_one_line_before_training(shards, tmp_path, capsys, case, message):
    copy = _copy(shards, tmp_path)
    shard = copy / "train-000002.tar"
    if case == "cut short":
        shard.write_bytes(shard.read_bytes()[:7000])
    elif case == "count wrong":
        info = json.loads((copy / "info.json").read_text())
        info["splits"]["train"]["train-000002.tar"] = 9
        (copy / "info.json").write_text(json.dumps(info))
    else:
        label = {"label out of range": b"7", "label not a number": b"seven", "no label": None}[case]
        _rewrite(
            shards / "train-000002.tar", shard, lambda n, d: (n, d) if not n.endswith(".cls") else label and (n, label)
        )
    assert main([*TRAIN_ARGV, "--data-dir", str(copy), "--output", str(tmp_path / "run")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err, err
    assert not (tmp_path / "run").exists()  # refused before the run folder was written


def test_an_unreadable_image_in_a_shard_is_skipped_and_named(shards, tmp_path, capsys):
    """Was: the warning named the image "<_io.BytesIO object at 0x…>"."""
    copy = _copy(shards, tmp_path)
    _rewrite(shards / "val-000000.tar", copy / "val-000000.tar", lambda n, d: (n, b"junk" if n.endswith(".png") else d))
    loader = build_loader("wds", "test", LoaderOptions(6, image_size=6, workers=0), data_dir=str(copy))
    with pytest.warns(UserWarning, match=r"val-000000.tar:000000000: not an image format PIL reads") as caught:
        (_, _, skipped), *_ = list(loader)
    assert len(skipped) == 6 and not any("BytesIO" in str(w.message) for w in caught)


def test_gif_images_go_into_shards(tmp_path):
    """Was: .gif files were left out of the shards without a word."""
    for split in ("train", "val"):
        for k in range(2):
            folder = tmp_path / "images" / split / f"c{k}"
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), (100 * k, 0, 0)).save(folder / "a.gif")
    assert main(["shards", str(tmp_path / "images"), str(tmp_path / "out")]) == 0
    info = json.loads((tmp_path / "out" / "info.json").read_text())
    assert sum(info["splits"]["train"].values()) == 2
    batches = list(
        build_loader("wds", "test", LoaderOptions(2, image_size=8, workers=0), data_dir=str(tmp_path / "out"))
    )
    assert [len(y) for _, y, _ in batches] == [2]


def test_many_shards_are_scanned_in_processes_with_the_same_result(shards, tmp_path, capsys, monkeypatch):
    import sknet.data.shards

    monkeypatch.setattr(sknet.data.shards, "SCAN_IN_PARALLEL", 0)
    assert sknet.data.shards.find_shards(shards, "train").counts == (8,) * 5
    copy = _copy(shards, tmp_path)
    (copy / "train-000003.tar").write_bytes((copy / "train-000003.tar").read_bytes()[:5000])
    with pytest.raises(DataError, match=r"train-000003\.tar cannot be read"):
        sknet.data.shards.find_shards(copy, "train")
