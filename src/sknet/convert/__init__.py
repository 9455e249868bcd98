"""Interoperability: timm and the authors' Caffe weights (see `sknet convert`)."""

from sknet.convert.caffe import from_caffe, read_caffemodel, write_caffemodel
from sknet.convert.timm import convert_timm_model, from_timm_state, load_timm_pretrained

__all__ = [
    "convert_timm_model",
    "from_caffe",
    "from_timm_state",
    "load_timm_pretrained",
    "read_caffemodel",
    "write_caffemodel",
]
