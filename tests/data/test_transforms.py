"""data/transforms.py on torchvision's transforms.v2 gives what the v1 pipeline it replaced gave."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as v1

from sknet.data.transforms import eval_transform, train_transform

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.mark.parametrize(
    ("kwargs", "steps"),
    [
        ({}, [v1.Resize(36), v1.CenterCrop(32)]),  # 32 / 0.875 rounded down, as timm
        ({"crop_fraction": 1.0}, [v1.Resize((32, 32))]),
        ({"interpolation": "bicubic"}, [v1.Resize(36, interpolation=v1.InterpolationMode.BICUBIC), v1.CenterCrop(32)]),
    ],
)
def test_eval_transform_matches_the_v1_pipeline(kwargs, steps):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (77, 93, 3), dtype=np.uint8))
    ours = eval_transform(32, MEAN, STD, **kwargs)(image)
    theirs = v1.Compose([*steps, v1.ToTensor(), v1.Normalize(MEAN, STD)])(image)
    assert type(ours) is torch.Tensor and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    raw = eval_transform(32, MEAN, STD, normalize=False, **kwargs)(image)
    assert type(raw) is torch.Tensor and raw.dtype == torch.uint8
    assert torch.equal(raw, v1.Compose([*steps, v1.PILToTensor()])(image))


def test_train_transform_draws_like_the_v1_pipeline():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 50, 3), dtype=np.uint8))
    reference = v1.Compose([v1.RandomResizedCrop(24, (0.08, 1.0), (3 / 4, 4 / 3)), v1.RandomHorizontalFlip()])
    for seed in range(5):
        torch.manual_seed(seed)
        ours = train_transform(24, MEAN, STD, normalize=False)(image)
        torch.manual_seed(seed)
        assert torch.equal(ours, v1.PILToTensor()(reference(image)))
