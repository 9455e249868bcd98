"""Images/s of ONE loader process: the image-folder reader against the WebDataset shard reader.

What a GPU needs: an H100 trains SKNet-50 at ~1,500–1,900 img/s, so a 16-core node (one GPU, 16 loader
processes) needs ≥ 120 img/s from each loader process. Measured here, in one process (workers=0, so the
number is per process), on the same images:

  PIL decode          sknet.data.images.open_image alone (decode, EXIF orientation, RGB)
  folder reader       build_loader("imagefolder", train): decode + the paper's training transform
                      (random-size crop to 224, flip) + collate, as each worker does
  shard reader        build_loader("wds", train) on shards of the same files written by `sknet shards`

The three are interleaved round by round (the machine may be shared: read the medians and the spread).
The images: photographs' stand-ins, smooth colour fields with grain, 500×375 JPEG at quality 90.

    python benchmarks/readers.py --images 200 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sknet.data import LoaderOptions, build_loader
from sknet.data.images import open_image
from sknet.data.shards import write_shards

TARGET = 120  # img/s per loader process (see the module docstring)


def make_images(root: Path, count: int, classes: int = 4) -> float:
    """`count` JPEGs of 500×375 at quality 90 in root/train/classK (and 8 in val); their mean size in kB."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = []
    for split, n in (("train", count), ("val", 8)):
        for i in range(n):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            field = rng.integers(0, 256, (375 // 12 + 1, 500 // 12 + 1, 3), dtype=np.uint8)
            smooth = np.asarray(Image.fromarray(field).resize((500, 375), Image.BICUBIC), dtype=np.float32)
            grain = rng.normal(0, 9, smooth.shape)
            pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
            path = folder / f"{i:05d}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            sizes.append(path.stat().st_size)
    return sum(sizes) / len(sizes) / 1000


def _rate(images: int, run) -> float:
    start = time.perf_counter()
    seen = run()
    assert seen == images, (seen, images)
    return images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--size", type=int, default=224, help="training crop (default: 224)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (torch's _worker_loop sets 1 thread)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kb = make_images(root / "folder", args.images)
        write_shards(root / "folder", root / "shards", shard_size=64)
        files = sorted(str(p) for p in (root / "folder" / "train").rglob("*.jpg"))
        options = LoaderOptions(args.batch, train=True, image_size=args.size, workers=0)
        readers = {
            "PIL decode": lambda: sum(1 for f in files if open_image(f).size),
            "folder reader": _reader(build_loader("imagefolder", "train", options, data_dir=root / "folder")),
            "shard reader": _reader(build_loader("wds", "train", options, data_dir=root / "shards")),
        }
        rates: dict[str, list[float]] = {name: [] for name in readers}
        for run in readers.values():  # warm-up: page cache, first-call costs
            run()
        for _ in range(args.rounds):
            for name, run in readers.items():
                rates[name].append(_rate(args.images, run))
    torch.set_num_threads(threads)
    print(f"{args.images} JPEGs of 500×375, quality 90, {kb:.0f} kB on average; one process; {args.rounds} rounds")
    print(f"\n| reader (one process) | img/s, median | min – max | ≥ {TARGET} img/s |\n|---|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values)
        ok = "yes" if median >= TARGET else "no"
        print(f"| {name} | {median:.0f} | {min(values):.0f} – {max(values):.0f} | {ok} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"kB": kb, "images": args.images, "img_per_s": rates}, indent=1))


def _reader(loader):
    batches = loader.loader  # the uint8 batches the workers make, before the device copy

    def run() -> int:
        batches.set_epoch(0)
        return sum(len(labels) for _, labels, _ in batches)

    return run


if __name__ == "__main__":
    main()
