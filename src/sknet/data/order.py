"""The order of an epoch's samples, for every loader: shuffled from (seed, epoch), repeated augmentation,
padded to a multiple of the processes and shared out by rank, as torch's DistributedSampler does.

One function for data held as tensors (:class:`sknet.data.tensors.TensorBatchLoader`) and decoded data
(:class:`sknet.data.folder.ShardedSampler`), so that both visit the same samples in the same order and a
resumed epoch continues exactly.
"""

from __future__ import annotations

import math

import torch

from sknet.data.augment import key_seed, repeat_order


def keyed_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (:func:`sknet.data.augment.key_seed`)."""
    return torch.Generator().manual_seed(key_seed(*keys))


def epoch_order(
    size: int, shuffle: bool, seed: int, epoch: int, repeats: int = 1, world_size: int = 1, pad: bool = True
) -> torch.Tensor:
    """The global order of epoch `epoch` over `size` samples (int64 (n,)): a permutation keyed by (seed,
    epoch) when `shuffle`, else 0..size-1; each index `repeats` times in a row (repeated augmentation, cut
    back to `size`); with `pad`, the start repeated until the length is a multiple of `world_size`. Rank r's
    share is ``order[r::world_size]``."""
    order = torch.randperm(size, generator=keyed_generator(seed, epoch)) if shuffle else torch.arange(size)
    order = repeat_order(order, repeats)
    total = math.ceil(size / world_size) * world_size
    if pad and total > size:  # pad by repeating the start, as DistributedSampler does
        order = torch.cat([order, order[: total - size]])
    return order
