"""The paper's claims, measured: does selection beat its baselines and its ablations, beyond seed noise?

Trains every variant of the compact network (`sknet_tiny` and its twins, below) for every seed on every
data set with one recipe (`--recipe`, the main job's, `--epochs` as given), each run a normal `sknet train`
run folder under `--out`; runs the attention scale study (`sknet attention`) on the multi-scale SK variants;
and writes, to `--report`: results.md (mean ± std over seeds, the difference to `--reference` with a 95%
Welch interval, a verdict per claim of the paper, the attention study per seed), runs.csv / runs.json
(every run), attention.csv and accuracy_vs_macs.png (one point per seed per variant).

    python benchmarks/claims.py --report docs/claims          # the study of docs/claims.md
    python benchmarks/claims.py --variants sk resnext --seeds 0 1 --datasets synthetic --epochs 1

Runs go `--jobs` at a time, each with `--threads` CPU threads (OMP_NUM_THREADS too), so that a result does
not depend on the machine's load. The study resumes: a run that finished is never trained again, one that
stopped (killed, Ctrl-C, SIGTERM: each run then saves a checkpoint) continues exactly from its checkpoint
(`sknet train --resume`), one killed before its first checkpoint starts again (`--overwrite`, the old
folder kept beside it). A run folder trained with another recipe is refused before any work.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

import sknet
from sknet.analysis.seeds import Difference, Spread, welch_interval
from sknet.cli.main import OneLineErrorParser
from sknet.data.datasets import dataset_spec
from sknet.errors import SKNetError, one_line
from sknet.models import create_model
from sknet.paper import ABLATION, PAPER
from sknet.profile import count_macs, count_params
from sknet.train.config import RESUME_CHANGEABLE, TrainConfig
from sknet.train.run_folder import holds_run

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    model: str
    options: dict[str, object]
    description: str

    @property
    def has_attention(self) -> bool:
        """An SK network whose paths are selected by attention (what the scale study reads)."""
        return self.model == "sknet_tiny" and self.options.get("aggregation", "sk") == "sk"


# The compact network and its twins: the same stem, stages and head; only the units' middles differ.
VARIANTS: dict[str, Variant] = {
    "sk": Variant("sknet_tiny", {}, "SK: 3×3 + 3×3 dilation 2, selected by attention (sknet_tiny)"),
    "resnext": Variant("resnext_tiny", {}, "ResNeXt twin: the grouped 3×3 alone (resnext_tiny)"),
    "resnext_matched": Variant(
        "resnext_tiny", {"widths": (32, 64, 176)}, "ResNeXt twin matched to SK in parameters and MACs"
    ),
    "senet": Variant("senet_tiny", {}, "SE twin: ResNeXt + SE (r = 16) on each unit's output (senet_tiny)"),
    "sk_sum": Variant("sknet_tiny", {"aggregation": "sum"}, "SK's two paths added, no attention (Table 7)"),
    "sk_5x5": Variant(
        "sknet_tiny", {"branches": "3d1,5d1g16"}, "SK with a true 5×5 second path, its groups doubled (Table 6)"
    ),
    "sk_m3": Variant("sknet_tiny", {"branches": "3,5,7"}, "SK with M = 3: 3×3 of dilation 1, 2 and 3 (Table 7)"),
    "dilated": Variant("sknet_tiny", {"branches": "5", "aggregation": "sum"}, "one path: the 3×3 of dilation 2 alone"),
}
REFERENCE = "sk"
DATASETS = ("fashion_mnist", "fashion_mnist_multiscale_half")
# Where the scale study looks: the multi-scale data's objects centred at scale 1 on the same canvas.
ATTENTION_DATA = {
    "fashion_mnist_multiscale": "fashion_mnist_canvas",
    "fashion_mnist_multiscale_half": "fashion_mnist_canvas_half",
}
SCALES = (1.0, 1.5, 2.0)
SEEDS = (0, 1, 2, 3)
EPOCHS = 2


@dataclass(frozen=True)
class PaperPair:
    """The paper's ImageNet top-1 errors of the two networks a claim compares (None: not recorded)."""

    a: str
    a_err: float | None
    b: str
    b_err: float | None
    note: str = ""


