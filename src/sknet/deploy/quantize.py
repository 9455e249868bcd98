"""int8 ONNX: the fp32 export (every BN folded) quantized statically by ONNX Runtime's quantizer.

QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized node, which ONNX Runtime fuses into
integer kernels), weights int8 symmetric per output channel within ±64 by default (7 bits, exact on every x86
CPU: :data:`WEIGHT_CODE_LIMITS`), activations uint8 (or int8) per tensor with ranges calibrated on real images
(:mod:`sknet.deploy.calibration`) by MinMax, Entropy or Percentile.

The file carries the fp32 export's metadata unchanged (the preprocessing record, see
:mod:`sknet.export`) plus ``quantization``: a JSON record of what was quantized (format, types, the op
types quantized, those left in float) and how it was calibrated (source, images, method).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from sknet.data.config import DataConfig
from sknet.enums import TextEnum
from sknet.errors import ConfigError
from sknet.export import MIN_OPSET
from sknet.layers.selective_kernel import Fuse, SelectAttention, SKConv2d
from sknet.progress import Progress

# The op types given integer kernels. Everything else stays float between a DequantizeLinear and the next
# QuantizeLinear: in SK units the softmax attention and the weighted sum of the paths (Mul). Clip is
# ReLU6 (MobileNetV2): left float, the convolution before it was quantized over its unclipped range, and
# MobileNetV2-SK lost 17 points instead of 3.7 (benchmarks/RESULTS.md, "int8").
QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "GlobalAveragePool", "Concat")
# ONNX Runtime's graph optimisation that quantizes the weights of a float convolution found between
# DequantizeLinear and QuantizeLinear nodes (which would undo FLOAT_CONVOLUTIONS in ResNeXt-like units).
# sknet's sessions turn it off (`session_kwargs`), so that a file runs as it was quantized.
REQUANTIZING_OPTIMIZERS = ("WeightBiasQuantization",)
ACTIVATION_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}  # ONNX Runtime's QuantType names
# uint8 activations with int8 weights (U8S8) are what x86's VNNI instruction multiplies: with them SKNet-50
# int8 ran faster than its fp32, with int8 activations (S8S8, ONNX Runtime's own default) slower, at the same
# accuracy (benchmarks/RESULTS.md, "int8 on CPUs, second pass"). Exact on CPUs without VNNI too with the
# default weight range (WEIGHT_CODE_LIMITS).
DEFAULT_ACTIVATIONS = "uint8"
# The largest |weight code| of each weight width offered. x86 CPUs without VNNI (AVX2; AVX-512 without VNNI)
# multiply uint8 activations by int8 weights with VPMADDUBSW, which adds each pair of u8·s8 products into a
# saturating int16: ONNX Runtime's U8S8 kernels and PyTorch's fbgemm run it there, and an int8 file runs on
# whatever CPU it is deployed to. With codes within ±64 a pair stays within 2·255·64 = 32640 ≤ 32767, exact on
# every x86 CPU (VNNI and AMX accumulate in int32 and run these codes with the same instructions, as fast);
# with ±127 it reaches 64770, and int8 files silently lost accuracy on an AVX2 CPU (benchmarks/RESULTS.md,
# "int8 on an AVX2 CPU"). 8 bits: for CPUs known not to saturate (VNNI, AMX, ARM).
# 7 is ONNX Runtime's `reduce_range` (it quantizes int8 weights within ±64).
WEIGHT_CODE_LIMITS = {7: 64, 8: 127}
DEFAULT_WEIGHT_BITS = 7
CALIBRATION_BATCH = 32  # images per calibration run of the instrumented graph


class CalibrationMethod(TextEnum):
    """How activation ranges are chosen from the calibration images (ONNX Runtime's calibrators)."""

    __option__ = "calibration method"

    MINMAX = "minmax"  # the observed min and max
    ENTROPY = "entropy"  # the range minimising the KL divergence of the quantized histogram (TensorRT's)
    PERCENTILE = "percentile"  # the 99.999th percentile of |x| (ONNX Runtime's default percentile)


_ORT_METHODS = {
    CalibrationMethod.MINMAX: "MinMax",
    CalibrationMethod.ENTROPY: "Entropy",
    CalibrationMethod.PERCENTILE: "Percentile",
}


def float_convolutions(graph) -> list[str]:
    """Names of the grouped convolutions of `graph` (an ONNX GraphProto) that stay float: groups of more than
    one channel (ResNeXt's and SK's 3×3 paths), not depthwise ones. ONNX Runtime's int8 kernels run those
    slower than its fp32 ones while 1×1 and depthwise convolutions run faster in int8 (profiled per node:
    benchmarks/RESULTS.md, "int8 on CPUs, second pass")."""
    shapes = {t.name: t.dims for t in graph.initializer}
    names = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = shapes.get(node.input[1])
        if groups > 1 and weight is not None and weight[1] > 1:  # (out, in/groups, kh, kw)
            names.append(node.name)
    return names


# The modules whose ONNX nodes stay float (the exporter records each node's class hierarchy): the SK
# layer's own ops (pooled sum, weighted sum) and its attention.
SK_TAIL_CLASSES = tuple(f"{c.__module__}.{c.__qualname__}" for c in (SKConv2d, Fuse, SelectAttention))


def float_sk_tail(graph) -> list[str]:
    """Names of the nodes of SK layers' tails that stay float: everything after the path convolutions and
    their activations — the pooled descriptor s = Σ_m mean u_m, Fuse, Select and the weighted sum
    V = Σ_m a_m·u_m (V is quantized once, where the next convolution reads it). Measured on ShuffleNetV2-SK
    with onnxruntime's qdq_loss_debug: quantized per tensor, the products a_m·u_m kept 10–20 dB of signal and
    the attention logits 7–10 dB, against 20–35 dB for convolution outputs. The ops on (N, C, 1, 1) tensors
    cost nothing measurable in float; the weighted sum costs what its QLinearAdd did."""
    names = []
    for node in graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))  # outermost first
        if classes and (classes[-1] == SK_TAIL_CLASSES[0] or any(c in classes for c in SK_TAIL_CLASSES[1:])):
            names.append(node.name)
    return names


