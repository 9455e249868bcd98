import json

from sknet.bench import Candidate, ratios, run_bench
from sknet.cli import main
from sknet.models import create_model


def test_bench_smoke_cli(capsys):
    """A tiny run of the real command (CI must not time anything): both modes, timm when installed."""
    assert main(["bench", "--batch-size", "2", "--resolution", "64", "--repeats", "1", "--warmup", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    modes = {run["mode"]: run for run in report["runs"]}
    assert set(modes) == {"inference", "train"}
    labels = {r["label"] for r in modes["train"]["results"]}
    assert {"sknet50", "resnext50"} <= labels
    assert all(r["saved_mib"] > 0 for r in modes["train"]["results"])
    assert "sknet50 / resnext50 fused" not in modes["inference"]["ratios"]
    assert any(k.startswith("sknet50 fused / resnext50 fused") for k in modes["inference"]["ratios"])


def test_saved_activation_memory_is_measured_and_ratios_computed():
    cands = [
        Candidate("sk", lambda: create_model("sknet26"), "sk"),
        Candidate("plain", lambda: create_model("resnext26"), "baseline"),
    ]
    results = run_bench("train", batch=2, size=64, repeats=1, warmup=0, candidates=cands, formats=("nchw",))
    sk, plain = results
    assert sk.saved_mib > plain.saved_mib > 0
    r = ratios(results)
    assert 1.0 < r["sk / plain (activation memory)"] < 2.5


def test_two_baselines_give_a_noise_control_ratio():
    from sknet.bench import BenchResult

    def result(label, role, speed):
        return BenchResult(label, role, "train", "nchw", speed, [1.0], None, None)

    r = ratios([result("sk", "sk", 3.0), result("a", "baseline", 4.0), result("b", "baseline", 5.0)])
    assert r["a / b (same network: run noise)"] == 0.8
    assert r["sk / b (speed)"] == 0.6


def test_sk_unit_benchmark_smoke(capsys):
    from tests.benchmark_scripts import benchmark_script

    with benchmark_script("sk_unit") as module:
        module.main(["--scale", "8", "--repeats", "1", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert out.count("SK (sknet) / sum:") == 3
    for name in ("grouped 3×3", "3×3 + 3×3 d2, sum", "SK, plain autograd", "SK (sknet)"):
        assert out.count(name) >= 3


def _run_gpu_report(tmp_path, *extra: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    args = ["--quick", "--device", "cpu", "--size", "32", "--no-compile", "--repeats", "1", "--out", str(tmp_path)]
    args += ["--models", "sknet_tiny,resnext_tiny"]  # the same code paths as SKNet-50's, in seconds
    # No timeout: a busy machine is slow, not wrong (CI's own limit catches a hang).
    return subprocess.run(
        [sys.executable, str(root / "benchmarks" / "gpu.py"), *args, *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def test_gpu_report_runs_end_to_end_on_the_cpu(tmp_path):
    """benchmarks/gpu.py (what gpu.sh runs on an H100) as a CPU smoke run on the compact pair: every eager
    configuration, the ratio table with its targets, the JSON report; the fused-tail diagnostic row is there."""
    result = _run_gpu_report(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("SKNet-50 on cpu") :]
    for row in ("train bf16 eager", "train fp32 (TF32) eager", "inference bf16 eager", "sknet train bf16"):
        assert row in table
    assert "sknet_tiny plain tail / resnext_tiny (speed)" in table and "≥ 0.80" in table
    assert "sknet_tiny / resnext_tiny (speed)" in table and "sknet50" not in table
    (report_path,) = tmp_path.glob("*.json")
    report = json.loads(report_path.read_text())
    assert [run["name"] for run in report["runs"]] == [
        "train bf16 eager",
        "inference bf16 eager",
        "train fp32 (TF32) eager",
        "sknet train bf16",
        "inference fp32 (TF32) eager",
        "sk tail kernels vs traffic floor",  # on a CPU: the traffic model alone (no kernels to time)
    ]
    assert report["runs"][-1]["seconds_per_step"] == {}
    assert "MODEL (not a measurement): fused SK tail of sknet_tiny" in result.stdout
    assert "stopped" not in report


def test_gpu_report_stops_at_its_time_budget_and_still_prints_the_table(tmp_path):
    result = _run_gpu_report(tmp_path, "--budget", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "time budget of 1 s spent" in result.stdout
    assert "SKNet-50 on cpu" in result.stdout  # the table (of what finished, possibly nothing)
    (report_path,) = tmp_path.glob("*.json")
    assert "stopped" in json.loads(report_path.read_text())