@dataclass(frozen=True)
class Claim:
    """A claim of the paper: `a` `relation` `b`, the relation ">" (a better), "≥" (a not worse) or "≈" (no
    difference)."""

    text: str
    a: str
    b: str
    relation: str
    paper: PaperPair

    def verdict(self, difference: Difference) -> str:
        outcome = difference.verdict
        if self.relation == "≈":
            return (
                "holds (no difference detected)"
                if outcome == "within noise"
                else f"fails ({outcome_text(self, outcome)})"
            )
        if outcome == "a better":
            return "holds"
        if outcome == "b better":
            return f"fails ({outcome_text(self, outcome)})"
        return "within noise" if self.relation == ">" else "within noise (not worse, not shown better)"


def outcome_text(claim: Claim, outcome: str) -> str:
    return f"{claim.a} better" if outcome == "a better" else f"{claim.b} better"


def _err(table: dict, key: str) -> float | None:
    return table[key].top1_err


CLAIMS = (
    Claim(
        "SK beats its ResNeXt twin",
        "sk",
        "resnext",
        ">",
        PaperPair("SKNet-50", _err(PAPER, "sknet50"), "ResNeXt-50", _err(PAPER, "resnext50"), "Table 2"),
    ),
    Claim(
        "SK beats a ResNeXt of the same parameters and MACs",
        "sk",
        "resnext_matched",
        ">",
        PaperPair(
            "SKNet-50",
            _err(PAPER, "sknet50"),
            "ResNeXt-101",
            _err(PAPER, "resnext101"),
            "Table 2: the paper's larger baseline (44.3M, 7.99 GMACs)",
        ),
    ),
    Claim(
        "SK beats its SE twin",
        "sk",
        "senet",
        ">",
        PaperPair("SKNet-50", _err(PAPER, "sknet50"), "SENet-50", _err(PAPER, "senet50"), "Table 2"),
    ),
    Claim(
        "selection beats a plain sum of the same paths",
        "sk",
        "sk_sum",
        ">",
        PaperPair("SK", _err(PAPER, "sknet50"), "sum", _err(ABLATION, "sknet50_k3k5_sum"), "Table 7, K3+K5 [?]"),
    ),
    Claim(
        "a dilated 3×3 is at least as good as a true 5×5",
        "sk",
        "sk_5x5",
        "≥",
        PaperPair(
            "3×3 D=2",
            _err(PAPER, "sknet50"),
            "5×5 G=64",
            None,
            "Table 6 ranks 3×3 D=2 first; its other rows are not recorded in src/sknet/paper.py",
        ),
    ),
    Claim(
        "M = 3 adds little over M = 2",
        "sk_m3",
        "sk",
        "≈",
        PaperPair("K3+K5+K7", _err(ABLATION, "sknet50_k3k5k7"), "K3+K5", _err(PAPER, "sknet50"), "Table 7"),
    ),
    Claim(
        "SK beats its single dilated path",
        "sk",
        "dilated",
        ">",
        PaperPair(
            "SK",
            _err(PAPER, "sknet50"),
            "one path",
            _err(ABLATION, "sknet50_k3"),
            "Table 7's single-path row is K3 (ResNeXt-50); its K5-only row is not recorded in src/sknet/paper.py",
        ),
    ),
)


class StudyError(Exception):
    """A problem with the study's arguments or folders: one line, before any work."""


