"""int8 vs fp32 ONNX Runtime vs PyTorch eager, CPU inference, one process, runtimes interleaved.

For each model (random weights, ImageNet shape 3×224×224, 1000 classes): the fp32 ONNX export (BN folded),
its int8 QDQ quantizations with int8 and with uint8 activations (``sknet.deploy.quantize``: per-channel
weights; grouped convolutions and the SK tail float; MinMax on random images: ranges do not change the
speed), the PyTorch model in eval mode under ``torch.inference_mode`` and PyTorch's own x86 int8 of it
(``sknet.deploy.quantize_torch``: FX graph mode quantization, a frozen TorchScript trace).
Every round times every (model, runtime, batch) once, in turn, so that a load change on a shared machine
hits all of them alike; the table gives the median (and best) images/s over the rounds, and the ratios
SK/ResNeXt and int8/fp32.

    python benchmarks/int8.py                                   # all models, batch 1 and 8, 5 rounds
    python benchmarks/int8.py --models sknet50 resnext50 --rounds 3 --json benchmarks/results/int8.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sknet
from sknet.deploy.quantize import quantize_export, session_kwargs
from sknet.deploy.quantize_torch import quantize_torchscript
from sknet.export import export_model

MODELS = (
    "sknet50",
    "resnext50",
    "senet50",
    "shufflenetv2_100",
    "shufflenetv2_100_sk",
    "mobilenetv2_100",
    "mobilenetv2_100_sk",
)
ACTIVATIONS = ("int8", "uint8")  # S8S8 (ONNX Runtime's default) and U8S8 (what x86's VNNI multiplies)
PAIRS = (
    ("sknet50", "resnext50"),
    ("shufflenetv2_100_sk", "shufflenetv2_100"),
    ("mobilenetv2_100_sk", "mobilenetv2_100"),
)


def build(name: str, folder: Path, calibration: np.ndarray, threads: int, activations: tuple[str, ...]) -> dict:
    """{runtime: callable(batch array)} for `name`: "torch", "ort fp32" and "ort int8 (<activations>)" each."""
    import onnxruntime as ort

    model = sknet.create_model(name).eval()
    fp32 = folder / f"{name}.onnx"
    export_model(model, fp32, "onnx", (3, 224, 224))
    files = [("ort fp32", fp32)]
    for act in activations:
        int8 = folder / f"{name}.{act}.onnx"
        quantize_export(model, int8, calibration, "random normal images (speed only)", activations=act)
        files.append((f"ort int8 ({act})", int8))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # ONNX Runtime's pool spins after each run by default, starving the PyTorch run that follows it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # session_kwargs: the int8 files run as quantized (grouped convolutions float), as `sknet eval` runs them.
    sessions = {
        key: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"], **session_kwargs())
        for key, p in files
    }

    def torch_run(x: np.ndarray):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    runs = {"torch": torch_run}
    for key, session in sessions.items():
        runs[key] = lambda x, s=session: s.run(None, {"images": x})
    scripted = folder / f"{name}.int8.pt"  # PyTorch's own x86 int8: sknet export --format torchscript --quantize int8
    quantize_torchscript(model, scripted, calibration, "random normal images (speed only)")
    module = torch.jit.load(str(scripted))

    def torch_int8_run(x: np.ndarray):
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    runs["torch int8"] = torch_int8_run
    return runs


def images_per_second(run, x: np.ndarray, min_seconds: float) -> float:
    run(x)  # warm-up (first-call allocations)
    count, start = 0, time.perf_counter()
    while True:
        run(x)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count * len(x) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timed per measurement (after a warm-up)")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of PyTorch and ONNX Runtime alike (default 1: on a loaded machine, two threads' barriers "
        "wait on descheduled peers and the figures lose all meaning)",
    )
    parser.add_argument("--activations", nargs="+", choices=ACTIVATIONS, default=list(ACTIVATIONS))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    calibration = np.random.default_rng(0).standard_normal((16, 3, 224, 224), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            name: build(name, Path(tmp), calibration, args.threads, tuple(args.activations)) for name in args.models
        }
        inputs = {
            b: np.random.default_rng(1).standard_normal((b, 3, 224, 224), dtype=np.float32) for b in args.batch_sizes
        }
        samples: dict[tuple[str, str, int], list[float]] = {}
        for r in range(args.rounds):
            for batch in args.batch_sizes:
                for name in args.models:
                    for runtime in runs[name]:
                        speed = images_per_second(runs[name][runtime], inputs[batch], args.min_seconds)
                        samples.setdefault((name, runtime, batch), []).append(speed)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    median = {key: statistics.median(v) for key, v in samples.items()}
    runtimes = ["torch", "ort fp32", *(f"ort int8 ({act})" for act in args.activations), "torch int8"]
    print(f"\nimages/s, median (best) of {args.rounds} interleaved rounds; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    names = ["PyTorch eager", "ORT fp32", *(f"ORT int8 ({act})" for act in args.activations), "PyTorch int8"]
    ratios = [f"ORT {act} / fp32" for act in args.activations] + ["PyTorch int8 / eager"]
    print("| model | batch | " + " | ".join(names + ratios) + " | fp32 ORT / eager |")
    print("|---|---|" + "---|" * (len(names) + len(ratios) + 1))
    for name in args.models:
        for b in args.batch_sizes:
            cells = [f"{median[(name, rt, b)]:.1f} ({max(samples[(name, rt, b)]):.1f})" for rt in runtimes]
            fp32 = median[(name, "ort fp32", b)]
            cells += [f"{median[(name, rt, b)] / fp32:.2f}×" for rt in runtimes[2:-1]]
            cells.append(f"{median[(name, 'torch int8', b)] / median[(name, 'torch', b)]:.2f}×")
            cells.append(f"{fp32 / median[(name, 'torch', b)]:.2f}×")
            print(f"| {name} | {b} | " + " | ".join(cells) + " |")
    print("\n| pair | batch | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for sk, base in PAIRS:
        if sk in args.models and base in args.models:
            for b in args.batch_sizes:
                pair = [median[(sk, rt, b)] / median[(base, rt, b)] for rt in runtimes]
                print(f"| {sk} / {base} | {b} | " + " | ".join(f"{v:.2f}" for v in pair) + " |")
    if args.json:
        rows = [{"model": n, "runtime": rt, "batch": b, "images_per_s": v} for (n, rt, b), v in samples.items()]
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
