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
    assert skipped == 1 and batch.shape[0] == 2
