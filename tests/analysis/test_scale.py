import pytest
import torch

from sknet import ConfigError, InputShapeError
from sknet.analysis import enlarge_center


def centred_square(size: int, side: int) -> torch.Tensor:
    x = torch.zeros(1, 1, size, size)
    start = (size - side) // 2
    x[..., start : start + side, start : start + side] = 1.0
    return x


def extent(image: torch.Tensor) -> tuple[int, int, float]:
    """Side of the thresholded square, and the centre of its rows."""
    mask = image[0, 0] > 0.5
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    return len(rows), len(cols), rows.double().mean().item()


@pytest.mark.parametrize("scale", [1.5, 2.0])
def test_a_centred_square_grows_by_the_scale(scale):
    x = centred_square(60, 12)
    out = enlarge_center(x, scale)
    assert out.shape == x.shape
    rows, cols, centre = extent(out)
    assert rows == cols == round(12 * scale)
    assert centre == pytest.approx(29.5)


def test_scale_one_is_the_identity_and_uint8_stays_uint8():
    x = torch.rand(2, 3, 32, 32)
    assert enlarge_center(x, 1.0) is x
    u8 = (centred_square(40, 10) * 255).to(torch.uint8).expand(2, 3, -1, -1)
    out = enlarge_center(u8, 2.0)
    assert out.dtype == torch.uint8 and out.shape == u8.shape
    assert extent(out.float() / 255)[0] == 20


def test_bad_scales_and_shapes_are_rejected():
    with pytest.raises(ConfigError, match="≥ 1"):
        enlarge_center(torch.rand(1, 1, 8, 8), 0.5)
    with pytest.raises(ConfigError):
        enlarge_center(torch.rand(1, 1, 8, 8), float("nan"))
    with pytest.raises(InputShapeError, match=r"\(N, C, H, W\)"):
        enlarge_center(torch.rand(8, 8), 2.0)
