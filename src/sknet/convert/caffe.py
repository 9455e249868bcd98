"""The authors' Caffe SKNet-26/50/101 models (`.caffemodel` + `.prototxt`) ↔ sknet, without Caffe.

Official layer naming (github.com/implus/SKNet, models/sknet50.prototxt), unit u of stage s (s = 2..5):
  conv1/7x7_s2, conv1/7x7_s2/bn                     stem conv + BN (then a ceil-mode 3×3/2 max pool)
  conv{s}_{u}/1x1_reduce[/bn]                      1×1 reduce
  conv{s}_{u}/3x3g32[/bn], conv{s}_{u}/3x3g32d2[/bn] the SK paths (3×3, and 3×3 dilation 2; G = 32)
  conv{s}_{u}/B_fc1[/bn], conv{s}_{u}/B_fc2         fuse W (d×C) + BN, select A (M·C×d)
  conv{s}_{u}/1x1_increase[/bn], conv{s}_{u}/1x1_proj[/bn]   1×1 expand, projection shortcut
  classifier                                        fc (InnerProduct, with bias)
BatchNorm layers are the authors' CuDNNBatchNorm: blobs scale, bias, running mean, running variance,
each (1, C, 1, 1), eps 1e-5 — exactly torch's BatchNorm2d in eval mode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sknet.convert.protobuf import CaffeLayer, read_net, write_net
from sknet.errors import CheckpointError
from sknet.layers.selective_kernel import SKConv2d, attention_dim
from sknet.models.resnext import DEPTHS, ResNeXt

BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
CAFFE_BN = "CuDNNBatchNorm"
_UNIT = re.compile(r"^conv(\d)_(\d+)/1x1_reduce$")


def _path_name(conv: nn.Conv2d) -> str:
    k, d = conv.kernel_size[0], conv.dilation[0]
    return f"{k}x{k}g{conv.groups}" + (f"d{d}" if d > 1 else "")


def layer_map(model: ResNeXt) -> list[tuple[str, str, list[str]]]:
    """(Caffe layer name, Caffe type, our state-dict keys in blob order) for an SK ResNeXt."""

    def conv_bn(caffe: str, ours: str) -> list[tuple[str, str, list[str]]]:
        return [
            (caffe, "Convolution", [f"{ours}.conv.weight"]),
            (f"{caffe}/bn", CAFFE_BN, [f"{ours}.bn.{f}" for f in BN_FIELDS]),
        ]

    entries = conv_bn("conv1/7x7_s2", "stem.conv")
    for i, stage in enumerate(model.stages()):
        for u, block in enumerate(stage):
            caffe, ours = f"conv{i + 2}_{u + 1}", f"layer{i + 1}.{u}"
            sk = block.conv2
            if not isinstance(sk, SKConv2d) or sk.select is None:
                raise CheckpointError("the Caffe layout exists for SK models with attention only")
            entries += conv_bn(f"{caffe}/1x1_reduce", f"{ours}.conv1")
            for m, path in enumerate(sk.paths):
                entries += conv_bn(f"{caffe}/{_path_name(path.conv)}", f"{ours}.conv2.paths.{m}")
            entries += [
                (f"{caffe}/B_fc1", "Convolution", [f"{ours}.conv2.fuse.fc.weight"]),
                (f"{caffe}/B_fc1/bn", CAFFE_BN, [f"{ours}.conv2.fuse.bn.{f}" for f in BN_FIELDS]),
                (f"{caffe}/B_fc2", "Convolution", [f"{ours}.conv2.select.fc.weight"]),
            ]
            entries += conv_bn(f"{caffe}/1x1_increase", f"{ours}.conv3")
            if block.downsample is not None:
                entries += conv_bn(f"{caffe}/1x1_proj", f"{ours}.downsample")
    entries.append(("classifier", "InnerProduct", ["fc.weight", "fc.bias"]))
    return entries


def _caffe_shape(key: str, tensor: torch.Tensor) -> tuple[int, ...]:
    # BN blobs are (1, C, 1, 1) in the authors' files; everything else has torch's shape.
    if key.rsplit(".", 1)[-1] in BN_FIELDS and tensor.dim() == 1 and ".bn." in key:
        return (1, tensor.numel(), 1, 1)
    return tuple(tensor.shape)


def to_caffe_layers(model: ResNeXt) -> list[CaffeLayer]:
    state = model.state_dict()
    return [
        CaffeLayer(name, kind, [state[k].detach().cpu().numpy().reshape(_caffe_shape(k, state[k])) for k in keys])
        for name, kind, keys in layer_map(model)
    ]


def write_caffemodel(model: ResNeXt, path: str | Path, net_name: str = "sknet") -> Path:
    """Write `model`'s weights as a binary caffemodel with the official layer names."""
    path = Path(path)
    path.write_bytes(write_net(net_name, to_caffe_layers(model)))
    return path


