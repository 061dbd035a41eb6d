"""Data sources, in-memory datasets, the decoded cache and augmentation on whole batches.

Importing this package registers the sources: ``digits`` (embedded), ``mnist``, ``fashion-mnist``
(IDX files), ``cifar10`` (binary or plain-data pickles), ``imagefolder`` (class sub-folders) and
``csv`` (a path,label manifest).
"""

from cnnlab.data import (  # noqa: F401  (register sources; coco, masks, scenes, yolo: dense)
    cifar,
    coco,
    digits,
    idx,
    imagefolder,
    manifest,
    mask_folder,
    scenes,
    yolo_labels,
)
from cnnlab.data.augment import BatchTransform, build_batch_transform, list_augmentations
from cnnlab.data.base import (
    DatasetSplits,
    ImageDataset,
    list_datasets,
    load_dataset,
    register_dataset,
    resize_dataset,
)
from cnnlab.data.loader import BatchLoader, normalize_batch
from cnnlab.data.skipped import (
    escape_path,
    format_skipped,
    parse_skipped,
    skipped_summary,
    unescape_path,
)
from cnnlab.data.splits import class_weights, stratified_split

__all__ = [
    "BatchLoader",
    "BatchTransform",
    "build_batch_transform",
    "class_weights",
    "escape_path",
    "format_skipped",
    "list_augmentations",
    "stratified_split",
    "DatasetSplits",
    "ImageDataset",
    "list_datasets",
    "load_dataset",
    "normalize_batch",
    "parse_skipped",
    "register_dataset",
    "resize_dataset",
    "skipped_summary",
    "unescape_path",
]
