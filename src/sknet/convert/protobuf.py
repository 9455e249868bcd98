"""Just enough of the protobuf wire format to read and write Caffe's NetParameter (`.caffemodel`).

No Caffe and no compiled caffe.proto: a caffemodel is a NetParameter message whose fields we need are
  NetParameter:   name = 1 (string), layer = 100 (LayerParameter), layers = 2 (V1, refused)
  LayerParameter: name = 1, type = 2 (strings), blobs = 7 (BlobProto)
  BlobProto:      num/channels/height/width = 1..4 (legacy shape), data = 5 (packed float),
                  shape = 7 (BlobShape: dim = 1, packed int64), double_data = 8
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from sknet.errors import CheckpointError

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(CheckpointError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) for each field; LENGTH values are memoryviews."""
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == FIXED64:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == FIXED32:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == LENGTH:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise WireError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise WireError("truncated message")
        yield number, wire, value


def _packed_varints(value: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, type and parameter blobs (numpy arrays, Caffe shapes)."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


def _read_blob(buf: memoryview) -> np.ndarray:
    legacy = [0, 0, 0, 0]
    shape: list[int] | None = None
    chunks: list[np.ndarray] = []
    for number, wire, value in iter_fields(buf):
        if number in (1, 2, 3, 4) and wire == VARINT:
            legacy[number - 1] = int(value)
        elif number == 5 and wire in (LENGTH, FIXED32):  # packed, or one float per field
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif number == 8 and wire == LENGTH:
            chunks.append(np.frombuffer(value, dtype="<f8").astype(np.float32))
        elif number == 7 and wire == LENGTH:
            dims: list[int] = []
            for n, w, v in iter_fields(value):
                if n == 1:
                    dims.extend(_packed_varints(v) if w == LENGTH else [int(v)])
            shape = dims
    data = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if shape is None:
        shape = [d for d in legacy if d] or [len(data)]
    if int(np.prod(shape)) != len(data):
        raise WireError(f"blob holds {len(data)} values but its shape is {shape}")
    return data.reshape(shape).copy()


def read_net(data: bytes) -> tuple[str, list[CaffeLayer]]:
    """(net name, layers) of a binary NetParameter."""
    name = ""
    layers: list[CaffeLayer] = []
    for number, wire, value in iter_fields(data):
        if number == 1 and wire == LENGTH:
            name = bytes(value).decode("utf-8", "replace")
        elif number == 2 and wire == LENGTH:
            raise WireError(
                "this caffemodel uses the V1 'layers' format; upgrade it with Caffe's upgrade_net_proto_binary"
            )
        elif number == 100 and wire == LENGTH:
            layer = CaffeLayer("", "")
            for n, w, v in iter_fields(value):
                if n == 1 and w == LENGTH:
                    layer.name = bytes(v).decode("utf-8", "replace")
                elif n == 2 and w == LENGTH:
                    layer.type = bytes(v).decode("utf-8", "replace")
                elif n == 7 and w == LENGTH:
                    layer.blobs.append(_read_blob(v))
            layers.append(layer)
    return name, layers


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _write_varint(number << 3 | LENGTH) + _write_varint(len(payload)) + payload


def _write_blob(array: np.ndarray) -> bytes:
    shape = b"".join(_write_varint(int(d)) for d in array.shape)
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return _field(7, _field(1, shape)) + _field(5, data)


def write_net(name: str, layers: list[CaffeLayer]) -> bytes:
    """A binary NetParameter holding `layers` (name, type and blobs only)."""
    out = [_field(1, name.encode())]
    for layer in layers:
        body = _field(1, layer.name.encode()) + _field(2, layer.type.encode())
        body += b"".join(_field(7, _write_blob(b)) for b in layer.blobs)
        out.append(_field(100, body))
    return b"".join(out)
