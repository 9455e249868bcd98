"""The Hub's conventions: save_pretrained, local-dir: and hf-hub: names, read offline from a cache built here."""

import json

import pytest
import torch

import sknet
from sknet import CheckpointError, ConfigError
from tests.hub_cache import add_repo, offline_hub
from tests.train.helpers import tiny_run


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """Weights from an `sknet train` run (config.yaml and summary.json beside them)."""
    from sknet.cli import main

    out = tmp_path_factory.mktemp("run") / "run"
    assert main(tiny_run(out)) == 0
    return out


def test_save_pretrained_writes_the_hubs_files_and_loads_back(run_folder, tmp_path):
    model = sknet.create_model(weights=run_folder / "model.safetensors").eval()
    folder = sknet.save_pretrained(model, tmp_path / "repo")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "sknet_tiny" and config["num_classes"] == 4 and config["in_chans"] == 1
    assert config["pretrained_cfg"]["input_size"] == [1, 16, 16] and config["pretrained_cfg"]["classifier"] == "fc"
    again = sknet.create_model(f"local-dir:{folder}").eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert sknet.data_config(again) == sknet.data_config(model)


def test_model_card_says_what_the_model_is_and_how_it_was_trained(run_folder, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    model = sknet.create_model(weights=run_folder / "model.safetensors")
    folder = sknet.save_pretrained(model, tmp_path / "repo")
    card = hub.ModelCard.load(folder / "README.md")  # the Hub's own parser reads the header
    assert card.data.library_name == "sknet" and card.data.pipeline_tag == "image-classification"
    params = sum(p.numel() for p in model.parameters())
    summary = json.loads((run_folder / "summary.json").read_text())
    for fact in (
        "`sknet_tiny`",
        f"Parameters: {params:,}",
        "GMACs: ",
        "at 1×16×16",
        "resize to 16×16, bilinear, L, mean [0.5], std [0.25]",
        "dataset synthetic, epochs 1, batch_size 32, optimizer sgd, lr 0.1",
        f"top-1 {100 * summary['val_acc1']:.2f}%",
        f"images {summary['val_images']:,}",  # a count, not "1e+04"
    ):
        assert fact in card.text, fact


def test_a_fine_tuned_model_saves_its_new_head_and_origin(run_folder, tmp_path):
    model = sknet.create_model(weights=run_folder / "model.safetensors", num_classes=6)
    model.reset_classifier(3)
    folder = sknet.save_pretrained(model, tmp_path / "repo")
    again = sknet.create_model(f"local-dir:{folder}")
    assert again.num_classes == 3 and sknet.data_config(again).classes is None
    card = (folder / "README.md").read_text()
    assert "## Backbone training" in card and "Result" not in card  # the run's accuracy is not this model's


def test_save_pretrained_never_writes_over_a_training_run_or_a_file(run_folder, tmp_path):
    """A run folder's model.safetensors is `sknet train`'s (README: only it changes a run's files): saving
    another model there would replace the run's weights. Refused before anything is written, as a folder
    that is a file."""
    weights = run_folder / "model.safetensors"
    before = weights.read_bytes()
    model = sknet.create_model("sknet_tiny")
    with pytest.raises(ConfigError, match=r"is a training run's folder.*choose another folder"):
        sknet.save_pretrained(model, run_folder)
    assert weights.read_bytes() == before and not (run_folder / "config.json").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        sknet.save_pretrained(model, tmp_path / "file")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        sknet.save_pretrained(model, tmp_path / "file" / "repo")
    folder = sknet.save_pretrained(model, tmp_path / "repo")
    assert sknet.save_pretrained(model, folder) == folder  # its own folder: saved again (fine-tuning), as the Hub's


def test_hf_hub_names_read_the_hubs_cache_offline(run_folder, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    model = sknet.create_model(weights=run_folder / "model.safetensors").eval()
    folder = sknet.save_pretrained(model, tmp_path / "repo")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    add_repo(tmp_path / "cache", "sknet-org/sknet-tiny-synthetic", files)
    offline_hub(monkeypatch, tmp_path / "cache")
    loaded = sknet.create_model("hf-hub:sknet-org/sknet-tiny-synthetic").eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    tuned = sknet.create_model("hf-hub:sknet-org/sknet-tiny-synthetic", num_classes=5, in_chans=3)
    assert tuned.num_classes == 5 and tuned.in_chans == 3
    with pytest.raises(CheckpointError, match=r"not in the Hugging Face cache .*run `hf download sknet-org/other`"):
        sknet.create_model("hf-hub:sknet-org/other")


def test_bad_hub_names_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="hf-hub:ORG/NAME"):
        sknet.create_model("hf-hub:no-slash")
    with pytest.raises(CheckpointError, match=r"no model\.safetensors in"):
        sknet.create_model(f"local-dir:{tmp_path}")
    with pytest.raises(ConfigError, match="names its weights"):
        sknet.create_model(f"local-dir:{tmp_path}", pretrained="timm")
    with pytest.raises(ConfigError, match=r"built by sknet\.create_model"):
        sknet.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "x")
