"""Datasets, transforms and loaders for training and evaluation.

The names below are loaded on first use (PEP 562), so that importing one floor of this package (e.g. the
preprocessing record, :mod:`sknet.data.config`, which weights files read) does not import the loaders.
"""

from importlib import import_module

_HOMES = {
    "DATASETS": "sknet.data.datasets",
    "DataSpec": "sknet.data.datasets",
    "build_dataset": "sknet.data.datasets",
    "InMemoryImages": "sknet.data.tensors",
    "TensorBatchLoader": "sknet.data.tensors",
    "DataConfig": "sknet.data.config",
    "DataInfo": "sknet.data.loader",
    "LoaderOptions": "sknet.data.loader",
    "build_loader": "sknet.data.loader",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'sknet.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
