"""Memory of one training step with and without ``model.set_grad_checkpointing()`` (per-stage recompute).

Each measurement runs in a fresh process: build the model, run one warm-up step (allocator and oneDNN
caches), then read the peak resident memory (``ru_maxrss``) before and after a second step; the growth is
what the step's activations (plus backward's temporaries) cost on top of a warmed process. Both variants
alternate (A, B, A, B) so the shared machine's state affects them alike. CPU only; on a GPU, compare
``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/grad_checkpointing.py [--model sknet50] [--batch 4] [--size 224] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import resource, sys, time, torch
import sknet
name, batch, size, checkpointing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
torch.manual_seed(0)
model = sknet.create_model(name).train()
model.set_grad_checkpointing(checkpointing)
x = torch.randn(batch, model.in_chans, size, size)

def step():
    model.zero_grad(set_to_none=False)
    model(x).logsumexp(1).sum().backward()

step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
step()
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after, before, seconds)
"""


def measure(model: str, batch: int, size: int, checkpointing: bool) -> tuple[float, float, float]:
    """(peak MiB after the first step, extra peak MiB of the second step, seconds of the second step)."""
    args = [sys.executable, "-c", CHILD, model, str(batch), str(size), "1" if checkpointing else "0"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
    after, before, seconds = int(out[0]) / 1024, int(out[1]) / 1024, float(out[2])  # ru_maxrss is in KiB
    return before, after - before, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sknet50")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for _ in range(args.repeats):
        for checkpointing in (False, True):
            first_peak, growth, seconds = measure(args.model, args.batch, args.size, checkpointing)
            row = {"grad_checkpointing": checkpointing, "peak_mib": round(first_peak), "step_s": round(seconds, 2)}
            rows.append(row)
            print(json.dumps(rows[-1] | {"second_step_extra_mib": round(growth)}), flush=True)
    for checkpointing in (False, True):
        peaks = [r["peak_mib"] for r in rows if r["grad_checkpointing"] == checkpointing]
        print(
            f"{args.model} batch {args.batch} at {args.size}² grad_checkpointing={checkpointing}: "
            f"peak resident memory of a training step {min(peaks)}–{max(peaks)} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