def check_weight_bits(bits: int) -> int:
    """`bits` if it is a weight width offered (:data:`WEIGHT_CODE_LIMITS`), else ConfigError."""
    if bits not in WEIGHT_CODE_LIMITS:
        raise ConfigError(f"weight bits must be one of {', '.join(map(str, WEIGHT_CODE_LIMITS))}, got {bits!r}")
    return bits


def weights_record(bits: int) -> str:
    """The ``weights`` entry of an int8 file's quantization record (ONNX and TorchScript alike)."""
    return f"int8 within ±{WEIGHT_CODE_LIMITS[bits]} ({bits} bits), symmetric, per output channel"


def session_kwargs() -> dict:
    """Keyword arguments of ``onnxruntime.InferenceSession`` that run an int8 file as it was quantized (its
    float convolutions float): the re-quantizing optimisation off. Harmless for fp32 files."""
    return {"disabled_optimizers": list(REQUANTIZING_OPTIMIZERS)}


def require_onnxruntime():
    """ONNX Runtime's quantization package, or ConfigError (exit 2) saying how to install it."""
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization as quantization
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("int8 export needs onnx, onnxscript and onnxruntime: pip install 'sknet[export]'") from None
    return quantization


class _Batches:
    """ONNX Runtime's CalibrationDataReader over an array of images, in batches, counted on `progress`."""

    def __init__(self, images: np.ndarray, batch: int, progress: Progress) -> None:
        self._batches = iter([{"images": images[i : i + batch]} for i in range(0, len(images), batch)])
        self._progress, self._given = progress, 0

    def get_next(self):
        if self._given:  # ONNX Runtime asks for the next batch once it has run the previous one
            self._progress.update()
        self._given += 1
        return next(self._batches, None)


