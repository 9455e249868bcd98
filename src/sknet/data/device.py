"""The last stage of every input pipeline: uint8 batches to normalised float batches on the device.

Loaders hand over images as uint8 (4× less to copy than float32); here they are copied to the device,
converted, normalised and laid out (channels_last) there. On CUDA the next batch is copied and prepared
on a side stream from pinned memory while the current one computes, so the copy never stalls the step.
Works the same (without the side stream) on CPUs, where it is a plain in-place conversion.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch

from sknet.errors import DataError


def _plain_errors(loader: Iterable) -> Iterator:
    """The loader's batches; a DataError raised in a worker process (an unreadable image with
    `--bad-images raise`) arrives wrapped in the worker's traceback: it is raised again as its own line."""
    try:
        yield from loader
    except DataError as err:
        text = str(err)
        if text.startswith("Caught DataError"):  # torch's ExceptionWrapper: the original is the last line
            text = text.rstrip().splitlines()[-1].split("DataError: ", 1)[-1]
        raise DataError(text) from None


class Normalizer:
    """uint8 (N, C, H, W) → float32 (x − 255·mean) / (255·std), in the requested memory format."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = False) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:  # already float (e.g. a user's own loader): only the layout
            return images.contiguous(memory_format=self.memory_format)
        if images.device not in self._on:
            self._on[images.device] = (self.mean.to(images.device), self.inv_std.to(images.device))
        mean, inv_std = self._on[images.device]
        x = images.to(dtype=torch.float32, memory_format=self.memory_format)
        return x.sub_(mean).mul_(inv_std)


class DeviceLoader:
    """Iterates (x float on `device`, y on `device`, skipped) over a uint8 loader; `skipped` lists the
    messages naming the images the loader could not read in this batch (it may be left with none: then
    x is an empty (0,) tensor).

    `loader` yields (images uint8, labels) or (images, labels, skipped); its `len`, `set_epoch` and
    `batch_size` are passed through. On CUDA one batch is prefetched on a side stream. `augment`: the
    per-batch augmentation stages run here, on the device (:class:`sknet.data.augment.BatchAugment`), keyed
    by the epoch and step so that a resumed epoch repeats them.
    """

    def __init__(self, loader: Iterable, device: torch.device, normalizer: Normalizer, augment=None) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.normalize = normalizer
        self.augment = augment
        self.cuda = self.device.type == "cuda"
        self.epoch, self.start_step = 0, 0
        self.may_skip = False  # whether the loader can lose images to unreadable files (set by build_loader)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step
        self.loader.set_epoch(epoch, start_step)

    def _to_device(self, batch, step: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        images, labels = batch[0], batch[1]
        skipped = list(batch[2]) if len(batch) > 2 else []
        if len(labels) == 0:  # every image of the batch was unreadable: nothing to copy or normalise
            return torch.empty(0, device=self.device), labels.to(self.device), skipped
        if self.cuda and not images.is_pinned():
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.augment is None:
            return self.normalize(images), labels, skipped
        images = self.augment.before(images, self.epoch, step)
        return self.augment.after(self.normalize(images), self.epoch, step), labels, skipped

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        if not self.cuda:
            for step, batch in enumerate(_plain_errors(self.loader), start=self.start_step):
                yield self._to_device(batch, step)
            return
        stream = torch.cuda.Stream(self.device)
        batches = enumerate(_plain_errors(self.loader), start=self.start_step)

        def prefetch():
            step, batch = next(batches, (None, None))
            if batch is None:
                return None
            with torch.cuda.stream(stream):
                return self._to_device(batch, step)

        upcoming = prefetch()
        while upcoming is not None:
            torch.cuda.current_stream(self.device).wait_stream(stream)
            x, y, skipped = upcoming
            # Made on the side stream, used on the compute stream: keep the allocator from reusing them early.
            x.record_stream(torch.cuda.current_stream(self.device))
            y.record_stream(torch.cuda.current_stream(self.device))
            upcoming = prefetch()
            yield x, y, skipped
