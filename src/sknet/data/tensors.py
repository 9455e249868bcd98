"""An in-memory image dataset and a batch loader with batched, exactly reproducible augmentation.

Small datasets (Fashion-MNIST, CIFAR) fit in memory as one uint8 tensor. Loading and augmenting whole
batches with tensor ops is far faster than per-sample transforms in worker processes on a small CPU.

Reproducibility: the shuffle of epoch e is a function of (seed, e); the augmentation of step k is a
function of (seed, e, k) and of each sample's position in the *global* batch. So a run resumed in the
middle of an epoch sees exactly the batches it would have seen, and N processes with batch b see exactly
the samples and augmentations of one process with batch N·b.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from sknet.data.order import epoch_order, keyed_generator
from sknet.errors import ConfigError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class InMemoryImages:
    """Images (N, C, H, W) uint8 and labels (N,) int64, with class names and normalisation statistics."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def random_crop_flip(padding: int, flip: bool = True) -> Augment:
    """Pad by `padding` (zeros), crop back at a random offset, flip horizontally with probability 1/2."""

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        if padding:
            padded = torch.nn.functional.pad(x, (padding,) * 4)
            rows = offsets[:, 0, None] + torch.arange(h)  # (n, h)
            cols = offsets[:, 1, None] + torch.arange(w)  # (n, w)
            x = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
            x = x.permute(0, 3, 1, 2)
        if flip:
            x = torch.where(flips[:, None, None, None], x.flip(3), x)
        return x

    return augment


class TensorBatchLoader:
    """Iterates (images uint8 (B, C, H, W), labels (B,)) over an :class:`InMemoryImages`; images are
    normalised and laid out on the device, in one place for every kind of data (sknet.data.device).

    `batch_size` is per process; with `world_size` > 1 each rank takes every `world_size`-th sample of
    the global order (padded like DistributedSampler). `start_step` skips batches (mid-epoch resume).
    """

    def __init__(
        self,
        data: InMemoryImages,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        repeats: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        if len(data) == 0:
            raise ConfigError("the dataset is empty")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad  # False (evaluation): every sample exactly once, ranks may get unequal shares
        self.repeats = repeats  # repeated augmentation (sknet.data.augment.repeat_order)
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start_step = start_step

    def _global_order(self) -> torch.Tensor:
        return epoch_order(len(self.data), self.shuffle, self.seed, self.epoch, self.repeats, self.world_size, self.pad)

    def __len__(self) -> int:
        n = len(self.data)
        per_rank = math.ceil(n / self.world_size) if self.pad else len(range(self.rank, n, self.world_size))
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._global_order()
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, len(self)):
            chunk = order[step * global_batch : (step + 1) * global_batch]
            if len(chunk) <= self.rank:
                break
            images = self.data.images[chunk]
            if self.augment is not None:
                # Augment the whole global batch, then keep this rank's share: identical to one process.
                images = self.augment(images, keyed_generator(self.seed, self.epoch, step, 1))
            mine = slice(self.rank, None, self.world_size)
            yield images[mine], self.data.labels[chunk[mine]]
