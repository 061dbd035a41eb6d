"""A folder of class sub-folders (``root/cat/x.jpg``, ``root/dog/a/b/y.PNG``), decoded once and cached.

Each top-level sub-folder is a class; its images may sit at any depth below it. When ``root`` holds
``train/`` and ``val/`` (or ``valid/``, ``validation/``, ``test/``) sub-folders — or ``val_dir`` names
a separate folder — those are the splits; otherwise a seeded stratified split holds out
``val_fraction`` of each class. Files that cannot be decoded are skipped and listed in
``ImageDataset.skipped`` (escaped, see :mod:`cnnlab.data.skipped`), never fatal and never a warning:
the command that loads the data prints one line and writes them to ``skipped.txt``.

Symlinks are followed only when they lead out of the dataset: one that points back inside it (a
top-level ``all -> .`` would otherwise become a class duplicating every image under a new label), or
to a folder already scanned, is ignored with one log line. Hidden files and folders (``.DS_Store``,
``.git``) are ignored; only regular files count, so a FIFO named ``x.png`` cannot hang a run. A folder
that cannot be listed is a one-line :class:`~cnnlab.errors.DataError` naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.data.base import DatasetSplits, ImageDataset, register_dataset
from cnnlab.data.cache import decode_files
from cnnlab.data.decode import IMAGE_EXTENSIONS, MAX_PIXELS, decode_image, is_image_file
from cnnlab.data.skipped import escape_path, format_skipped, safe_text, skipped_summary
from cnnlab.data.splits import stratified_split
from cnnlab.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "decode_image",
    "decode_items",
    "format_skipped",
    "is_image_file",
    "load_imagefolder",
    "scan_folder",
    "skipped_summary",
    "stratified_split",
]
DEFAULT_IMAGE_SIZE = 64
VAL_DIR_NAMES = ("val", "valid", "validation", "test")
log = logging.getLogger(__name__)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass
class _Walk:
    """What one scan has seen, so no folder or linked file is counted twice."""

    roots: tuple[str, ...]  # real paths of the dataset folders
    dirs: set[tuple[int, int]] = field(default_factory=set)  # (device, inode) of every folder
    linked_files: set[str] = field(default_factory=set)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (link, where it leads)

    def loops_back(self, link: str) -> str | None:
        """Where ``link`` leads when that is inside a dataset root (or above one), else None."""
        real = os.path.realpath(link)
        if any(_inside(real, r) or _inside(r, real) for r in self.roots):
            return real
        return None

    def new_dir(self, path: str, is_link: bool) -> bool:
        """True the first time a folder is met; a link into the dataset is refused outright."""
        if is_link and (real := self.loops_back(path)) is not None:
            self.ignored.append((path, real))
            return False
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"cannot read folder {escape_path(path)}: {exc.strerror}") from None
        ident = (st.st_dev, st.st_ino)
        if ident in self.dirs:
            if is_link:
                self.ignored.append((path, os.path.realpath(path)))
            return False
        self.dirs.add(ident)
        return True


def _listdir(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as exc:
        raise DataError(f"cannot read folder {escape_path(path)}: {exc.strerror or exc}") from None


def _kind(de: os.DirEntry) -> tuple[bool, bool, bool]:
    """(is a symlink, is a folder, is a regular file or a broken link) — errors read as neither."""
    try:
        link = de.is_symlink()
        if de.is_dir():
            return link, True, False
        return link, False, de.is_file() or (link and not os.path.exists(de.path))
    except OSError:
        return False, False, False


def _scan_class(walk: _Walk, top: str) -> list[Path]:
    """Image files at any depth below ``top``, hidden entries skipped, links followed once."""
    found, stack = [], [top]
    while stack:
        for de in _listdir(stack.pop()):
            if de.name.startswith("."):  # .DS_Store, .git, ._resource forks
                continue
            link, is_dir, is_file = _kind(de)
            if is_dir:
                if walk.new_dir(de.path, link):
                    stack.append(de.path)
            elif is_file and is_image_file(de.name):
                if link and os.path.exists(de.path):
                    real = os.path.realpath(de.path)
                    if walk.loops_back(de.path) is not None or real in walk.linked_files:
                        walk.ignored.append((de.path, real))
                        continue
                    walk.linked_files.add(real)
                found.append(Path(de.path))  # a broken link stays: decoding reports it
    return sorted(found)


# A command may scan the same folder more than once (training, then the report); the user needs to
# read about its symlinks once per process, not once per scan.
_REPORTED: set[tuple[str, int]] = set()


def _report_ignored(root: Path, ignored: list[tuple[str, str]]) -> None:
    if not ignored or (os.path.realpath(root), len(ignored)) in _REPORTED:
        return
    _REPORTED.add((os.path.realpath(root), len(ignored)))
    link, target = ignored[0]
    more = f" and {len(ignored) - 1} more" if len(ignored) > 1 else ""
    log.warning(
        "ignored %d symlink(s) in %s that lead back into the dataset or to a folder already "
        "scanned (%s -> %s%s): following them would count the same images twice",
        len(ignored),
        escape_path(root),
        escape_path(link),
        escape_path(target),
        more,
    )


def scan_folder(
    root: Path, *, dataset_roots: Sequence[str | Path] | None = None
) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (file, label) pairs, searching nested folders.

    ``dataset_roots`` (default: ``root``) are the folders a symlink must not lead back into; a
    split folder passes the dataset's root so a link from ``train/`` into ``val/`` is not followed.
    Class names are made printable (:func:`~cnnlab.data.skipped.safe_text`) as they become labels.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"image folder {escape_path(root)} does not exist; pass --data-dir pointing to a folder "
            "of class sub-folders"
        )
    roots = [root, *(dataset_roots or [])]
    walk = _Walk(tuple(os.path.realpath(r) for r in roots))
    walk.new_dir(str(root), False)
    class_dirs = []
    for de in sorted(_listdir(str(root)), key=lambda d: d.name):
        link, is_dir, _ = _kind(de)
        if is_dir and not de.name.startswith(".") and walk.new_dir(de.path, link):
            class_dirs.append(de)
    if not class_dirs:
        _report_ignored(root, walk.ignored)
        raise DataError(
            f"{escape_path(root)} has no class sub-folders; expected {escape_path(root)}/CLASS_NAME/"
            "image files"
        )
    classes = [safe_text(de.name) for de in class_dirs]
    items = []
    for label, de in enumerate(class_dirs):
        items.extend((f, label) for f in _scan_class(walk, de.path))
    _report_ignored(root, walk.ignored)
    if not items:
        raise DataError(
            f"{escape_path(root)} holds no image files ({', '.join(IMAGE_EXTENSIONS)}, any letter "
            "case) in its class sub-folders"
        )
    return classes, items


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
    ``workers``, ``progress``, ``max_pixels``). The skipped files are in ``skipped`` as
    (escaped path, reason): printable, one line each (:func:`~cnnlab.data.skipped.escape_path`).
    Nothing is warned; the caller reports them once (:func:`~cnnlab.data.skipped.skipped_summary`).
    """
    paths = [str(p) for p, _ in items]
    out = decode_files(paths, size, channels, **decode_kw)
    skipped = [(escape_path(p), safe_text(why)) for p, why in out.skipped]
    if not out.ok:
        raise DataError(
            f"none of the {len(items)} image files could be decoded (first: {skipped[0][0]}: "
            f"{skipped[0][1]})"
        )
    labels = torch.tensor([items[i][1] for i in out.ok], dtype=torch.int64)
    ds = ImageDataset(
        torch.from_numpy(out.images), labels, list(classes), name, [paths[i] for i in out.ok]
    )
    ds.skipped = skipped
    return ds


