"""The training loop behind `sknet train`: one process or many under torchrun, exact resume.

The pieces it calls each do one job: `preflight` (cheap checks), `run_folder` (no overwrite, one writer),
`sknet.data.pipeline` (loaders), `optim` and `step` (the update), `metrics` (device-side statistics and
the divergence guard), `state` (what a checkpoint holds), `interrupt` (SIGINT/SIGTERM), `records` (logs).
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sknet.errors import TrainingDiverged, TrainingInterrupted
from sknet.evaluate import evaluate
from sknet.progress import Progress
from sknet.train import setup
from sknet.train.config import FOLDER_ONLY, IN_MEMORY_ONLY, Precision, TrainConfig
from sknet.train.distributed import all_reduce_sum, cleanup, gather_rng, init_distributed
from sknet.train.interrupt import StopSignals
from sknet.train.metrics import EpochMetrics, NonFiniteGuard
from sknet.train.optim import build_optimizer, build_scheduler
from sknet.train.preflight import check_config, check_device
from sknet.train.records import RunLog, epoch_line, finished_run, log_step, run_summary, write_outputs
from sknet.train.run_folder import RunFolder, check_output
from sknet.train.setup import build_loaders, build_model, configure_torch, weights_metadata, wrap_for_training
from sknet.train.state import RunProgress, capture, restore, seed_all, write_checkpoint
from sknet.train.step import OptimizerStep, accumulation_group, autocast, forward_backward

__all__ = ["Trainer", "TrainingDiverged", "TrainingInterrupted", "evaluate", "train"]

# Optimizer steps between host reads of the divergence flag and, under torchrun, of the stop request
# (each read waits for the GPU to drain; one process reads its stop flag after every step, for free).
HOST_READ_EVERY = 50


class Trainer:
    """Builds data, model, optimizer and schedule from a :class:`TrainConfig` and runs :meth:`fit`."""

    def __init__(self, config: TrainConfig, resume=None, dist_info=None, on_step=None, datasets=None, overwrite=False):
        """`resume`: a checkpoint to continue; `on_step(epoch, batch)`: called after every optimizer step;
        `datasets`: your own (train, test) :class:`InMemoryImages` instead of `config.dataset`'s;
        `overwrite`: move a run found in the output folder aside instead of refusing."""
        self.config, self.on_step = config, on_step
        self.out = Path(config.output)
        resume = Path(resume) if resume is not None else None
        resuming_here = resume is not None and resume.parent.resolve() == self.out.resolve()
        check_config(config, resume)  # everything cheap is checked before any data is read
        check_output(self.out, resuming_here, overwrite)
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        check_device(config, self.device)
        # One writer per run folder, from here until fit() ends (a second process is refused now, before
        # any data is read); with `overwrite`, a run found there is moved aside.
        self.folder = RunFolder(self.out)
        if self.dist.is_main:
            moved = self.folder.claim(overwrite and not resuming_here)
            if moved is not None:
                print(f"moved the run that was in {self.out} to {moved}", flush=True)
        try:
            self._build(resume, datasets)
        except BaseException:
            self.folder.release()
            raise

    def _build(self, resume: Path | None, datasets) -> None:
        config = self.config
        configure_torch(config, self.device)
        seed_all(config.seed)  # identical initial weights on every rank
        state, start, self.init_record = setup.starting_point(config, resume)  # a checkpoint or init_weights
        self.train_loader, self.val_loader = build_loaders(config, self.dist, datasets)
        self.data = self.train_loader.info
        self.model, self.model_options = build_model(start, self.data, self.dist)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config, math.ceil(len(self.train_loader) / config.accum_steps))
        self.scaler = torch.amp.GradScaler("cuda") if config.precision is Precision.FP16 else None
        self.guard = NonFiniteGuard(self.device, self.dist)
        self.optimizer_step = OptimizerStep(self.model, self.optimizer, self.scheduler, self.scaler, config.grad_clip)
        self.stop = StopSignals(announce=self.dist.is_main)  # its handlers are installed by fit()
        self.run = RunProgress()
        if state is not None:
            self.run = restore(state, str(resume), self, config.model, self.dist.rank)
        else:
            seed_all(config.seed + 1000 * self.dist.rank)  # per-rank runtime randomness (dropout)
        self.train_model = wrap_for_training(self.model, config, self.dist)  # DDP, torch.compile

    def weights_metadata(self) -> dict[str, Any]:
        return weights_metadata(self.config, self.model_options, self.data, self.init_record)

    def state_dict(self, gather: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly. `gather` (a collective under DDP) adds every rank's RNG."""
        rngs = gather_rng(self.dist) if gather else gather_rng(None)
        return capture(self, self.run, self.config.to_dict(), self.weights_metadata(), rngs)

    def save(self, name: str = "checkpoint.pt") -> Path:
        state = self.state_dict()  # collective under DDP: every rank takes part
        return write_checkpoint(self.out / name, state) if self.dist.is_main else self.out / name

    # ----------------------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train until `epochs`, evaluating and checkpointing as configured; return the run's summary."""
        cfg = self.config
        if self.run.epoch >= cfg.epochs and self.run.pending_epoch is None:
            try:
                return self._already_finished()
            finally:
                self.folder.release()
        log = None
        if self.dist.is_main:
            cfg.save(self.out / "config.yaml", IN_MEMORY_ONLY if self.data.resizable else FOLDER_ONLY)
            log = RunLog(self.out, cfg.tensorboard)
            log.restart(self.run.history)
        start_time = time.perf_counter()
        try:
            with self.stop:
                while self.run.epoch < cfg.epochs or self.run.pending_epoch is not None:
                    if self.run.pending_epoch is None:
                        if self._reached_max_steps():
                            break
                        if not self._train_epoch(log):  # stopped inside the epoch, at a step boundary
                            break
                    self._close_epoch(log)
                # Still under the handlers: a signal now lets the outputs be written (seconds) first.
                return self._finish(time.perf_counter() - start_time)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; the last checkpoint on disk stays as it is
            last = self.out / "checkpoint.pt"
            hint = f"continue from the last checkpoint with --resume {last}" if last.exists() else "no checkpoint yet"
            raise TrainingInterrupted(f"stopped without saving; {hint}") from None
        finally:
            if log is not None:
                log.close()
            self.folder.release()

    def _train_epoch(self, log: RunLog | None) -> bool:
        """Train the (rest of the) epoch; False when stopped inside it (max_steps, a signal), after saving."""
        cfg, model, run = self.config, self.train_model, self.run
        model.train()
        loader, start = self.train_loader, run.batch
        loader.set_epoch(run.epoch, start)
        total = len(loader)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        metrics = EpochMetrics(self.device, run.epoch_sums if self.dist.is_main else None)
        label = f"epoch {run.epoch + 1}/{cfg.epochs}"
        progress = Progress(total, label, cfg.progress, initial=start, enabled=self.dist.is_main)
        t0 = time.perf_counter()
        stats = partial(metrics.postfix, t0, self.dist.world_size)  # read only when progress is shown
        self.optimizer.zero_grad(set_to_none=True)
        stopped = False
        for i, (x, y, skipped) in enumerate(loader, start=start):
            metrics.skipped += skipped
            group, last_micro = accumulation_group(i, total, cfg.accum_steps)
            loss, logits = forward_backward(model, x, y, criterion, cfg.precision, self.scaler, group, last_micro)
            metrics.add(loss, logits, y)
            self.guard.add(loss)
            if last_micro:
                # Every rank skips a group whose loss was not finite on any rank (one collective, on the
                # device); the weights stay those of the last good step. Acted on at the next host read.
                self.optimizer_step(self.guard.close_group(i + 1))
                run.batch, run.global_step = i + 1, run.global_step + 1
                if cfg.step_log_every and run.global_step % cfg.step_log_every == 0:
                    log_step(log, loss, run, self.optimizer.param_groups[0]["lr"], self.dist)
                if run.global_step % HOST_READ_EVERY == 0:
                    self._stop_if_diverged()
                if self.on_step is not None:
                    self.on_step(run.epoch, i + 1)
                if self._reached_max_steps() or self.stop.agreed(self.dist, run.global_step % HOST_READ_EVERY == 0):
                    stopped = run.batch < total
                    break
            progress.update(postfix=stats)
        progress.close()
        self._stop_if_diverged()
        elapsed = time.perf_counter() - t0
        run.epoch_sums = metrics.totals(self.dist, elapsed)
        if stopped:
            signal_stop = not self._reached_max_steps()
            self._save_and_stop(f"at epoch {run.epoch + 1}, batch {run.batch}" if signal_stop else None)
            return False
        run.end_training_epoch(self.optimizer.param_groups[0]["lr"])
        return True

    def _close_epoch(self, log: RunLog | None) -> None:
        """Evaluate the trained epoch when due, record it, checkpoint; raise TrainingInterrupted on a signal."""
        cfg, run, row = self.config, self.run, self.run.pending_epoch
        if run.epoch % cfg.eval_every == 0 or run.epoch == cfg.epochs:
            results = self._evaluate()
            if results is None:  # interrupted: the checkpoint holds the epoch, evaluated again on resume
                self._save_and_stop(f"during the evaluation of epoch {run.epoch}")
            row.update({f"val_{k}": v for k, v in results.items()})
        run.history.append(row)
        run.pending_epoch = None
        if self.dist.is_main:
            log.epoch(row)
            print(epoch_line(row, cfg.epochs), flush=True)
        stop = self.stop.agreed(self.dist, True)
        if run.epoch % cfg.checkpoint_every == 0 or run.epoch == cfg.epochs or stop:
            self.save()
        if stop and run.epoch < cfg.epochs:
            self._save_and_stop(f"after epoch {run.epoch}", saved=True)

    def _evaluate(self) -> dict[str, float] | None:
        # Each process asks its own flag per batch; the stop is agreed in evaluate's final sum.
        progress = self.config.progress if self.dist.is_main else "never"
        amp, reduce = partial(autocast, self.config.precision, self.device), partial(all_reduce_sum, info=self.dist)
        should_stop = lambda: self.stop.requested is not None  # noqa: E731
        return evaluate(self.model, self.val_loader, self.device, reduce, amp, progress, should_stop)

    def _reached_max_steps(self) -> bool:
        return self.config.max_steps is not None and self.run.global_step >= self.config.max_steps

    def _save_and_stop(self, where: str | None, saved: bool = False) -> None:
        """Checkpoint at this consistent point; then stop: quietly at max_steps (where=None), else by raising."""
        self._stop_if_diverged()  # a skipped (non-finite) step since the last read: keep the last good one
        path = self.out / "checkpoint.pt" if saved else self.save()
        if where is None:
            if self.dist.is_main:
                where = f"epoch {self.run.epoch + 1}, batch {self.run.batch}"
                print(f"stopped at max_steps={self.config.max_steps} ({where}); checkpoint {path}", flush=True)
            return
        raise TrainingInterrupted(
            f"{self.stop.requested}: stopped {where}; saved a resumable checkpoint (continue with --resume {path})"
        )

    def _stop_if_diverged(self) -> None:
        self.guard.raise_if_diverged(self.run.epoch, self.out / "checkpoint.pt")

    def _already_finished(self) -> dict[str, Any]:
        """Resuming a finished run changes nothing, except writing outputs a kill cut short."""
        summary = finished_run(self.out, self.run.epoch, self.config.epochs, announce=self.dist.is_main)
        return summary if summary is not None else self._finish(0.0)

    def _finish(self, seconds: float) -> dict[str, Any]:
        summary = run_summary(self.out, self.run.history, self.run.epoch, seconds)
        if self.dist.is_main:
            title = f"{self.config.model} on {self.config.dataset}"
            write_outputs(self.out, self.model, self.weights_metadata(), self.run.history, summary, title)
        return summary


def train(config: TrainConfig, resume: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run a full training from a config (the Python face of `sknet train`)."""
    trainer = Trainer(config, resume, overwrite=overwrite)
    try:
        return trainer.fit()
    finally:
        cleanup(trainer.dist)
