"""Registers, shared memory, spills and theoretical occupancy of every Triton kernel, compiled without a GPU.

Compiles every specialization the operators can launch (sknet.kernels.specializations) for each target
with the pinned Triton's ptxas and reads the cubins with cuobjdump; prints one Markdown table per target
(what benchmarks/RESULTS.md records):

    python benchmarks/kernel_resources.py              # sm_90 (H100/H200)
    python benchmarks/kernel_resources.py --arch 80 90 100

"SKNet-50 case" is the specialization SKNet-50 trains with (bf16 maps, channels_last, M = 2, sizes that
are multiples of 16); "all" is the range over every specialization (M = 1..3, fp32/bf16/fp16/fp64 maps,
both layouts, aligned/ragged/1×1 maps, 32- and 64-bit integers).
"""

from __future__ import annotations

import argparse
import time

import torch

from sknet.kernels import specializations as S


def _is_sknet50_case(result: S.Compiled) -> bool:
    case = result.spec.case
    return case.paths == 2 and case.dtype == torch.bfloat16 and case.channels_last and case.problem == "aligned"


def table(arch: int, results: list[S.Compiled]) -> list[str]:
    lines = [
        f"sm_{arch}: {len(results)} specializations, {sum(1 for r in results if r.error)} fail to compile, "
        f"{sum(1 for r in results if r.stack or r.local)} use local memory (spill)",
        "",
        "| kernel | SKNet-50 case: registers / shared B / warps / occupancy | all: registers | all: occupancy "
        "| spills |",
        "|---|---|---|---|---|",
    ]
    for name in sorted({r.spec.name for r in results}):
        mine = [r for r in results if r.spec.name == name and not r.error]
        if not mine:
            lines.append(f"| `{name}` | does not compile | | | |")
            continue
        main = next((r for r in mine if _is_sknet50_case(r)), None)
        case = f"{main.registers} / {main.shared} / {main.num_warps} / {main.occupancy():.1%}" if main else "–"
        regs = f"{min(r.registers for r in mine)}–{max(r.registers for r in mine)}"
        occupancy = f"{min(r.occupancy() for r in mine):.1%}–{max(r.occupancy() for r in mine):.1%}"
        spills = sum(1 for r in mine if r.stack or r.local)
        lines.append(f"| `{name}` | {case} | {regs} | {occupancy} | {spills} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", default=[90], choices=S.ARCHS)
    parser.add_argument("--workers", type=int, default=None, help="compiler processes (default: the CPUs)")
    args = parser.parse_args()
    for arch in args.arch:
        start = time.perf_counter()
        results = S.compile_all(arch, args.workers)
        print("\n".join(table(arch, results)))
        print(f"(compiled in {time.perf_counter() - start:.0f} s)\n")
        for r in results:
            if r.error:
                print(f"  does not compile: {r.spec}: {r.error}")


if __name__ == "__main__":
    main()
