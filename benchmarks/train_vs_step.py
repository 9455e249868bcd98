"""`sknet train` against the bare training step of the same model, batch, precision and layout.

The trainer adds data loading, device copies, metrics, the divergence guard and the scheduler around
the step; done right, it costs almost nothing (target ≥ 0.95× of the step). Measured in one process:

  step                 sknet.bench's training step (autocast forward, backward, SGD; a resident batch)
  train, in memory     sknet.train.Trainer on 224² uint8 images held in memory (the loader is not the limit)
  train, ImageFolder   Trainer on a folder of generated JPEGs (decoded and augmented in worker processes)

Trainer images/s count the steps between two marks taken after warm-up (one device sync at each mark,
none in between). Run by benchmarks/gpu.py on a GPU; on a CPU it runs too (use a small --size):

    python benchmarks/train_vs_step.py --device cpu --batch 8 --size 64 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sknet.bench import Candidate, run_bench
from sknet.data.tensors import InMemoryImages
from sknet.models import create_model
from sknet.train.config import TrainConfig
from sknet.train.trainer import Trainer

NUM_CLASSES = 1000  # as in sknet bench's step (the trainer takes the model's classes from the data)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(args, output: Path, **overrides) -> TrainConfig:
    values = dict(
        model=args.model,
        model_options={},
        epochs=1,
        batch_size=args.batch,
        optimizer="sgd",
        lr=0.01,  # small: the weights of a random-label run stay finite
        momentum=0.9,
        weight_decay=1e-4,
        schedule="constant",
        precision=args.dtype,
        channels_last=True,
        device=args.device,
        output=str(output),
        progress="never",
        max_steps=args.warmup + args.steps,
        crop_padding=0,
        hflip=True,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _trainer_rate(config: TrainConfig, args, datasets=None) -> float:
    """Images/s of Trainer.fit between the warm-up mark and the last step."""
    device = torch.device(args.device)
    marks: dict[str, float] = {}
    count = 0

    def on_step(epoch: int, batch: int) -> None:
        nonlocal count
        count += 1
        if count in (args.warmup, args.warmup + args.steps):
            _sync(device)
            marks["start" if count == args.warmup else "end"] = time.perf_counter()

    trainer = Trainer(config, datasets=datasets, on_step=on_step)
    trainer.fit()
    return args.steps * args.batch / (marks["end"] - marks["start"])


def _memory_data(args) -> tuple[InMemoryImages, InMemoryImages]:
    count = (args.warmup + args.steps + 2) * args.batch  # more than the run needs: it stops mid-epoch
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, args.size, args.size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=gen)
    classes = [f"c{i}" for i in range(NUM_CLASSES)]
    stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    val = InMemoryImages(images[: args.batch].clone(), labels[: args.batch].clone(), classes, *stats)
    return InMemoryImages(images, labels, classes, *stats), val


def _write_jpeg(job: tuple[str, int, int]) -> None:
    from PIL import Image

    path, seed, size = job
    rng = np.random.default_rng(seed)
    # Smooth colour fields (upsampled noise), closer to photographs than pixel noise is.
    small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
    Image.fromarray(small).resize((size * 5 // 4, size), Image.BILINEAR).save(path, quality=90)


def _folder_data(root: Path, args) -> None:
    count = max((args.warmup + args.steps + 2) * args.batch, NUM_CLASSES)  # every class holds images
    jobs = []
    for split, n in (("train", count), ("val", NUM_CLASSES)):
        for c in range(NUM_CLASSES):
            (root / split / f"class{c:03d}").mkdir(parents=True)
        jobs += [
            (str(root / split / f"class{i % NUM_CLASSES:03d}" / f"{i}.jpg"), i, args.size * 8 // 7) for i in range(n)
        ]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_jpeg, jobs, chunksize=64))


def measure(args) -> dict:
    """The three rates and the two ratios (trainer / step)."""
    device = torch.device(args.device)
    step = run_bench(
        "train",
        args.batch,
        args.size,
        args.dtype,
        args.device,
        repeats=args.steps,
        warmup=args.warmup,
        formats=("channels_last",),
        candidates=[Candidate(args.model, lambda: create_model(args.model, num_classes=NUM_CLASSES, in_chans=3), "sk")],
    )[0].images_per_s
    report = {
        "model": args.model,
        "batch": args.batch,
        "size": args.size,
        "dtype": args.dtype,
        "device": str(device),
        "step_images_per_s": step,
    }
    with tempfile.TemporaryDirectory(prefix="sknet-train-vs-step-") as tmp:
        tmp = Path(tmp)
        rate = _trainer_rate(_config(args, tmp / "memory", dataset="synthetic"), args, _memory_data(args))
        report["train_in_memory_images_per_s"] = rate
        report["train_in_memory / step"] = rate / step
        if not args.no_folder:
            _folder_data(tmp / "jpegs", args)
            workers = args.workers if args.workers is not None else min(max((os.cpu_count() or 2) - 2, 1), 12)
            config = _config(
                args,
                tmp / "folder",
                dataset="imagefolder",
                data_dir=str(tmp / "jpegs"),
                image_size=args.size,
                workers=workers,
            )
            rate = _trainer_rate(config, args)
            report["train_folder_images_per_s"] = rate
            report["train_folder / step"] = rate / step
            report["folder_workers"] = workers
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sknet50")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=15, help="steps before the first mark")
    p.add_argument("--steps", type=int, default=40, help="timed steps")
    p.add_argument("--workers", type=int, default=None, help="ImageFolder loader processes (default: cores - 2, ≤ 12)")
    p.add_argument("--no-folder", action="store_true", help="skip the ImageFolder run")
    return p


if __name__ == "__main__":
    print(json.dumps(measure(parser().parse_args()), indent=2))
