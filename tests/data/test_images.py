"""Images from outside: decompression bombs refused before decoding, 16-bit and float pixels converted
faithfully, and in training an oversized image is skipped and counted like any unreadable one."""

import numpy as np
import pytest
from PIL import Image

from sknet.data import images
from sknet.data.folder import ImageFolderDataset, collate_skipping
from sknet.data.images import open_image
from sknet.data.transforms import eval_transform
from sknet.errors import DataError


def test_an_image_larger_than_the_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (40, 30)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(DataError, match=r"big.png is 40×30 pixels, more than the limit of 1,000"):
        open_image(path)


def test_pil_bomb_limit_is_a_data_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's own guard trips first
    with pytest.raises(DataError, match=r"bomb\.png"):
        open_image(path)


def test_sixteen_bit_and_float_images_keep_their_values(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # a 16-bit grayscale PNG
    assert np.asarray(open_image(path, "L")).tolist() == [[0, 100], [255, 7]]  # not clipped to white
    assert np.asarray(open_image(path, "RGB"))[0, 1].tolist() == [100, 100, 100]
    tif = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)).save(tif)
    assert np.asarray(open_image(tif, "L")).tolist() == [[0, 128], [255, 64]]
    Image.fromarray(np.array([[0.0, 3.0]], dtype=np.float32)).save(tif)
    with pytest.raises(DataError, match="floating-point pixels outside"):
        open_image(tif)


def test_an_oversized_image_in_training_data_is_skipped_and_counted(tmp_path, monkeypatch):
    for name, size in (("a.png", (8, 8)), ("b.png", (8, 8)), ("huge.png", (50, 50))):
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.new("RGB", size, (200, 10, 10)).save(tmp_path / "c" / name)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    ds = ImageFolderDataset(tmp_path, eval_transform(8, (0.5,) * 3, (0.5,) * 3))
    with pytest.warns(UserWarning, match="huge.png is 50×50 pixels"):
        batch, _, skipped = collate_skipping([ds[i] for i in range(len(ds))])
    assert len(skipped) == 1 and batch.shape[0] == 2


def test_exif_orientation_is_applied(tmp_path):
    # A 40×20 photo stored sideways: the pixels are 20×40 and EXIF Orientation=6 says "rotate 90° clockwise".
    stored = np.zeros((40, 20, 3), dtype=np.uint8)
    stored[:, :10] = 255  # the left half of the stored pixels is white: the top half once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    upright = np.asarray(open_image(path))
    assert upright.shape == (20, 40, 3)  # as viewers (and torchvision's apply_exif_orientation) show it
    assert upright[:8].mean() > 200 and upright[12:].mean() < 50
    from torchvision.io import ImageReadMode, decode_image

    reference = decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True).permute(1, 2, 0)
    assert np.abs(reference.numpy().astype(int) - upright.astype(int)).max() <= 8


def test_every_image_sknet_opens_goes_through_open_image():
    # One place applies the size limit, EXIF orientation and mode conversion (training, evaluation,
    # prediction, shards, the attention study): no other module opens image files itself.
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "sknet"
    openers = [p.relative_to(src).as_posix() for p in src.rglob("*.py") if "Image.open(" in p.read_text()]
    assert openers == ["data/images.py"]
