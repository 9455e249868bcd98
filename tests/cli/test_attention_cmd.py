import json

import pytest

from sknet.cli import main
from tests.train.helpers import tiny_run


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(tiny_run(out, "--model", "sknet_tiny")) == 0
    return out / "model.safetensors"


def test_attention_writes_numbers_and_figures(weights, tmp_path, capsys):
    out = tmp_path / "att"
    argv = ["attention", "--weights", str(weights), "--output", str(out), "--max-images", "40", "--batch-size", "16"]
    assert main([*argv, "--scales", "1", "1.5", "2", "--units", "all", "--progress", "never"]) == 0
    text = capsys.readouterr().out
    assert "SK_3_1" in text and "grows with scale" in text
    data = json.loads((out / "attention.json").read_text())
    assert data["images"] == 40 and data["units"] == ["SK_2_1", "SK_3_1", "SK_4_1"]
    assert len(data["summary"]) == 9
    for name in ("figure3.png", "figure4.png", "units.csv", "classes.csv", "profile.csv"):
        assert (out / name).stat().st_size > 0


def _strict(constant):
    raise AssertionError(f"not JSON: {constant}")


def test_attention_json_is_json_when_a_class_has_no_images(weights, tmp_path, capsys):
    """Means over no images (a class absent from the first images) are null, not NaN: the file is JSON."""
    out = tmp_path / "att"
    argv = ["attention", "--weights", str(weights), "--output", str(out), "--max-images", "2", "--scales", "1", "2"]
    assert main([*argv, "--progress", "never"]) == 0
    data = json.loads((out / "attention.json").read_text(), parse_constant=_strict)
    per_class = data["per_class"]["SK_2_1"]["1.0"]
    assert None in per_class.values() and len(per_class) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scales", "0.5"], "--scales: must be a finite number ≥ 1, got 0.5"),
        (["--scales", "inf"], "--scales: must be a finite number ≥ 1, got inf"),  # was written as Infinity
        (["--scales", "1"], "give at least two scales to compare"),  # said "grows with scale: yes" for all
        (["--scales", "1", "2", "1.5"], "give the scales in increasing order, each once, got 1 2 1.5"),
        (["--scales", "1", "1"], "in increasing order, each once"),
        (["--units", "SK_9_9"], "unknown SK unit"),
        (["--profile-unit", "SK_2_9"], "unknown --profile-unit"),
        (["--max-images", "0"], "--max-images: must be an integer ≥ 1"),
        (["--examples", "-1"], "--examples: must be an integer in [0, 64]"),
        (["--dataset", "nope"], "unknown dataset"),
    ],
)
def test_bad_input_is_one_line(weights, tmp_path, capsys, extra, message):
    assert main(["attention", "--weights", str(weights), "--output", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_a_model_without_sk_units_is_refused(tmp_path, capsys):
    assert main(tiny_run(tmp_path, "--model", "resnext_tiny", "--max-steps", "1")) == 0
    capsys.readouterr()
    assert main(["attention", "--weights", str(tmp_path / "checkpoint.pt"), "--output", str(tmp_path)]) == 2
    assert "no SK unit" in capsys.readouterr().err


def test_attention_on_an_image_folder(tmp_path, capsys):
    from PIL import Image

    import sknet
    from sknet.weights import save_weights

    for k, cls in enumerate(("cat", "dog")):
        folder = tmp_path / "data" / "val" / cls
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 36), (40 * k + 10 * i, 100, 200)).save(folder / f"{i}.png")
    meta = {"model": "sknet_tiny", "model_options": {}, "num_classes": 2, "in_chans": 3, "dataset": "imagefolder"}
    save_weights(tmp_path / "w.safetensors", sknet.create_model("sknet_tiny", num_classes=2, in_chans=3), meta)
    argv = [
        "attention",
        "--weights",
        str(tmp_path / "w.safetensors"),
        "--data-dir",
        str(tmp_path / "data"),
        "--resolution",
        "32",
        "--workers",
        "0",
        "--max-images",
        "5",
        "--output",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 0
    assert "(5 images)" in capsys.readouterr().out
    rows = (tmp_path / "out" / "images.csv").read_text().splitlines()
    assert len(rows) == 6 and ",cat," in rows[1]
