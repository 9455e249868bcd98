"""Every specialization of sknet's Triton kernels that the operators can launch, compiled for real GPUs.

Triton compiles a kernel once per *specialization*: the dtypes of its pointer arguments, the width of its
integer arguments (i32; i64 from 2³¹ on, which no launcher passes), whether an integer is 1 (then a
constant) or a multiple of 16 (then vectorised accesses), and its constexprs (M, tile shape, accumulation
dtype). Triton's interpreter, which runs the kernels on CPUs in the tests, compiles none of them. This
module finds them all and compiles them for real targets with the ptxas that ships with Triton, on a machine
without a GPU:

1. The launchers themselves say what they launch: every operator runs under :func:`launch.recording` over
   :data:`PROBLEMS` × M = 1..3 × every map dtype it accepts × NCHW and channels_last (tile shapes, grids and
   integer arguments are computed by the launcher's own code; nothing here restates them).
2. Triton's own binder turns each recorded launch into the signature, constexprs and attributes that a CUDA
   launch of the same arguments would compile (:func:`specialize`).
3. :func:`compile_for` compiles one for a :class:`~triton.backends.compiler.GPUTarget` and reads registers,
   shared and local (spilled) memory from the cubin with ``cuobjdump -res-usage`` (also shipped with Triton).

Used by ``tests/kernels/test_compile.py`` (CI) and ``benchmarks/kernel_resources.py`` (the table in
``benchmarks/RESULTS.md``). Raises ImportError where Triton is not installed.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget

from sknet.kernels import sk_tail_triton
from sknet.kernels.launch import Launch, recording

KERNEL_MODULES = (sk_tail_triton,)
ARCHS = (80, 90, 100)  # A100, H100/H200, B200 (compute capabilities)


@dataclass(frozen=True)
class Problem:
    """One SK layer's map shape (N, C, H, W) to launch the operators on."""

    name: str
    n: int
    c: int
    h: int
    w: int


# Sizes that are multiples of 16 (vectorised loads and stores), sizes that are not, and 1×1 maps (H·W = 1
# and a stride of 1 become constants). No integer argument counts more than one sample (below 2³¹: the
# operators refuse larger samples; a sample's base is computed in 64 bits inside the kernels), so a larger
# batch launches the same specializations.
PROBLEMS = (
    Problem("aligned", 2, 64, 8, 8),
    Problem("ragged", 3, 40, 7, 7),
    Problem("1x1", 2, 48, 1, 1),
)


