"""Which part of a dataset: its training or its test split (folders and shards name them so)."""

from __future__ import annotations

from sknet.enums import TextEnum


class Split(TextEnum):
    TRAIN = "train"
    TEST = "test"
