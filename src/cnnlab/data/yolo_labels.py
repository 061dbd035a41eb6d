"""YOLO txt labels: ``images/`` beside ``labels/``, one ``class cx cy w h`` line per object.

Layout (``--data yolo --data-dir DIR``), Ultralytics' or a flat one split by ``--val-fraction``::

    DIR/images/train/a.jpg  DIR/labels/train/a.txt      DIR/images/a.jpg  DIR/labels/a.txt
    DIR/images/val/b.jpg    DIR/labels/val/b.txt        (DIR/classes.txt or DIR/data.yaml names)

Coordinates are fractions of the image width / height (centre, size). An image without a label
file has no objects (YOLO's convention). Class names come from ``classes.txt`` (one per line) or
the ``names`` of ``data.yaml``; without either, the ids found are the names. A line that is not
five numbers, names an unknown class or puts its box outside the image is skipped and listed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cnnlab.data.base import DatasetSplits, register_dataset
from cnnlab.data.decode import is_image_file
from cnnlab.data.dense import (
    DenseRecord,
    box_problem,
    clip_box,
    decode_dense,
    image_size_of,
    share_skipped,
    split_records,
)
from cnnlab.errors import DataError

TOLERANCE = 0.01  # normalised coordinates may overshoot [0, 1] by rounding


def read_class_names(root: Path) -> list[str] | None:
    """Names from ``classes.txt`` or ``data.yaml`` (list or ``{id: name}``), or None."""
    if (root / "classes.txt").is_file():
        names = [ln.strip() for ln in (root / "classes.txt").read_text().splitlines()]
        return [n for n in names if n]
    for name in ("data.yaml", "dataset.yaml"):
        if (root / name).is_file():
            try:
                data = yaml.safe_load((root / name).read_text()) or {}
            except yaml.YAMLError as exc:
                raise DataError(
                    f"{root / name} is not valid YAML: {str(exc).splitlines()[0]}"
                ) from None
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
    return None


def read_label_file(
    path: Path, image: str, num_classes: int | None
) -> tuple[list[list[float]], list[int], list[tuple[str, str]]]:
    """Boxes (normalised xyxy), class ids and skipped lines of one label file."""
    boxes, labels, skipped = [], [], []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [], [], [(str(path), f"cannot read the label file: {exc}")]
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{n}"
        if len(parts) != 5:
            skipped.append((where, f"expected 5 fields (class cx cy w h), found {len(parts)}"))
            continue
        try:
            cls_f, cx, cy, w, h = (float(p) for p in parts)
        except ValueError:
            skipped.append((where, f"not numbers: {line.strip()[:60]!r}"))
            continue
        if not cls_f.is_integer() or cls_f < 0 or (num_classes and cls_f >= num_classes):
            known = f" (classes 0..{num_classes - 1})" if num_classes else ""
            skipped.append((where, f"unknown class id {parts[0]}{known}"))
            continue
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        problem = box_problem(box, 1, 1, tol=TOLERANCE)
        if problem:
            skipped.append((where, problem.replace("1x1 image", "image (normalised)")))
            continue
        boxes.append(clip_box(box, 1, 1))
        labels.append(int(cls_f))
    return boxes, labels, skipped


def read_yolo_folder(
    images: Path, labels: Path, num_classes: int | None
) -> tuple[list[DenseRecord], list[tuple[str, str]]]:
    """One split's records (boxes in pixels of each image) and skipped lines."""
    records, skipped = [], []
    for img in sorted(p for p in images.rglob("*") if p.is_file() and is_image_file(p)):
        rel = img.relative_to(images).with_suffix(".txt")
        rec = DenseRecord(str(img))
        label = labels / rel
        if label.is_file():
            boxes, ids, bad = read_label_file(label, str(img), num_classes)
            skipped += bad
            if boxes:
                try:
                    h, w = image_size_of(str(img))
                except (OSError, ValueError, SyntaxError):
                    h = w = 1  # decode_dense skips the unreadable image with the reason
                rec.boxes = [[b[0] * w, b[1] * h, b[2] * w, b[3] * h] for b in boxes]
                rec.labels = ids
        records.append(rec)
    return records, skipped


@register_dataset("yolo")
def load_yolo(
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int = 3,
    val_fraction: float = 0.2,
    **_: object,
) -> DatasetSplits:
    """YOLO-format boxes from ``data_dir``; see the module docstring for the layout."""
    if data_dir is None:
        raise DataError("yolo needs --data-dir: a folder with images/ and labels/")
    root = Path(data_dir)
    if not (root / "images").is_dir():
        raise DataError(f"{root} has no images/ folder (YOLO layout: images/ + labels/)")
    names = read_class_names(root)
    k = len(names) if names else None
    img_root, lab_root = root / "images", root / "labels"
    val_name = next((n for n in ("val", "valid", "test") if (img_root / n).is_dir()), None)
    if (img_root / "train").is_dir() and val_name:
        tr, s1 = read_yolo_folder(img_root / "train", lab_root / "train", k)
        va, s2 = read_yolo_folder(img_root / val_name, lab_root / val_name, k)
    else:
        recs, s1 = read_yolo_folder(img_root, lab_root, k)
        tr, va = split_records(recs, val_fraction)
        s2 = []
    if names is None:
        top = max((lb for r in tr + va for lb in r.labels), default=0)
        names = [str(i) for i in range(top + 1)]
    train = decode_dense(tr, names, "yolo", size=image_size, channels=channels, skipped=s1)
    test = decode_dense(va, names, "yolo", size=image_size, channels=channels, skipped=s2)
    return DatasetSplits(*share_skipped(train, test))  # type: ignore[arg-type]