def _find_val_dir(root: Path) -> Path | None:
    for name in VAL_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    return None


def _require_two_classes(root: Path, classes: list[str]) -> None:
    if len(classes) < 2:
        raise DataError(
            f"{escape_path(root)} has only one class sub-folder ({classes[0]}); a classifier needs "
            "at least two"
        )


def split_folders(
    train_root: Path,
    val_root: Path,
    size: int | tuple[int, int],
    channels: int,
    name: str,
    dataset_root: Path | None = None,
    **decode_kw,
) -> DatasetSplits:
    """Train and validation splits from two folders of class sub-folders (same class names).

    ``dataset_root`` (the folder holding both, when there is one) bounds where symlinks may lead.
    """
    real_train, real_val = os.path.realpath(train_root), os.path.realpath(val_root)
    if _inside(real_train, real_val) or _inside(real_val, real_train):
        raise DataError(
            f"validation folder {escape_path(val_root)} and training folder "
            f"{escape_path(train_root)} are the same images (one holds or links to the other)"
        )
    roots = [train_root, val_root] if dataset_root is None else [dataset_root]
    classes, train_items = scan_folder(train_root, dataset_roots=roots)
    _require_two_classes(train_root, classes)
    val_classes, val_items = scan_folder(val_root, dataset_roots=roots)
    extra = [c for c in val_classes if c not in classes]
    if extra:
        raise DataError(
            f"{escape_path(val_root)} has class(es) {', '.join(extra)} that "
            f"{escape_path(train_root)} lacks; "
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
            raise DataError(f"validation folder {escape_path(val_dir)} does not exist")
        return split_folders(root, Path(val_dir), size, channels, "imagefolder", **kw)
    explicit_val = _find_val_dir(root)
    if (root / "train").is_dir() and explicit_val is not None:
        return split_folders(
            root / "train", explicit_val, size, channels, "imagefolder", dataset_root=root, **kw
        )
    classes, items = scan_folder(root)
    _require_two_classes(root, classes)
    full = decode_items(items, classes, size, channels, "imagefolder", **kw)
    train_idx, test_idx = stratified_split(full.labels, val_fraction, seed)
    if len(test_idx) == 0:
        raise DataError(
            f"{escape_path(root)} is too small to hold out a validation split "
            f"(val_fraction={val_fraction}); "
            "add images or give a validation folder"
        )
    train, test = full.subset(train_idx), full.subset(test_idx)
    train.skipped, test.skipped = list(full.skipped), list(full.skipped)
    return DatasetSplits(train, test)