def quantize_export(
    model: nn.Module,
    path: str | Path,
    images: np.ndarray,
    calibration: str,
    method: str | CalibrationMethod = CalibrationMethod.MINMAX,
    record: DataConfig | None = None,
    opset: int = MIN_OPSET,
    op_types: tuple[str, ...] | None = QUANTIZED_OP_TYPES,
    activations: str = DEFAULT_ACTIVATIONS,
    weight_bits: int = DEFAULT_WEIGHT_BITS,
    progress: str = "auto",
) -> dict:
    """Write `model` as an int8 QDQ ONNX file at `path` for inputs (batch, *images.shape[1:]), calibrated
    on `images` (float32 (n, C, H, W), preprocessed as the model expects; see
    :func:`sknet.deploy.calibration.calibration_images`); `calibration` describes their source in the
    metadata. `op_types`: those given integer kernels (None: every op type ONNX Runtime's QDQ quantizer
    knows, the SK tail's Mul/Sub/Softmax/Where included). Returns the ``quantization`` record written into
    the file's metadata. `activations`: "uint8" (the default, U8S8: what x86's VNNI
    instruction multiplies) or "int8" (S8S8, ONNX Runtime's default; see :data:`DEFAULT_ACTIVATIONS`).
    `weight_bits`: 7 (the default: weight codes within ±64, exact on every x86 CPU) or 8 (within ±127: only
    for CPUs whose int8 products do not saturate; see :data:`WEIGHT_CODE_LIMITS`). `progress`: how the
    calibration shows its progress (:mod:`sknet.progress`).

    Raises ConfigError without onnxruntime/onnx/onnxscript, for an activation type or weight width not offered,
    an opset the installed onnx does not have, or a non-square image size."""
    from sknet.export import check_onnx_export, export_model

    quantization = require_onnxruntime()
    check_onnx_export(opset)
    import onnx
    import onnxruntime

    method = CalibrationMethod.parse(method)
    if activations not in ACTIVATION_TYPES:
        raise ConfigError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}, got {activations!r}")
    check_weight_bits(weight_bits)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="sknet-int8-", dir=path.parent) as tmp:
        fp32, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        export_model(model, fp32, "onnx", tuple(images.shape[1:]), opset, record)
        # Shape inference and ONNX Runtime's graph optimisations (constant folding, ...) before quantizing,
        # as ONNX Runtime's quantization guide advises.
        quantization.shape_inference.quant_pre_process(str(fp32), str(prepared))
        ranges = _calibrate(prepared, images, method, op_types, Path(tmp), progress)
        graph = onnx.load(str(prepared), load_external_data=False).graph
        grouped, tail = float_convolutions(graph), float_sk_tail(graph)
        kept_float = grouped + tail
        quantization.quantize_static(
            str(prepared),
            str(path),
            None,  # the ranges come from the cache written by _calibrate
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=None if op_types is None else list(op_types),
            nodes_to_exclude=kept_float,
            per_channel=True,
            reduce_range=weight_bits == 7,  # ONNX Runtime's 7-bit weights: codes within ±64
            activation_type=getattr(quantization.QuantType, ACTIVATION_TYPES[activations]),
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=getattr(quantization.CalibrationMethod, _ORT_METHODS[method]),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            calibration_cache_path=str(ranges),
        )
        props = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
    int8 = onnx.load(str(path))
    # Integer kernels only for the op types asked for and nodes not kept float (a float node between Q/DQ
    # pairs would look quantized to the pattern alone).
    quantized = sorted(t for t in quantized_op_types(int8.graph, set(kept_float)) if op_types is None or t in op_types)
    float_ops = sorted(
        {node.op_type for node in int8.graph.node if node.op_type not in ("QuantizeLinear", "DequantizeLinear")}
        - set(quantized)
    )
    record = {
        "dtype": "int8",
        "format": "QDQ",
        "weights": weights_record(weight_bits),
        "weight_bits": weight_bits,
        "activations": f"{activations}, asymmetric, per tensor",
        "bn_folded": True,
        "quantized_op_types": quantized,
        "float_op_types": float_ops,
        "float_nodes": {  # besides float_op_types: see float_convolutions and float_sk_tail
            "grouped convolutions": len(grouped),
            "SK tail": len(tail),
        },
        "session": {"disabled_optimizers": list(REQUANTIZING_OPTIMIZERS)},
        "calibration": {"source": calibration, "images": len(images), "method": method.value},
        "onnxruntime": onnxruntime.__version__,
    }
    props["quantization"] = json.dumps(record)
    del int8.metadata_props[:]
    int8.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in props.items())
    onnx.save(int8, str(path))
    return record


def _calibrate(
    prepared: Path, images: np.ndarray, method: CalibrationMethod, op_types, tmp: Path, progress: str = "auto"
) -> Path:
    """Activation ranges of `prepared` over `images` by ONNX Runtime's calibrator for `method`, saved as
    ONNX Runtime's calibration cache (what ``quantize_static(calibration_cache_path=...)`` reads).

    Called here rather than inside ``quantize_static``, because that passes no histogram size on: its
    Entropy calibrator then keeps 128 bins and searches thresholds among 128 quantized bins, i.e. none
    (it returns MinMax's ranges, verified with onnxruntime 1.32). Entropy here: 2048 bins, 128 quantized,
    as TensorRT's calibrator (Migacz, "8-bit Inference with TensorRT", GTC 2017); Percentile: 2048 bins,
    the 99.999th percentile (ONNX Runtime's defaults)."""
    from onnxruntime.quantization import calibrate

    bins = {CalibrationMethod.ENTROPY: {"num_bins": 2048, "num_quantized_bins": 128}}.get(method, {})
    calibrator = calibrate.create_calibrator(
        prepared,
        None if op_types is None else list(op_types),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=getattr(calibrate.CalibrationMethod, _ORT_METHODS[method]),
        extra_options={"symmetric": False, **bins},
    )
    batches = -(-len(images) // CALIBRATION_BATCH)
    bar = Progress(batches, f"calibrating ({method.value})", progress)
    with bar, contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress of their own
        calibrator.collect_data(_Batches(images, CALIBRATION_BATCH, bar))
    if progress != "never" and method is not CalibrationMethod.MINMAX:  # a search over every histogram
        print(f"calibrating ({method.value}): the ranges of the collected histograms", flush=True)
    with contextlib.redirect_stdout(io.StringIO()):
        ranges = calibrator.compute_data()
    cache = tmp / "ranges.json"
    calibrate.save_tensors_data(ranges, cache)
    return cache


def quantized_op_types(graph, excluded: set[str] = frozenset()) -> set[str]:
    """The op types of `graph` that read a dequantized tensor and write one that is quantized again: the
    pattern ONNX Runtime replaces by an integer kernel (nodes named in `excluded` not counted)."""
    producers = {out: node.op_type for node in graph.node for out in node.output}
    requantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    return {
        node.op_type
        for node in graph.node
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and node.name not in excluded
        and node.input
        and producers.get(node.input[0]) == "DequantizeLinear"
        and any(out in requantized for out in node.output)
    }
