"""A folder of class sub-folders (``root/cat/x.jpg``, ``root/dog/y.png``), decoded once into memory.

When ``root`` holds ``train/`` and ``test/`` (or ``val/``) sub-folders, those are the splits;
otherwise a seeded stratified split holds out ``val_fraction`` of each class. Files that cannot be
decoded are skipped and reported, never fatal.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cnnlab.data.base import DatasetSplits, ImageDataset, register_dataset
from cnnlab.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # decompression-bomb guard: larger images are refused


def is_image_file(path: Path) -> bool:
    """True for the common image extensions, in any letter case."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode_image(path: str | Path, size: int | tuple[int, int], channels: int) -> np.ndarray:
    """Decode one file to a uint8 array (C, H, W): EXIF orientation applied, resized, converted.

    Raises ``ValueError`` with a short reason for empty, truncated, undecodable or oversized files.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    h, w = (size, size) if isinstance(size, int) else size
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ValueError(
                        f"image of {im.width}x{im.height} exceeds the {MAX_PIXELS:,}-pixel limit"
                    )
                im.draft("RGB" if channels == 3 else "L", (w, h))  # JPEG: decode at reduced scale
                im = ImageOps.exif_transpose(im)
                if im.mode in ("P", "LA", "RGBA", "PA") or (
                    im.mode == "P" and "transparency" in im.info
                ):
                    im = im.convert("RGBA")
                    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(bg, im)
                im = im.convert("RGB" if channels == 3 else "L")
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (
            OSError,
            SyntaxError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def scan_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (file, label) pairs, searching nested folders."""
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist; pass --data-dir pointing to a folder of class sub-folders"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected {root}/CLASS_NAME/image files")
    items = []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*")):
            if f.is_file() and is_image_file(f):
                items.append((f, label))
    if not items:
        raise DataError(
            f"{root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class sub-folders"
        )
    return classes, items


def decode_items(
    items: list[tuple[Path, int]], classes: list[str], size: int, channels: int, name: str
) -> ImageDataset:
    """Decode every file; skip (and record) the ones that fail."""
    arrays, labels, paths, skipped = [], [], [], []
    for path, label in items:
        try:
            arrays.append(decode_image(path, size, channels))
        except (ValueError, OSError) as exc:
            skipped.append((str(path), str(exc).splitlines()[0][:200]))
            continue
        labels.append(label)
        paths.append(str(path))
    if skipped:
        first = ", ".join(p for p, _ in skipped[:3])
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s), e.g. {first}", stacklevel=2
        )
    if not arrays:
        raise DataError(f"none of the {len(items)} image files could be decoded")
    images = torch.from_numpy(np.stack(arrays))
    ds = ImageDataset(images, torch.tensor(labels), classes, name, paths)
    ds.skipped = skipped
    return ds


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held out) holding out ``fraction`` of every class (at least one image each)."""
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        held.append(idx[:n])
        train.append(idx[n:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


@register_dataset("imagefolder")
def load_imagefolder(
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int = 3,
    val_fraction: float = 0.2,
    seed: int = 0,
    **_: object,
) -> DatasetSplits:
    """Decode a folder of class sub-folders at ``image_size`` (default 64) into train/test splits."""
    if data_dir is None:
        raise DataError("imagefolder needs --data-dir pointing to a folder of class sub-folders")
    root = Path(data_dir)
    size = image_size or 64
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" in split_dirs and ("test" in split_dirs or "val" in split_dirs):
        classes, train_items = scan_folder(split_dirs["train"])
        test_root = split_dirs.get("test", split_dirs.get("val"))
        test_classes, test_items = scan_folder(test_root)
        if test_classes != classes:
            raise DataError(
                f"{test_root} has classes {test_classes} but {split_dirs['train']} has {classes}"
            )
        train = decode_items(train_items, classes, size, channels, "imagefolder")
        test = decode_items(test_items, classes, size, channels, "imagefolder")
        test.skipped = train.skipped + test.skipped
        return DatasetSplits(train, test)
    classes, items = scan_folder(root)
    if len(classes) < 2:
        raise DataError(
            f"{root} has only one class sub-folder ({classes[0]}); a classifier needs at least two"
        )
    full = decode_items(items, classes, size, channels, "imagefolder")
    train_idx, test_idx = stratified_split(full.labels, val_fraction, seed)
    train, test = full.subset(train_idx), full.subset(test_idx)
    train.skipped = full.skipped
    return DatasetSplits(train, test)
