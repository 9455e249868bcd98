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
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sk_unit.py"
    spec = importlib.util.spec_from_file_location("sk_unit_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--scale", "8", "--repeats", "1", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert out.count("SK (sknet) / sum:") == 3
    for name in ("grouped 3×3", "3×3 + 3×3 d2, sum", "SK, plain autograd", "SK (sknet)"):
        assert out.count(name) >= 3
