"""A dense-prediction job that runs on 2 CPU cores: Faster R-CNN on multi-object, multi-scale Fashion-MNIST
scenes, an SK backbone against its ResNeXt twin, scored with the COCO metric.

The scenes (`sknet.data.objects.make_scenes`): 1–4 Fashion-MNIST objects at scales 0.5–1.5 (14–42 pixels)
on a 64×64 canvas, never overlapping, boxes and masks exact; training scenes from the training images
(seed 1), test scenes from the test images (seed 2), the same for every run. Each backbone (`--backbones`)
becomes torchvision's Faster R-CNN through `sknet.detection.fasterrcnn_sknet_fpn` (every stage trained from
scratch, BatchNorm, a 64-channel FPN over the stride-2/4/8 maps and a pooled stride-16 level, anchors of
12–96 pixels, a 256-wide box head) and trains `--steps` steps of `--batch-size` scenes (SGD, momentum
0.9, linear warm-up then cosine decay) for each seed; the seed fixes the initial weights and the order of
the scenes, so a run is reproducible. Then COCO box mAP (IoU .50:.95) and mAP@50 on the test scenes
(pycocotools through torchmetrics: the optional extra, ``pip install 'sknet[detection]'``).

    python benchmarks/detection.py --threads 1 --out runs/detection   # RESULTS.md's comparison (26 min, 2 busy cores)
    python benchmarks/detection.py --data synthetic --steps 2 --images 8 --test-images 4 --out /tmp/det   # a smoke run

Writes to `--out`: results.md (a table: mAP and mAP@50 per backbone and seed, the mean) and results.json
(the same, every COCO scalar, the settings). Bad input: one line, exit status 2, before any work.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sknet.cli.main import OneLineErrorParser
from sknet.data.datasets import build_dataset, make_synthetic
from sknet.data.objects import ObjectScenes, make_scenes
from sknet.data.split import Split
from sknet.detection import evaluate_detector, fasterrcnn_sknet_fpn, require_coco_metric
from sknet.errors import SKNetError, one_line
from sknet.profile import count_params


@dataclass(frozen=True)
class Backbone:
    model: str
    options: dict[str, object]
    description: str


# The names of benchmarks/claims.py: the compact SK network and its ResNeXt twins.
BACKBONES: dict[str, Backbone] = {
    "sk": Backbone("sknet_tiny", {}, "SK: 3×3 + 3×3 dilation 2, selected by attention (sknet_tiny)"),
    "resnext": Backbone("resnext_tiny", {}, "ResNeXt twin: the grouped 3×3 alone (resnext_tiny)"),
    "resnext_matched": Backbone(
        "resnext_tiny", {"widths": (32, 64, 176)}, "ResNeXt twin matched to SK in parameters (widths 32, 64, 176)"
    ),
}
DATA = ("fashion_mnist", "synthetic")
CANVAS = 64
ANCHORS = ((12,), (24,), (48,), (96,))  # one size per level: strides 2, 4, 8 and the pooled 16


class BadInput(Exception):
    pass


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog="detection.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["sk", "resnext_matched"], help=f"of: {', '.join(BACKBONES)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="one run per backbone and seed")
    parser.add_argument("--steps", type=int, default=500, help="training steps of every run")
    parser.add_argument("--batch-size", type=int, default=4, help="scenes per step")
    parser.add_argument("--lr", type=float, default=0.02, help="peak learning rate (SGD)")
    parser.add_argument("--images", type=int, default=2400, help="training scenes")
    parser.add_argument("--test-images", type=int, default=400, help="test scenes (the COCO metric's)")
    parser.add_argument("--data", default="fashion_mnist", help=f"the objects: {' or '.join(DATA)} (tests)")
    parser.add_argument("--data-dir", help="folder of the Fashion-MNIST files (default: Debian's package)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--out", default="runs/detection", help="folder of results.md and results.json")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before any work; BadInput names the first problem."""
    unknown = [b for b in args.backbones if b not in BACKBONES]
    if unknown:
        raise BadInput(f"unknown backbone {', '.join(unknown)}; choose from {', '.join(BACKBONES)}")
    for name, values in (("backbones", args.backbones), ("seeds", args.seeds)):
        if len(set(values)) != len(values):
            raise BadInput(f"--{name} names one twice: {' '.join(map(str, values))}")
    if min(args.seeds) < 0:
        raise BadInput(f"seeds must be ≥ 0, got {args.seeds}")
    for name in ("steps", "batch_size", "images", "test_images", "threads"):
        if getattr(args, name) < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise BadInput(f"--lr must be a positive number, got {args.lr}")
    if args.data not in DATA:
        raise BadInput(f"--data must be one of {', '.join(DATA)}, got {args.data!r}")
    try:
        require_coco_metric()
    except SKNetError as err:
        raise BadInput(one_line(err)) from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".detection-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise BadInput(f"cannot write to {out}: {err.strerror or err}") from None


def scenes(args: argparse.Namespace) -> tuple[ObjectScenes, ObjectScenes]:
    """(training scenes, test scenes): objects of the source's train and test splits, seeds 1 and 2."""
    made = []
    for split, count, seed in ((Split.TRAIN, args.images, 1), (Split.TEST, args.test_images, 2)):
        if args.data == "synthetic":  # 4 classes of random 16×16 patterns (made here: no files needed)
            source = make_synthetic(split, size=16, count=64)
            made.append(make_scenes(source, count, CANVAS, (1, 4), (1.0, 2.0), seed=seed))
        else:
            source = build_dataset("fashion_mnist", args.data_dir, split)
            made.append(make_scenes(source, count, CANVAS, (1, 4), (0.5, 1.5), seed=seed))
    return made[0], made[1]