def read_caffemodel(path: str | Path) -> tuple[str, list[CaffeLayer]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        return read_net(path.read_bytes())
    except CheckpointError as err:
        raise CheckpointError(f"{path} is not a readable caffemodel: {err}") from None


def read_prototxt_layers(path: str | Path) -> dict[str, dict[str, str]]:
    """Layer name → the scalar fields of a prototxt layer (type, num_output, ...), nested blocks flattened.

    A small reader for the text format of Caffe's net definitions: enough to check a caffemodel against
    its prototxt (layer names, types, widths, pooling) without protobuf's text parser.
    """
    text = Path(path).read_text()
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+', re.sub(r"#[^\n]*", "", text))
    layers: dict[str, dict[str, str]] = {}
    stack: list[str] = []
    current: dict[str, str] | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "}":
            if not stack:
                raise CheckpointError(f"{path}: unbalanced '}}'")
            if stack.pop() == "layer" and not stack and current is not None:
                layers[current.get("name", f"#{len(layers)}")] = current
                current = None
            i += 1
        elif i + 1 < len(tokens) and tokens[i + 1] == "{":
            stack.append(tok)
            if tok == "layer" and len(stack) == 1:
                current = {}
            i += 2
        elif i + 2 < len(tokens) and tokens[i + 1] == ":":
            value = tokens[i + 2]
            if tokens[i + 2] == "{":  # "shape: { ... }"
                stack.append(tok)
                i += 3
                continue
            if current is not None:
                key = tok if len(stack) == 1 else f"{stack[-1]}.{tok}"
                current.setdefault(key, value.strip('"'))
            i += 3
        else:
            raise CheckpointError(f"{path}: cannot parse the prototxt near {tok!r}")
    if stack:
        raise CheckpointError(f"{path}: unbalanced '{{'")
    return layers


def infer_config(layers: Sequence[CaffeLayer]) -> tuple[str, dict[str, object]]:
    """(model name, create_model options) of the SK network stored in `layers`."""
    by_name = {layer.name: layer for layer in layers}
    units = [0, 0, 0, 0]
    for name in by_name:
        match = _UNIT.match(name)
        if match and 2 <= int(match.group(1)) <= 5:
            units[int(match.group(1)) - 2] = max(units[int(match.group(1)) - 2], int(match.group(2)))
    depth = {v: k for k, v in DEPTHS.items()}.get(tuple(units))
    if depth is None:
        raise CheckpointError(
            f"the caffemodel has {units} units in stages conv2–conv5; sknet knows SKNet-26/50/101 "
            f"({', '.join(str(v) for v in DEPTHS.values())})"
        )
    if "classifier" not in by_name or not by_name["classifier"].blobs:
        raise CheckpointError("the caffemodel has no 'classifier' layer (the official name of the fc)")
    attn_dims: list[int | None] = []
    for s in range(4):
        fc1 = by_name.get(f"conv{s + 2}_1/B_fc1")
        if fc1 is None or not fc1.blobs:
            raise CheckpointError(f"the caffemodel has no conv{s + 2}_1/B_fc1: not an SKNet with the official names")
        d, width = fc1.blobs[0].shape[:2]
        attn_dims.append(None if d == attention_dim(width) else int(d))
    options: dict[str, object] = {"stem_pool": "caffe", "num_classes": int(by_name["classifier"].blobs[0].shape[0])}
    if any(d is not None for d in attn_dims):
        options["attn_dims"] = tuple(attn_dims)
    return f"sknet{depth}", options


def from_caffe(
    caffemodel: str | Path, prototxt: str | Path | None = None, bgr_to_rgb: bool = False
) -> tuple[nn.Module, str, dict[str, object]]:
    """Build the matching sknet model from the authors' caffemodel: (model in eval mode, name, options).

    `bgr_to_rgb` reverses the input channels of the first conv, for models trained on BGR images.
    """
    from sknet.models import create_model

    _, layers = read_caffemodel(caffemodel)
    name, options = infer_config(layers)
    model = create_model(name, **options)
    by_name = {layer.name: layer for layer in layers}
    if prototxt is not None:
        _check_prototxt(read_prototxt_layers(prototxt), model, prototxt)
    state = model.state_dict()
    new_state = {}
    for caffe_name, kind, keys in layer_map(model):
        layer = by_name.get(caffe_name)
        if layer is None:
            raise CheckpointError(f"{caffemodel}: layer {caffe_name!r} ({kind}) is missing")
        if len(layer.blobs) != len(keys):
            raise CheckpointError(
                f"{caffemodel}: layer {caffe_name!r} has {len(layer.blobs)} blobs, expected {len(keys)} ({kind})"
            )
        for key, blob in zip(keys, layer.blobs, strict=True):
            target = state[key]
            if blob.size != target.numel():
                raise CheckpointError(
                    f"{caffemodel}: {caffe_name!r} blob of shape {list(blob.shape)} does not fit {key} "
                    f"{list(target.shape)}"
                )
            new_state[key] = torch.from_numpy(blob.reshape(tuple(target.shape)).astype(np.float32))
    if bgr_to_rgb:
        new_state["stem.conv.conv.weight"] = new_state["stem.conv.conv.weight"].flip(1)
    for key, value in state.items():  # BN batch counters are not in Caffe files
        new_state.setdefault(key, value)
    model.load_state_dict(new_state, strict=True)
    return model.eval(), name, options


def _check_prototxt(proto: dict[str, dict[str, str]], model: ResNeXt, path: str | Path) -> None:
    for caffe_name, kind, keys in layer_map(model):
        layer = proto.get(caffe_name)
        if layer is None:
            raise CheckpointError(f"{path}: the prototxt has no layer {caffe_name!r}")
        if kind == "Convolution" and layer.get("convolution_param.num_output"):
            expected = model.state_dict()[keys[0]].shape[0]
            if int(layer["convolution_param.num_output"]) != expected:
                raise CheckpointError(
                    f"{path}: {caffe_name} has num_output {layer['convolution_param.num_output']}, the caffemodel "
                    f"{expected}"
                )