# ---------------------------------------------------------------------------------------------------------
# Arguments


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog="claims.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"of: {', '.join(VARIANTS)}")
    parser.add_argument("--reference", default=REFERENCE, help="the variant differences are taken to")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="sknet data set names")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="at least 2 distinct seeds")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of every run")
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "fashion_mnist.yaml"), help="sknet train config")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each run")
    parser.add_argument("--out", default="runs/claims", help="folder of the run folders and logs")
    parser.add_argument("--report", help="folder of the tables, CSV/JSON and figure (default: OUT/report)")
    parser.add_argument("--data-dir", help="data folder (default: sknet's)")
    parser.add_argument("--device", help="device of every run (default: sknet's auto)")
    parser.add_argument("--attention-images", type=int, help="images of each attention study (default: all)")
    parser.add_argument(
        "--max-steps", type=int, help="stop each run after this many steps (a partial study; rerun to finish)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from the runs finished so far; train nothing"
    )
    args = parser.parse_args(argv)
    args.report = args.report or str(Path(args.out) / "report")
    return args


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before any work; StudyError names the first problem."""
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise StudyError(f"unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if len(set(args.variants)) != len(args.variants):
        raise StudyError(f"--variants names a variant twice: {' '.join(args.variants)}")
    if args.reference not in args.variants:
        raise StudyError(f"the reference {args.reference!r} is not among --variants {' '.join(args.variants)}")
    if len(args.variants) < 2:
        raise StudyError("give at least 2 variants: the study compares them")
    if len(set(args.seeds)) < 2 or len(set(args.seeds)) != len(args.seeds):
        raise StudyError(f"give at least 2 distinct seeds (an interval needs 2 per variant), got {args.seeds}")
    if min(args.seeds) < 0:
        raise StudyError(f"seeds must be ≥ 0, got {args.seeds}")
    for name in ("jobs", "threads", "epochs"):
        if getattr(args, name) < 1:
            raise StudyError(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    for name in ("max_steps", "attention_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise StudyError(f"--{name.replace('_', '-')} must be ≥ 1, got {value}")
    if len(set(args.datasets)) != len(args.datasets):
        raise StudyError(f"--datasets names a data set twice: {' '.join(args.datasets)}")
    try:
        for name in args.datasets:
            if not dataset_spec(name).in_memory:
                raise StudyError(f"data set {name}: the study trains on in-memory data sets only")
        for run in planned_runs(args):
            run.expected_config()  # the recipe file, and every option, validated
        for name in args.variants:
            variant = VARIANTS[name]
            with torch.device("meta"):
                create_model(variant.model, **variant.options)
    except (SKNetError, OSError) as err:
        raise StudyError(one_line(err)) from None
    for folder in (args.out, args.report):
        check_writable(Path(folder))


def check_writable(folder: Path) -> None:
    probe = folder / ".claims-write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise StudyError(f"cannot write to {folder}: {err.strerror or err}") from None


# ---------------------------------------------------------------------------------------------------------
# Runs and their states


@dataclass
class Run:
    dataset: str
    variant: str
    seed: int
    args: argparse.Namespace

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.variant}/seed{self.seed}"

    @property
    def folder(self) -> Path:
        return Path(self.args.out) / self.dataset / self.variant / f"seed{self.seed}"

    @property
    def log(self) -> Path:
        return Path(self.args.out) / "logs" / f"{self.dataset}-{self.variant}-seed{self.seed}.log"

    def overrides(self) -> dict[str, object]:
        variant = VARIANTS[self.variant]
        return {
            "model": variant.model,
            "model_options": dict(variant.options),
            "dataset": self.dataset,
            "epochs": self.args.epochs,
            "seed": self.seed,
        }

    def expected_config(self) -> dict[str, object]:
        """The run's configuration as `sknet train` saves it (what must not differ between runs)."""
        return TrainConfig.load(self.args.recipe, self.overrides()).to_dict()

    def summary(self) -> dict[str, object] | None:
        path = self.folder / "summary.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None  # cut short by a kill: the run is not finished

    def finished(self) -> bool:
        """Trained for all its epochs and evaluated (a run stopped by --max-steps has fewer epochs)."""
        summary = self.summary()
        return summary is not None and "val_acc1" in summary and summary.get("epochs", 0) >= self.args.epochs

    def state(self) -> str:
        """The run's state: "finished", "resume" (a checkpoint to continue from), "restart" (a run folder
        without one) or "new"."""
        if self.finished():
            return "finished"
        if (self.folder / "checkpoint.pt").exists():
            return "resume"
        return "restart" if holds_run(self.folder) else "new"

    def check_recipe(self) -> None:
        """StudyError when the folder holds a run of another recipe, seed, model or length."""
        saved_path = self.folder / "config.yaml"
        if not saved_path.exists():
            return
        saved = yaml.safe_load(saved_path.read_text()) or {}
        expected = self.expected_config()
        fixed = [k for k in expected if k not in RESUME_CHANGEABLE or k == "epochs"]
        differ = [k for k in fixed if saved.get(k) != expected[k]]
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} ≠ {expected[k]!r}" for k in differ[:3])
            raise StudyError(
                f"{self.folder} holds a run of another configuration ({shown}): use another --out, or move it away"
            )

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "sknet", "train"]
        common = ["--threads", str(self.args.threads), "--progress", "never"]
        common += ["--max-steps", str(self.args.max_steps) if self.args.max_steps else "none"]
        if self.args.data_dir:
            common += ["--data-dir", self.args.data_dir]
        if self.args.device:
            common += ["--device", self.args.device]
        if self.state() == "resume":
            return [*base, "--resume", str(self.folder), *common]
        variant = VARIANTS[self.variant]
        command = [*base, "--config", self.args.recipe, "--model", variant.model, "--dataset", self.dataset]
        command += ["--epochs", str(self.args.epochs), "--seed", str(self.seed), "--output", str(self.folder)]
        for key, value in variant.options.items():
            command += ["--set", f"{key}={value!r}"]
        if self.state() == "restart":
            command.append("--overwrite")  # killed before its first checkpoint: the old folder is kept aside
        return command + common


