"""Activation memory of a training step with and without ``model.set_grad_checkpointing()``.

Each measurement runs in a fresh process: build the model, run one warm-up step, then read glibc's count
of allocated bytes (``mallinfo2``: what torch's CPU allocator holds, live, not the resident size the
allocator keeps cached) before and after a training forward: the difference is what the forward keeps for
backward (the activations). Also the peak resident memory of the process (``ru_maxrss``) and the step's
time. Both variants alternate (A, B, A, B) so that the shared machine affects them alike; timings are
noisy there. CPU with glibc only; on a GPU, compare ``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/grad_checkpointing.py [--model sknet50] [--batch 4] [--size 224] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import ctypes, gc, resource, sys, time, torch
import sknet

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def allocated():
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd  # bytes in use: small-block arenas + mmapped large blocks

name, batch, size, checkpointing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
torch.manual_seed(0)
model = sknet.create_model(name).train()
model.set_grad_checkpointing(checkpointing)
x = torch.randn(batch, model.in_chans, size, size)
model(x).logsumexp(1).sum().backward()  # warm-up: gradients allocated, oneDNN primitives created
gc.collect()
start = time.perf_counter()
before = allocated()
loss = model(x).logsumexp(1).sum()
held = allocated() - before
loss.backward()
seconds = time.perf_counter() - start
print(held, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, seconds)
"""


def measure(model: str, batch: int, size: int, checkpointing: bool) -> dict[str, object]:
    args = [sys.executable, "-c", CHILD, model, str(batch), str(size), "1" if checkpointing else "0"]
    held, peak_kib, seconds = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
    return {
        "grad_checkpointing": checkpointing,
        "held_for_backward_mib": round(int(held) / 2**20, 1),
        "peak_rss_mib": round(int(peak_kib) / 1024),
        "step_s": round(float(seconds), 2),
    }


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
            rows.append(measure(args.model, args.batch, args.size, checkpointing))
            print(json.dumps(rows[-1]), flush=True)
    for checkpointing in (False, True):
        held = sorted(r["held_for_backward_mib"] for r in rows if r["grad_checkpointing"] is checkpointing)
        print(
            f"{args.model} batch {args.batch} at {args.size}², grad_checkpointing={checkpointing}: "
            f"activations held for backward {held[0]}–{held[-1]} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
