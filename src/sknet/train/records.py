"""Run records: per-epoch JSONL and CSV logs, optional TensorBoard, training curves as PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from torch import nn

from sknet.errors import plural, storage_error


class RunLog:
    """Appends one row per epoch to metrics.jsonl and metrics.csv (rank 0 only)."""

    def __init__(self, folder: Path, tensorboard: bool = False, history: list[dict[str, Any]] | None = None) -> None:
        """`history`: the rows the logs must hold now (see restart)."""
        self.folder = folder
        self.jsonl = folder / "metrics.jsonl"
        self.csv = folder / "metrics.csv"
        self.steps = folder / "steps.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                import warnings

                warnings.warn("tensorboard is not installed (pip install tensorboard); skipping it", stacklevel=2)
            else:
                self.writer = SummaryWriter(str(folder / "tensorboard"))
        if history is not None:
            self.restart(history)

    def restart(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the epoch logs to hold exactly `history` (a resumed run continues after its checkpoint)."""
        for path in (self.jsonl, self.csv):
            path.unlink(missing_ok=True)
        for row in history:
            self._write_files(row)

    def epoch(self, row: dict[str, Any]) -> None:
        self._write_files(row)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def _write_files(self, row: dict[str, Any]) -> None:
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        new = not self.csv.exists()
        with self.csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def skipped(self, epoch: int, split: str, messages: list[str]) -> None:
        """Name every image skipped as unreadable in skipped_images.txt, one line each."""
        if messages:
            with (self.folder / "skipped_images.txt").open("a") as f:
                f.writelines(f"epoch {epoch} {split}: {message}\n" for message in messages)

    def step(self, row: dict[str, Any]) -> None:
        with self.steps.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch (train and validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    val = [(r["epoch"], r) for r in rows if r.get("val_loss") is not None]
    if val:
        ax_loss.plot([e for e, _ in val], [r["val_loss"] for _, r in val], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in rows], "o-", label="train")
    if val:
        ax_acc.plot([e for e, _ in val], [100 * r["val_acc1"] for _, r in val], "o-", label="validation top-1")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The line printed after each epoch: the training half, then after "|" the test half, each with the
    images its own loader skipped as unreadable."""
    text = (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f}  acc {100 * row['train_acc']:.2f}%  "
        f"{row['images_per_s']:.0f} img/s  lr {row['lr']:.4g}"
    )
    if row.get("skipped_images"):
        batches = row.get("skipped_batches")
        text += f"  ({row['skipped_images']} unreadable training images skipped"
        text += f", {batches} batches left too small skipped)" if batches else ")"
    if row.get("val_acc1") is not None:
        text += f"  | test loss {row['val_loss']:.4f}  top-1 {100 * row['val_acc1']:.2f}%"
    if row.get("val_ema_acc1") is not None:
        text += f"  (EMA: loss {row['val_ema_loss']:.4f}  top-1 {100 * row['val_ema_acc1']:.2f}%)"
    if row.get("val_skipped"):
        text += f"  ({row['val_skipped']} unreadable test images skipped)"
    return text


def write_outputs(
    folder: Path, model: nn.Module, meta: dict[str, Any], history: list[dict[str, Any]], summary: dict, title: str
) -> None:
    """The run's results: model.safetensors, curves.png (and .csv/.jsonl already written), summary.json."""
    from sknet.weights import save_weights

    try:
        save_weights(folder / "model.safetensors", model, meta)
        if history:
            plot_curves(history, folder / "curves.png", title=title)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    except OSError as err:
        raise storage_error(err, f"the results in {folder}") from None


def log_step(log: RunLog | None, loss, run, lr: float, dist) -> None:
    """Append the loss of this optimizer step, averaged over ranks, to steps.jsonl (a host read)."""
    from sknet.train.distributed import all_reduce_sum

    mean_loss = all_reduce_sum([loss.item()], dist)[0] / dist.world_size
    if log is not None:
        log.step({"step": run.global_step, "epoch": run.epoch, "loss": mean_loss, "lr": lr})


def run_summary(folder: Path, history: list[dict[str, Any]], epochs: int, seconds: float) -> dict[str, Any]:
    """summary.json: epochs trained, seconds, where, and the last evaluation."""
    last = history[-1] if history else {}
    summary = {"epochs": epochs, "train_seconds": seconds, "output": str(folder)}
    # Over the whole run: what the loaders could not read (named in skipped_images.txt).
    for key in ("skipped_images", "skipped_batches"):
        summary[key] = sum(int(row.get(key) or 0) for row in history)
    return {**summary, **{k: v for k, v in last.items() if k.startswith("val_")}}


def stopped_run(folder: Path, max_steps: int, run, announce: bool) -> dict[str, Any]:
    """Resuming a run at its max_steps trains nothing: say how to go on, change no file, and return its
    summary (marked ``stopped``). `run`: its RunProgress."""
    done = run.global_step
    if announce:
        where = (
            f"stopped at max_steps={max_steps}"
            if done == max_steps
            else f"is at step {done}, past max_steps={max_steps}"
        )
        print(
            f"the run in {folder} {where} (epoch {run.epoch + 1}, batch {run.batch}); nothing to do: pass "
            f"--max-steps M (M > {done}) or --max-steps none to continue",
            flush=True,
        )
    return {**run_summary(folder, run.history, run.epoch, run.train_seconds), "stopped": f"max_steps={max_steps}"}


def finish_run(parts) -> dict[str, Any]:
    """The run's summary (its seconds: every process of the run, up to now); the main process writes its
    outputs, with the raw weights or their EMA (`weights_from`). `parts`: the trainer."""
    parts.run.count_seconds()
    summary = run_summary(parts.out, parts.run.history, parts.run.epoch, parts.run.train_seconds)
    if parts.dist.is_main:
        title = f"{parts.config.model} on {parts.config.dataset}"
        final = parts.recipe.final(parts.model, parts.run.history)
        write_outputs(parts.out, final, parts.weights_metadata(), parts.run.history, summary, title)
    return summary


def finished_run(folder: Path, done: int, epochs: int, announce: bool) -> dict[str, Any] | None:
    """The saved summary of a finished run, or None when its outputs are missing (a kill cut them short)."""
    saved = folder / "summary.json"
    complete = saved.is_file() and (folder / "model.safetensors").is_file()
    if announce:
        note = "nothing to do" if complete else "writing its missing outputs"
        print(
            f"the run in {folder} is finished ({done} of {plural(epochs, 'epoch')}); {note} "
            "(raise --epochs to train longer)"
        )
    return json.loads(saved.read_text()) if complete else None
