"""Opening images that come from outside: size checked before decoding, pixel modes converted faithfully.

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): a photo stored sideways with an
  Orientation tag comes out as viewers show it, in training, evaluation, prediction and the attention study
  alike (they all open images here).
- PIL reads only the header on open; an image with more pixels than ``MAX_PIXELS`` (PIL's own
  decompression-bomb limit, ~89 MP) is refused before it is decoded.
- 16-bit images (PNG ``I;16`` and friends) are scaled to 8 bits (v / 257), not clipped to white as
  ``convert("RGB")`` does; float images (``F``) with values in [0, 1] are scaled by 255; other modes
  that cannot be converted faithfully are refused with the reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from sknet.errors import DataError

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# The files read as images in folders, shards and calibration sets: torchvision's ImageFolder's, and GIF,
# which `sknet predict` reads like any file PIL opens (its first frame).
IMAGE_EXTENSIONS = (*IMG_EXTENSIONS, ".gif")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def open_image(path: str | Path | BinaryIO, mode: str = "RGB", name: str | None = None) -> Image.Image:
    """The decoded image at `path` (or in a binary file object) in `mode` ("RGB" or "L"); DataError naming
    the file (`name`, if given) otherwise."""
    label = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise DataError(
                        f"image {label} is {width}×{height} pixels, more than the limit of {MAX_PIXELS:,} "
                        "(a decompression bomb, or an image to shrink first)"
                    )
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of upright images
                return _to_mode(img, mode, label)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"image {label} is too large to decode safely: {err}") from None
    except FileNotFoundError:
        raise DataError(f"image {label} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"image {label} is a folder, not an image file") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        # PIL's own words name a file object by its repr ("<_io.BytesIO object at 0x…>"); the image is named
        # by `label` already.
        reason = "not an image format PIL reads" if isinstance(err, UnidentifiedImageError) else str(err)
        reason = reason.replace(repr(path), "the image")
        raise DataError(f"cannot read image {label}: {reason}") from None


def _to_mode(img: Image.Image, mode: str, path: str | Path) -> Image.Image:
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        values = np.asarray(img, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise DataError(f"image {path}: 32-bit integer pixels outside 0–65535 cannot be shown as 8-bit")
        img = Image.fromarray(np.round(values / 257).astype(np.uint8), "L")
    elif img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise DataError(f"image {path}: floating-point pixels outside [0, 1] have no 8-bit meaning")
        img = Image.fromarray(np.round(values * 255).astype(np.uint8), "L")
    return img.convert(mode)


def image_channels(path: str | Path) -> int:
    """Colour channels of the image at `path`, from its header only (no decoding): alpha not counted,
    palette images 3. DataError naming the file if it cannot be read."""
    try:
        with Image.open(path) as img:
            return 3 if img.mode == "P" else len([band for band in img.getbands() if band != "A"])
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
