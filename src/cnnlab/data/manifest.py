"""A CSV manifest of ``path,label`` rows (optionally ``split``), decoded through the cache.

Paths are relative to the CSV file's folder (or absolute). A header row is recognised when it names
the columns (``path``/``file``/``filename``/``image`` and ``label``/``class``/``target``, optionally
``split``); without one the columns are path, label[, split]. Rows whose ``split`` is ``val``,
``valid``, ``validation`` or ``test`` form the validation split; without a split column a seeded
stratified split is used. A manifest naming files that do not exist is an error (it is almost always
a wrong base folder); files that exist but cannot be decoded are skipped and reported.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cnnlab.data.base import DatasetSplits, register_dataset
from cnnlab.data.decode import MAX_PIXELS
from cnnlab.data.imagefolder import DEFAULT_IMAGE_SIZE, decode_items
from cnnlab.data.skipped import escape_path
from cnnlab.data.splits import stratified_split
from cnnlab.errors import DataError

PATH_COLUMNS = ("path", "file", "filename", "image", "filepath")
LABEL_COLUMNS = ("label", "class", "target", "category")
VAL_SPLITS = ("val", "valid", "validation", "test")


def _find_manifest(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise DataError("csv needs --data-dir pointing to a CSV file of path,label rows")
    p = Path(data_dir)
    if p.is_dir():
        found = sorted(p.glob("*.csv"))
        if len(found) != 1:
            raise DataError(
                f"{p} holds {len(found)} .csv files; pass --data-dir pointing to the manifest itself"
            )
        return found[0]
    if not p.is_file():
        raise DataError(f"CSV manifest {p} does not exist")
    return p


def read_manifest(path: Path) -> list[tuple[str, str, str]]:
    """(path, label, split) rows of the manifest; ``split`` is '' when there is no split column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as exc:
        raise DataError(
            f"CSV manifest {escape_path(path)} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except (OSError, csv.Error) as exc:
        raise DataError(
            f"cannot read CSV manifest {escape_path(path)}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not rows:
        raise DataError(f"CSV manifest {path} is empty; expected path,label rows")
    head = [c.strip().lower() for c in rows[0]]
    ipath, ilabel, isplit, first_line = 0, 1, 2, 1
    if any(h in PATH_COLUMNS for h in head) and any(h in LABEL_COLUMNS for h in head):
        ipath = next(i for i, h in enumerate(head) if h in PATH_COLUMNS)
        ilabel = next(i for i, h in enumerate(head) if h in LABEL_COLUMNS)
        isplit = head.index("split") if "split" in head else -1
        rows, first_line = rows[1:], 2
    out = []
    for n, r in enumerate(rows, start=first_line):
        if len(r) <= max(ipath, ilabel):
            raise DataError(f"{path} line {n}: expected path,label; got {','.join(r)!r}")
        split = r[isplit].strip().lower() if 0 <= isplit < len(r) else ""
        out.append((r[ipath].strip(), r[ilabel].strip(), split))
    if not out:
        raise DataError(f"CSV manifest {path} has a header but no rows")
    return out


def _sorted_classes(labels: set[str]) -> list[str]:
    """Class names in numeric order when every label is an integer, else alphabetical."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


@register_dataset("csv")
def load_csv(
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int = 3,
    val_fraction: float = 0.2,
    seed: int = 0,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
    **_: object,
) -> DatasetSplits:
    """Train/validation splits from a ``path,label[,split]`` CSV manifest (``--data-dir FILE.csv``)."""
    manifest = _find_manifest(data_dir)
    rows = read_manifest(manifest)
    base = manifest.parent
    files = [(Path(p) if Path(p).is_absolute() else base / p) for p, _, _ in rows]
    missing = [escape_path(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"{manifest} names {len(missing)} missing file(s) (paths are relative to {base}): "
            + ", ".join(missing[:3])
            + (", …" if len(missing) > 3 else "")
        )
    classes = _sorted_classes({lab for _, lab, _ in rows})
    if len(classes) < 2:
        raise DataError(
            f"{manifest} has only one label ({classes[0]}); a classifier needs at least two"
        )
    label_of = {c: i for i, c in enumerate(classes)}
    items = [(f, label_of[lab]) for f, (_, lab, _) in zip(files, rows)]
    size = image_size or DEFAULT_IMAGE_SIZE
    kw = dict(
        cache=cache, cache_dir=cache_dir, workers=workers, progress=progress, max_pixels=max_pixels
    )
    splits = [s for _, _, s in rows]
    if any(splits):
        train_items = [it for it, s in zip(items, splits) if s not in VAL_SPLITS]
        val_items = [it for it, s in zip(items, splits) if s in VAL_SPLITS]
        if not train_items or not val_items:
            raise DataError(
                f"{manifest}'s split column needs both train and val/test rows; "
                f"found {len(train_items)} train and {len(val_items)} validation rows"
            )
        train = decode_items(train_items, classes, size, channels, "csv", **kw)
        test = decode_items(val_items, classes, size, channels, "csv", **kw)
        skipped = train.skipped + test.skipped
        train.skipped, test.skipped = skipped, list(skipped)
        return DatasetSplits(train, test)
    full = decode_items(items, classes, size, channels, "csv", **kw)
    train_idx, test_idx = stratified_split(full.labels, val_fraction, seed)
    if len(test_idx) == 0:
        raise DataError(f"{manifest} is too small to hold out a validation split")
    train, test = full.subset(train_idx), full.subset(test_idx)
    train.skipped, test.skipped = list(full.skipped), list(full.skipped)
    return DatasetSplits(train, test)
