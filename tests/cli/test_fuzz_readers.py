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