def _maps(problem: Problem, m: int, dtype: torch.dtype, channels_last: bool) -> list[torch.Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (problem.n, problem.c, problem.h, problem.w)
    return [torch.empty(shape, dtype=dtype, memory_format=fmt) for _ in range(m)]


def _tail_inputs(maps: list[torch.Tensor]):
    n, c = maps[0].shape[:2]
    acc = sk_tail_triton.acc_dtype(maps[0].dtype)
    device = maps[0].device
    chan = torch.empty(sk_tail_triton.MAX_PATHS, sk_tail_triton.ROWS, c, dtype=acc, device=device)
    attention = torch.empty(n, len(maps), c, device=device)
    return chan, attention, torch.empty_like(maps[0]), torch.empty(n, c, device=device)


def _tail_operators(maps: list[torch.Tensor]) -> None:
    chan, attention, grad_v, k = _tail_inputs(maps)
    sk_tail_triton.moments(maps)
    sk_tail_triton.pool(maps, chan)
    sk_tail_triton.select(maps, chan, attention)
    sk_tail_triton.backward_sums(grad_v, maps, chan)
    sk_tail_triton.backward_apply(grad_v, maps, chan, attention, k)


# Every operator family, the dtypes of maps it accepts and its maximum number of paths (the launchers' own).
OPERATORS: tuple[tuple[str, Callable[[list[torch.Tensor]], None], tuple[torch.dtype, ...], int], ...] = (
    ("sk_tail", _tail_operators, sk_tail_triton.MAP_DTYPES, sk_tail_triton.MAX_PATHS),
)


@dataclass(frozen=True)
class Case:
    """Where a launch came from: operator family, problem, number of paths, map dtype, layout."""

    operator: str
    problem: str
    paths: int
    dtype: torch.dtype
    channels_last: bool

    def __str__(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{self.operator} M={self.paths} {str(self.dtype).removeprefix('torch.')} {layout} {self.problem}"


def recorded_launches() -> Iterator[tuple[Case, Launch]]:
    """Every launch the operators make over the problem table (nothing runs; see module docstring)."""
    for operator, run, dtypes, max_paths in OPERATORS:
        for problem in PROBLEMS:
            for m in range(1, max_paths + 1):
                for dtype in dtypes:
                    for channels_last in (False, True):
                        case = Case(operator, problem.name, m, dtype, channels_last)
                        with recording() as launches:
                            run(_maps(problem, m, dtype, channels_last))
                        for launch in launches:
                            yield case, launch


def entry_kernels() -> dict[str, object]:
    """The @triton.jit functions of sknet.kernels that are launched, not called by another kernel."""
    jitted = {
        name: obj
        for module in KERNEL_MODULES
        for name, obj in vars(module).items()
        if isinstance(obj, triton.runtime.jit.JITFunction)
    }
    called = {
        name
        for name, fn in jitted.items()
        for other in jitted.values()
        if other is not fn and re.search(rf"\b{name}\(", other.src)
    }
    return {name: fn for name, fn in jitted.items() if name not in called}


@dataclass(frozen=True)
class Specialization:
    """What Triton compiles for a launch: signature (argument → type), constexprs, attributes, options."""

    kernel: object
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    case: Case

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def key(self) -> tuple:
        def frozen(d: dict) -> tuple:
            return tuple(sorted((str(k), repr(v)) for k, v in d.items()))

        return (
            self.name,
            frozen(self.signature),
            frozen(self.constexprs),
            frozen(self.attrs),
            frozen(self.options),  # warps and the register cap compile differently too
        )

    def __str__(self) -> str:
        ints = ",".join(f"{k}:{v}" for k, v in self.signature.items() if v in ("i32", "i64"))
        return f"{self.name} [{self.case}] ({ints}, warps={self.options.get('num_warps')})"


def _binder(kernel, backend):
    from triton.runtime.jit import create_function_from_signature

    return create_function_from_signature(kernel.signature, kernel.params, backend)


def specialize(launch: Launch, case: Case, target: GPUTarget) -> Specialization:
    """The specialization a CUDA launch with these arguments compiles, by Triton's own binder."""
    from triton.compiler import make_backend

    backend = make_backend(target)
    bound, specialization, options = _binder(launch.kernel, backend)(*launch.args, **launch.options)
    options, signature, constexprs, attrs = launch.kernel._pack_args(
        backend, dict(launch.options), bound, specialization, options
    )
    return Specialization(launch.kernel, signature, constexprs, attrs, dict(options.__dict__), case)


def specializations(arch: int) -> list[Specialization]:
    """Every distinct specialization the operators can launch, for compute capability `arch`."""
    target = GPUTarget("cuda", arch, 32)
    found: dict[tuple, Specialization] = {}
    for case, launch in recorded_launches():
        spec = specialize(launch, case, target)
        found.setdefault(spec.key(), spec)
    return list(found.values())


@functools.cache
def _specializations_cached(arch: int) -> list[Specialization]:
    return specializations(arch)


def _compile_one(arch: int, index: int) -> tuple:
    """In a worker: compile specialization `index`; the outcome without the kernel object (not picklable)."""
    c = compile_for(_specializations_cached(arch)[index], arch)
    return c.error, c.registers, c.shared, c.local, c.stack


def compile_all(arch: int, workers: int | None = None) -> list[Compiled]:
    """Compile every specialization for sm_`arch`, in `workers` processes (default: the CPUs available)."""
    specs = _specializations_cached(arch)
    workers = workers or len(os.sched_getaffinity(0))
    if workers <= 1:
        return [compile_for(spec, arch) for spec in specs]
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's and MLIR's threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        outcomes = list(pool.map(_compile_one, [arch] * len(specs), range(len(specs)), chunksize=8))
    return [Compiled(spec, arch, *outcome) for spec, outcome in zip(specs, outcomes, strict=True)]


@dataclass
class Compiled:
    """The outcome of compiling one specialization: error (None when it compiled) and the cubin's resources
    per thread (registers) and per block (shared and local memory, bytes)."""

    spec: Specialization
    arch: int
    error: str | None = None
    registers: int = 0
    shared: int = 0
    local: int = 0
    stack: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_warps(self) -> int:
        return int(self.spec.options.get("num_warps", 4))

    def occupancy(self) -> float:
        return theoretical_occupancy(self.arch, self.registers, self.shared, self.num_warps)


def cuobjdump() -> Path:
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, SHARED, LOCAL, STACK of the (single) kernel in `cubin`, from ``cuobjdump -res-usage``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        out = subprocess.run([str(cuobjdump()), "-res-usage", str(path)], capture_output=True, text=True, check=True)
    usage = dict(re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", out.stdout))
    return {k: int(v) for k, v in usage.items()}


def compile_for(spec: Specialization, arch: int) -> Compiled:
    """Compile `spec` for sm_`arch` (ptx → cubin with ptxas), no GPU needed."""
    from triton.compiler import ASTSource

    source = ASTSource(fn=spec.kernel, signature=spec.signature, constexprs=spec.constexprs, attrs=spec.attrs)
    try:
        kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=spec.options)
    except Exception as error:  # the compiler's own message is the finding
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        return Compiled(spec, arch, error=f"{type(error).__name__}: {lines[-1] if lines else ''}")
    usage = resource_usage(kernel.asm["cubin"])
    return Compiled(
        spec, arch, registers=usage["REG"], shared=usage["SHARED"], local=usage["LOCAL"], stack=usage["STACK"]
    )


# Per-SM limits for theoretical occupancy (NVIDIA CUDA C++ Programming Guide, "Technical Specifications per
# Compute Capability"; the CUDA Occupancy Calculator's allocation rules): registers per SM, warps per SM,
# blocks per SM, shared memory per SM (bytes), shared memory the runtime reserves per block.
SM_LIMITS = {
    80: {"registers": 65536, "warps": 64, "blocks": 32, "shared": 167936, "reserved": 1024},
    90: {"registers": 65536, "warps": 64, "blocks": 32, "shared": 233472, "reserved": 1024},
    100: {"registers": 65536, "warps": 64, "blocks": 32, "shared": 233472, "reserved": 1024},
}
REGISTER_GRANULE = 256  # registers are allocated per warp in units of 256 (8 per thread)


def theoretical_occupancy(arch: int, registers: int, shared: int, num_warps: int) -> float:
    """Resident warps per SM ÷ the SM's maximum, for blocks of `num_warps` warps using `registers` per thread
    and `shared` bytes of shared memory per block."""
    limits = SM_LIMITS[arch]
    per_warp = -(-max(registers, 1) * 32 // REGISTER_GRANULE) * REGISTER_GRANULE
    by_registers = (limits["registers"] // per_warp) // num_warps
    by_shared = limits["shared"] // (shared + limits["reserved"])
    by_warps = limits["warps"] // num_warps
    blocks = min(by_registers, by_shared, by_warps, limits["blocks"])
    return blocks * num_warps / limits["warps"]
