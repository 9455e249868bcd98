"""Every model computes, bit for bit, what it computed at BASELINE: outputs, gradients and running statistics of
a training step (fp32 and bf16 autocast), evaluation outputs, parameter counts and weight names.

The SK layer was restructured after BASELINE (one readable forward, accelerators behind a declared
interface) with the promise that no model's numbers move. Bit-identity only holds on one machine (oneDNN
picks kernels by CPU), so the baseline is not a stored file: BASELINE's own source is taken from git and
both builds run tests/models/model_digests.py here, side by side. Where git or the commit is not at hand
(an exported tarball, a shallow clone) the test says so and skips.

A change meant to move the numbers moves BASELINE to the commit that made it, and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "edcf176"  # the last commit before the SK layer's restructuring (issue "The SK layer, readable")
SCRIPT = Path(__file__).with_name("model_digests.py")


def _baseline_source(into: Path) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git repository (to read BASELINE's source)")
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{BASELINE}^{{commit}}"], capture_output=True, text=True
    )
    if found.returncode != 0:
        pytest.skip(f"commit {BASELINE} is not in this clone (shallow?): nothing to compare with")
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), BASELINE, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline" / "src"


def _digests(source: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), str(ROOT)])}
    env.pop("SKNET_FORCE_TRITON", None)
    return subprocess.Popen(
        [sys.executable, str(SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_every_model_computes_what_it_computed_at_the_baseline(tmp_path):
    baseline = _digests(_baseline_source(tmp_path))
    current = _digests(ROOT / "src")
    results = []
    for process in (baseline, current):
        out, err = process.communicate()
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out))
    want, got = results
    assert want.keys() <= got.keys(), sorted(want.keys() - got.keys())  # every baseline model still computed
    # (models added since, e.g. senet_tiny, have nothing to compare with)
    differ = sorted(key for key in want if want[key] != got[key])
    assert not differ, f"{len(differ)} of {len(want)} digests differ from {BASELINE}: {differ}"
