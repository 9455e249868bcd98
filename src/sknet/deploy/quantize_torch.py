"""int8 TorchScript: PyTorch's own x86 int8, FX graph mode quantization (``torch.ao.quantization.quantize_fx``).

The model (a copy, every BN folded) is traced by torch.fx, observed on the calibration images, converted to
quantized modules and saved as a frozen TorchScript trace. PyTorch's x86 engine, with sknet's weight and
activation ranges: weights int8 symmetric per output channel within ±64 by default (7 bits, as the ONNX
Runtime path: :data:`sknet.deploy.quantize.WEIGHT_CODE_LIMITS`), activations uint8 per tensor over the full
8-bit range. PyTorch's x86 default is the other way round, 8-bit weights and 7-bit activations
(``reduce_range``); either keeps fbgemm's u8×s8 pair sums from saturating on x86 CPUs without VNNI, but
7-bit activations cost ShuffleNetV2-0.5-SK far more top-1 than 7-bit weights do (Fashion-MNIST,
benchmarks/RESULTS.md, "int8"). The SK attention (Fuse, Select's logits and softmax) stays float, as in the
ONNX Runtime path (:func:`sknet.deploy.quantize.float_sk_tail`). Measured against ONNX Runtime's int8 in
``benchmarks/int8.py`` (benchmarks/RESULTS.md, "int8").

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
from sknet.deploy.quantize import (
    CALIBRATION_BATCH,
    DEFAULT_WEIGHT_BITS,
    WEIGHT_CODE_LIMITS,
    CalibrationMethod,
    check_weight_bits,
    weights_record,
)
from sknet.errors import ConfigError, output_folder
from sknet.export import export_metadata
from sknet.layers.selective_kernel import Fuse, SelectAttention
from sknet.progress import Progress

ENGINE = "x86"  # torch.backends.quantized: fbgemm and oneDNN, chosen per CPU
REDUCE_RANGE = False  # full 8-bit activations; the weights' range keeps the products exact (module docstring)
FLOAT_MODULES = (Fuse, SelectAttention)  # the SK attention: N·C-sized, float costs nothing measurable


def observers() -> dict[CalibrationMethod, type]:
    """The activation observer of each calibration method PyTorch offers (no percentile observer)."""
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    return {CalibrationMethod.MINMAX: MinMaxObserver, CalibrationMethod.ENTROPY: HistogramObserver}


def weight_observer(bits: int):
    """The weight observer of `bits` (:data:`sknet.deploy.quantize.WEIGHT_CODE_LIMITS`): int8 symmetric per
    output channel, codes within ±limit (scale = max |w| / limit per channel)."""
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    limit = WEIGHT_CODE_LIMITS[check_weight_bits(bits)]
    return PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-limit, quant_max=limit
    )


def check_torch_method(method: str | CalibrationMethod) -> CalibrationMethod:
    """The method, or ConfigError (before any work) for one PyTorch has no observer for, or no x86 engine."""
    method = CalibrationMethod.parse(method)
    if method not in observers():
        offered = ", ".join(m.value for m in observers())
        raise ConfigError(f"calibration method {method.value} is ONNX Runtime's only; for TorchScript: {offered}")
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
    weight_bits: int = DEFAULT_WEIGHT_BITS,
    progress: str = "auto",
) -> dict:
    """Write `model` as an int8 TorchScript file at `path` for inputs (batch, *images.shape[1:]), calibrated
    on `images` (float32 (n, C, H, W), preprocessed as the model expects: see
    :func:`sknet.deploy.calibration.calibration_images`); `calibration` names their source in the record.
    Load it with ``torch.jit.load`` (x86 CPUs) or :class:`sknet.deploy.scripted.ScriptedModel`. Returns the
    ``quantization`` record written beside the preprocessing record. `weight_bits`: 7 (the default, exact on
    every x86 CPU) or 8 (only for CPUs whose int8 products do not saturate), as for ONNX
    (:func:`sknet.deploy.quantize.quantize_export`); `progress` as there. Raises ConfigError for a method
    PyTorch has no observer for (percentile), a weight width not offered or a torch without the x86 engine."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    method = check_torch_method(method)
    weights = weight_observer(weight_bits)
    record = record or data_config(model)
    path = Path(path)
    output_folder(path)
    torch.backends.quantized.engine = ENGINE
    activation = observers()[method].with_args(reduce_range=REDUCE_RANGE)
    mapping = get_default_qconfig_mapping(ENGINE).set_global(QConfig(activation=activation, weight=weights))
    for kind in FLOAT_MODULES:
        mapping.set_object_type(kind, None)
    fused = fuse_for_inference(copy.deepcopy(model).cpu().float().eval())
    example = torch.from_numpy(images[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notes (its successor is torchao)
        prepared = prepare_fx(fused, mapping, example_inputs=(example,))
        with torch.no_grad():
            starts = range(0, len(images), CALIBRATION_BATCH)
            with Progress(len(starts), f"calibrating ({method.value})", progress) as bar:
                for start in starts:
                    prepared(torch.from_numpy(images[start : start + CALIBRATION_BATCH]))
                    bar.update()
            converted = convert_fx(prepared)
            traced = torch.jit.freeze(torch.jit.trace(converted, example, check_trace=False).eval())
    meta = export_metadata(model, record)
    quantization = {
        "dtype": "int8",
        "format": "TorchScript (torch.ao FX graph mode quantization)",
        "engine": ENGINE,
        "weights": weights_record(weight_bits),
        "weight_bits": weight_bits,
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