def build_detector(name: str, num_classes: int) -> torch.nn.Module:
    """Faster R-CNN for 64×64 scenes on backbone `name` (of BACKBONES); `num_classes` without the background."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    backbone, channels, width = BACKBONES[name], 64, 256
    return fasterrcnn_sknet_fpn(
        backbone.model,
        num_classes=None,
        norm_layer="batchnorm",
        trainable_backbone_layers=4,  # the stem and the 3 stages: nothing is pretrained
        backbone_options=backbone.options,
        fpn_channels=channels,
        min_size=CANVAS,
        max_size=CANVAS,  # the scenes as they are, never resized
        rpn_anchor_generator=AnchorGenerator(ANCHORS, ((0.5, 1.0, 2.0),) * len(ANCHORS)),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=200,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=64,
        box_detections_per_img=50,
        box_head=TwoMLPHead(channels * 7 * 7, width),
        box_predictor=FastRCNNPredictor(width, num_classes + 1),
    )


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 10% of the steps (at most 100), then cosine decay to 0."""
    warm = max(1, min(100, steps // 10))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train_one(name: str, seed: int, train: ObjectScenes, test: ObjectScenes, args: argparse.Namespace) -> dict:
    """One run: the detector of backbone `name` from seed `seed`, trained and scored; its record."""
    torch.manual_seed(seed)
    model = build_detector(name, len(train.classes))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    model.train()
    start, losses, running = time.perf_counter(), [], []
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        index = torch.randint(0, len(train), (args.batch_size,), generator=order).tolist()
        items = [train[i] for i in index]
        loss_parts = model([image for image, _ in items], [target for _, target in items])
        loss = sum(loss_parts.values())
        if not torch.isfinite(loss):
            raise RuntimeError(f"{name} seed {seed}: non-finite loss at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        running.append(float(loss.detach()))
        if (step + 1) % max(1, args.steps // 10) == 0 or step + 1 == args.steps:
            losses.append(round(statistics.fmean(running), 4))
            elapsed = time.perf_counter() - start
            print(
                f"  {name} seed {seed}: step {step + 1}/{args.steps} loss {losses[-1]:.3f} "
                f"({elapsed / (step + 1):.2f} s/step)",
                flush=True,
            )
            running = []
    train_seconds = time.perf_counter() - start
    metrics = evaluate_detector(model, test, batch_size=16)
    backbone = model.backbone.body
    return {
        "backbone": name,
        "model": BACKBONES[name].model,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in BACKBONES[name].options.items()},
        "seed": seed,
        "map": metrics["map"],
        "map_50": metrics["map_50"],
        "metrics": metrics,
        "loss_curve": losses,
        "backbone_params": count_params(backbone),
        "detector_params": count_params(model),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - start - train_seconds, 1),
    }


def table(runs: list[dict], backbones: Sequence[str], seeds: Sequence[int]) -> str:
    """The markdown table: per backbone, mAP and mAP@50 (in %) of each seed, their mean and the spread."""
    head = "| backbone | backbone params | " + " | ".join(f"mAP s{s} | mAP@50 s{s}" for s in seeds)
    head += " | mean mAP | mean mAP@50 |"
    lines = [head, "|" + "---|" * (4 + 2 * len(seeds))]
    for name in backbones:
        mine = {r["seed"]: r for r in runs if r["backbone"] == name}
        cells = [f"{100 * mine[s]['map']:.2f} | {100 * mine[s]['map_50']:.2f}" for s in seeds]
        maps = [100 * mine[s]["map"] for s in seeds]
        map50s = [100 * mine[s]["map_50"] for s in seeds]
        spread = f" (range {max(maps) - min(maps):.2f})" if len(seeds) > 1 else ""
        lines.append(
            f"| {name} ({BACKBONES[name].model}) | {mine[seeds[0]]['backbone_params']:,} | "
            + " | ".join(cells)
            + f" | {statistics.fmean(maps):.2f}{spread} | {statistics.fmean(map50s):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
    except BadInput as err:
        print(f"detection.py: error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        train, test = scenes(args)
    except SKNetError as err:  # Fashion-MNIST not there: how to get it, in one line
        print(f"detection.py: error: {one_line(err)}", file=sys.stderr)
        return 2
    objects = sum(len(b) for b in train.boxes)
    print(f"{len(train)} training scenes ({objects} objects), {len(test)} test scenes, {args.data}", flush=True)
    runs = []
    for seed in args.seeds:  # seed by seed, so that a stopped comparison has both backbones of a seed
        for name in args.backbones:
            runs.append(train_one(name, seed, train, test, args))
            print(f"{name} seed {seed}: mAP {100 * runs[-1]['map']:.2f}, mAP@50 {100 * runs[-1]['map_50']:.2f}")
    out = Path(args.out)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    (out / "results.json").write_text(json.dumps({"settings": settings, "runs": runs}, indent=1) + "\n")
    (out / "results.md").write_text(table(runs, args.backbones, args.seeds))
    print(table(runs, args.backbones, args.seeds), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
