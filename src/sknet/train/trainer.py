"""The training loop behind `sknet train` (torchrun too, exact resume). Pieces: `preflight`, `run_folder`,
`sknet.data.loader`, `optim`/`step`, `recipe` (mixing, EMA), `metrics`, `state`, `interrupt`, `records`."""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from sknet.errors import TrainingDiverged, TrainingInterrupted
from sknet.evaluate import evaluate
from sknet.progress import Progress
from sknet.train import setup
from sknet.train.config import FOLDER_ONLY, IN_MEMORY_ONLY, Precision, TrainConfig
from sknet.train.distributed import all_reduce_sum, broadcast_buffers, cleanup, gather_rng, init_distributed
from sknet.train.interrupt import StopSignals
from sknet.train.metrics import EpochMetrics, NonFiniteGuard
from sknet.train.optim import build_optimizer, build_scheduler
from sknet.train.preflight import check_config, check_device
from sknet.train.recipe import Recipe
from sknet.train.records import RunLog, epoch_line, finish_run, finished_run, log_step, stopped_run
from sknet.train.run_folder import RunFolder, check_output
from sknet.train.setup import build_loaders, build_model, configure_torch, weights_metadata, wrap_for_training
from sknet.train.skips import SkippedImages
from sknet.train.state import RunProgress, capture, resume_from, seed_all, write_checkpoint
from sknet.train.step import OptimizerStep, accumulation_group, autocast, forward_backward

__all__ = ["Trainer", "TrainingDiverged", "TrainingInterrupted", "evaluate", "train"]

# Steps between host reads of the divergence flag and (torchrun) the stop request: each read drains the GPU.
HOST_READ_EVERY = 50


