"""Running Triton kernels on the CPU through Triton's interpreter, in a process of its own."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A kernel with a loop whose bound is a runtime argument, as every reduction kernel here has. Some Triton
# versions' interpreters cannot run it (3.6: "only 0-dimensional arrays can be converted to Python scalars").
PROBE = """
import torch, triton, triton.language as tl

@triton.jit
def total(x, y, n, BLOCK: tl.constexpr):
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(x + offs, mask=offs < n, other=0.0)
    tl.store(y, tl.sum(acc, axis=0))

x, y = torch.arange(10.0), torch.zeros(1)
total[(1,)](x, y, 10, BLOCK=4)
assert y.item() == 45.0
print("probe ok")
"""


def interpreter_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "TRITON_INTERPRET": "1", "SKNET_FORCE_TRITON": "1", "PYTHONPATH": path}


@functools.cache
def interpreter_problem() -> str | None:
    """None when this Triton's interpreter runs runtime-bounded loops on the CPU, else why not."""
    try:
        import triton
    except ImportError:
        return "triton is not installed"
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=interpreter_env())
    if result.returncode == 0 and "probe ok" in result.stdout:
        return None
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return f"Triton {triton.__version__}'s interpreter cannot run the kernels on the CPU ({last})"


def run_interpreted(args: list[str], marker: str) -> None:
    """Run `python args...` with the kernels in Triton's interpreter; skip where the interpreter can't."""
    problem = interpreter_problem()
    if problem is not None:
        pytest.skip(problem)
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=interpreter_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker in result.stdout
