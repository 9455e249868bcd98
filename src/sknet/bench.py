"""Side-by-side speed and memory benchmark: our SKNet-50 against ResNeXt-50 (ours and, when timm is
installed, timm's) and timm's SKNet-50 (`skresnext50_32x4d`), all in one process and thread pool.

Each model runs in its faster memory format (NCHW or channels_last, chosen by a short trial); timings
are interleaved round-robin over the models so machine drift hits all of them alike, and the median of
the rounds is reported. Training memory is the activation memory autograd keeps for backward (distinct
storages saved by the graph, measured with saved-tensor hooks: deterministic on any device) plus, on
CUDA, the real peak allocation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from sknet.bn_folding import fuse_for_inference
from sknet.errors import ConfigError
from sknet.models import create_model

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
MIN_RESOLUTION = 32  # the ImageNet networks' stride: smaller inputs leave their last stage under one pixel


@dataclass(frozen=True)
class Candidate:
    label: str
    build: Callable[[], nn.Module]
    role: str  # "sk" (an SKNet-50) or "baseline" (a ResNeXt-50)
    fused: bool = False


@dataclass
class BenchResult:
    label: str
    role: str
    mode: str  # "inference" or "train"
    memory_format: str
    images_per_s: float
    times_ms: list[float] = field(default_factory=list)
    saved_mib: float | None = None  # training: activation memory kept for backward
    peak_mib: float | None = None  # CUDA only: peak allocated during a step

    def to_dict(self) -> dict:
        return asdict(self)


def timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def default_candidates(with_timm: bool = True, fused: bool = False) -> list[Candidate]:
    cands = [
        Candidate("sknet50", lambda: create_model("sknet50"), "sk"),
        Candidate("resnext50", lambda: create_model("resnext50"), "baseline"),
    ]
    if fused:
        cands += [
            Candidate("sknet50 fused", lambda: fuse_for_inference(create_model("sknet50")), "sk", True),
            Candidate("resnext50 fused", lambda: fuse_for_inference(create_model("resnext50")), "baseline", True),
        ]
    if with_timm and timm_available():
        import timm

        cands += [
            Candidate("timm skresnext50_32x4d", lambda: timm.create_model("skresnext50_32x4d"), "peer"),
            Candidate("timm resnext50_32x4d", lambda: timm.create_model("resnext50_32x4d"), "baseline"),
        ]
    return cands


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Runner:
    """One model prepared for one mode and memory format."""

    def __init__(
        self,
        cand: Candidate,
        mode: str,
        fmt: str,
        batch: int,
        size: int,
        dtype: torch.dtype,
        device: torch.device,
        compile_model: bool,
    ) -> None:
        self.cand, self.mode, self.fmt, self.device = cand, mode, fmt, device
        torch.manual_seed(0)
        model = cand.build().to(device)
        model = model.to(memory_format=FORMATS[fmt])
        self.model = model.train(mode == "train")
        self.step_model = torch.compile(model) if compile_model else model
        self.x = torch.randn(batch, 3, size, size, device=device).to(memory_format=FORMATS[fmt])
        self.y = torch.randint(0, 1000, (batch,), device=device)
        self.dtype = dtype
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if mode == "train" else None

    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def step(self) -> float:
        _sync(self.device)
        start = time.perf_counter()
        if self.mode == "inference":
            with torch.inference_mode(), self._autocast():
                self.step_model(self.x)
        else:
            with self._autocast():
                loss = nn.functional.cross_entropy(self.step_model(self.x).float(), self.y)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - start

    def saved_bytes(self) -> int:
        """Bytes of distinct storages autograd saves for backward in one training forward (of the compiled
        model under --compile: what inductor's graphs keep is what counts)."""
        seen: dict[int, int] = {}
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}

        def pack(t: torch.Tensor):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), self._autocast():
            loss = nn.functional.cross_entropy(self.step_model(self.x).float(), self.y)
        del loss
        return sum(seen.values())

    def peak_bytes(self) -> int | None:
        if self.device.type != "cuda":
            return None
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self.step()
        return torch.cuda.max_memory_allocated(self.device) - base


_FORMAT_TRIALS = 3  # timed steps per memory format when choosing a model's format


