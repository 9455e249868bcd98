import pytest
import torch

from sknet.data.multiscale import centered_canvas, make_multiscale
from sknet.data.tensors import InMemoryImages


def white_squares(n=64, size=28):
    images = torch.full((n, 1, size, size), 255, dtype=torch.uint8)
    return InMemoryImages(images, torch.arange(n) % 10, [str(k) for k in range(10)], (0.5,), (0.5,))


def boxes(images):
    mask = images[:, 0] > 127
    rows = mask.any(2)
    cols = mask.any(1)
    return rows.sum(1), cols.sum(1), rows.float().argmax(1), cols.float().argmax(1)


def test_objects_get_random_scales_and_positions_inside_the_canvas():
    data = make_multiscale(white_squares(), canvas=56, scale_range=(0.75, 2.0), seed=3)
    assert data.images.shape == (64, 1, 56, 56) and data.images.dtype == torch.uint8
    heights, widths, top, left = boxes(data.images)
    assert torch.equal(heights, widths)
    assert heights.min() >= 21 and heights.max() <= 56 and len(heights.unique()) > 10
    assert (top + heights).max() <= 56 and (left + widths).max() <= 56 and len(top.unique()) > 5
    again = make_multiscale(white_squares(), canvas=56, scale_range=(0.75, 2.0), seed=3)
    assert torch.equal(again.images, data.images)
    assert not torch.equal(make_multiscale(white_squares(), seed=4).images, data.images)


def test_centred_canvas_keeps_the_object_unscaled_in_the_middle():
    base = white_squares(4)
    data = centered_canvas(base, canvas=56)
    heights, widths, top, left = boxes(data.images)
    assert heights.tolist() == widths.tolist() == [28] * 4 and top.tolist() == [14] * 4 and left.tolist() == [14] * 4
    assert torch.equal(data.images[:, :, 14:42, 14:42], base.images)


def test_a_scale_range_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        make_multiscale(white_squares(2), canvas=40, scale_range=(1.0, 2.0))


def test_objects_of_another_size_at_scale_1():
    """The half-size data: 28-pixel images drawn as 14-pixel objects at scale 1, 10–28 pixels on 28×28."""
    data = make_multiscale(white_squares(), canvas=28, scale_range=(0.75, 2.0), seed=3, object_size=14)
    heights, widths, top, left = boxes(data.images)
    assert data.images.shape == (64, 1, 28, 28) and torch.equal(heights, widths)
    assert heights.min() >= 10 and heights.max() <= 28 and len(heights.unique()) > 8
    assert (top + heights).max() <= 28 and (left + widths).max() <= 28
    centred = centered_canvas(white_squares(4), canvas=28, object_size=14, stats=((0.1,), (0.2,)))
    heights, widths, top, left = boxes(centred.images)
    assert heights.tolist() == widths.tolist() == [14] * 4 and top.tolist() == left.tolist() == [7] * 4
    assert centred.mean == (0.1,) and centred.std == (0.2,)
    with pytest.raises(ValueError, match="does not fit"):
        make_multiscale(white_squares(2), canvas=24, object_size=14)
