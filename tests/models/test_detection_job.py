"""The detection job: the COCO metric (pycocotools through torchmetrics) as referee of sknet's evaluation,
and benchmarks/detection.py end to end on a tiny budget of synthetic objects (no Fashion-MNIST needed)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("torchmetrics", reason="the COCO metric needs the extra: pip install 'sknet[detection]'")
pytest.importorskip("pycocotools", reason="the COCO metric needs the extra: pip install 'sknet[detection]'")

from sknet.data.datasets import Split, make_synthetic
from sknet.data.objects import make_scenes
from sknet.detection import coco_map, evaluate_detector
from sknet.errors import ConfigError
from tests.benchmark_scripts import benchmark_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def job():
    with benchmark_script("detection") as module:
        yield module


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(make_synthetic(Split.TEST, size=12, count=16), 12, canvas=40, objects=(1, 3), seed=4)


class Oracle(nn.Module):
    """A "detector" answering each image with its ground truth, moved by `shift` pixels (score 1)."""

    def __init__(self, scenes, shift: float = 0.0):
        super().__init__()
        self.scenes, self.shift = scenes, shift

    def forward(self, images):
        out = []
        for image in images:
            index = next(i for i in range(len(self.scenes)) if torch.equal(self.scenes[i][0], image))
            boxes = self.scenes.boxes[index] + self.shift
            labels = self.scenes.labels[index]
            out.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": labels})
        return out


def test_the_ground_truth_as_prediction_scores_map_1(scenes):
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(scenes.boxes, scenes.labels, strict=True)]
    predictions = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    metrics = coco_map(predictions, targets)
    assert metrics["map"] == pytest.approx(1.0) and metrics["map_50"] == pytest.approx(1.0)


def test_evaluate_detector_is_refereed_by_the_coco_metric(scenes):
    oracle = Oracle(scenes).train()
    metrics = evaluate_detector(oracle, scenes, batch_size=5)  # batches of 5, 5 and 2
    assert metrics["map"] == pytest.approx(1.0) and metrics["map_75"] == pytest.approx(1.0)
    assert oracle.training  # its mode restored
    # Boxes moved by 3 pixels: still found at IoU .5 for most objects, not at the strict thresholds.
    moved = evaluate_detector(Oracle(scenes, shift=3.0), scenes)
    assert moved["map"] < 0.9 and moved["map"] < moved["map_50"]
    pairs = list(zip(scenes.boxes, scenes.labels, strict=True))
    wrong = [{"boxes": b, "scores": torch.ones(len(b)), "labels": lab % 4 + 1} for b, lab in pairs]
    targets = [{"boxes": b, "labels": lab} for b, lab in pairs]
    assert coco_map(wrong, targets)["map"] == pytest.approx(0.0)  # every box of the wrong class


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, scenes):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import pycocotools now raises ImportError
    with pytest.raises(ConfigError, match=r"pycocotools is missing\): pip install 'sknet\[detection\]'$"):
        evaluate_detector(Oracle(scenes), scenes)


def tiny(out: Path, *extra: str) -> list[str]:
    return ["--data", "synthetic", "--steps", "2", "--batch-size", "2", "--images", "8", "--test-images", "4",
            "--threads", "1", "--out", str(out), *extra]  # fmt: skip


def test_the_job_trains_both_backbones_for_each_seed_and_writes_its_table(job, tmp_path, capsys):
    assert job.main(tiny(tmp_path / "a", "--backbones", "sk", "resnext_matched", "--seeds", "0", "1")) == 0
    record = json.loads((tmp_path / "a" / "results.json").read_text())
    runs = {(r["backbone"], r["seed"]): r for r in record["runs"]}
    assert set(runs) == {(b, s) for b in ("sk", "resnext_matched") for s in (0, 1)}
    for run in runs.values():
        assert 0.0 <= run["map"] <= run["map_50"] <= 1.0 and len(run["loss_curve"]) == 2
    sk, twin = runs["sk", 0]["backbone_params"], runs["resnext_matched", 0]["backbone_params"]
    assert abs(sk - twin) / sk < 0.01  # the cost-matched twin
    table = (tmp_path / "a" / "results.md").read_text()
    lines = table.splitlines()
    assert lines[0].startswith("| backbone | backbone params | mAP s0 | mAP@50 s0 | mAP s1 |") and len(lines) == 4
    assert lines[2].startswith("| sk (sknet_tiny) |") and lines[3].startswith("| resnext_matched (resnext_tiny) |")
    assert f"{100 * runs['sk', 1]['map_50']:.2f}" in lines[2]
    assert table in capsys.readouterr().out
    # A run is reproducible from its seed: the same losses and the same detections' scores.
    assert job.main(tiny(tmp_path / "b", "--backbones", "sk", "--seeds", "1")) == 0
    again = json.loads((tmp_path / "b" / "results.json").read_text())["runs"][0]
    assert again["loss_curve"] == runs["sk", 1]["loss_curve"] and again["metrics"] == runs["sk", 1]["metrics"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backbones", "sk", "vgg"], "unknown backbone vgg; choose from sk, resnext, resnext_matched"),
        (["--seeds", "0", "0"], "--seeds names one twice: 0 0"),
        (["--steps", "0"], "--steps must be ≥ 1, got 0"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--data", "cifar10"], "--data must be one of fashion_mnist, synthetic"),
        (["--threads", "x"], "argument --threads: invalid int value: 'x'"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_any_work(job, tmp_path, capsys, extra, message):
    try:
        status = job.main(tiny(tmp_path / "out", *extra))
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_missing_extra_stops_the_job_in_one_line(job, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics.detection", None)
    assert job.main(tiny(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install 'sknet[detection]'") and len(err.splitlines()) == 1


def doc_blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "detection.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_docs_detection_blocks_run_as_written(tmp_path, capsys):
    """docs/detection.md: its bash command (the synthetic smoke run) and its Python, as written."""
    (command,) = doc_blocks("bash")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "sknet-detection-smoke" / "results.md").read_text().startswith("| backbone |")
    (code,) = doc_blocks("python")
    namespace: dict = {}
    exec(code, namespace)
    assert 0.0 <= namespace["metrics"]["map"] <= 1.0 and "mAP" in capsys.readouterr().out
