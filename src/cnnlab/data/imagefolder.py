"""A folder of class sub-folders (``root/cat/x.jpg``, ``root/dog/a/b/y.PNG``), decoded once and cached.

Each top-level sub-folder is a class; its images may sit at any depth below it. When ``root`` holds
``train/`` and ``val/`` (or ``valid/``, ``validation/``, ``test/``) sub-folders — or ``val_dir`` names
a separate folder — those are the splits; otherwise a seeded stratified split holds out
``val_fraction`` of each class. Files that cannot be decoded are skipped, counted in one warning and
listed in ``ImageDataset.skipped`` (the training run writes them to ``skipped.txt``), never fatal.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from cnnlab.data.base import DatasetSplits, ImageDataset, register_dataset
from cnnlab.data.cache import decode_files
from cnnlab.data.decode import IMAGE_EXTENSIONS, MAX_PIXELS, decode_image, is_image_file
from cnnlab.data.splits import stratified_split
from cnnlab.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "decode_image",
    "decode_items",
    "is_image_file",
    "load_imagefolder",
    "scan_folder",
    "stratified_split",
    "warn_skipped",
]
DEFAULT_IMAGE_SIZE = 64
VAL_DIR_NAMES = ("val", "valid", "validation", "test")


def scan_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (file, label) pairs, searching nested folders."""
    root = Path(root)
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
            rel = f.relative_to(root / cls).parts
            if any(part.startswith(".") for part in rel):  # .DS_Store, .git, ._resource forks
                continue
            if f.is_file() and is_image_file(f):
                items.append((f, label))
    if not items:
        raise DataError(
            f"{root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}, any letter case) in its "
            "class sub-folders"
        )
    return classes, items


def warn_skipped(skipped: Sequence[tuple[str, str]], total: int) -> None:
    """One warning with the number of unreadable files and the first few, with reasons."""
    if not skipped:
        return
    first = "; ".join(f"{p} ({why})" for p, why in skipped[:3])
    more = ", …" if len(skipped) > 3 else ""
    warnings.warn(
        f"skipped {len(skipped)} of {total} image file(s) that could not be decoded: {first}{more}"
        " (all are listed in skipped.txt of the run)",
        stacklevel=3,
    )


def decode_items(
    items: Sequence[tuple[Path, int]],
    classes: list[str],
    size: int | tuple[int, int],
    channels: int,
    name: str,
    **decode_kw,
) -> ImageDataset:
    """Decode every file through the decoded cache; skip (and record) the ones that fail.

    ``decode_kw`` goes to :func:`cnnlab.data.cache.decode_files` (``cache``, ``cache_dir``,
    ``workers``, ``progress``, ``max_pixels``).
    """
    paths = [str(p) for p, _ in items]
    out = decode_files(paths, size, channels, **decode_kw)
    warn_skipped(out.skipped, len(items))
    if not out.ok:
        raise DataError(
            f"none of the {len(items)} image files could be decoded (first: {out.skipped[0][0]}: "
            f"{out.skipped[0][1]})"
        )
    labels = torch.tensor([items[i][1] for i in out.ok], dtype=torch.int64)
    ds = ImageDataset(
        torch.from_numpy(out.images), labels, list(classes), name, [paths[i] for i in out.ok]
    )
    ds.skipped = list(out.skipped)
    return ds


def _find_val_dir(root: Path) -> Path | None:
    for name in VAL_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    return None


def _require_two_classes(root: Path, classes: list[str]) -> None:
    if len(classes) < 2:
        raise DataError(
            f"{root} has only one class sub-folder ({classes[0]}); a classifier needs at least two"
        )


def split_folders(
    train_root: Path,
    val_root: Path,
    size: int | tuple[int, int],
    channels: int,
    name: str,
    **decode_kw,
) -> DatasetSplits:
    """Train and validation splits from two folders of class sub-folders (same class names)."""
    classes, train_items = scan_folder(train_root)
    _require_two_classes(train_root, classes)
    val_classes, val_items = scan_folder(val_root)
    extra = [c for c in val_classes if c not in classes]
    if extra:
        raise DataError(
            f"{val_root} has class(es) {', '.join(extra)} that {train_root} lacks; "
            f"training classes: {', '.join(classes)}"
        )
    # The validation folder may lack a class; its labels must still index the training classes.
    val_items = [(p, classes.index(val_classes[lab])) for p, lab in val_items]
    train = decode_items(train_items, classes, size, channels, name, **decode_kw)
    test = decode_items(val_items, classes, size, channels, name, **decode_kw)
    skipped = train.skipped + test.skipped
    train.skipped, test.skipped = skipped, list(skipped)
    return DatasetSplits(train, test)


@register_dataset("imagefolder")
def load_imagefolder(
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int = 3,
    val_fraction: float = 0.2,
    seed: int = 0,
    val_dir: str | Path | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
    **_: object,
) -> DatasetSplits:
    """Decode a folder of class sub-folders at ``image_size`` (default 64) into train/test splits.

    Example::

        splits = load_dataset("imagefolder", data_dir="photos/", image_size=128)
        print(splits.train.classes, splits.train.class_counts(), len(splits.train.skipped))
    """
    if data_dir is None:
        raise DataError("imagefolder needs --data-dir pointing to a folder of class sub-folders")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB); got {channels}")
    root = Path(data_dir)
    size = image_size or DEFAULT_IMAGE_SIZE
    kw = dict(
        cache=cache, cache_dir=cache_dir, workers=workers, progress=progress, max_pixels=max_pixels
    )
    if val_dir is not None:
        if not Path(val_dir).is_dir():
            raise DataError(f"validation folder {val_dir} does not exist")
        return split_folders(root, Path(val_dir), size, channels, "imagefolder", **kw)
    explicit_val = _find_val_dir(root)
    if (root / "train").is_dir() and explicit_val is not None:
        return split_folders(root / "train", explicit_val, size, channels, "imagefolder", **kw)
    classes, items = scan_folder(root)
    _require_two_classes(root, classes)
    full = decode_items(items, classes, size, channels, "imagefolder", **kw)
    train_idx, test_idx = stratified_split(full.labels, val_fraction, seed)
    if len(test_idx) == 0:
        raise DataError(
            f"{root} is too small to hold out a validation split (val_fraction={val_fraction}); "
            "add images or give a validation folder"
        )
    train, test = full.subset(train_idx), full.subset(test_idx)
    train.skipped, test.skipped = list(full.skipped), list(full.skipped)
    return DatasetSplits(train, test)