@dataclass
class Attention:
    """The scale study of one trained SK run on the centred-object data."""

    run: Run

    @property
    def name(self) -> str:
        return f"attention {self.run.name}"

    @property
    def folder(self) -> Path:
        return self.run.folder.parent / f"seed{self.run.seed}-attention"

    @property
    def log(self) -> Path:
        return self.run.log.with_name(self.run.log.stem + "-attention.log")

    def state(self) -> str:
        return "finished" if (self.folder / "attention.json").exists() else "new"

    def command(self) -> list[str]:
        args = self.run.args
        command = [sys.executable, "-m", "sknet", "attention", "--weights", str(self.run.folder / "model.safetensors")]
        command += ["--dataset", ATTENTION_DATA[self.run.dataset], "--output", str(self.folder), "--progress", "never"]
        command += ["--scales", *(str(s) for s in SCALES), "--workers", "0"]
        if args.attention_images:
            command += ["--max-images", str(args.attention_images)]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        if args.device:
            command += ["--device", args.device]
        return command


def planned_runs(args: argparse.Namespace) -> list[Run]:
    """Seed by seed (a study stopped early has whole seeds), then data set, then variant."""
    return [Run(d, v, s, args) for s in args.seeds for d in args.datasets for v in args.variants]


def planned_tasks(args: argparse.Namespace) -> list[Run | Attention]:
    tasks: list[Run | Attention] = []
    for run in planned_runs(args):
        tasks.append(run)
        if run.dataset in ATTENTION_DATA and VARIANTS[run.variant].has_attention:
            tasks.append(Attention(run))
    return tasks


# ---------------------------------------------------------------------------------------------------------
# Running


