"""MNIST and Fashion-MNIST from their IDX files (gzip-compressed or not).

Reads the raw IDX format directly (magic number, dimensions, bytes), so no torchvision dataset class
and no download is involved. Debian's ``dataset-fashion-mnist`` package puts the files in
``/usr/share/datasets/fashion-mnist``, which is the default when it exists.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.base import DatasetSplits, ImageDataset, register_dataset
from cnnlab.errors import DataError

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DEFAULT_DIRS = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist", "data/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist", "data/mnist"],
}
HOW_TO_GET = {
    "fashion-mnist": (
        "get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
        "/usr/share/datasets/fashion-mnist) or put train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
        "the Fashion-MNIST project into a folder and pass --data-dir FOLDER"
    ),
    "mnist": (
        "put the four MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) into a folder and pass --data-dir FOLDER"
    ),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a numpy array with its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise DataError(f"{path} is truncated: expected {expected} data bytes, found {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for cand in (
        stem + ".gz",
        stem,
        stem.replace("-idx", ".idx") + ".gz",
        stem.replace("-idx", ".idx"),
    ):
        if (folder / cand).exists():
            return folder / cand
    return None


def resolve_data_dir(name: str, data_dir: str | Path | None) -> Path:
    """The folder holding ``name``'s files, or a :class:`DataError` saying how to get them."""
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"data directory {folder} does not exist; {HOW_TO_GET[name]}")
        return folder
    for cand in DEFAULT_DIRS[name]:
        if Path(cand).is_dir():
            return Path(cand)
    raise DataError(f"{name} data not found in {', '.join(DEFAULT_DIRS[name])}; {HOW_TO_GET[name]}")


def _load_idx_splits(name: str, classes: list[str], data_dir: str | Path | None) -> DatasetSplits:
    folder = resolve_data_dir(name, data_dir)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path = _find(folder, f"{prefix}-images-idx3-ubyte")
        lab_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
        if img_path is None or lab_path is None:
            raise DataError(
                f"{folder} lacks the {prefix}-images/labels IDX files of {name}; {HOW_TO_GET[name]}"
            )
        images = torch.from_numpy(read_idx(img_path).copy()).unsqueeze(1)
        labels = torch.from_numpy(read_idx(lab_path).astype(np.int64))
        splits[split] = ImageDataset(images, labels, list(classes), name)
    return DatasetSplits(splits["train"], splits["test"])


@register_dataset("fashion-mnist")
def load_fashion_mnist(*, data_dir: str | Path | None = None, **_: object) -> DatasetSplits:
    """Fashion-MNIST (60,000 train / 10,000 test, 1x28x28) from IDX files."""
    return _load_idx_splits("fashion-mnist", FASHION_CLASSES, data_dir)


@register_dataset("mnist")
def load_mnist(*, data_dir: str | Path | None = None, **_: object) -> DatasetSplits:
    """MNIST (60,000 train / 10,000 test, 1x28x28) from IDX files."""
    return _load_idx_splits("mnist", [str(i) for i in range(10)], data_dir)
