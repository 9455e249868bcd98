"""SKNet-50 on one CUDA GPU, side by side with ResNeXt-50 (ours, timm's) and timm's skresnext50_32x4d.

Run by benchmarks/gpu.sh after the CUDA parity tests. Every configuration is one `sknet.bench.run_bench`
call: its models run interleaved in one process, so each ratio is measured side by side. Prints the
ratio table against the targets of the "Fast SK on GPUs" issue and writes
benchmarks/results/<date>-<gpu>.json. Needs only torch (≥ 2.11) with CUDA; timm is used when present.

    python benchmarks/gpu.py [--quick] [--no-compile] [--budget SECONDS] [--models SK,BASELINE]

``--models sknet_tiny,resnext_tiny`` runs every configuration on another pair (the test suite's CPU smoke
run does, so that it takes seconds, not the better part of an hour on a busy 2-core machine); timm's
skresnext50_32x4d joins only as the peer of the default pair.

"sknet50 plain tail" is the same model with no fast tail in any SK layer (``SKConv2d.tails = ()``: the layer's
own forward): what the fused tail gains, eager and compiled, in the same run ("the fused tail's gain" rows).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import signal
import sys
import time
from pathlib import Path

import torch

from sknet.bench import Candidate, ratios, run_bench, timm_available
from sknet.bn_folding import fuse_for_inference
from sknet.layers import SKConv2d
from sknet.models import create_model

# (name, mode, dtype, batch, compiled, target ratio SKNet-50 / ResNeXt-50, higher is better)
CONFIGS = [  # in order of need: gpu.sh's time budget may stop the last ones
    ("train bf16 eager", "train", "bf16", 128, False),
    ("inference bf16 eager", "inference", "bf16", 256, False),
    ("train fp32 (TF32) eager", "train", "fp32", 64, False),
    ("sknet train bf16", "trainer", "bf16", 128, False),  # the trainer against the bare step (train_vs_step.py)
    ("train bf16 compiled", "train", "bf16", 128, True),
    ("inference fp32 (TF32) eager", "inference", "fp32", 256, False),
    ("train bf16 compiled, plain tail", "train", "bf16", 128, True),  # diagnostic: fused vs plain when compiled
    ("sk tail kernels vs traffic floor", "tail", "bf16", 128, False),  # diagnostic: bounds.py's model, measured
]
TARGETS = {
    "train bf16 eager": 0.80,
    "train bf16 compiled": 0.78,
    "train fp32 (TF32) eager": 0.75,
    "inference bf16 eager": 0.85,
}
TRAINER_TARGET = 0.95  # `sknet train` images/s / the bare training step's, same model, batch, precision, layout
MEMORY_TARGET = 1.15  # activation memory SKNet-50 / ResNeXt-50, bf16 training
TIMM_TARGET = 1.6  # training speed SKNet-50 / timm skresnext50_32x4d, bf16


def plain_tail(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every SK layer on its own forward (no fast tail)."""
    for module in model.modules():
        if isinstance(module, SKConv2d):
            module.tails = ()
    return model


DEFAULT_MODELS = ("sknet50", "resnext50")


def build(name: str) -> torch.nn.Module:
    """A registered model on the benchmark's input: 3 channels, 1000 classes (sknet.bench's random labels)."""
    return create_model(name, in_chans=3, num_classes=1000)


def candidates(name: str, mode: str, compiled: bool, models: tuple[str, str] = DEFAULT_MODELS) -> list[Candidate]:
    sk, base = models
    first = Candidate(sk, lambda: build(sk), "sk")
    plain = Candidate(f"{sk} plain tail", lambda: plain_tail(build(sk)), "sk")
    if name.endswith("plain tail"):
        first = plain
    cands = [first, Candidate(base, lambda: build(base), "baseline")]
    if name in ("train bf16 eager", "inference bf16 eager"):
        cands.append(plain)
    if mode == "inference":
        cands.append(Candidate(f"{sk} fused", lambda: fuse_for_inference(build(sk)), "sk", True))
        cands.append(Candidate(f"{base} fused", lambda: fuse_for_inference(build(base)), "baseline", True))
    # timm's SKNet is the peer of SKNet-50 only; compiling timm's models too would not fit the time budget
    if models == DEFAULT_MODELS and timm_available() and not compiled:
        import timm

        cands.append(Candidate("timm skresnext50_32x4d", lambda: timm.create_model("skresnext50_32x4d"), "peer"))
    return cands


