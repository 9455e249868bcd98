"""Batches that lose images to unreadable files: when to skip one, and where the skipped files are named.

A training batch left with fewer than 2 images cannot be trained on (BatchNorm and the SK fuse step
need 2). Under DDP every rank must skip the same steps, or the gradient all-reduce of the ranks that
train would wait forever for those that skip: the ranks agree on the host (a gloo all-reduce of one
integer per step, no device synchronisation), and only when the loader can lose images at all.
"""

from __future__ import annotations

from sknet.train.distributed import DistInfo, HostAgreement, gather_lists
from sknet.train.metrics import EpochMetrics
from sknet.train.records import RunLog


class SkippedImages:
    def __init__(self, dist: DistInfo, train_loader, val_loader) -> None:
        self.dist = dist
        self.train_may_skip = bool(getattr(train_loader, "may_skip", False))
        self.collect = self.train_may_skip or bool(getattr(val_loader, "may_skip", False))
        self.agree = HostAgreement(dist) if self.train_may_skip else None  # a collective: every rank builds it

    def too_small(self, skipped: list[str], kept: int, metrics: EpochMetrics) -> bool:
        """Whether this training batch is skipped: it lost images and kept fewer than 2, on some rank.
        The lost images (and a skipped batch) are counted in `metrics`."""
        small = bool(skipped) and kept < 2
        if self.agree is not None:
            small = self.agree.any(small)
        metrics.skipped += skipped
        metrics.skipped_batches += small
        return small

    def name(self, log: RunLog | None, epoch: int, split: str, messages: list[str]) -> None:
        """Every rank's skipped images, named in the run folder's skipped_images.txt (a collective)."""
        if self.collect:
            messages = gather_lists(messages, self.dist)
        if log is not None:
            log.skipped(epoch, split, messages)
