"""`sknet convert`: pretrained weights of timm or of the authors' Caffe models → sknet safetensors.

sknet convert --from timm skresnext50_32x4d --out sknet50_timm.safetensors        (fetched by timm)
sknet convert --from timm skresnext50_32x4d --checkpoint model.safetensors --out W  (offline file)
sknet convert --from caffe SKNet-50.caffemodel --prototxt sknet50.prototxt --out W
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sknet.cli.outputs import add_overwrite_arg, check_outputs
from sknet.errors import CheckpointError, ConfigError, one_line


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "convert",
        help="timm / Caffe weights → sknet safetensors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="source", required=True, choices=("timm", "caffe"))
    parser.add_argument("name", help="timm: the timm model name; caffe: the .caffemodel file")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument(
        "--checkpoint",
        help="timm: read this downloaded file instead of fetching (.safetensors, or .pth/.pt: a state dict, bare or "
        "under state_dict/model/state_dict_ema, module./_orig_mod. prefixes removed)",
    )
    parser.add_argument("--prototxt", help="caffe: the net definition, checked against the weights")
    parser.add_argument("--bgr-to-rgb", action="store_true", help="caffe: reverse the first conv's input channels")
    add_overwrite_arg(parser, "--out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sknet.weights import check_finite, save_weights

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {out}")
    caffemodel = args.name if args.source == "caffe" else None
    check_outputs([out], "--out", args.overwrite, reads=[caffemodel, args.prototxt, args.checkpoint])
    if args.source == "caffe" and not Path(args.name).is_file():
        raise CheckpointError(f"no such .caffemodel file: {one_line(args.name)}")
    meta: dict[str, object] = {}
    if args.source == "timm":
        from sknet.convert.timm import convert_timm_state, load_timm_pretrained, sknet_name

        name = sknet_name(args.name)
        if args.checkpoint:
            from sknet.weights import read_weights

            state, _ = read_weights(args.checkpoint)
            model = convert_timm_state(state, name)
        else:
            model = load_timm_pretrained(name)
        options: dict[str, object] = {}
        meta.update(model.data_config.to_metadata(), source=f"timm:{args.name}")  # timm's own preprocessing
    else:
        if args.checkpoint:
            raise ConfigError("--checkpoint is for --from timm; give the .caffemodel as the name")
        from sknet.convert.caffe import from_caffe

        model, name, options = from_caffe(args.name, args.prototxt, args.bgr_to_rgb)
        options = {k: v for k, v in options.items() if k != "num_classes"}
        meta.update(source=f"caffe:{Path(args.name).name}", input="as the Caffe model was trained (see its README)")
    meta.update(
        model=name,
        model_options={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        num_classes=int(model.fc.out_features),
        in_chans=3,
    )
    check_finite(model.state_dict().items(), f"{one_line(args.name)} (converted)")  # never write broken weights
    save_weights(out, model, meta)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {name} ({params:,} parameters) from {meta['source']}")
    return 0
