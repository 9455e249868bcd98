"""`sknet attention`: the paper's scale study (section 5) on trained weights.

Enlarges the central object of every image by each --scales factor (centre-crop 1/s, resize back),
records every SK unit's attention and writes, to --output: attention.json (summaries), units.csv
(mean attention difference per unit and scale), classes.csv (per class), images.csv (per image),
profile.csv (channel profile), figure3.png and figure4.png.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from sknet.cli.options import add_progress_arg, add_run_args, checked
from sknet.cli.outputs import add_overwrite_arg, check_outputs
from sknet.data.datasets import Split, data_folders
from sknet.errors import ConfigError
from sknet.models import create_model
from sknet.train.check import integer, number
from sknet.train.config import CHECKS

FIGURES = ("figure3.png", "figure4.png")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "attention", help="attention vs object scale per SK unit (paper Figures 3 and 4)", description=__doc__
    )
    parser.add_argument("--weights", required=True, help="model.safetensors or checkpoint.pt")
    parser.add_argument("--model", help="model name (default: the one recorded in the weights)")
    parser.add_argument("--dataset", help="dataset (default: the one recorded in the weights)")
    parser.add_argument("--data-dir", help="data folder")
    parser.add_argument("--split", choices=[s.value for s in Split], default="test", help="data split to analyse")
    parser.add_argument(
        "--scales",
        type=checked(number(1, None), "--scales"),
        nargs="+",
        default=[1.0, 1.5, 2.0],
        help="enlargement factors ≥ 1, at least two, increasing (default: 1 1.5 2)",
    )
    parser.add_argument(
        "--units", nargs="+", help="units to plot, e.g. SK_2_3 SK_3_4, or 'all' (default: last unit of each stage)"
    )
    parser.add_argument("--profile-unit", help="unit of the channel profile (default: last unit of stage 3)")
    parser.add_argument(
        "--max-images", type=checked(integer(1, None), "--max-images"), help="analyse only the first N images"
    )
    parser.add_argument(
        "--examples",
        type=checked(integer(0, 64), "--examples"),
        default=2,
        help="example images in figure 3 (random, --seed; default: 2)",
    )
    parser.add_argument(
        "--seed", type=checked(CHECKS["seed"], "--seed"), default=0, help="seed of the choice of example images"
    )
    parser.add_argument(
        "--resolution",
        type=checked(CHECKS["image_size"], "--resolution"),
        default=224,
        help="folder datasets: centre-crop size (default: 224)",
    )
    add_run_args(parser, batch_size=100)
    parser.add_argument("--output", default="runs/attention", help="folder for figures and numbers")
    add_overwrite_arg(parser, "the files of an earlier study in --output")
    add_progress_arg(parser)
    parser.set_defaults(run=run)


def _batches(args: argparse.Namespace, dataset: str, record, device):
    """(loader, number of batches, number of images, class names)."""
    from sknet.data.loader import LoaderOptions, build_loader

    options = LoaderOptions(
        args.batch_size,
        image_size=args.resolution,
        workers=args.workers,
        limit=args.max_images,
        record=record,
    )
    loader = build_loader(dataset, args.split, options, device, args.data_dir)
    return loader, len(loader), loader.info.images, list(loader.info.record.classes)


def _plot_units(requested: list[str] | None, available: list[str]) -> list[str]:
    from sknet.analysis import last_unit_per_stage

    if not requested:
        return last_unit_per_stage(available)
    if requested == ["all"]:
        return available
    unknown = [u for u in requested if u not in available]
    if unknown:
        raise ConfigError(f"unknown SK unit(s) {', '.join(unknown)}; this model has {', '.join(available)}")
    return requested


def run(args: argparse.Namespace) -> int:
    from sknet.analysis import run_scale_study, sk_units
    from sknet.analysis.plots import plot_figure3, plot_figure4
    from sknet.analysis.study import STUDY_FILES, check_scales
    from sknet.train.distributed import resolve_device

    check_scales(args.scales)
    model = create_model(args.model, weights=args.weights).eval()
    name, meta = model.weights_meta["model"], model.weights_meta
    available = list(sk_units(model))
    units = _plot_units(args.units, available)
    if args.profile_unit and args.profile_unit not in available:
        raise ConfigError(f"unknown --profile-unit {args.profile_unit}; this model has {', '.join(available)}")
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise ConfigError(f"{args.weights} does not record its dataset: pass --dataset")
    out = Path(args.output)
    outputs = [out / name for name in (*STUDY_FILES.values(), *FIGURES)]
    folders = data_folders(str(dataset), args.data_dir, args.split)
    check_outputs(outputs, "--output", args.overwrite, reads=[args.weights], folders=folders, makes_folder=True)
    device = resolve_device(args.device)
    model = model.to(device)
    batches, total, count, classes = _batches(args, str(dataset), model.data_config, device)
    gen = torch.Generator().manual_seed(args.seed)
    examples = torch.randperm(count, generator=gen)[: args.examples].tolist()
    study = run_scale_study(
        model,
        batches,
        args.scales,
        classes=classes,
        units=available,
        profile_unit=args.profile_unit,
        example_indices=examples,
        device=device,
        progress=args.progress,
        total=total,
    )
    paths = study.save(out)
    title = f"{name} on {dataset} ({study.num_images} images)"
    plot_figure3(study, out / FIGURES[0], units, title)
    plot_figure4(study, out / FIGURES[1], units, title)

    accuracy = "  ".join(f"{s:g}×: {100 * a:.2f}%" for s, a in zip(study.scales, study.accuracy(), strict=True))
    print(f"{title}; top-1 accuracy {accuracy}")
    print("mean attention difference (large − small kernel), mean ± std over images:")
    header = f"{'unit':<10}" + "".join(f"{f'{s:g}×':>18}" for s in study.scales) + "   grows with scale"
    header += f" (classes; images larger at {study.scales[-1]:g}× than at {study.scales[0]:g}×)"
    print(header)
    summary = {(r["unit"], r["scale"]): r for r in study.unit_summary()}
    for unit in itertools.chain(units, [u for u in available if u not in units]):
        cells = "".join(f"{summary[(unit, s)]['mean']:>+10.4f} ± {summary[(unit, s)]['std']:.3f}" for s in study.scales)
        order = study.ordering(unit)
        verdict = "yes" if order["increasing"] else "no"
        print(
            f"{unit:<10}{cells}   {verdict} ({order['classes_increasing']}/{order['classes']} classes; "
            f"{100 * order['images_increasing']:.1f}% of images)"
        )
    print(f"wrote {', '.join(str(p) for p in [*paths.values(), *(out / f for f in FIGURES)])}")
    return 0