class Trainer:
    """Builds data, model, optimizer and schedule from a :class:`TrainConfig` and runs :meth:`fit`."""

    def __init__(self, config: TrainConfig, resume=None, dist_info=None, on_step=None, datasets=None, overwrite=False):
        """`resume`: a checkpoint to continue; `on_step(epoch, batch)`: called after every optimizer step;
        `datasets`: your own (train, test) data instead of `config.dataset`'s: :class:`InMemoryImages`, or any
        map-style Dataset of (image, label), image a uint8 (C, H, W) tensor, a PIL image or a path;
        `overwrite`: move a run found in the output folder aside instead of refusing."""
        self.config, self.on_step = config, on_step
        self.out = Path(config.output)
        resume = Path(resume) if resume is not None else None
        resuming_here = resume is not None and resume.parent.resolve() == self.out.resolve()
        check_config(config, resume)  # everything cheap is checked before any data is read
        check_output(self.out, resuming_here, overwrite, config, own_data=datasets is not None)
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        check_device(config, self.device)
        # One writer per run folder, from here until fit() ends (a second process is refused now, before
        # any data is read); with `overwrite`, a run found there is moved aside.
        self.folder = RunFolder(self.out)
        try:  # a signal from the claim on (the lock file made, not yet held) still leaves no stray folder
            moved = self.folder.claim(overwrite and not resuming_here) if self.dist.is_main else None
            if moved is not None:
                print(f"moved the run that was in {self.out} to {moved}", flush=True)
            self._build(resume, datasets)
        except BaseException:
            self.folder.release()
            raise

    def _build(self, resume: Path | None, datasets) -> None:
        config = self.config
        configure_torch(config, self.device, self.dist)
        seed_all(config.seed)  # identical initial weights on every rank
        start, self.init_record = setup.starting_point(config, resume)  # init_weights (a resume: its checkpoint)
        self.train_loader, self.val_loader = build_loaders(config, self.dist, datasets)
        self.data = self.train_loader.info
        self.skips = SkippedImages(self.dist, self.train_loader, self.val_loader)  # a collective to build
        self.model, self.model_options = build_model(start, self.data, self.dist)
        self.optimizer = build_optimizer(self.model, config)
        self.recipe = Recipe(config, len(self.data.record.classes), self.model, self.dist.rank)  # mixing, EMA
        self.scheduler = build_scheduler(self.optimizer, config, math.ceil(len(self.train_loader) / config.accum_steps))
        self.scaler = torch.amp.GradScaler("cuda") if config.precision is Precision.FP16 else None
        self.guard = NonFiniteGuard(self.device, self.dist)
        self.optimizer_step = OptimizerStep(self.model, self.optimizer, self.scheduler, self.scaler, config.grad_clip)
        self.stop = StopSignals(announce=self.dist.is_main)  # its handlers are installed by fit()
        self.run = RunProgress()
        if resume is not None:
            self.run = resume_from(resume, self, config.model, self.dist.rank)
        else:
            seed_all(config.seed + 1000 * self.dist.rank)  # per-rank runtime randomness (dropout)
        self.train_model = wrap_for_training(self.model, config, self.dist)  # DDP, torch.compile
        self.mark_step = setup.step_marker(config, self.device)  # CUDA graphs: where a step begins

    def weights_metadata(self) -> dict[str, Any]:
        return weights_metadata(self.config, self.model_options, self.data, self.init_record)

    def state_dict(self, gather: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly. `gather` (a collective under DDP) adds every rank's RNG."""
        self.run.count_seconds()
        rngs = gather_rng(self.dist) if gather else gather_rng(None)
        return capture(self, self.run, self.config.to_dict(), self.weights_metadata(), rngs)

    def save(self, name: str = "checkpoint.pt") -> Path:
        state = self.state_dict()  # collective under DDP: every rank takes part
        self.guard.raise_if_non_finite_state(state["model"], self.run.global_step, self.out / name)
        return write_checkpoint(self.out / name, state) if self.dist.is_main else self.out / name

    # ----------------------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train until `epochs`, evaluating and checkpointing as configured; return the run's summary."""
        cfg = self.config
        log = None
        try:
            if self.run.pending_epoch is None and (self.run.epoch >= cfg.epochs or self._reached_max_steps()):
                return self._already_finished()
            if self.dist.is_main:
                cfg.save(self.out / "config.yaml", IN_MEMORY_ONLY if self.data.resizable else FOLDER_ONLY)
                log = RunLog(self.out, cfg.tensorboard, history=self.run.history)
            self.run.start_clock()
            with self.stop:
                while self.run.epoch < cfg.epochs or self.run.pending_epoch is not None:
                    # Stopped before the epoch (max_steps), or inside it at a step boundary.
                    if self.run.pending_epoch is None and (self._reached_max_steps() or not self._train_epoch(log)):
                        break
                    self._close_epoch(log)
                # Still under the handlers: a signal now lets the outputs be written (seconds) first.
                return finish_run(self)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; the last checkpoint on disk stays as it is
            if not (last := self.out / "checkpoint.pt").exists():
                raise  # nothing to resume: status 130 (sknet.cli.main), not 75
            raise TrainingInterrupted(f"stopped without saving; continue with --resume {last}") from None
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
        criterion = self.recipe.criterion()
        metrics = EpochMetrics(self.device, run.epoch_sums if self.dist.is_main else None)
        label = f"epoch {run.epoch + 1}/{cfg.epochs}"
        progress = Progress(total, label, cfg.progress, initial=start, enabled=self.dist.is_main)
        t0 = time.perf_counter()
        stats = partial(metrics.postfix, t0, self.dist.world_size)  # read only when progress is shown
        self.optimizer.zero_grad(set_to_none=True)
        stopped = group_skipped = False
        for i, (x, y, skipped) in enumerate(loader, start=start):
            group, last_micro = accumulation_group(i, total, cfg.accum_steps)
            too_small = self.skips.too_small(skipped, len(y), metrics)  # counted there; the group is not applied
            group_skipped |= too_small
            if not too_small:
                x, t = self.recipe.targets(x, y, run.epoch, i)  # mixed, with soft targets (--mixup, --cutmix)
                self.mark_step()
                loss, logits = forward_backward(model, x, t, criterion, cfg.precision, self.scaler, group, last_micro)
                metrics.add(loss, logits, y)
                self.guard.add(loss)
            if last_micro:
                # Every rank skips a group whose loss was not finite on any rank (one collective, on the
                # device); the weights stay those of the last good step. Acted on at the next host read.
                self.optimizer_step(self.guard.close_group(i + 1), skip_group=group_skipped)
                self.recipe.after_step(self.model)
                run.batch, run.global_step = i + 1, run.global_step + 1
                if cfg.step_log_every and run.global_step % cfg.step_log_every == 0 and not group_skipped:
                    log_step(log, loss, run, self.optimizer.param_groups[0]["lr"], self.dist)
                group_skipped = False
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
        self.skips.name(log, run.epoch + 1, "train", metrics.skipped)
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
            results = self._evaluate(log)
            if results is None:  # interrupted: the checkpoint holds the epoch, evaluated again on resume
                self._save_and_stop(f"during the evaluation of epoch {run.epoch}")
            row.update(results)
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

    def _evaluate(self, log: RunLog | None) -> dict[str, float] | None:  # stop: agreed in evaluate's final sum
        amp, reduce = partial(autocast, self.config.precision, self.device), partial(all_reduce_sum, info=self.dist)
        progress, stop = self.config.progress if self.dist.is_main else "never", lambda: self.stop.requested is not None
        broadcast_buffers(self.model, self.dist)  # rank 0's BatchNorm statistics: those its checkpoint holds
        run, skipped = partial(evaluate, loader=self.val_loader, device=self.device, reduce=reduce, autocast=amp), []
        run = partial(run, progress=progress, should_stop=stop, on_skipped=skipped.extend)
        results = self.recipe.evaluate(self.model, run)  # the weights, and their EMA beside them
        self.skips.name(log, self.run.epoch, "val", skipped)
        return results

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
        """Resuming a finished run or one at its max_steps changes nothing (but outputs a kill cut short)."""
        if self.run.epoch < self.config.epochs:
            return stopped_run(self.out, self.config.max_steps, self.run, announce=self.dist.is_main)
        summary = finished_run(self.out, self.run.epoch, self.config.epochs, announce=self.dist.is_main)
        return summary if summary is not None else finish_run(self)


def train(config: TrainConfig, resume: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run a full training from a config (the Python face of `sknet train`)."""
    trainer = Trainer(config, resume, overwrite=overwrite)
    try:
        return trainer.fit()
    finally:
        cleanup(trainer.dist)