def fmt_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Scheduler:
    """Runs the tasks `jobs` at a time, in order; an attention study waits for its run."""

    tasks: list[Run | Attention]
    jobs: int
    threads: int
    started: float = field(default_factory=time.perf_counter)
    running: dict[int, tuple[Run | Attention, subprocess.Popen, float, object]] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=lambda: {"Run": [], "Attention": []})
    failed: list[str] = field(default_factory=list)
    stopping: bool = False

    def env(self) -> dict[str, str]:
        src = str(Path(sknet.__file__).resolve().parents[1])  # the children import this very sknet
        path = os.environ.get("PYTHONPATH")
        return {
            **os.environ,
            "PYTHONPATH": src if not path else os.pathsep.join([src, path]),
            "OMP_NUM_THREADS": str(self.threads),
        }

    def stop(self, signum: int, _frame: object) -> None:
        """SIGINT/SIGTERM: every running task gets one SIGTERM (a run saves a checkpoint), none starts."""
        if self.stopping:
            return
        self.stopping = True
        print(f"{signal.Signals(signum).name}: stopping; the running runs save a checkpoint", flush=True)
        for _task, proc, _t0, _log in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def run(self) -> int:
        pending = [t for t in self.tasks if t.state() != "finished"]
        total, done = len(self.tasks), len(self.tasks) - len(pending)
        print(f"{total} tasks: {done} finished already, {len(pending)} to do, {self.jobs} at a time", flush=True)
        failed_runs: set[str] = set()
        begun = done  # the tasks started so far, counting those finished before
        while (pending and not self.stopping) or self.running:
            while not self.stopping and len(self.running) < self.jobs:
                task = next((t for t in pending if self.ready(t, failed_runs)), None)
                if task is None:
                    break
                pending.remove(task)
                if isinstance(task, Attention) and task.run.name in failed_runs:
                    continue
                begun += 1
                self.start(task, begun, total)
            if not self.running and not any(self.ready(t, failed_runs) for t in pending):
                break
            time.sleep(0.2)
            for pid, (task, proc, t0, log) in list(self.running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                del self.running[pid]
                elapsed = time.perf_counter() - t0
                if code == 0 and task.state() == "finished":
                    done += 1
                    self.durations[type(task).__name__].append(elapsed)
                    line = f"[{done}/{total}] done   {task.name}{self.result(task)} in {fmt_seconds(elapsed)}"
                    print(line + self.eta(pending), flush=True)
                elif code == 0:
                    print(
                        f"stopped {task.name} after {fmt_seconds(elapsed)} (--max-steps): rerun to finish it",
                        flush=True,
                    )
                elif code == 75 or self.stopping:
                    print(f"stopped {task.name} after {fmt_seconds(elapsed)}; a rerun continues it", flush=True)
                else:
                    if isinstance(task, Run):
                        failed_runs.add(task.name)
                    self.failed.append(task.name)
                    print(f"FAILED {task.name} (exit {code}): {last_line(task.log)} — see {task.log}", flush=True)
        if self.stopping:
            print("interrupted: rerun the same command to continue (finished runs are kept)", flush=True)
            return 75
        return 1 if self.failed else 0

    def ready(self, task: Run | Attention, failed_runs: set[str]) -> bool:
        if isinstance(task, Attention):
            return task.run.state() == "finished" or task.run.name in failed_runs
        return True

    def start(self, task: Run | Attention, index: int, total: int) -> None:
        state = task.state()
        command = task.command()
        task.log.parent.mkdir(parents=True, exist_ok=True)
        log = task.log.open("a")
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=os.getcwd(), start_new_session=True
        )
        self.running[proc.pid] = (task, proc, time.perf_counter(), log)
        how = {"resume": " (resuming its checkpoint)", "restart": " (again: stopped before its first checkpoint)"}
        print(f"[{index}/{total}] start  {task.name}{how.get(state, '')}", flush=True)

    def result(self, task: Run | Attention) -> str:
        if isinstance(task, Run):
            return f": top-1 {100 * float(task.summary()['val_acc1']):.2f}%"
        return ""

    def eta(self, pending: list[Run | Attention]) -> str:
        """Elapsed, and the time left at this session's mean duration of each kind of task, `jobs` at a time
        ("≥" while a kind still to do has no finished example yet)."""
        left, unknown = 0.0, False
        for kind, durations in self.durations.items():
            tasks = [*pending, *(t for t, *_ in self.running.values())]
            count = sum(type(t).__name__ == kind for t in tasks)
            if count and not durations:
                unknown = True
            elif count:
                left += count * sum(durations) / len(durations)
        elapsed = fmt_seconds(time.perf_counter() - self.started)
        return f"; elapsed {elapsed}, ETA {'≥ ' if unknown else ''}{fmt_seconds(left / self.jobs)}"


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "empty log"


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass
class RunResult:
    dataset: str
    variant: str
    seed: int
    model: str
    options: str
    params: int
    macs: int
    input_size: int
    epochs: int
    top1: float  # %
    loss: float
    train_seconds: float
    folder: str


