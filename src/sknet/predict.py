"""Class probabilities for image files: what `sknet predict` prints, as a library function."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sknet.data.config import data_config
from sknet.data.images import open_image
from sknet.errors import ConfigError, DataError, one_line


def check_images(paths: Sequence[str | Path]) -> None:
    """DataError naming the first of `paths` that does not exist or is a folder: checked before the weights
    are loaded and any image is classified, so that a wrong name at the end of a list costs no work."""
    for path in paths:
        if Path(path).is_dir():
            raise DataError(f"image {one_line(path)} is a folder, not an image file")
        if not Path(path).exists():
            raise DataError(f"image {one_line(path)} does not exist")


@torch.no_grad()
def predict(model: nn.Module, paths: Sequence[str | Path], topk: int = 5) -> list[dict]:
    """Top-`topk` classes of each image, preprocessed with the model's own :class:`DataConfig`
    (``sknet.transforms(model)``): [{"image", "top": [{"class", "index", "probability"}, ...]}, ...]."""
    if topk < 1:
        raise ConfigError(f"topk must be ≥ 1, got {topk}")
    check_images(paths)
    config = data_config(model)
    transform = config.transform()
    mode = "L" if config.in_chans == 1 else "RGB"
    was_training = model.training
    model.eval()
    results = []
    try:
        for path in paths:
            x = transform(open_image(path, mode))[None]
            probs = model(x).softmax(1)[0]
            names = config.classes or tuple(str(i) for i in range(len(probs)))
            p, idx = probs.topk(min(topk, len(probs)))
            top = [
                {"class": names[i], "index": int(i), "probability": float(q)}
                for q, i in zip(p.tolist(), idx.tolist(), strict=True)
            ]
            results.append({"image": str(path), "top": top})
    finally:
        model.train(was_training)
    return results
