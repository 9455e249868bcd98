"""What each option of the modern recipe costs per batch, against the main job's training step.

In one process, interleaved (every round times each item once; the minimum over rounds is kept, the least
disturbed by other work on a shared machine): the main job's step (sknet_tiny, a 128 × 1 × 28 × 28 batch,
channels_last, SGD; forward, backward, update) with and without drop path, and the per-batch work each
other option adds (auto-augment and random erasing per image, MixUp/CutMix, one EMA update), plus the
recipe's per-step bookkeeping with every option off.

    python benchmarks/recipe_cost.py --rounds 7 [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sknet.data.augment import BatchAugment, MixCut, keyed_rng
from sknet.models import create_model
from sknet.train.config import TrainConfig
from sknet.train.ema import WeightEMA
from sknet.train.recipe import Recipe


def step_fn(drop_path_rate: float, batch: int):
    model = create_model("sknet_tiny", drop_path_rate=drop_path_rate).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.batch
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    model = create_model("sknet_tiny")
    ema = WeightEMA(model, 0.998, warmup=True)
    off = Recipe(TrainConfig(), 10, model, 0)
    stages = {p: BatchAugment(0, 0, auto_augment=p) for p in ("rand-m9-mstd0.5", "trivial", "imagenet")}
    erase = BatchAugment(0, 0, random_erase=0.25)
    mixup, cutmix = (MixCut(10, a, c, 1.0, 0.5, 0.1) for a, c in ((0.2, 0.0), (0.0, 1.0)))

    def keyed(fn):
        def run():
            with keyed_rng(0):
                fn()

        return run

    items = {
        "step (main job, options off)": step_fn(0.0, n),
        "step with drop_path_rate 0.1": step_fn(0.1, n),
        **{f"auto_augment {p}": (lambda s=s: s.before(images, 0, 0)) for p, s in stages.items()},
        "random_erase 0.25": lambda: erase.after(x, 0, 0),
        "mixup 0.2": keyed(lambda: mixup(x, y)),
        "cutmix 1.0": keyed(lambda: cutmix(x, y)),
        "ema update (sknet_tiny)": lambda: ema.update(model),
        "recipe bookkeeping, all off": lambda: (off.targets(x, y, 0, 0), off.after_step(model)),
    }
    for fn in items.values():  # warm-up
        fn()
    best = dict.fromkeys(items, float("inf"))
    for _ in range(args.rounds):
        for name, fn in items.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    step = best["step (main job, options off)"]
    print(f"batch {n}, {torch.get_num_threads()} threads, min of {args.rounds} interleaved rounds")
    for name, seconds in best.items():
        print(f"{name:34s} {1000 * seconds:9.3f} ms  {seconds / step:7.3f}× the step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": n, "threads": torch.get_num_threads(), "ms": {k: 1000 * v for k, v in best.items()}}, f)


if __name__ == "__main__":
    main()