def collect(args: argparse.Namespace) -> list[RunResult]:
    """Every finished run, with the parameters and MACs of its trained model at its data's input size."""
    counts: dict[tuple[str, str], tuple[int, int, int]] = {}
    results = []
    for run in planned_runs(args):
        if not run.finished():
            continue
        summary = run.summary()
        key = (run.dataset, run.variant)
        if key not in counts:
            model = create_model(weights=run.folder / "model.safetensors")
            record = model.data_config
            shape = (1, record.in_chans, record.input_size, record.input_size)
            counts[key] = (count_params(model), count_macs(model, shape), record.input_size)
        params, macs, size = counts[key]
        variant = VARIANTS[run.variant]
        results.append(
            RunResult(
                run.dataset,
                run.variant,
                run.seed,
                variant.model,
                ", ".join(f"{k}={v}" for k, v in variant.options.items()),
                params,
                macs,
                size,
                int(summary["epochs"]),
                100 * float(summary["val_acc1"]),
                float(summary["val_loss"]),
                float(summary["train_seconds"]),
                str(run.folder),
            )
        )
    return results


def accuracies(results: list[RunResult], dataset: str, variant: str) -> list[float]:
    return [r.top1 for r in results if r.dataset == dataset and r.variant == variant]


def variant_rows(results: list[RunResult], args: argparse.Namespace, dataset: str) -> list[dict[str, object]]:
    rows = []
    reference = accuracies(results, dataset, args.reference)
    for name in args.variants:
        values = accuracies(results, dataset, name)
        if not values:
            continue
        first = next(r for r in results if r.dataset == dataset and r.variant == name)
        spread = Spread.of(values)
        row: dict[str, object] = {
            "variant": name,
            "model": first.model,
            "options": first.options,
            "params": first.params,
            "macs": first.macs,
            "seeds": spread.n,
            "mean": spread.mean,
            "std": spread.std,
        }
        if name != args.reference and len(values) >= 2 and len(reference) >= 2:
            row["vs_reference"] = welch_interval(values, reference).to_dict()
        rows.append(row)
    return rows


def claim_rows(results: list[RunResult], args: argparse.Namespace, dataset: str) -> list[dict[str, object]]:
    rows = []
    for claim in CLAIMS:
        a, b = accuracies(results, dataset, claim.a), accuracies(results, dataset, claim.b)
        if len(a) < 2 or len(b) < 2:
            continue
        difference = welch_interval(a, b)
        paper = claim.paper
        gain = None if paper.a_err is None or paper.b_err is None else paper.b_err - paper.a_err
        rows.append(
            {
                "claim": claim.text,
                "a": claim.a,
                "b": claim.b,
                "relation": claim.relation,
                "difference": difference.to_dict(),
                "verdict": claim.verdict(difference),
                "paper": {
                    "a": paper.a,
                    "a_err": paper.a_err,
                    "b": paper.b,
                    "b_err": paper.b_err,
                    "gain": gain,
                    "note": paper.note,
                },
            }
        )
    return rows


