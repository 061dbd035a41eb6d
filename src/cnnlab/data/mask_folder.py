"""Mask folders (VOC style): ``images/`` beside ``masks/`` PNGs of class indices or palette colours.

Layout (``--data masks --data-dir DIR``), split folders or one folder split by ``--val-fraction``::

    DIR/train/images/a.jpg  DIR/train/masks/a.png        DIR/images/a.jpg  DIR/masks/a.png
    DIR/val/images/b.jpg    DIR/val/masks/b.png          (DIR/classes.txt: background first)

A mask is read as class indices when it is a one-channel or palette ("P") PNG — VOC's files are
palette PNGs whose pixel values *are* the indices — and 255 is the ignore index (VOC's object
borders). An RGB mask is mapped through the VOC colour map (class k = VOC colour k; white = 255).
``classes.txt`` lists the names with the background first; without it, the indices found name the
classes. A mask whose size differs from its image, with an index beyond the listed classes or an
unknown colour, or an image without a mask, is skipped and listed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.data.base import DatasetSplits, register_dataset
from cnnlab.data.decode import is_image_file
from cnnlab.data.dense import (
    IGNORE_INDEX,
    DenseRecord,
    decode_dense,
    share_skipped,
    split_records,
)
from cnnlab.errors import DataError

MASK_SUFFIXES = (".png", ".PNG", ".bmp", ".tif", ".tiff")


def voc_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette: (n, 3) uint8, colour k for class k (bit-interleaved)."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def read_mask(path: Path, num_classes: int | None) -> np.ndarray:
    """A mask file as (H, W) uint8 class indices (0 background, 255 ignored); ValueError if bad.

    ``num_classes`` counts the background; indices at or above it (other than 255) are an error.
    """
    with Image.open(path) as im:
        if im.mode in ("P", "L", "I", "I;16"):
            arr = np.asarray(im if im.mode in ("P", "L") else im.convert("I"))
            if arr.max() > 255:
                raise ValueError(f"mask index {int(arr.max())} exceeds 255")
            arr = arr.astype(np.uint8)
        elif im.mode in ("RGB", "RGBA"):
            rgb = np.asarray(im.convert("RGB")).astype(np.int32)
            key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            cmap = voc_colormap(num_classes or 22).astype(np.int32)
            lut = {int(r << 16 | g << 8 | b): i for i, (r, g, b) in enumerate(cmap)}
            lut[0xE0E0C0] = IGNORE_INDEX  # VOC's border colour (224, 224, 192)
            lut[0xFFFFFF] = IGNORE_INDEX
            values, inverse = np.unique(key, return_inverse=True)
            unknown = [int(v) for v in values if int(v) not in lut]
            if unknown:
                v = unknown[0]
                raise ValueError(
                    f"colour {(v >> 16, (v >> 8) & 255, v & 255)} is not in the VOC palette"
                )
            arr = np.array([lut[int(v)] for v in values], np.uint8)[inverse].reshape(key.shape)
        else:
            raise ValueError(f"mask mode {im.mode} is neither indices nor RGB")
    if num_classes is not None:
        bad = arr[(arr != IGNORE_INDEX) & (arr >= num_classes)]
        if bad.size:
            raise ValueError(
                f"class index {int(bad.max())} but classes.txt lists {num_classes} classes"
            )
    return arr


def read_mask_folder(
    images: Path, masks: Path, num_classes: int | None
) -> tuple[list[DenseRecord], list[tuple[str, str]]]:
    """Records (an image and a reader of its mask) and the images that have no mask."""
    records, skipped = [], []
    for img in sorted(p for p in images.rglob("*") if p.is_file() and is_image_file(p)):
        rel = img.relative_to(images)
        mask = next(
            (
                masks / rel.with_suffix(s)
                for s in MASK_SUFFIXES
                if (masks / rel.with_suffix(s)).is_file()
            ),
            None,
        )
        if mask is None:
            skipped.append((str(img), f"no mask {rel.with_suffix('.png')} in {masks}"))
            continue
        records.append(
            DenseRecord(str(img), mask=lambda m=mask: read_mask(m, num_classes))  # type: ignore[misc]
        )
    return records, skipped


def _max_index(records: list[DenseRecord]) -> int:
    top = 0
    for r in records:
        try:
            m = r.mask()  # type: ignore[misc]
        except (ValueError, OSError):
            continue
        vals = np.unique(np.asarray(m))
        vals = vals[vals != IGNORE_INDEX]
        top = max(top, int(vals.max()) if vals.size else 0)
    return top


@register_dataset("masks")
def load_mask_folder(
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int = 3,
    val_fraction: float = 0.2,
    **_: object,
) -> DatasetSplits:
    """Images and segmentation masks from ``data_dir``; see the module docstring for the layout."""
    if data_dir is None:
        raise DataError("masks needs --data-dir: a folder with images/ and masks/")
    root = Path(data_dir)
    names_file = root / "classes.txt"
    names = (
        [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
        if names_file.is_file()
        else None
    )
    k = len(names) if names else None
    val = next((root / n for n in ("val", "valid", "test") if (root / n / "images").is_dir()), None)
    if (root / "train" / "images").is_dir() and val is not None:
        tr, s1 = read_mask_folder(root / "train" / "images", root / "train" / "masks", k)
        va, s2 = read_mask_folder(val / "images", val / "masks", k)
    elif (root / "images").is_dir():
        recs, s1 = read_mask_folder(root / "images", root / "masks", k)
        tr, va = split_records(recs, val_fraction)
        s2 = []
    else:
        raise DataError(
            f"{root} has neither images/ + masks/ nor train/ and val/ folders with them"
        )
    if names is None:
        names = ["background"] + [str(i) for i in range(1, _max_index(tr + va) + 1)]
    if len(names) < 2:
        raise DataError(f"{names_file} lists only the background; add the object classes")
    kw = dict(size=image_size, channels=channels, has_boxes=False, has_masks=True)
    train = decode_dense(tr, names[1:], "masks", skipped=s1, **kw)  # type: ignore[arg-type]
    test = decode_dense(va, names[1:], "masks", skipped=s2, **kw)  # type: ignore[arg-type]
    return DatasetSplits(*share_skipped(train, test))  # type: ignore[arg-type]
