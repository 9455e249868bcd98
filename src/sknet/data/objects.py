"""A detection data set: several objects at random scales on one canvas, with their boxes and masks exact.

Each scene is a `canvas`×`canvas` black image holding 1 to K objects taken from a classification set (the
Fashion-MNIST images, or any :class:`InMemoryImages` of objects on a black background: the tests use drawn
or synthetic ones). An object's side is ``object_size · s`` pixels, s drawn uniformly from `scale_range`,
resized as the multi-scale classification set does (:func:`sknet.data.multiscale.resize_objects`), at a
random position. **Objects never overlap**: a new object's square is placed only where it meets no earlier
square (up to `tries` random positions; where none is free the object is left out, so a scene may hold
fewer objects than drawn, never none). Nothing is occluded, so every object is seen whole and its target
is exact:

- ``masks``: the object's nonzero pixels (uint8 0/1, canvas-sized), i.e. exactly the pixels it changed;
- ``boxes``: the tight box around that mask, in pixel edges (x1, y1, x2, y2) with x2 = last column + 1,
  y2 = last row + 1 (torchvision's and COCO's convention: a one-pixel object has width 1);
- ``labels``: the object's class + 1 (torchvision's detectors keep 0 for the background).

Generation is deterministic in `seed` (a given source, count and seed give the same scenes bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sknet.data.multiscale import resize_objects
from sknet.data.tensors import InMemoryImages


@dataclass
class ObjectScenes(torch.utils.data.Dataset):
    """Scenes and their targets; item i is (image, target) as torchvision's detectors take them.

    Attributes:
        images: (N, C, H, W) uint8.
        boxes: N tensors (k, 4) float32, (x1, y1, x2, y2) in pixels (see the module's docstring).
        labels: N tensors (k,) int64, class index + 1.
        masks: N tensors (k, H, W) uint8 (0/1).
        classes: the object classes' names (label l is ``classes[l - 1]``).
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    masks: list[torch.Tensor]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(image, target): a ``tv_tensors.Image`` (C, H, W) float32 in [0, 1] and a dict with ``boxes``
        (``tv_tensors.BoundingBoxes``, XYXY, in pixels), ``labels`` (k,) int64 and ``masks``
        (``tv_tensors.Mask`` (k, H, W) uint8)."""
        from torchvision import tv_tensors

        image = self.images[index]
        size = tuple(image.shape[-2:])
        target = {
            "boxes": tv_tensors.BoundingBoxes(self.boxes[index], format="XYXY", canvas_size=size),
            "labels": self.labels[index],
            "masks": tv_tensors.Mask(self.masks[index]),
        }
        return tv_tensors.Image(image.float() / 255), target


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    """The tight box (4,) float32 (x1, y1, x2, y2), pixel edges, around the nonzero pixels of `mask` (H, W).
    Raises ValueError for an empty mask."""
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    if len(rows) == 0:
        raise ValueError("an empty mask has no box")
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


def _free(corner: tuple[int, int], side: int, placed: list[tuple[int, int, int]]) -> bool:
    r, c = corner
    return all(r + side <= r2 or r2 + s2 <= r or c + side <= c2 or c2 + s2 <= c for r2, c2, s2 in placed)


def make_scenes(
    source: InMemoryImages,
    count: int,
    canvas: int = 64,
    objects: tuple[int, int] = (1, 3),
    scale_range: tuple[float, float] = (0.5, 1.5),
    object_size: int | None = None,
    seed: int = 0,
    tries: int = 50,
) -> ObjectScenes:
    """`count` scenes of `canvas`×`canvas` pixels, each with ``objects[0]``–``objects[1]`` objects (drawn
    uniformly) of `source` (any images: a random one per object), none overlapping (see the module).

    Args:
        source: the objects, (M, C, h, w) uint8 on a black (0) background, with labels and class names.
        object_size: an object's side at scale 1, in pixels (default: the source images' side).
        scale_range: (lo, hi), the scale s of each object drawn uniformly in it; sides round(object_size·s).
        seed: every draw (counts, objects, scales, positions) comes from it.
        tries: random positions tried per object before it is left out.
    Returns: an :class:`ObjectScenes` (images (count, C, canvas, canvas) uint8).
    Raises ValueError for counts below 1, a range of objects not 1 ≤ lo ≤ hi, a scale range not
    0 < lo ≤ hi, or objects larger than the canvas.
    """
    lo, hi = objects
    size = source.images.shape[-1] if object_size is None else object_size
    if count < 1 or tries < 1 or len(source) < 1:
        raise ValueError(f"count, tries and the source's images must be ≥ 1, got {count}, {tries}, {len(source)}")
    if not 1 <= lo <= hi:
        raise ValueError(f"objects per scene must be 1 ≤ lo ≤ hi, got {objects}")
    if not 0 < scale_range[0] <= scale_range[1] or round(size * scale_range[1]) > canvas:
        raise ValueError(f"scale_range {scale_range} does not fit {size}-pixel objects on a {canvas} canvas")
    gen = torch.Generator().manual_seed(seed)
    drawn: list[list[tuple[int, int, int, int]]] = []  # per scene: (source index, side, row, col)
    for _ in range(count):
        k = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        indices = torch.randint(0, len(source), (k,), generator=gen).tolist()
        scales = scale_range[0] + (scale_range[1] - scale_range[0]) * torch.rand(k, generator=gen)
        sides = [max(1, round(size * float(s))) for s in scales]
        placed: list[tuple[int, int, int]] = []
        scene = []
        for index, side in zip(indices, sides, strict=True):
            spots = (torch.rand(tries, 2, generator=gen) * (canvas - side + 1)).long().tolist()
            corner = next((tuple(spot) for spot in spots if _free(tuple(spot), side, placed)), None)
            if corner is not None:  # the first object always fits
                placed.append((*corner, side))
                scene.append((index, side, *corner))
        drawn.append(scene)
    flat = [obj for scene in drawn for obj in scene]
    resized = resize_objects(source.images[[o[0] for o in flat]], torch.tensor([o[1] for o in flat]))
    channels = source.images.shape[1]
    images = torch.zeros(count, channels, canvas, canvas, dtype=torch.uint8)
    boxes, labels, masks = [], [], []
    cursor = 0
    for i, scene in enumerate(drawn):
        scene_boxes, scene_labels, scene_masks = [], [], []
        for index, side, r, c in scene:
            obj = resized[cursor]
            cursor += 1
            images[i, :, r : r + side, c : c + side] = obj
            mask = torch.zeros(canvas, canvas, dtype=torch.uint8)
            mask[r : r + side, c : c + side] = obj.amax(dim=0) > 0
            if not mask.any():  # a blank source image: nothing to find
                continue
            scene_boxes.append(mask_box(mask))
            scene_labels.append(int(source.labels[index]) + 1)
            scene_masks.append(mask)
        boxes.append(torch.stack(scene_boxes) if scene_boxes else torch.zeros(0, 4))
        labels.append(torch.tensor(scene_labels, dtype=torch.int64))
        masks.append(torch.stack(scene_masks) if scene_masks else torch.zeros(0, canvas, canvas, dtype=torch.uint8))
    return ObjectScenes(images, boxes, labels, masks, list(source.classes))
