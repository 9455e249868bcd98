"""Any map-style Dataset of (image, label), the image a uint8 tensor, a PIL image or a path."""

import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from sknet.data import LoaderOptions, build_loader
from sknet.errors import DataError


class Mixed(Dataset):
    """Items of all three kinds; one path is unreadable."""

    def __init__(self, folder: Path) -> None:
        self.items = []
        for i in range(6):
            colour = (40 * i, 100, 200)
            if i % 3 == 0:
                self.items.append((torch.tensor(colour, dtype=torch.uint8)[:, None, None].expand(3, 20, 24), 0))
            elif i % 3 == 1:
                self.items.append((Image.new("RGB", (30, 20), colour), 1))
            else:
                Image.new("RGB", (24, 24), colour).save(folder / f"{i}.png")
                self.items.append((str(folder / f"{i}.png"), 2))
        (folder / "bad.png").write_bytes(b"garbage")
        self.items.append((folder / "bad.png", 2))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_tensors_pil_images_and_paths_make_one_loader(tmp_path):
    data = Mixed(tmp_path)
    options = LoaderOptions(batch_size=7, image_size=16, workers=0)
    with pytest.warns(UserWarning, match="reading all 7 labels"):  # no `classes`, no `targets`
        loader = build_loader(data, "test", options)
    assert loader.info.record.classes == ("0", "1", "2") and loader.info.record.in_chans == 3 and loader.may_skip
    with pytest.warns(UserWarning, match="bad.png"):
        [(x, y, skipped)] = list(loader)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32 and y.tolist() == [0, 1, 2, 0, 1, 2]
    assert len(skipped) == 1 and "bad.png" in skipped[0]
    # The uniform tensor image keeps its colour through resize and crop (normalised with ImageNet's stats).
    mean, std = torch.tensor(loader.info.record.mean), torch.tensor(loader.info.record.std)
    first = x[0, :, 8, 8] * std * 255 + mean * 255
    assert torch.allclose(first, torch.tensor([0.0, 100.0, 200.0]), atol=1)


def test_grayscale_tensors_and_bad_items(tmp_path):
    gray = torch.utils.data.TensorDataset(torch.zeros(4, 1, 12, 12, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    loader = build_loader(gray, "train", LoaderOptions(batch_size=2, train=True, image_size=8, workers=0))
    assert loader.info.record.in_chans == 1 and loader.info.record.classes == ("0", "1") and len(loader) == 2
    assert loader.info.record.mean == pytest.approx((0.449,), abs=1e-3)
    assert next(iter(loader))[0].shape == (2, 1, 8, 8)
    floats = torch.utils.data.TensorDataset(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(DataError, match=r"must be uint8 \(C, H, W\) with C = 1 or 3, got torch.float32"):
        build_loader(floats, "test", LoaderOptions(batch_size=2, workers=0))


def test_readme_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[2] / "docs" / "data.md").read_text()
    block = re.search(r"```python\n(import torch\nfrom torch.utils.data import TensorDataset\n.*?)```", readme, re.S)
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/data.md", "exec"), {})
    assert (tmp_path / "runs" / "own-data" / "model.safetensors").is_file()