def attention_rows(args: argparse.Namespace) -> list[dict[str, object]]:
    """Per data set, SK variant, seed and unit: the mean attention difference at each scale, whether it grows."""
    rows = []
    for task in planned_tasks(args):
        if not isinstance(task, Attention) or task.state() != "finished":
            continue
        study = json.loads((task.folder / "attention.json").read_text())
        means = {(r["unit"], r["scale"]): r["mean"] for r in study["summary"]}
        units = study["units"]
        changes = {u: study["ordering"][u]["change"] for u in units}
        for unit in units:
            order = study["ordering"][unit]
            rows.append(
                {
                    "dataset": task.run.dataset,
                    "variant": task.run.variant,
                    "seed": task.run.seed,
                    "unit": unit,
                    **{f"mean@{s:g}": means[(unit, s)] for s in study["scales"]},
                    "increasing": order["increasing"],
                    "change": order["change"],
                    "classes_increasing": f"{order['classes_increasing']}/{order['classes']}",
                    "images_increasing": order["images_increasing"],
                    "last_unit_changes_least": unit == units[-1] and changes[unit] == min(changes.values()),
                }
            )
    return rows


def shown_path(path: str) -> str:
    """`path` relative to the repository when it lies inside it (reports name no machine's folders)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else path


def interval_text(d: dict[str, object]) -> str:
    return f"{d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def markdown(
    args: argparse.Namespace, results: list[RunResult], attention: list[dict[str, object]], wall: float
) -> str:
    lines = [
        "# The paper's claims, measured (benchmarks/claims.py)",
        "",
        f"Recipe `{shown_path(args.recipe)}`, "
        f"{args.epochs} epoch(s), seeds {', '.join(map(str, args.seeds))}, {args.threads} thread(s) per run, "
        f"{args.jobs} runs at a time. Top-1 accuracy (%) on each test split, mean ± standard deviation over "
        f"seeds; Δ = variant − {args.reference} with its 95% Welch interval. Study wall time (all sessions): "
        f"{fmt_seconds(wall)}.",
    ]
    for dataset in args.datasets:
        rows = variant_rows(results, args, dataset)
        if not rows:
            continue
        lines += ["", f"## {dataset}", ""]
        lines += [f"| variant | model, options | params | MACs | seeds | top-1 % | Δ vs {args.reference} [95%] |"]
        lines += ["|---|---|---:|---:|---:|---:|---:|"]
        for row in rows:
            model = f"{row['model']}" + (f" ({row['options']})" if row["options"] else "")
            vs = interval_text(row["vs_reference"]) if "vs_reference" in row else "–"
            std = "–" if math.isnan(row["std"]) else f"{row['std']:.2f}"
            lines.append(
                f"| {row['variant']} | {model} | {row['params']:,} | {row['macs'] / 1e6:.3f}M | {row['seeds']} | "
                f"{row['mean']:.2f} ± {std} | {vs} |"
            )
        claims = claim_rows(results, args, dataset)
        if claims:
            lines += ["", "| claim | Δ (a − b) [95%] | here | paper: top-1 err a vs b (gain) |", "|---|---:|---|---|"]
            for row in claims:
                p = row["paper"]
                a_err = "–" if p["a_err"] is None else f"{p['a_err']:.2f}"
                b_err = "–" if p["b_err"] is None else f"{p['b_err']:.2f}"
                gain = "" if p["gain"] is None else f" ({p['gain']:+.2f})"
                paper = f"{p['a']} {a_err} vs {p['b']} {b_err}{gain}; {p['note']}"
                lines.append(
                    f"| {row['claim']} ({row['a']} {row['relation']} {row['b']}) | "
                    f"{interval_text(row['difference'])} | {row['verdict']} | {paper} |"
                )
        rows_att = [r for r in attention if r["dataset"] == dataset]
        if rows_att:
            scales = [k for k in rows_att[0] if k.startswith("mean@")]
            lines += ["", "Mean attention difference (last path − first) on centred objects enlarged 1×, 1.5×, 2×:", ""]
            lines += [
                "| variant | seed | unit | " + " | ".join(s[5:] + "×" for s in scales) + " | grows | classes | images |"
            ]
            lines += ["|---|---:|---|" + "---:|" * len(scales) + "---|---:|---:|"]
            for r in rows_att:
                cells = " | ".join(f"{r[s]:+.4f}" for s in scales)
                grows = "yes" if r["increasing"] else "no"
                lines.append(
                    f"| {r['variant']} | {r['seed']} | {r['unit']} | {cells} | {grows} | {r['classes_increasing']} | "
                    f"{100 * r['images_increasing']:.1f}% |"
                )
    return "\n".join(lines) + "\n"


def plot(results: list[RunResult], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in args.datasets if any(r.dataset == d for r in results)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.2 * len(datasets), 4.6), squeeze=False)
    markers = "os^vDP*Xph"
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for i, name in enumerate(args.variants):
            runs = [r for r in results if r.dataset == dataset and r.variant == name]
            if not runs:
                continue
            x = runs[0].macs / 1e6
            color = f"C{i % 10}"
            label = f"{name} ({runs[0].params / 1e3:.0f}k)"
            marker = markers[i % len(markers)]
            ax.scatter(
                [x] * len(runs), [r.top1 for r in runs], marker=marker, color=color, alpha=0.55, s=28, label=label
            )
            mean = sum(r.top1 for r in runs) / len(runs)
            ax.plot([x - 0.02, x + 0.02], [mean, mean], color=color, linewidth=2)
        ax.set_title(f"{dataset}: one point per seed, bar = mean", fontsize=10)
        ax.set_xlabel("MACs per image (millions)")
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"compact SKNet and its twins, {args.epochs} epoch(s) each", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(args: argparse.Namespace, wall: float) -> list[RunResult]:
    results = collect(args)
    report = Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    attention = attention_rows(args)
    with (report / "runs.csv").open("w", newline="") as f:
        fields = list(RunResult.__dataclass_fields__)
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(r.__dict__ for r in results)
    if attention:
        with (report / "attention.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(attention[0]))
            writer.writeheader()
            writer.writerows(attention)
    settings = {**vars(args), "recipe": shown_path(args.recipe)}
    document = {
        "settings": settings,
        "wall_seconds": wall,
        "variants": {
            name: {**VARIANTS[name].__dict__, "options": dict(VARIANTS[name].options)} for name in args.variants
        },
        "runs": [r.__dict__ for r in results],
        "datasets": {
            d: {"variants": variant_rows(results, args, d), "claims": claim_rows(results, args, d)}
            for d in args.datasets
        },
        "attention": attention,
    }
    (report / "runs.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    text = markdown(args, results, attention, wall)
    (report / "results.md").write_text(text)
    if results:
        plot(results, args, report / "accuracy_vs_macs.png")
    print(text)
    written = ["results.md", "runs.csv", "runs.json"] + ["attention.csv"] * bool(attention)
    print(f"wrote {', '.join(written + ['accuracy_vs_macs.png'] * bool(results))} to {report}", flush=True)
    return results


def study_wall(out: Path, session: float | None = None) -> float:
    """The study's wall time over all its sessions (OUT/sessions.json), adding `session` seconds."""
    path = out / "sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    if session is not None:
        sessions.append({"ended": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(session, 1)})
        path.write_text(json.dumps(sessions, indent=1) + "\n")
    return sum(s["seconds"] for s in sessions)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
        tasks = planned_tasks(args)
        for run in planned_runs(args):
            run.check_recipe()
    except StudyError as err:
        print(f"claims.py: error: {err}", file=sys.stderr)
        return 2
    if args.report_only:
        write_report(args, study_wall(Path(args.out)))
        return 0
    started = time.perf_counter()
    scheduler = Scheduler(tasks, args.jobs, args.threads)
    previous = {sig: signal.signal(sig, scheduler.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = scheduler.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        wall = study_wall(Path(args.out), time.perf_counter() - started)
    if status == 75:
        return status
    write_report(args, wall)
    if scheduler.failed:
        print(f"{len(scheduler.failed)} task(s) failed: {', '.join(scheduler.failed)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
