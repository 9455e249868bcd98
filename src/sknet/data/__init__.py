"""Datasets, transforms and loaders for training and evaluation."""

from sknet.data.datasets import DATASETS, DataSpec, build_dataset
from sknet.data.loader import InMemoryImages, TensorBatchLoader

__all__ = ["DATASETS", "DataSpec", "InMemoryImages", "TensorBatchLoader", "build_dataset"]
