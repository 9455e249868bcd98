"""benchmarks/claims.py end to end on a tiny budget: 2 variants × 2 seeds × 2 epochs of 2 steps, synthetic data.

It checks the table against the runs' own summaries and a Welch interval computed here by hand, a partial
study (stopped by --max-steps) that a rerun finishes by resuming each run exactly, a rerun that trains
nothing, a lost run that alone is trained again, and bad input refused in one line before any work.
"""

import csv
import json
import math
import statistics
import subprocess
from pathlib import Path

import pytest

from sknet.analysis.seeds import t_quantile
from tests.benchmark_scripts import benchmark_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def claims():
    with benchmark_script("claims") as module:
        yield module


def tiny(out: Path, *extra: str) -> list[str]:
    return ["--variants", "sk", "resnext", "--seeds", "0", "1", "--datasets", "synthetic", "--epochs", "2",
            "--out", str(out), "--report", str(out / "report"), "--device", "cpu", *extra]  # fmt: skip


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("synthetic/*/seed*/model.safetensors")}


@pytest.mark.slow
def test_the_study_end_to_end_with_resume(claims, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(claims, "ATTENTION_DATA", {"synthetic": "synthetic"})  # a scale study on the SK runs
    out = tmp_path / "study"

    # A partial study: every run stops after 3 of its 4 steps, inside its second epoch, with a checkpoint.
    assert claims.main(tiny(out, "--max-steps", "3")) == 0
    log = capsys.readouterr().out
    assert log.count("(--max-steps): rerun to finish it") == 4 and "done" not in log
    assert json.loads((out / "report" / "runs.json").read_text())["runs"] == []  # no run finished
    assert sorted(p.parent.name for p in out.glob("synthetic/*/seed*/checkpoint.pt")) == [
        "seed0",
        "seed0",
        "seed1",
        "seed1",
    ]

    # The rerun resumes each run from its checkpoint, then studies the attention of the two SK runs.
    assert claims.main(tiny(out)) == 0
    log = capsys.readouterr().out
    assert log.count("(resuming its checkpoint)") == 4 and log.count("] done ") == 6
    assert "ETA" in log and "elapsed" in log

    document = json.loads((out / "report" / "runs.json").read_text())
    runs = {(r["variant"], r["seed"]): r for r in document["runs"]}
    assert set(runs) == {("sk", 0), ("sk", 1), ("resnext", 0), ("resnext", 1)}
    for (variant, seed), run in runs.items():
        summary = json.loads((out / "synthetic" / variant / f"seed{seed}" / "summary.json").read_text())
        assert run["top1"] == pytest.approx(100 * summary["val_acc1"]) and run["epochs"] == 2
    assert runs[("sk", 0)]["params"] > runs[("resnext", 0)]["params"] > 0
    with (out / "report" / "runs.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4

    # The table: mean ± std per variant, and resnext − sk with Welch's interval, computed here by hand.
    sk = [runs[("sk", s)]["top1"] for s in (0, 1)]
    rx = [runs[("resnext", s)]["top1"] for s in (0, 1)]
    rows = {r["variant"]: r for r in document["datasets"]["synthetic"]["variants"]}
    assert rows["sk"]["mean"] == pytest.approx(statistics.mean(sk))
    assert rows["resnext"]["std"] == pytest.approx(statistics.stdev(rx))
    va, vb = statistics.variance(rx) / 2, statistics.variance(sk) / 2  # s²/n on each side
    interval = rows["resnext"]["vs_reference"]
    assert interval["diff"] == pytest.approx(statistics.mean(rx) - statistics.mean(sk))
    half = 0.0
    if va + vb > 0:
        df = (va + vb) ** 2 / (va**2 / 1 + vb**2 / 1)  # Welch–Satterthwaite, n − 1 = 1 on each side
        half = t_quantile(0.975, df) * math.sqrt(va + vb)  # t_quantile: checked in analysis/test_seeds.py
        assert interval["df"] == pytest.approx(df)
    assert interval["low"] == pytest.approx(interval["diff"] - half)
    assert interval["high"] == pytest.approx(interval["diff"] + half)
    table = (out / "report" / "results.md").read_text()
    assert f"| sk | sknet_tiny | {rows['sk']['params']:,} |" in table
    assert "| SK beats its ResNeXt twin (sk > resnext) |" in table and "SKNet-50 20.79 vs ResNeXt-50 22.23" in table
    assert (out / "report" / "accuracy_vs_macs.png").stat().st_size > 0
    with (out / "report" / "attention.csv").open() as f:
        attention = list(csv.DictReader(f))
    assert {(r["variant"], r["seed"]) for r in attention} == {("sk", "0"), ("sk", "1")}

    # A run of the same seed, uninterrupted, in another folder: the same accuracy as the resumed one.
    again = claims.Run("synthetic", "sk", 0, claims.parse_args(tiny(tmp_path / "again")))
    scheduler = claims.Scheduler([], 1, 1)
    subprocess.run(again.command(), check=True, env=scheduler.env(), capture_output=True)
    assert 100 * again.summary()["val_acc1"] == runs[("sk", 0)]["top1"]

    # A rerun of the finished study trains nothing.
    before = mtimes(out)
    assert claims.main(tiny(out)) == 0
    log = capsys.readouterr().out
    assert "6 tasks: 6 finished already, 0 to do" in log and "start" not in log
    assert mtimes(out) == before
    table = (out / "report" / "results.md").read_text()
    assert claims.main(tiny(out, "--report-only", "--report", str(tmp_path / "again-report"))) == 0
    assert (tmp_path / "again-report" / "results.md").read_text() == table and "start" not in capsys.readouterr().out

    # A lost run alone is trained again; the other runs are kept.
    lost = out / "synthetic" / "resnext" / "seed1"
    for path in sorted(lost.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    assert claims.main(tiny(out)) == 0
    log = capsys.readouterr().out
    assert log.count("] start ") == 1 and "start  synthetic/resnext/seed1" in log
    assert {k: v for k, v in mtimes(out).items() if "resnext/seed1" not in k} == {
        k: v for k, v in before.items() if "resnext/seed1" not in k
    }

    # The same folder asked for another recipe: refused before any work.
    assert claims.main(tiny(out, "--epochs", "3")) == 2
    err = capsys.readouterr().err
    assert "holds a run of another configuration (epochs: 2 ≠ 3)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variants", "sk", "resnet"], "unknown variant resnet; choose from sk, resnext"),
        (["--seeds", "0"], "at least 2 distinct seeds"),
        (["--seeds", "3", "3"], "at least 2 distinct seeds"),
        (["--jobs", "0"], "--jobs must be ≥ 1, got 0"),
        (["--threads", "0"], "--threads must be ≥ 1"),
        (["--reference", "senet", "--variants", "sk", "resnext"], "the reference 'senet' is not among"),
        (["--datasets", "mnist"], "unknown dataset 'mnist'"),
    ],
)
def test_bad_input_is_one_line_before_any_work(claims, tmp_path, capsys, argv, message):
    out = tmp_path / "study"
    assert claims.main(["--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing made, nothing trained


def test_a_malformed_flag_is_one_line(claims, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        claims.main(["--out", str(tmp_path / "study"), "--jobs", "two"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "invalid int value: 'two'" in err and len(err.splitlines()) == 1


def test_an_unwritable_output_is_one_line(claims, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert claims.main(["--out", str(blocker / "study"), "--datasets", "synthetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"claims.py: error: cannot write to {blocker / 'study'}") and len(err.splitlines()) == 1


def test_claims_map_each_interval_to_a_verdict(claims):
    from sknet.analysis.seeds import Difference

    def d(low, high):
        return Difference((low + high) / 2, 0.1, 4.0, 0.95, low, high)

    better, strict, similar = (next(c for c in claims.CLAIMS if c.relation == r) for r in ("≥", ">", "≈"))
    assert strict.verdict(d(0.1, 0.5)) == "holds"
    assert strict.verdict(d(-0.1, 0.5)) == "within noise"
    assert strict.verdict(d(-0.5, -0.1)) == f"fails ({strict.b} better)"
    assert better.verdict(d(-0.1, 0.5)).startswith("within noise (not worse")
    assert similar.verdict(d(-0.1, 0.5)) == "holds (no difference detected)"
    assert similar.verdict(d(0.1, 0.5)) == f"fails ({similar.a} better)"
    # Every claim names two known variants and takes the paper's figures from sknet.paper.
    assert all(c.a in claims.VARIANTS and c.b in claims.VARIANTS for c in claims.CLAIMS)
    assert {c.paper.a_err for c in claims.CLAIMS if c.paper.a == "SKNet-50"} == {20.79}


def test_the_variants_are_matched_as_stated(claims):
    """The cost-matched ResNeXt twin is within 0.5% of sknet_tiny's parameters and MACs; SK's own ablations
    keep its stem, stages and head (their differences are in the units' middles)."""
    from sknet.profile import profile_model

    counts = {name: profile_model(v.model, overrides=v.options) for name, v in claims.VARIANTS.items()}
    sk, matched = counts["sk"], counts["resnext_matched"]
    assert (sk.params, sk.macs) == (171_954, 5_858_656)
    assert abs(matched.params / sk.params - 1) < 0.005 and abs(matched.macs / sk.macs - 1) < 0.005
    assert counts["dilated"].params == counts["resnext"].params  # one path: a 3×3, dilated
    assert counts["senet"].params > counts["resnext"].params
