"""The training loop behind `sknet train`: one process or many under torchrun, exact resume."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sknet.data.datasets import Split, build_dataset, dataset_spec
from sknet.data.device import DeviceLoader, Normalizer
from sknet.data.loader import InMemoryImages, TensorBatchLoader, random_crop_flip
from sknet.errors import CheckpointError, ConfigError, SKNetError
from sknet.models import create_model, model_info
from sknet.progress import Progress
from sknet.train.checkpoint import load_checkpoint, load_state_into, save_checkpoint, save_weights
from sknet.train.config import Precision, TrainConfig
from sknet.train.distributed import DistInfo, all_reduce_sum, cleanup, init_distributed
from sknet.train.metrics import EpochMetrics, NonFiniteGuard
from sknet.train.optim import build_optimizer, build_scheduler
from sknet.train.preflight import check_config, check_device
from sknet.train.records import RunLog, plot_curves
from sknet.train.step import OptimizerStep

CHECKPOINT_FORMAT = "sknet-checkpoint-v1"
# Optimizer steps between host reads of the divergence flag (each read waits for the GPU to drain).
HOST_READ_EVERY = 50


class TrainingDiverged(SKNetError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(SKNetError):
    """Ctrl-C during training; a resumable checkpoint was written."""


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class Trainer:
    """Builds data, model, optimizer and schedule from a :class:`TrainConfig` and runs :meth:`fit`."""

    def __init__(
        self,
        config: TrainConfig,
        resume: str | Path | None = None,
        dist_info: DistInfo | None = None,
        on_step=None,
        datasets: tuple[InMemoryImages, InMemoryImages] | None = None,
    ) -> None:
        """`datasets`: your own (train, test) images in memory, used instead of `config.dataset`'s."""
        self.config = config
        self._given_datasets = datasets
        check_config(config, resume)  # everything cheap is checked before any data is read
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        check_device(config, self.device)
        self.out = Path(config.output)
        self.on_step = on_step  # test hook: called with (epoch, batch) after every optimizer step
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        _seed_all(config.seed)  # identical initial weights on every rank

        self._build_data()
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, config)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.accum_steps)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision is Precision.FP16 else None
        self.guard = NonFiniteGuard(self.device, self.dist)
        self.optimizer_step = OptimizerStep(self.model, self.optimizer, self.scheduler, self.scaler, config.grad_clip)
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._resume(Path(resume))
        else:
            _seed_all(config.seed + 1000 * self.dist.rank)  # per-rank runtime randomness (dropout)

        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.train_model = torch.compile(self.train_model)

    # ----------------------------------------------------------------------------------------- set-up
    def _build_data(self) -> None:
        cfg, d = self.config, self.dist
        spec = dataset_spec(cfg.dataset)
        if self._given_datasets is not None:
            train, val = self._given_datasets
        else:
            train = build_dataset(cfg.dataset, cfg.data_dir, Split.TRAIN, cfg.download)
            val = build_dataset(cfg.dataset, cfg.data_dir, Split.TEST, cfg.download)
        if isinstance(train, InMemoryImages):
            assert isinstance(train, InMemoryImages) and isinstance(val, InMemoryImages)
            self.classes, self.mean, self.std = train.classes, train.mean, train.std
            self.in_chans, self.input_size, self.crop_fraction = train.image_size[0], train.image_size[1], 1.0
            padding = spec.crop_padding if cfg.crop_padding is None else cfg.crop_padding
            train_batches = TensorBatchLoader(
                train,
                cfg.batch_size,
                shuffle=True,
                drop_last=True,
                augment=random_crop_flip(padding, cfg.hflip),
                seed=cfg.seed,
                rank=d.rank,
                world_size=d.world_size,
                normalize=False,
            )
            val_batches = TensorBatchLoader(
                val, max(cfg.batch_size, 256), rank=d.rank, world_size=d.world_size, pad=False, normalize=False
            )
            self._device_loaders(train_batches, val_batches)
            return
        from sknet.data.folder import FolderBatches, ImageFolderDataset, ShardedSampler, collate_skipping
        from sknet.data.transforms import EVAL_CROP_FRACTION, eval_transform, train_transform

        probe = ImageFolderDataset(train, lambda img: img)
        self.classes, self.mean, self.std = probe.classes, probe.mean, probe.std
        self.in_chans, self.input_size, self.crop_fraction = 3, cfg.image_size, EVAL_CROP_FRACTION
        # uint8 out of the workers; normalised on the device (DeviceLoader).
        train_tf = train_transform(cfg.image_size, self.mean, self.std, normalize=False)
        val_tf = eval_transform(cfg.image_size, self.mean, self.std, normalize=False)
        train_ds = ImageFolderDataset(train, train_tf, cfg.bad_images)
        val_ds = ImageFolderDataset(val, val_tf, cfg.bad_images)
        if val_ds.classes != train_ds.classes:
            raise ConfigError(f"the class folders of {val} differ from those of {train}")

        def loader(ds, shuffle: bool, pad: bool) -> FolderBatches:
            sampler = ShardedSampler(len(ds), shuffle, cfg.seed, d.rank, d.world_size, pad=pad)
            return FolderBatches(
                torch.utils.data.DataLoader(
                    ds,
                    cfg.batch_size,
                    sampler=sampler,
                    num_workers=cfg.workers,
                    collate_fn=collate_skipping,
                    pin_memory=self.device.type == "cuda",
                    drop_last=shuffle,
                    persistent_workers=cfg.workers > 0,
                )
            )

        self._device_loaders(loader(train_ds, True, True), loader(val_ds, False, False))

    def _device_loaders(self, train_batches, val_batches) -> None:
        """Both kinds of data end the same way: uint8 batches normalised and laid out on the device."""
        normalizer = Normalizer(self.mean, self.std, self.config.channels_last)
        self.train_loader = DeviceLoader(train_batches, self.device, normalizer)
        self.val_loader = DeviceLoader(val_batches, self.device, normalizer)

    def _build_model(self) -> nn.Module:
        cfg = self.config
        info = model_info(cfg.model)
        options = dict(cfg.model_options)
        for key, value in (("num_classes", len(self.classes)), ("in_chans", self.in_chans)):
            if key in options and options[key] != value:
                raise ConfigError(f"model option {key}={options[key]} does not match the data ({value})")
            if key in info.options:
                options[key] = value
        model = create_model(cfg.model, **options)
        self.model_options = {k: v for k, v in options.items() if k not in ("num_classes", "in_chans")}
        if cfg.sync_bn and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def weights_metadata(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "model_options": json.loads(json.dumps(self.model_options, default=str)),
            "num_classes": len(self.classes),
            "in_chans": self.in_chans,
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": self.input_size,
            "crop_fraction": self.crop_fraction,
            "dataset": self.config.dataset,
        }

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self, gather: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly. `gather` (a collective under DDP) adds every rank's RNG."""
        rng = _rng_state()
        rng_all = [rng]
        if gather and self.dist.enabled:
            # Gather serialized bytes: all_gather_object cannot pickle the RNG tensors themselves.
            buffer = io.BytesIO()
            torch.save(rng, buffer)
            gathered: list[bytes | None] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, buffer.getvalue())
            rng_all = [torch.load(io.BytesIO(b), weights_only=True) for b in gathered]
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": self.epoch,
            "batch": self.batch_in_epoch,
            "global_step": self.global_step,
            "rng": rng_all,
            "config": self.config.to_dict(),
            "meta": self.weights_metadata(),
            "history": self.history,
        }

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path, fallback=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not an sknet training checkpoint")
        found = state.get("meta", {}).get("model")
        load_state_into(self.model, state["model"], str(path), self.config.model, found)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: optimizer state does not fit this configuration: {err}") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch"])
        self.global_step = int(state["global_step"])
        self.history = list(state.get("history", []))
        rngs = state["rng"]
        _set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])

    def save(self, name: str = "checkpoint.pt") -> Path:
        state = self.state_dict()  # collective under DDP: every rank takes part
        path = self.out / name
        if self.dist.is_main:
            save_checkpoint(path, state)
        return path

    # ----------------------------------------------------------------------------------------- loop
    def _autocast(self):
        if self.config.precision is Precision.FP32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision is Precision.BF16 else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_epoch(self, log: RunLog | None) -> dict[str, float]:
        """One epoch (or its rest after a mid-epoch resume). The step makes no host read: statistics stay
        on the device and are read at log intervals (see sknet.train.metrics)."""
        cfg, model = self.config, self.train_model
        model.train()
        loader = self.train_loader
        start = self.batch_in_epoch
        loader.set_epoch(self.epoch, start)
        total = len(loader)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        metrics = EpochMetrics(self.device)
        progress = Progress(
            total, f"epoch {self.epoch + 1}/{cfg.epochs}", cfg.progress, initial=start, enabled=self.dist.is_main
        )
        t0 = time.perf_counter()

        def stats() -> dict[str, str]:  # called only when progress is shown
            running = metrics.running()
            rate = metrics.images * self.dist.world_size / max(time.perf_counter() - t0, 1e-9)
            return {"loss": f"{running['loss']:.4f}", "acc": f"{100 * running['acc']:.2f}%", "img/s": f"{rate:.0f}"}

        self.optimizer.zero_grad(set_to_none=True)
        for i, (x, y, skipped) in enumerate(loader, start=start):
            metrics.skipped += skipped
            if len(y) == 0:
                continue
            # Divide by the size of this accumulation group (the last one of an epoch may be short).
            group_start = (i // cfg.accum_steps) * cfg.accum_steps
            group = min(cfg.accum_steps, total - group_start)
            last_micro = (i + 1) % cfg.accum_steps == 0 or i + 1 == total
            sync = contextlib.nullcontext()
            if not last_micro and isinstance(model, nn.parallel.DistributedDataParallel):
                sync = model.no_sync()
            with sync:
                with self._autocast():
                    logits = model(x)
                    loss = criterion(logits.float(), y)
                (self.scaler.scale(loss / group) if self.scaler else loss / group).backward()
            metrics.add(loss, logits, y)
            self.guard.add(loss)
            if last_micro:
                # Every rank skips a group whose loss was not finite on any rank (one collective, on the
                # device); the weights stay those of the last good step. Acted on at the next host read.
                self.optimizer_step(self.guard.close_group(i + 1))
                self.batch_in_epoch = i + 1
                self.global_step += 1
                if cfg.step_log_every and self.global_step % cfg.step_log_every == 0:
                    self._log_step(log, loss)
                if self.global_step % HOST_READ_EVERY == 0:
                    self._stop_if_diverged()
                if self.on_step is not None:
                    self.on_step(self.epoch, i + 1)
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    break
            progress.update(postfix=stats)
        progress.close()
        self._stop_if_diverged()
        elapsed = time.perf_counter() - t0
        loss_sum, correct, n, skipped = metrics.totals(self.dist)
        return {
            "train_loss": loss_sum / max(n, 1),
            "train_acc": correct / max(n, 1),
            "images_per_s": n / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
            "skipped_images": skipped,
        }

    def _stop_if_diverged(self) -> None:
        """Raise TrainingDiverged if a step was skipped for a non-finite loss (a host read; every rank reads
        the same all-reduced flag at the same step, so every rank stops)."""
        bad = self.guard.first_bad()
        if bad is not None:
            batch, value = bad
            raise TrainingDiverged(
                f"the loss became {value} at epoch {self.epoch + 1}, batch {batch}; no update was applied from it, "
                f"training stopped and the last good checkpoint ({self.out / 'checkpoint.pt'}) was kept. Lower "
                "--lr, add --warmup-epochs or --grad-clip"
            )

    def _log_step(self, log: RunLog | None, loss: torch.Tensor) -> None:
        """Append the loss of this optimizer step, averaged over ranks, to steps.jsonl (a host read)."""
        mean_loss = all_reduce_sum([loss.item()], self.dist)[0] / self.dist.world_size
        if log is not None:
            log.step(
                {
                    "step": self.global_step,
                    "epoch": self.epoch,
                    "loss": mean_loss,
                    "lr": self.optimizer.param_groups[0]["lr"],
                }
            )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return evaluate(
            self.model,
            self.val_loader,
            self.device,
            self.dist,
            self._autocast,
            self.config.progress if self.dist.is_main else "never",
        )

    def fit(self) -> dict[str, Any]:
        """Train until `epochs`; evaluate and checkpoint as configured; return a summary."""
        cfg = self.config
        log = None
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / "config.yaml")
            log = RunLog(self.out, cfg.tensorboard)
            log.restart(self.history)
        start_time = time.perf_counter()
        try:
            while self.epoch < cfg.epochs:
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    break
                stats = self.train_epoch(log)
                if (
                    cfg.max_steps is not None
                    and self.global_step >= cfg.max_steps
                    and self.batch_in_epoch < len(self.train_loader)
                ):
                    if self.dist.is_main:
                        print(
                            f"stopped at max_steps={cfg.max_steps} (epoch {self.epoch + 1}, batch "
                            f"{self.batch_in_epoch}): train loss {stats['train_loss']:.4f}, "
                            f"{stats['images_per_s']:.0f} img/s",
                            flush=True,
                        )
                    self.save()
                    break
                self.epoch += 1
                self.batch_in_epoch = 0
                row: dict[str, Any] = {
                    "epoch": self.epoch,
                    **stats,
                    "lr": self.optimizer.param_groups[0]["lr"],
                }
                if self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
                    row.update({f"val_{k}": v for k, v in self.evaluate().items()})
                self.history.append(row)
                if self.dist.is_main:
                    log.epoch(row)
                    print(_epoch_line(row, cfg.epochs), flush=True)
                if self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs:
                    self.save()
        except KeyboardInterrupt:
            self._stop_if_diverged()  # a skipped (non-finite) step since the last read: keep the last good one
            path = self.out / "checkpoint.pt"
            if self.dist.is_main:  # no collectives here: the other ranks are being interrupted too
                save_checkpoint(path, self.state_dict(gather=False))
            raise TrainingInterrupted(
                f"interrupted at epoch {self.epoch + 1}, batch {self.batch_in_epoch}; saved a resumable checkpoint "
                f"to {path} (continue with --resume {path})"
            ) from None
        finally:
            if log is not None:
                log.close()
        summary = self._finish(time.perf_counter() - start_time)
        return summary

    def _finish(self, seconds: float) -> dict[str, Any]:
        summary: dict[str, Any] = {"epochs": self.epoch, "train_seconds": seconds, "output": str(self.out)}
        if self.history:
            summary.update({k: v for k, v in self.history[-1].items() if k.startswith("val_")})
        if self.dist.is_main:
            save_weights(self.out / "model.safetensors", self.model, self.weights_metadata())
            if self.history:
                plot_curves(
                    self.history,
                    self.out / "curves.png",
                    title=f"{self.config.model} on {self.config.dataset}",
                )
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    text = (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f}  acc {100 * row['train_acc']:.2f}%  "
        f"{row['images_per_s']:.0f} img/s  lr {row['lr']:.4g}"
    )
    if row.get("val_acc1") is not None:
        text += f"  | test loss {row['val_loss']:.4f}  top-1 {100 * row['val_acc1']:.2f}%"
    if row.get("skipped_images"):
        text += f"  ({row['skipped_images']} unreadable images skipped)"
    return text


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    dist_info: DistInfo | None = None,
    autocast=contextlib.nullcontext,
    progress: str = "never",
) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy over `loader` (summed across ranks); `progress`: see sknet.progress."""
    was_training = model.training
    model.eval()
    # loss·n, top-1 correct, top-5 correct on the device (no host read per batch); n on the host.
    device_sums = torch.zeros(3, dtype=torch.float64, device=device)
    images = 0

    def stats() -> dict[str, str]:
        return {"top-1": f"{100 * device_sums[1].item() / max(images, 1):.2f}%"}

    with Progress(len(loader), "evaluating", progress) as bar:
        for batch in loader:
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            if len(y) > 0:
                with autocast():
                    logits = model(x).float()
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
    model.train(was_training)
    sums = [*device_sums.tolist(), float(images)]
    if dist_info is not None:
        sums = all_reduce_sum(sums, dist_info)
    n = max(sums[3], 1)
    return {"loss": sums[0] / n, "acc1": sums[1] / n, "acc5": sums[2] / n, "images": int(sums[3])}


def train(config: TrainConfig, resume: str | Path | None = None) -> dict[str, Any]:
    """Run a full training from a config (the Python face of `sknet train`)."""
    trainer = Trainer(config, resume)
    try:
        return trainer.fit()
    finally:
        cleanup(trainer.dist)