def run_bench(
    mode: str = "inference",
    batch: int = 8,
    size: int = 224,
    dtype: str = "fp32",
    device: str = "cpu",
    repeats: int = 7,
    warmup: int = 2,
    compile_model: bool = False,
    formats: tuple[str, ...] = ("nchw", "channels_last"),
    candidates: list[Candidate] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """Benchmark every candidate in `mode` ("inference" or "train"); one result per candidate."""
    if mode not in ("inference", "train"):
        raise ConfigError(f"mode must be 'inference' or 'train', got {mode!r}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in dtypes:
        raise ConfigError(f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown memory format {bad[0]!r}; use nchw and/or channels_last")
    if repeats < 1 or warmup < 0 or batch < 1 or size < MIN_RESOLUTION:
        raise ConfigError(f"need repeats ≥ 1, warmup ≥ 0, batch ≥ 1 and resolution ≥ {MIN_RESOLUTION}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available")
    say = progress or (lambda _msg: None)
    candidates = candidates if candidates is not None else default_candidates(fused=mode == "inference")
    if mode == "train":
        candidates = [c for c in candidates if not c.fused]

    # 1. Choose each model's faster memory format: the formats' trial steps alternate (a burst of noise on
    #    a shared machine then hits both), the fastest of three steps per format decides.
    runners: list[_Runner] = []
    for cand in candidates:
        trials = [_Runner(cand, mode, fmt, batch, size, dtypes[dtype], dev, compile_model) for fmt in formats]
        for runner in trials:
            for _ in range(warmup + 1):
                runner.step()
        best_times = [float("inf")] * len(trials)
        if len(trials) > 1:  # one format: nothing to choose
            for _ in range(_FORMAT_TRIALS):
                for i, runner in enumerate(trials):
                    best_times[i] = min(best_times[i], runner.step())
            for runner, trial in zip(trials, best_times, strict=True):
                say(f"{cand.label} [{mode}, {runner.fmt}]: {1000 * trial:.0f} ms/step")
        runners.append(trials[best_times.index(min(best_times))])
        del trials

    # 2. Interleaved rounds.
    times: list[list[float]] = [[] for _ in runners]
    for r in range(repeats):
        for i, runner in enumerate(runners):
            times[i].append(runner.step())
        say(f"round {r + 1}/{repeats} done")

    results = []
    for runner, ts in zip(runners, times, strict=True):
        med = statistics.median(ts)
        res = BenchResult(
            runner.cand.label, runner.cand.role, mode, runner.fmt, batch / med, [round(1000 * t, 2) for t in ts]
        )
        if mode == "train":
            res.saved_mib = runner.saved_bytes() / 2**20
            peak = runner.peak_bytes()
            res.peak_mib = None if peak is None else peak / 2**20
        results.append(res)
    return results


def ratios(results: list[BenchResult]) -> dict[str, float]:
    """Speed (and memory) of each SK model relative to the fastest baseline and to timm's SKNet."""
    out: dict[str, float] = {}
    baselines = [r for r in results if r.role == "baseline" and "fused" not in r.label]
    peers = [r for r in results if r.role == "peer"]
    fastest = max(baselines, key=lambda r: r.images_per_s) if baselines else None
    for r in results:
        if r.role != "sk":
            continue
        if "fused" in r.label:
            fused_base = [b for b in results if b.role == "baseline" and "fused" in b.label]
            if fused_base:
                out[f"{r.label} / {fused_base[0].label}"] = r.images_per_s / fused_base[0].images_per_s
            continue
        if fastest is not None:
            out[f"{r.label} / {fastest.label} (speed)"] = r.images_per_s / fastest.images_per_s
            if r.saved_mib is not None and fastest.saved_mib:
                ours = next((b for b in baselines if b.label == "resnext50"), fastest)
                out[f"{r.label} / {ours.label} (activation memory)"] = r.saved_mib / ours.saved_mib
        for p in peers:
            out[f"{r.label} / {p.label} (speed)"] = r.images_per_s / p.images_per_s
    if len(baselines) >= 2:
        # Two builds of one network: any distance from 1.000× is this run's noise, read the others with it.
        first, second = baselines[:2]
        out[f"{first.label} / {second.label} (same network: run noise)"] = first.images_per_s / second.images_per_s
    for p in peers:
        if fastest is not None:
            out[f"{p.label} / {fastest.label} (speed)"] = p.images_per_s / fastest.images_per_s
            ours = next((b for b in baselines if b.label == "resnext50"), fastest)
            if p.saved_mib is not None and ours.saved_mib:
                out[f"{p.label} / {ours.label} (activation memory)"] = p.saved_mib / ours.saved_mib
    return out


def format_results(results: list[BenchResult]) -> str:
    lines = []
    for r in results:
        text = f"  {r.label:<26} {r.memory_format:<14} {r.images_per_s:8.1f} img/s"
        if r.saved_mib is not None:
            text += f"   saved activations {r.saved_mib:7.1f} MiB"
        if r.peak_mib is not None:
            text += f"   peak {r.peak_mib:7.1f} MiB"
        lines.append(text)
    lines.append("  ratios:")
    lines += [f"    {k:<62} {v:.3f}×" for k, v in ratios(results).items()]
    return "\n".join(lines)
