"""Datasets, transforms and loaders for training and evaluation."""

from sknet.data.datasets import DATASETS, DataSpec, build_dataset
from sknet.data.loader import InMemoryImages, TensorBatchLoader
from sknet.data.pipeline import DataInfo, LoaderOptions, build_loader

__all__ = [
    "DATASETS",
    "DataInfo",
    "DataSpec",
    "InMemoryImages",
    "LoaderOptions",
    "TensorBatchLoader",
    "build_dataset",
    "build_loader",
]
