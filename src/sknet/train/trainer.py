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
from sknet.data.loader import InMemoryImages, TensorBatchLoader, random_crop_flip
from sknet.errors import CheckpointError, ConfigError, SKNetError
from sknet.models import create_model, model_info
from sknet.progress import Progress
from sknet.train.checkpoint import load_checkpoint, load_state_into, save_checkpoint, save_weights
from sknet.train.config import Precision, TrainConfig
from sknet.train.distributed import DistInfo, all_reduce_sum, cleanup, init_distributed
from sknet.train.optim import build_optimizer, build_scheduler
from sknet.train.records import RunLog, plot_curves

CHECKPOINT_FORMAT = "sknet-checkpoint-v1"


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
    ) -> None:
        self.config = config
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        self.out = Path(config.output)
        self.on_step = on_step  # test hook: called with (epoch, batch) after every optimizer step
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if config.precision is Precision.FP16 and self.device.type != "cuda":
            raise ConfigError("precision fp16 needs a CUDA device; use bf16 on CPUs")
        _seed_all(config.seed)  # identical initial weights on every rank

        self._build_data()
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, config)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.accum_steps)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision is Precision.FP16 else None
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
        train = build_dataset(cfg.dataset, cfg.data_dir, Split.TRAIN, cfg.download)
        val = build_dataset(cfg.dataset, cfg.data_dir, Split.TEST, cfg.download)
        if spec.in_memory:
            assert isinstance(train, InMemoryImages) and isinstance(val, InMemoryImages)
            self.classes, self.mean, self.std = train.classes, train.mean, train.std
            self.in_chans, self.input_size, self.crop_fraction = train.image_size[0], train.image_size[1], 1.0
            padding = spec.crop_padding if cfg.crop_padding is None else cfg.crop_padding
            self.train_loader = TensorBatchLoader(
                train,
                cfg.batch_size,
                shuffle=True,
                drop_last=True,
                augment=random_crop_flip(padding, cfg.hflip),
                seed=cfg.seed,
                rank=d.rank,
                world_size=d.world_size,
                channels_last=cfg.channels_last,
            )
            self.val_loader = TensorBatchLoader(
                val,
                max(cfg.batch_size, 256),
                rank=d.rank,
                world_size=d.world_size,
                channels_last=cfg.channels_last,
                pad=False,
            )
            return
        from sknet.data.folder import ImageFolderDataset, ShardedSampler, collate_skipping
        from sknet.data.transforms import EVAL_CROP_FRACTION, eval_transform, train_transform

        probe = ImageFolderDataset(train, lambda img: img)
        self.classes, self.mean, self.std = probe.classes, probe.mean, probe.std
        self.in_chans, self.input_size, self.crop_fraction = 3, cfg.image_size, EVAL_CROP_FRACTION
        train_ds = ImageFolderDataset(train, train_transform(cfg.image_size, self.mean, self.std), cfg.bad_images)
        val_ds = ImageFolderDataset(val, eval_transform(cfg.image_size, self.mean, self.std), cfg.bad_images)
        if val_ds.classes != train_ds.classes:
            raise ConfigError(f"the class folders of {val} differ from those of {train}")

        def loader(ds, shuffle: bool, pad: bool):
            sampler = ShardedSampler(len(ds), shuffle, cfg.seed, d.rank, d.world_size, pad=pad)
            return torch.utils.data.DataLoader(
                ds,
                cfg.batch_size,
                sampler=sampler,
                num_workers=cfg.workers,
                collate_fn=collate_skipping,
                pin_memory=self.device.type == "cuda",
                drop_last=shuffle,
                persistent_workers=cfg.workers > 0,
            )

        self.train_loader = loader(train_ds, True, True)
        self.val_loader = loader(val_ds, False, False)

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
        if cfg.sync_bn and self.device.type != "cuda":
            raise ConfigError("sync_bn needs CUDA devices (torch's SyncBatchNorm does not run on CPUs)")
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
        cfg, model = self.config, self.train_model
        model.train()
        loader = self.train_loader
        start = self.batch_in_epoch
        if isinstance(loader, TensorBatchLoader):
            loader.set_epoch(self.epoch, start)
        else:
            loader.sampler.set_epoch(self.epoch, start * cfg.batch_size)
        total = len(loader) if isinstance(loader, TensorBatchLoader) else start + len(loader)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        sums = torch.zeros(3, dtype=torch.float64)  # loss·n, correct, n
        skipped = 0
        non_finite = False  # any micro-batch of the current accumulation group
        progress = Progress(
            total, f"epoch {self.epoch + 1}/{cfg.epochs}", cfg.progress, initial=start, enabled=self.dist.is_main
        )
        t0, seen = time.perf_counter(), 0

        def stats() -> dict[str, str]:
            elapsed = time.perf_counter() - t0
            return {
                "loss": f"{sums[0] / sums[2]:.4f}",
                "acc": f"{100 * sums[1] / sums[2]:.2f}%",
                "img/s": f"{seen * self.dist.world_size / max(elapsed, 1e-9):.0f}",
            }

        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(loader, start=start):
            x, y = batch[0], batch[1]
            if len(batch) == 3:
                skipped += batch[2]
            if len(y) == 0:
                continue
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
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
            with torch.no_grad():
                sums += torch.tensor(
                    [loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64
                )
            seen += len(y)
            non_finite = non_finite or not math.isfinite(loss.item())
            if last_micro:
                # Decided by every rank together (one collective, also when only one rank saw it) and before
                # the optimizer step, so the weights in memory stay those of the last good step.
                if self._any_rank(non_finite):
                    raise TrainingDiverged(
                        f"the loss became {loss.item()} at epoch {self.epoch + 1}, batch {i + 1}; training stopped "
                        f"and the last good checkpoint ({self.out / 'checkpoint.pt'}) was kept. Lower --lr, add "
                        "--warmup-epochs or --grad-clip"
                    )
                self._optimizer_step()
                self.batch_in_epoch = i + 1
                self.global_step += 1
                if cfg.step_log_every and self.global_step % cfg.step_log_every == 0:
                    self._log_step(log, loss)
                if self.on_step is not None:
                    self.on_step(self.epoch, i + 1)
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    break
            progress.update(postfix=stats)
        progress.close()
        elapsed = time.perf_counter() - t0
        loss_sum, correct, n = all_reduce_sum(sums.tolist(), self.dist)
        skipped = int(all_reduce_sum([skipped], self.dist)[0])
        return {
            "train_loss": loss_sum / max(n, 1),
            "train_acc": correct / max(n, 1),
            "images_per_s": seen * self.dist.world_size / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
            "skipped_images": skipped,
        }

    def _log_step(self, log: RunLog | None, loss: torch.Tensor) -> None:
        """Append the loss of this optimizer step, averaged over ranks, to steps.jsonl."""
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

    def _any_rank(self, flag: bool) -> bool:
        """True if `flag` is set on any rank (a collective under DDP: every rank must call it)."""
        return all_reduce_sum([float(flag)], self.dist)[0] > 0

    def _optimizer_step(self) -> None:
        clip = self.config.grad_clip
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

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
    sums = [0.0, 0.0, 0.0, 0.0]  # loss·n, top-1 correct, top-5 correct, n

    def stats() -> dict[str, str]:
        return {"top-1": f"{100 * sums[1] / max(sums[3], 1):.2f}%"}

    with Progress(len(loader), "evaluating", progress) as bar:
        for batch in loader:
            x, y = batch[0].to(device), batch[1].to(device)
            if len(y) > 0:
                with autocast():
                    logits = model(x).float()
                k = min(5, logits.shape[1])
                top = logits.topk(k, dim=1).indices
                sums[0] += nn.functional.cross_entropy(logits, y, reduction="sum").item()
                sums[1] += (top[:, 0] == y).sum().item()
                sums[2] += (top == y[:, None]).any(1).sum().item()
                sums[3] += len(y)
            bar.update(postfix=stats)
    model.train(was_training)
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