def trainer_vs_step(
    dtype: str, batch: int, quick: bool, device: str = "cuda", size: int = 224, model: str = "sknet50"
) -> dict:
    """`sknet train` (in-memory 224² images, and an ImageFolder of JPEGs) against the bare step."""
    sys.path.insert(0, str(Path(__file__).parent))
    import train_vs_step

    argv = ["--dtype", dtype, "--batch", str(batch), "--device", device, "--size", str(size), "--model", model]
    args = train_vs_step.parser().parse_args(argv)
    if quick:
        args.warmup, args.steps = 3, 5
    return train_vs_step.measure(args)


# The fused tail's kernels (sknet.kernels.sk_tail_triton) under the names of the traffic model's rows.
TAIL_KERNELS = {
    "_stats_kernel": "stats",
    "_pool_kernel": "pool",
    "_select_kernel": "select",
    "_bwd_reduce_kernel": "reduce",
    "_bwd_apply_kernel": "apply",
}


def tail_kernel_seconds(batch: int, device: str, size: int, name: str, steps: int = 3) -> dict[str, float]:
    """Seconds per training step (bf16 autocast, channels_last) that each fused-tail kernel of model `name`
    spends on the GPU, from torch.profiler's device times (empty on a CPU, where the kernels do not run)."""
    from torch.profiler import ProfilerActivity, profile

    if device != "cuda":
        return {}
    model = create_model(name).to(device, memory_format=torch.channels_last).train()
    channels = model.data_config.in_chans
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, channels, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    seconds: dict[str, float] = {}
    for event in prof.key_averages():
        name = TAIL_KERNELS.get(event.key)
        if name is not None:
            total = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
            seconds[name] = seconds.get(name, 0.0) + total * 1e-6 / steps
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per configuration (median)")
    parser.add_argument("--quick", action="store_true", help="small batches and 3 rounds (a smoke run)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile configurations")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu runs the same code as a smoke test")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--models",
        type=_pair,
        default=DEFAULT_MODELS,
        help="the SK model and its baseline, comma-separated (default sknet50,resnext50; the targets are theirs)",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=0,
        help="seconds for all configurations; when they run out, the table of those finished is printed (0: no limit)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True  # "fp32" on a GPU means TF32 matmuls and convolutions
    torch.backends.cudnn.allow_tf32 = True
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.device} (smoke run)"
    report: dict = {
        "date": datetime.date.today().isoformat(),
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "timm": timm_available(),
        "runs": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    path = args.out / f"{report['date']}-{slug}.json"
    index = 2
    while path.exists():  # keep earlier reports of the same day
        path = args.out / f"{report['date']}-{slug}-{index}.json"
        index += 1
    table = []
    if args.budget > 0:
        signal.signal(signal.SIGALRM, _out_of_time)
        signal.alarm(args.budget)
    try:
        run_configs(args, report, path, table)
    except OutOfTime:
        report["stopped"] = f"time budget of {args.budget} s spent; later configurations not run"
        path.write_text(json.dumps(report, indent=2))
        print(f"\ngpu.py: {report['stopped']}", flush=True)
    signal.alarm(0)
    print_table(gpu, table)
    print(f"saved {path}")
    return 0


def _pair(text: str) -> tuple[str, str]:
    names = tuple(name.strip() for name in text.split(","))
    if len(names) != 2 or not all(names):
        raise argparse.ArgumentTypeError(f"expected two model names, SK,BASELINE; got {text!r}")
    return names  # type: ignore[return-value]


class OutOfTime(Exception):
    pass


def _out_of_time(signum, frame) -> None:
    raise OutOfTime


def run_configs(args, report: dict, path: Path, table: list) -> None:
    for name, mode, dtype, batch, compiled in CONFIGS:
        if compiled and args.no_compile:
            continue
        if args.quick:
            batch = min(batch, 16)
        start = time.perf_counter()
        if mode == "tail":
            sys.path.insert(0, str(Path(__file__).parent))
            import bounds

            sk = args.models[0]
            measured = tail_kernel_seconds(batch, args.device, args.size, sk)
            report["runs"].append({"name": name, "batch": batch, "seconds_per_step": measured})
            path.write_text(json.dumps(report, indent=2))
            floor = bounds.print_traffic(sk, batch=batch, size=args.size, measured=measured or None)
            if measured:
                table.append((name, "traffic floor / measured tail time", floor / sum(measured.values()), None))
            continue
        if mode == "trainer":
            found = trainer_vs_step(dtype, batch, args.quick, args.device, args.size, args.models[0])
            report["runs"].append({"name": name, "seconds": round(time.perf_counter() - start, 1), **found})
            path.write_text(json.dumps(report, indent=2))
            for key in ("train_in_memory / step", "train_folder / step"):
                table.append((name, f"{args.models[0]} {key} (speed)", found[key], TRAINER_TARGET))
            print(
                f"{name}: batch {batch}: step {found['step_images_per_s']:.0f} img/s, in memory "
                f"{found['train_in_memory_images_per_s']:.0f}, ImageFolder {found['train_folder_images_per_s']:.0f}",
                flush=True,
            )
            continue
        results = run_bench(
            mode,
            batch,
            args.size,
            dtype,
            args.device,
            3 if args.quick else args.repeats,
            3,
            compiled,
            ("channels_last",),
            candidates(name, mode, compiled, args.models),
        )
        found = ratios(results)
        report["runs"].append(
            {
                "name": name,
                "mode": mode,
                "dtype": dtype,
                "batch": batch,
                "compiled": compiled,
                "memory_format": "channels_last",
                "seconds": round(time.perf_counter() - start, 1),
                "results": [r.to_dict() for r in results],
                "ratios": found,
            }
        )
        path.write_text(json.dumps(report, indent=2))  # after every configuration: a time-out keeps the rest
        speeds = {r.label: r.images_per_s for r in results}
        sk, base = args.models
        found.update(tail_gain(results, sk))
        for key, value in found.items():
            target = None
            if key == f"{sk} / {base} (speed)" or key.startswith(f"{sk} / timm resnext50"):
                target = TARGETS.get(name)
            elif key == f"{sk} / {base} (activation memory)" and name == "train bf16 eager":
                target = -MEMORY_TARGET  # at most
            elif key == f"{sk} / timm skresnext50_32x4d (speed)" and name == "train bf16 eager":
                target = TIMM_TARGET
            table.append((name, key, value, target))
        print(f"{name}: batch {batch}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in speeds.items()), flush=True)


def tail_gain(results, sk: str) -> dict[str, float]:
    """What the fused tail gains: the SK model against itself on its own forward, speed and memory."""
    by_label = {r.label: r for r in results}
    fast, plain = by_label.get(sk), by_label.get(f"{sk} plain tail")
    if fast is None or plain is None:
        return {}
    out = {f"{sk} / {sk} plain tail (the fused tail's gain, speed)": fast.images_per_s / plain.images_per_s}
    if fast.saved_mib and plain.saved_mib:
        out[f"{sk} / {sk} plain tail (activation memory)"] = fast.saved_mib / plain.saved_mib
    return out


def print_table(gpu: str, table: list) -> None:
    print(f"\nSKNet-50 on {gpu} (torch {torch.__version__}, channels_last, ratios from one process each)")
    print(f"  {'configuration':<32} {'ratio':<58} {'value':>8}  target")
    for name, key, value, target in table:
        if target is None:
            verdict = ""
        elif target < 0:
            verdict = f"≤ {-target:.2f}  {'met' if value <= -target else 'NOT met'}"
        else:
            verdict = f"≥ {target:.2f}  {'met' if value >= target else 'NOT met'}"
        print(f"  {name:<32} {key:<58} {value:7.3f}×  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
