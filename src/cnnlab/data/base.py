"""The in-memory dataset every source produces: uint8 images, int64 labels, class names.

Keeping decoded images as one uint8 tensor (N, C, H, W) is what makes training fast on a small
machine: no per-image PIL work or Python-level transform in the loop, 4x less memory than float32, and
batches are sliced, moved and augmented as whole tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from cnnlab.errors import DataError, UnknownNameError


@dataclass
class ImageDataset:
    """Decoded images of one split.

    Attributes:
        images: uint8 tensor (N, C, H, W).
        labels: int64 tensor (N,).
        classes: class names; ``labels`` index into it.
        name: the source's name (``digits``, ``fashion-mnist``, ``imagefolder``…).
        paths: source file of each image, when it came from files (for reports and galleries).
        skipped: files that could not be decoded, with the reason, for ``skipped.txt``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    paths: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be a uint8 (N, C, H, W) tensor; got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        """Number of images per class, in ``classes`` order."""
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, index: torch.Tensor) -> ImageDataset:
        """The images at ``index`` (a 1-D index tensor), keeping class names."""
        paths = [self.paths[i] for i in index.tolist()] if self.paths is not None else None
        return ImageDataset(
            self.images[index], self.labels[index], list(self.classes), self.name, paths
        )

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of pixel values scaled to [0, 1]."""
        x = self.images[:20000].to(torch.float32).div_(255)
        dims = (0, 2, 3)
        mean = x.mean(dims).tolist()
        std = x.std(dims).clamp_min(1e-3).tolist()
        return tuple(round(m, 4) for m in mean), tuple(round(s, 4) for s in std)


def resize_dataset(ds: ImageDataset, size: int) -> ImageDataset:
    """The dataset with every image resized to ``size`` x ``size`` once, in memory (still uint8).

    Antialiased bilinear in chunks, so a 60k-image split never needs a float copy of itself.
    """
    if ds.images.shape[-2:] == (size, size):
        return ds
    out = []
    for chunk in ds.images.split(4096):
        x = F.interpolate(
            chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return replace(ds, images=torch.cat(out))


@dataclass(frozen=True)
class DatasetSplits:
    """The train and test (or validation) splits of a source."""

    train: ImageDataset
    test: ImageDataset


DatasetLoader = Callable[..., DatasetSplits]
_DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a source under ``name``; it is called with keyword options (``data_dir``…)."""

    def wrap(fn: DatasetLoader) -> DatasetLoader:
        if name in _DATASETS:
            raise ValueError(f"dataset '{name}' is already registered")
        _DATASETS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Names of the registered data sources."""
    import cnnlab.data  # noqa: F401  (registers the sources)

    return sorted(_DATASETS)


def load_dataset(name: str, **kwargs) -> DatasetSplits:
    """Load the train and test splits of source ``name``.

    Example::

        splits = load_dataset("digits")
        splits = load_dataset("fashion-mnist", data_dir="/usr/share/datasets/fashion-mnist")
        splits = load_dataset("imagefolder", data_dir="photos/", image_size=64)
    """
    names = list_datasets()
    if name not in _DATASETS:
        raise UnknownNameError("dataset", name, names)
    return _DATASETS[name](**kwargs)
