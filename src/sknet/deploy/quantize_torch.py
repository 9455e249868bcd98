"""int8 TorchScript: PyTorch's own x86 int8, FX graph mode quantization (``torch.ao.quantization.quantize_fx``).

The model (a copy, every BN folded) is traced by torch.fx, observed on the calibration images, converted to
quantized modules and saved as a frozen TorchScript trace. PyTorch's x86 defaults
(``get_default_qconfig_mapping("x86")``): weights int8 symmetric per output channel, activations uint8 per
tensor, but over the full 8-bit range where PyTorch's default reduces it to 7 bits (``reduce_range``, which
keeps fbgemm's u8×s8 products from saturating on x86 CPUs without VNNI, as ONNX Runtime's U8S8 on such
CPUs: see :data:`sknet.deploy.quantize.DEFAULT_ACTIVATIONS`): with 7 bits ShuffleNetV2-0.5-SK lost 16.3
points of top-1, with 8 bits 3.1 (Fashion-MNIST, benchmarks/RESULTS.md, "int8"). The SK attention (Fuse,
Select's logits and softmax) stays float, as in the ONNX Runtime path
(:func:`sknet.deploy.quantize.float_sk_tail`). Measured on this project's CPU against ONNX Runtime's int8
in ``benchmarks/int8.py`` (benchmarks/RESULTS.md, "int8").

The file carries what a TorchScript export carries (``sknet.json``: the preprocessing record) plus
``quantization.json``, the record of what was quantized and how it was calibrated.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sknet.bn_folding import fuse_for_inference
from sknet.data.config import DataConfig, data_config
from sknet.deploy.quantize import CALIBRATION_BATCH, CalibrationMethod
from sknet.errors import ConfigError, output_folder
from sknet.export import export_metadata
from sknet.layers.selective_kernel import Fuse, SelectAttention

ENGINE = "x86"  # torch.backends.quantized: fbgemm and oneDNN, chosen per CPU
REDUCE_RANGE = False  # full 8-bit activations (module docstring)
FLOAT_MODULES = (Fuse, SelectAttention)  # the SK attention: N·C-sized, float costs nothing measurable


def observers() -> dict[CalibrationMethod, type]:
    """The activation observer of each calibration method PyTorch offers (no percentile observer)."""
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    return {CalibrationMethod.MINMAX: MinMaxObserver, CalibrationMethod.ENTROPY: HistogramObserver}


def check_torch_method(method: str | CalibrationMethod) -> CalibrationMethod:
    """The method, or ConfigError (before any work) for one PyTorch has no observer for, or no x86 engine."""
    method = CalibrationMethod.parse(method)
    if method not in observers():
        offered = ", ".join(m.value for m in observers())
        raise ConfigError(f"--calibration-method {method.value} is ONNX Runtime's only; for torchscript: {offered}")
    if ENGINE not in torch.backends.quantized.supported_engines:
        engines = ", ".join(torch.backends.quantized.supported_engines)
        raise ConfigError(f"this torch build has no {ENGINE} quantized engine (it has: {engines})")
    return method


def quantize_torchscript(
    model: nn.Module,
    path: str | Path,
    images: np.ndarray,
    calibration: str,
    method: str | CalibrationMethod = CalibrationMethod.MINMAX,
    record: DataConfig | None = None,
) -> dict:
    """Write `model` as an int8 TorchScript file at `path` for inputs (batch, *images.shape[1:]), calibrated
    on `images` (float32 (n, C, H, W), preprocessed as the model expects: see
    :func:`sknet.deploy.calibration.calibration_images`); `calibration` names their source in the record.
    Load it with ``torch.jit.load`` (x86 CPUs) or :class:`sknet.deploy.scripted.ScriptedModel`. Returns the
    ``quantization`` record written beside the preprocessing record. Raises ConfigError for a method
    PyTorch has no observer for (percentile) or a torch without the x86 engine."""
    from torch.ao.quantization import QConfig, get_default_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    method = check_torch_method(method)
    record = record or data_config(model)
    path = Path(path)
    output_folder(path)
    torch.backends.quantized.engine = ENGINE
    default = get_default_qconfig(ENGINE)
    activation = observers()[method].with_args(reduce_range=REDUCE_RANGE)
    mapping = get_default_qconfig_mapping(ENGINE).set_global(QConfig(activation=activation, weight=default.weight))
    for kind in FLOAT_MODULES:
        mapping.set_object_type(kind, None)
    fused = fuse_for_inference(copy.deepcopy(model).cpu().float().eval())
    example = torch.from_numpy(images[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notes (its successor is torchao)
        prepared = prepare_fx(fused, mapping, example_inputs=(example,))
        with torch.no_grad():
            for start in range(0, len(images), CALIBRATION_BATCH):
                prepared(torch.from_numpy(images[start : start + CALIBRATION_BATCH]))
            converted = convert_fx(prepared)
            traced = torch.jit.freeze(torch.jit.trace(converted, example, check_trace=False).eval())
    meta = export_metadata(model, record)
    quantization = {
        "dtype": "int8",
        "format": "TorchScript (torch.ao FX graph mode quantization)",
        "engine": ENGINE,
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, asymmetric, per tensor, " + ("7-bit range" if REDUCE_RANGE else "full 8-bit range"),
        "bn_folded": True,
        "float_modules": [kind.__name__ for kind in FLOAT_MODULES],
        "calibration": {"source": calibration, "images": len(images), "method": method.value},
        "torch": torch.__version__,
    }
    extra = {"sknet.json": json.dumps(meta), "quantization.json": json.dumps(quantization)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks torch.jit deprecated; still loads
        traced.save(str(path), _extra_files=extra)
    return quantization
