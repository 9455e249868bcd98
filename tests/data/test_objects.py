"""The detection scenes (sknet.data.objects): boxes and masks exact on hand-built objects, no overlap, every
pixel of an object in its mask, determinism from the seed, and bad arguments refused. No Fashion-MNIST."""

import pytest
import torch
from torchvision import tv_tensors

from sknet.data.datasets import Split, make_synthetic
from sknet.data.objects import make_scenes, mask_box
from sknet.data.tensors import InMemoryImages


def hand_built() -> InMemoryImages:
    """Two 6×6 objects on black: an L (class 0) and a bar (class 1)."""
    images = torch.zeros(2, 1, 6, 6, dtype=torch.uint8)
    images[0, 0, 1:5, 1] = 200  # the L's stem: rows 1–4, column 1
    images[0, 0, 4, 1:4] = 90  # its foot: row 4, columns 1–3
    images[1, 0, 2, 0:6] = 255  # the bar: row 2, all columns
    return InMemoryImages(images, torch.tensor([0, 1]), ["ell", "bar"], (0.5,), (0.5,))


def test_an_object_filling_the_canvas_has_its_own_pixels_as_mask_and_their_tight_box():
    source = hand_built()
    scenes = make_scenes(source, 8, canvas=6, objects=(1, 1), scale_range=(1.0, 1.0), seed=0)
    for image, boxes, labels, masks in zip(scenes.images, scenes.boxes, scenes.labels, scenes.masks, strict=True):
        assert len(boxes) == len(labels) == len(masks) == 1
        which = int(labels[0]) - 1  # the class + 1; here class = index of the object
        assert torch.equal(image, source.images[which])  # at scale 1, resizing keeps the pixels
        assert torch.equal(masks[0], (source.images[which, 0] > 0).to(torch.uint8))
        expected = [[1.0, 1.0, 4.0, 5.0]] if which == 0 else [[0.0, 2.0, 6.0, 3.0]]  # x1, y1, x2, y2: edges
        assert boxes.tolist() == expected
    assert {int(s[0]) for s in scenes.labels} == {1, 2}


def test_mask_box_is_in_pixel_edges_and_an_empty_mask_is_refused():
    mask = torch.zeros(5, 7, dtype=torch.uint8)
    mask[3, 6] = 1
    assert mask_box(mask).tolist() == [6.0, 3.0, 7.0, 4.0]  # one pixel: width and height 1
    mask[1, 2] = 1
    assert mask_box(mask).tolist() == [2.0, 1.0, 7.0, 4.0]
    with pytest.raises(ValueError, match="empty mask"):
        mask_box(torch.zeros(3, 3))


def test_scenes_never_overlap_and_every_object_pixel_is_in_exactly_one_mask():
    source = make_synthetic(Split.TRAIN, size=12, count=32)
    source.images[:, :, :2] = 0  # a black margin: tight boxes smaller than the pasted squares
    scenes = make_scenes(source, 40, canvas=48, objects=(1, 4), scale_range=(0.75, 2.0), seed=3)
    counts = [len(b) for b in scenes.boxes]
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    for index in range(len(scenes)):
        image, target = scenes[index]
        assert isinstance(image, tv_tensors.Image) and image.shape == (1, 48, 48) and image.dtype == torch.float32
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].canvas_size == (48, 48)
        assert isinstance(target["masks"], tv_tensors.Mask)
        masks = target["masks"]
        assert masks.sum(0).max() <= 1  # no pixel in two masks: nothing occluded
        assert torch.equal(masks.sum(0).bool(), scenes.images[index, 0] > 0)  # the union: every object pixel
        for box, mask in zip(target["boxes"], masks, strict=True):
            rows, cols = mask.nonzero().unbind(1)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert ((target["labels"] >= 1) & (target["labels"] <= 4)).all()


def test_scenes_are_deterministic_in_the_seed():
    source = make_synthetic(Split.TRAIN, size=10, count=16)
    a, b = (make_scenes(source, 12, canvas=32, seed=5) for _ in range(2))
    assert torch.equal(a.images, b.images)
    for key in ("boxes", "labels", "masks"):
        assert all(torch.equal(x, y) for x, y in zip(getattr(a, key), getattr(b, key), strict=True))
    assert not torch.equal(a.images, make_scenes(source, 12, canvas=32, seed=6).images)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"count": 0}, "must be ≥ 1"),
        ({"objects": (2, 1)}, "1 ≤ lo ≤ hi"),
        ({"objects": (0, 2)}, "1 ≤ lo ≤ hi"),
        ({"scale_range": (0.0, 1.0)}, "does not fit"),
        ({"scale_range": (1.0, 3.0)}, "does not fit"),  # 30-pixel objects on a 24 canvas
    ],
)
def test_bad_arguments_are_refused(options, message):
    source = make_synthetic(Split.TRAIN, size=10, count=4)
    with pytest.raises(ValueError, match=message):
        make_scenes(source, **{"count": 2, "canvas": 24, **options})
