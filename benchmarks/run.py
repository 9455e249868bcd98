"""Run `sknet bench` and save the report with the machine's description, for benchmarks/RESULTS.md.

    python benchmarks/run.py                      # both modes, CPU, fp32, 7 rounds
    python benchmarks/run.py --device cuda --repeats 20 -- --dtype bf16

Writes benchmarks/results/<date>-<device>[-<run>].json and prints the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import platform
import sys
from pathlib import Path

import torch

from sknet.cli import main as sknet_main


def machine() -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    with contextlib.suppress(OSError):
        cpu = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        info["cpu"] = cpu[0].split(":", 1)[1].strip() if cpu else platform.processor()
        info["cores"] = len(cpu)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("extra", nargs="*", help="more `sknet bench` flags, after --")
    args = parser.parse_args()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = sknet_main(["bench", "--device", args.device, "--repeats", str(args.repeats), "--json", *args.extra])
    if code:
        return code
    report = json.loads(buffer.getvalue())
    report["machine"] = machine()
    report["date"] = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{report['date']}-{args.device}.json"
    index = 2
    while path.exists():  # keep earlier reports of the same day: RESULTS.md cites them
        path = args.out / f"{report['date']}-{args.device}-{index}.json"
        index += 1
    path.write_text(json.dumps(report, indent=2))
    for run in report["runs"]:
        print(f"{run['mode']} (batch {run['batch']}, {run['resolution']} px, {run['dtype']}):")
        for name, value in run["ratios"].items():
            print(f"  {name:<64} {value:.3f}×")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
