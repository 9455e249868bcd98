"""Every Triton kernel specialization the operators can launch compiles for the GPUs it is for, no GPU needed.

Triton's interpreter (the parity tests) runs the kernels as Python and compiles none of them; here the
pinned Triton compiles each specialization the launchers ask for (sknet.kernels.specializations: recorded
from the launchers themselves) to a cubin for sm_80, sm_90 and sm_100 with the ptxas it ships, and
cuobjdump reads the cubin's resources. Skips only where Triton is not installed.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed: there are no kernels to compile")
tl = pytest.importorskip("triton.language")

from sknet.kernels import specializations as S  # noqa: E402
from sknet.kernels.launch import Launch  # noqa: E402

KERNELS_DIR = Path(S.__file__).parent


@functools.cache
def compiled(arch: int) -> tuple[S.Compiled, ...]:
    return tuple(S.compile_all(arch))


def test_every_kernel_is_launched_by_an_operator_in_the_table():
    launched = {launch.name for _, launch in S.recorded_launches()}
    assert launched == set(S.entry_kernels()), "a kernel no operator in specializations.OPERATORS launches"


def test_every_launch_goes_through_the_one_launcher():
    """`kernel[grid](...)` anywhere but launch.py would escape the recording, and so the compile check."""
    escaped = []
    for path in KERNELS_DIR.glob("*.py"):
        if path.name == "launch.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):
                escaped.append(f"{path.name}:{node.lineno}")
    assert not escaped, f"kernels launched without sknet.kernels.launch.launch: {escaped}"


def test_the_table_covers_every_path_count_dtype_and_layout():
    cases = {(c.operator, c.paths, c.dtype, c.channels_last) for c, _ in S.recorded_launches()}
    for operator, _, dtypes, max_paths in S.OPERATORS:
        for m in range(1, max_paths + 1):
            for dtype in dtypes:
                assert {(operator, m, dtype, False), (operator, m, dtype, True)} <= cases
    widths = {v for spec in S.specializations(90) for v in spec.signature.values() if v in ("i32", "i64")}
    assert widths == {"i32"}  # every integer argument counts within one sample (< 2³¹), whatever the batch


@pytest.mark.parametrize("arch", S.ARCHS)
def test_every_specialization_compiles_without_spilling(arch):
    results = compiled(arch)
    assert len(results) > 100
    failed = [f"{r.spec}: {r.error}" for r in results if r.error]
    assert not failed, f"{len(failed)} of {len(results)} do not compile for sm_{arch}:\n" + "\n".join(failed[:20])
    spilled = [f"{r.spec}: stack {r.stack} B, local {r.local} B" for r in results if r.stack or r.local]
    assert not spilled, f"{len(spilled)} use local memory on sm_{arch}:\n" + "\n".join(spilled[:20])


def test_the_backward_reduce_kernel_keeps_a_quarter_of_an_sm90_busy():
    reduce = [r for r in compiled(90) if r.spec.name == "_bwd_reduce_kernel"]
    assert reduce
    low = [f"{r.spec}: {r.registers} registers, {r.occupancy():.1%}" for r in reduce if r.occupancy() < 0.25]
    assert not low, "\n".join(low)


@triton.jit
def _rebinds_a_loop_variable(x, n, BLOCK: tl.constexpr):
    """The pattern that broke _pool_kernel: `_` bound to a vector, then re-bound to a mask inside a loop."""
    acc, _ = tl.zeros((BLOCK,), dtype=tl.float32), tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        _ = offs < n
        acc += tl.load(x + offs, mask=_, other=0.0)
    tl.store(x + tl.arange(0, BLOCK), acc)


def test_the_check_reports_a_kernel_that_does_not_compile():
    """The interpreter runs this kernel; the compiler refuses it, and so does the check."""
    case = S.Case("probe", "aligned", 1, torch.float32, False)
    launch = Launch(_rebinds_a_loop_variable, (1,), (torch.zeros(16), 16), {"BLOCK": 16})
    result = S.compile_for(S.specialize(launch, case, S.GPUTarget("cuda", 90, 32)), 90)
    assert result.error is not None and "Loop-carried variable" in result.error


@pytest.mark.parametrize(
    ("arch", "registers", "shared", "warps", "expected"),
    [
        (90, 128, 1024, 8, 0.25),  # registers: 65536 / (128·32·8) = 2 blocks of 8 warps
        (90, 255, 0, 4, 0.125),  # 256 per thread after rounding: 2 blocks of 4 warps
        (90, 32, 0, 4, 1.0),  # the 64-warp limit
        (80, 40, 100_000, 4, 1 / 16),  # shared memory: one block (164 KiB per SM)
    ],
)
def test_theoretical_occupancy(arch, registers, shared, warps, expected):
    assert S.theoretical_occupancy(arch, registers, shared, warps) == pytest.approx(expected)
