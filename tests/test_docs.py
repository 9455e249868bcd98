"""Every fenced ```python and ```bash block of README.md and docs/*.md runs, as written or through the
substitutions below; every relative link points at a file; the README's model table is the code's.

How the blocks run:
- In document order, in one temporary working copy (configs/, benchmarks/, docs/ copied; nothing in the
  repository is written), which holds what the blocks name: `runs/fashion_mnist/` (a tiny run standing in
  for `make demo`'s: synthetic data, 2 steps), `shirt.png` and `boot.png` (28×28 images to classify).
- Python blocks: each in a fresh process (`python block.py`). Bash blocks: `bash -e`. Both through
  tests/docs_runner.py, which imports torch once and forks a process per `sknet` or `python` command.
- A block preceded by `<!-- skip: REASON -->` is not run (the reasons: the internet, a GPU, a cluster,
  ImageNet, root): every skip is listed in the test report.
- Long commands and data this machine may not have go through SUBSTITUTIONS (each with its reason, each must
  be used by some block, so a stale one fails); what remains must not need Fashion-MNIST (the suite runs
  with /usr/share/datasets hidden).

    python -m tests.test_docs            # prints the README's model table, from the code
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"^<!-- skip: (.+?) -->$")
TINY = "--epochs 1 --max-steps 2"

# (what the documentation says, what the test runs, why). Applied to bash blocks, in this order.
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (
        "--dataset fashion_mnist_canvas",
        "--dataset synthetic",
        "Fashion-MNIST may be absent (the suite hides it); the tiny run's synthetic data stand in",
    ),
    ("--dataset fashion_mnist", "--dataset synthetic", "the same: synthetic data instead of Fashion-MNIST"),
    (
        "--config configs/fashion_mnist.yaml",
        f"--config configs/fashion_mnist.yaml --dataset synthetic {TINY}",
        "the main job (8 epochs of Fashion-MNIST) as 2 steps of synthetic data",
    ),
    (
        "--config configs/fashion_mnist_multiscale.yaml",
        f"--config configs/fashion_mnist_multiscale.yaml --dataset synthetic {TINY}",
        "the analysis model (5 epochs, 18–30 min) as 2 steps of synthetic data",
    ),
    (" --data-dir /usr/share/datasets/fashion-mnist", "", "the synthetic data need no folder"),
    (
        "--calibration fashion_mnist",
        "--calibration synthetic --calibration-size 32",
        "int8 calibration on 32 synthetic images instead of 512 Fashion-MNIST ones",
    ),
    ("--epochs 8 ", f"{TINY} ", "8 epochs as 2 steps"),
    ("--epochs 20", TINY, "20 epochs as 2 steps"),
    (
        "python benchmarks/claims.py --report docs/claims",
        "python benchmarks/claims.py --variants sk resnext --seeds 0 1 --datasets synthetic --epochs 1 --max-steps 2"
        " --attention-images 16 --out runs/claims --report runs/claims/report",
        "the study (hours) as 2 variants × 2 seeds of 2 steps on synthetic data, written under runs/",
    ),
    ("--output docs/analysis", "--output runs/analysis", "the figures are committed: the test writes elsewhere"),
]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    found, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        assert not fence.group(1), f"{page.name}:{i + 1}: an indented fence (not run): put it at the margin"
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        skip = SKIP.match(lines[i - 1]) if i else None
        if fence.group(2) in ("python", "bash"):
            code = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Block(page, i + 1, fence.group(2), code, skip.group(1) if skip else None))
        else:
            assert not skip, f"{page.name}:{i + 1}: a skip mark on a block that is not run"
        i = end + 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]


def substitute(code: str, used: set[int]) -> str:
    for k, (old, new, _why) in enumerate(SUBSTITUTIONS):
        if old in code:
            code = code.replace(old, new)
            used.add(k)
    return code


def _png(path: Path, seed: int) -> None:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("docs")
    for folder in ("configs", "benchmarks", "docs"):
        shutil.copytree(ROOT / folder, work / folder)
    shims = work / ".bin"
    shims.mkdir()
    for name in ("sknet", "python"):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests/docs_runner.py"}" --as {name} "$@"\n')
        shim.chmod(0o755)
    socket_path = work / ".sock"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "PATH": os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "SKNET_DOCS_SOCKET": str(socket_path),
        "OMP_NUM_THREADS": "2",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/docs_runner.py"), "serve", str(socket_path)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready"
        _png(work / "shirt.png", 0)
        _png(work / "boot.png", 1)
        # `make demo`'s run, tiny: what the documentation's blocks read from runs/fashion_mnist/
        run = f"sknet train --config configs/fashion_mnist.yaml --dataset synthetic {TINY} --progress never"
        subprocess.run(["bash", "-e", "-c", run], cwd=work, env=env, check=True, capture_output=True)
        yield work, env
    finally:
        server.kill()
        server.wait()


USED: set[int] = set()


@pytest.mark.parametrize("block", ALL, ids=[block.name for block in ALL])
def test_block_runs(block: Block, workdir):
    if block.skip:
        pytest.skip(f"{block.name}: {block.skip}")
    work, env = workdir
    if block.lang == "python":
        script = work / f"block_{block.page.stem}_{block.line}.py"
        script.write_text(block.code)
        command = ["python", script.name]
    else:
        command = ["bash", "-e", "-c", substitute(block.code, USED)]
    assert "/usr/share/datasets" not in command[-1], "a command reading Fashion-MNIST: substitute it"
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{block.name} failed ({done.returncode}) after {time.perf_counter() - start:.0f} s\n"
        f"--- ran:\n{command[-1] if block.lang == 'bash' else block.code}\n"
        f"--- stdout:\n{done.stdout[-4000:]}\n--- stderr:\n{done.stderr[-4000:]}"
    )


def test_every_substitution_is_used_and_every_skip_has_a_reason():
    used: set[int] = set()
    for block in ALL:
        if block.lang == "bash" and not block.skip:
            substitute(block.code, used)
    stale = [SUBSTITUTIONS[k][0] for k in range(len(SUBSTITUTIONS)) if k not in used]
    assert not stale, f"substitutions no block uses (a command renamed?): {stale}"
    for block in ALL:
        assert block.skip is None or len(block.skip) > 8, block.name


LINK = re.compile(r"\]\(([^)\s]+)\)")
# Pages another branch is writing, linked ahead of their merge: allowed only while they do not exist here.
PENDING: dict[str, str] = {}  # links to pages not written yet, with the reason


def test_relative_links_point_at_files():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists() and str(path.relative_to(ROOT)) not in PENDING:
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


# The top-1 figures the code does not hold: (accuracy, where it was measured).
TOP1 = {
    "sknet50": "80.17% ImageNet (timm's weights)",
    "sknet_tiny": "92.85% Fashion-MNIST (`make demo`)",
}


def model_table() -> str:
    """The README's model table: parameters and MACs counted (sknet.profile), input size and weights from the
    registry, the paper's top-1 (sknet.paper) or TOP1."""
    import sknet
    from sknet.models.registry import pretrained_sources
    from sknet.profile import profile_model

    rows = [
        "| model | params | MACs | input | weights | top-1 |",
        "|---|---:|---:|---|---|---|",
    ]
    caffe = {"sknet26", "sknet50", "sknet101"}
    for name in ("sknet26", "sknet50", "sknet101", "resnext50", "senet50", "sknet29", "shufflenetv2_100_sk",
                 "mobilenetv2_100_sk", "sknet_tiny"):  # fmt: skip
        profile, info = profile_model(name), sknet.model_info(name)
        macs = f"{profile.macs / 1e9:.2f} G" if profile.macs >= 1e9 else f"{profile.macs / 1e6:.1f} M"
        routes = [f'`pretrained="{s}"`' for s in pretrained_sources(name)]
        routes += ["`sknet convert --from caffe`"] if name in caffe else []
        routes = routes or ["`sknet train`"]
        data = "CIFAR-10" if info.family == "cifar" else "ImageNet"
        top1 = [f"{100 - profile.paper_err:.2f}% {data} (paper)"] if profile.paper_err else []
        top1 = "; ".join(top1 + ([TOP1[name]] if name in TOP1 else [])) or "–"
        c, h, w = info.input_size
        rows.append(
            f"| `{name}` | {profile.params / 1e6:.2f} M | {macs} | {c}×{h}×{w} | {', '.join(routes)} | {top1} |"
        )
    return "\n".join(rows)


def test_readme_model_table_is_the_codes():
    assert model_table() in (ROOT / "README.md").read_text()


if __name__ == "__main__":
    print(model_table())
