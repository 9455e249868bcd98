import pytest
from PIL import Image

from sknet.data.datasets import build_dataset


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """(weights, calibration folder) of a tiny SKNet trained on synthetic data, for the int8 exports: 96 of its
    training images as PNGs in class sub-folders (an ImageNet-style tree: the reader takes any layout)."""
    from sknet.train.trainer import Trainer
    from tests.train.helpers import tiny_config

    root = tmp_path_factory.mktemp("tiny")
    Trainer(tiny_config(root / "run", epochs=10)).fit()
    train = build_dataset("synthetic", None, "train")
    folder = root / "calibration"
    for i in range(96):
        (folder / train.classes[train.labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(train.images[i, 0].numpy(), "L").save(folder / train.classes[train.labels[i]] / f"{i}.png")
    return str(root / "run" / "model.safetensors"), folder
