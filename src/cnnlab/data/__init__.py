"""Data sources, in-memory datasets and fast batch loading.

Importing this package registers the sources: ``digits`` (embedded), ``mnist``, ``fashion-mnist``
(IDX files) and ``imagefolder`` (class sub-folders).
"""

from cnnlab.data import digits, idx, imagefolder  # noqa: F401  (register the sources)
from cnnlab.data.base import (
    DatasetSplits,
    ImageDataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from cnnlab.data.loader import BatchLoader, normalize_batch

__all__ = [
    "BatchLoader",
    "DatasetSplits",
    "ImageDataset",
    "list_datasets",
    "load_dataset",
    "normalize_batch",
    "register_dataset",
]
