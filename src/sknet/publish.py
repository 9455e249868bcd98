"""The Hugging Face Hub's conventions: a folder with ``config.json``, ``model.safetensors`` and a model card.

:func:`save_pretrained` writes it; ``sknet.create_model("local-dir:DIR")`` reads it back, and once the
folder is a Hub repository (``hf upload ORG/NAME DIR``), ``sknet.create_model("hf-hub:ORG/NAME")``
(see :mod:`sknet.models.hub_names`). ``model.safetensors`` carries sknet's whole record (model, options,
preprocessing, classes, training data set), so the folder needs nothing else to load; ``config.json``
repeats it in timm's terms (architecture, num_classes, pretrained_cfg) for other tools.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from sknet.data.config import data_config
from sknet.errors import ConfigError, one_line
from sknet.models.hub_names import WEIGHTS_FILE
from sknet.weights import RUN_FILES, atomic_write, save_weights

# What the card lists of a run's recipe (sknet train's options), in this order.
RECIPE = (
    "dataset", "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
    "warmup_epochs", "label_smoothing", "precision", "seed", "init_weights",
)  # fmt: skip


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """Write `model` to `folder` in the Hub's layout: ``model.safetensors`` (weights and sknet's record),
    ``config.json`` (timm's keys) and ``README.md`` (a model card: architecture, parameters, GMACs,
    preprocessing, and the training recipe and result when the weights come from an ``sknet train`` run
    folder). Returns the folder. ConfigError for a model that create_model did not build."""
    meta = _metadata(model)
    folder = Path(folder)
    _check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / WEIGHTS_FILE, model, meta)
    config = {
        "architecture": meta["model"],
        "num_classes": meta["num_classes"],
        "in_chans": meta["in_chans"],
        "num_features": int(getattr(model, "num_features", 0)),
        "model_args": meta["model_options"],
        "pretrained_cfg": json.loads(json.dumps(model.pretrained_cfg, default=str)),
        "library_name": "sknet",
    }
    text = json.dumps(config, indent=2) + "\n"
    atomic_write(folder / "config.json", lambda f: f.write(text.encode()))
    card = model_card(model, meta, _run_folder(model))
    atomic_write(folder / "README.md", lambda f: f.write(card.encode()))
    return folder


def _check_folder(folder: Path) -> None:
    """ConfigError, before anything is written, for a `folder` that is (or lies under) a file, or that holds a
    training run: its model.safetensors is the run's, which only `sknet train` changes."""
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise ConfigError(f"save_pretrained: {one_line(part)} exists and is not a folder")
    # model.safetensors alone is also what save_pretrained writes: a folder of its own may be saved again
    if any((folder / name).exists() for name in RUN_FILES if name != WEIGHTS_FILE):
        raise ConfigError(
            f"save_pretrained: {one_line(folder)} is a training run's folder (its {WEIGHTS_FILE} is the run's, "
            "changed only by sknet train); choose another folder"
        )


def _metadata(model: nn.Module) -> dict[str, Any]:
    """sknet's record of `model` as it is now (class count and input after any fine-tuning changes)."""
    recorded = getattr(model, "weights_meta", None)
    if not isinstance(recorded, dict) or "model" not in recorded:
        raise ConfigError("save_pretrained needs a model built by sknet.create_model (it records the name)")
    options = json.loads(json.dumps(getattr(model, "model_options", recorded.get("model_options", {})), default=str))
    meta = {k: v for k, v in recorded.items() if k not in ("classes", "mean", "std", "input_size", "crop_fraction")}
    meta.update(data_config(model).to_metadata(), model_options=options)
    meta.update(num_classes=int(model.num_classes), in_chans=int(model.in_chans))
    return meta


def _run_folder(model: nn.Module) -> Path | None:
    """The `sknet train` run folder the weights came from (config.yaml and summary.json beside them)."""
    source = getattr(model, "weights_file", None)
    if not source:
        return None
    folder = Path(source).parent
    return folder if (folder / "config.yaml").is_file() and (folder / "summary.json").is_file() else None


def model_card(model: nn.Module, meta: dict[str, Any], run: Path | None = None) -> str:
    """The card's Markdown, with the Hub's YAML header (library, pipeline tag)."""
    from sknet.profile import count_macs, count_params

    record = data_config(model)
    size = record.input_size
    params = count_params(model)
    macs = count_macs(model, (1, record.in_chans, size, size))
    name = meta["model"]
    header = {"library_name": "sknet", "pipeline_tag": "image-classification", "tags": ["sknet", name]}
    if record.crop_fraction >= 1:
        crop = f"resize to {size}×{size}"
    else:  # as the eval transform: the shorter side to ⌊size / crop_fraction⌋, then the centre
        crop = f"resize the shorter side to {math.floor(size / record.crop_fraction)}, centre crop {size}×{size}"
    lines = [
        f"---\n{yaml.safe_dump(header, sort_keys=False)}---",
        f"# {name}",
        "",
        "Selective Kernel Networks (Li et al., CVPR 2019, arXiv:1903.06586), built with sknet.",
        "",
        f"- Architecture: `{name}`, options {json.dumps(meta['model_options'])}",
        f"- Parameters: {params:,}",
        f"- GMACs: {macs / 1e9:.4g} at {record.in_chans}×{size}×{size}",
        f"- Classes: {meta['num_classes']}" + (f" ({', '.join(record.classes)})" if record.classes else ""),
        f"- Preprocessing: {crop}, {record.interpolation}, {record.channel_order}, "
        f"mean {list(record.mean)}, std {list(record.std)}",
    ]
    if run is not None:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
        summary = json.loads((run / "summary.json").read_text())
        recipe = ", ".join(f"{key} {config[key]}" for key in RECIPE if config.get(key) is not None)
        results = ", ".join(_result(k.removeprefix("val_"), v) for k, v in summary.items() if k.startswith("val_"))
        recorded = getattr(model, "weights_meta", {})
        same = all(recorded.get(k, meta[k]) == meta[k] for k in ("num_classes", "in_chans"))
        if same:
            lines += ["", "## Training", "", f"- Recipe (`sknet train`): {recipe}", f"- Result (test split): {results}"]
        else:  # a new classifier or first conv since: the run's result is not this model's
            lines += ["", "## Backbone training", "", f"- Recipe (`sknet train`): {recipe}"]
            lines.append("- The classifier or first conv changed since (fine-tuning): the run's result does not apply")
    if meta.get("init_weights"):
        origin = meta["init_weights"]
        lines.append(f"- Fine-tuned from `{origin.get('model')}` weights trained on {origin.get('dataset', '?')}")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import sknet",
        'model = sknet.create_model("hf-hub:ORG/NAME").eval()  # or "local-dir:FOLDER"',
        "logits = model(sknet.transforms(model)(image).unsqueeze(0))",
        "```",
        "",
    ]
    return "\n".join(lines)


def _result(key: str, value: float) -> str:
    """One test-split figure of a run's summary as the card prints it: accuracies in percent, counts whole."""
    if key.startswith("acc"):
        return f"top-{key.removeprefix('acc')} {100 * value:.2f}%"
    if key in ("images", "skipped"):
        return f"{key} {int(value):,}"
    return f"{key} {value:.4g}"
