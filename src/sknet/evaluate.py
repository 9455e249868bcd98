"""Loss, top-1 and top-5 accuracy of a model over a loader: used by training, `sknet eval` and the API."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from sknet.errors import DataError
from sknet.progress import Progress

Reduce = Callable[[list[float]], list[float]]  # sums plain numbers over processes (identity in one process)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device | str,
    reduce: Reduce | None = None,
    autocast=contextlib.nullcontext,
    progress: str = "never",
    should_stop: Callable[[], bool] | None = None,
    on_skipped: Callable[[list[str]], None] | None = None,
) -> dict[str, float] | None:
    """{"loss", "acc1", "acc5", "images", "skipped"} over `loader`, summed over processes by `reduce`.

    "skipped": images the loader could not read (a batch left with none is passed over); `on_skipped`
    receives the messages naming them, batch by batch.

    `should_stop` is asked before every batch; once it answers True the pass ends early and, once every
    process has reached the final sum, None is returned (by every process: the stop travels in the sum).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    classes = getattr(getattr(loader, "info", None), "classes", None)
    # loss·n, top-1 correct, top-5 correct on the device (no host read per batch); n on the host.
    device_sums = torch.zeros(3, dtype=torch.float64, device=device)
    images, skipped, stopped = 0, 0, False

    def stats() -> dict[str, str]:
        return {"top-1": f"{100 * device_sums[1].item() / max(images, 1):.2f}%"}

    try:
        with Progress(len(loader), "evaluating", progress) as bar:
            for batch in loader:
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                if len(batch) > 2 and batch[2]:
                    skipped += len(batch[2])
                    if on_skipped is not None:
                        on_skipped(list(batch[2]))
                x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
                if len(y) > 0:
                    with autocast():
                        logits = model(x).float()
                    if classes is not None and logits.shape[1] != len(classes):
                        raise DataError(
                            f"the model has {logits.shape[1]} outputs but the data has {len(classes)} classes"
                        )
                    k = min(5, logits.shape[1])
                    top = logits.topk(k, dim=1).indices
                    device_sums += torch.stack(
                        [
                            nn.functional.cross_entropy(logits, y, reduction="sum").double(),
                            (top[:, 0] == y).sum().double(),
                            (top == y[:, None]).any(1).sum().double(),
                        ]
                    )
                    images += len(y)
                bar.update(postfix=stats)
    finally:
        model.train(was_training)
    sums = [*device_sums.tolist(), float(images), float(stopped), float(skipped)]
    if reduce is not None:
        sums = reduce(sums)
    if sums[4] > 0:
        return None
    n = max(sums[3], 1)
    images_and_skipped = {"images": int(sums[3]), "skipped": int(sums[5])}
    return {"loss": sums[0] / n, "acc1": sums[1] / n, "acc5": sums[2] / n, **images_and_skipped}
