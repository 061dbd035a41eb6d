"""COCO JSON annotations: boxes, and polygon or RLE masks decoded by ``pycocotools``.

Layout (``--data coco --data-dir DIR``)::

    DIR/train.json  DIR/val.json            (or annotations/instances_{train,val}*.json,
    DIR/<file_name> | DIR/images/<file_name> | DIR/{train,val}/<file_name>
                                             or a single JSON split by --val-fraction)

Categories become classes in id order (COCO ids need not be contiguous); ``bbox`` is
``[x, y, w, h]`` in pixels. When any annotation carries a ``segmentation`` the split also has
semantic masks: each object's polygon / RLE painted with its class (``iscrowd`` regions become the
ignore index 255, and crowd boxes are not training targets, as in COCO's own evaluation).

Broken entries never stop the load: an annotation of an unknown image or category, a box outside
its image or without area, a segmentation that does not decode, or an image file that is missing
or corrupt is skipped and listed (``skipped.txt`` of the run) with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.base import DatasetSplits, register_dataset
from cnnlab.data.dense import (
    IGNORE_INDEX,
    DenseRecord,
    box_problem,
    clip_box,
    decode_dense,
    share_skipped,
    split_records,
)
from cnnlab.errors import DataError


def _polygon_or_rle(seg: Any, h: int, w: int) -> np.ndarray:
    """One annotation's segmentation as an (H, W) 0/1 array (polygons, RLE or compressed RLE)."""
    from pycocotools import mask as mask_utils  # C extension, only needed for COCO masks

    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        if not polys:
            raise ValueError("polygon with fewer than 3 points")
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            raise ValueError(f"RLE of size {seg['size']} for a {h}x{w} image")
        rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
        if isinstance(rle.get("counts"), str):
            rle = {**rle, "counts": rle["counts"].encode()}
    else:
        raise ValueError("segmentation is neither a polygon list nor an RLE")
    return mask_utils.decode(rle).astype(bool)


def read_coco(
    json_path: Path, image_roots: list[Path]
) -> tuple[list[DenseRecord], list[str], bool, list[tuple[str, str]]]:
    """Records, class names, whether masks exist, and skipped entries of one COCO JSON file."""
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read COCO file {json_path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{json_path} is not a COCO annotation file (no 'images' list)")
    cats = sorted(
        (c for c in data.get("categories", []) if isinstance(c, dict) and "id" in c),
        key=lambda c: c["id"],
    )
    if not cats:
        raise DataError(f"{json_path} has no categories")
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    classes = [str(c.get("name", c["id"])) for c in cats]
    skipped: list[tuple[str, str]] = []
    images: dict[Any, dict] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            skipped.append((str(json_path), f"image entry without id/file_name: {str(im)[:80]}"))
            continue
        images[im["id"]] = im
    anns: dict[Any, list[dict]] = {k: [] for k in images}
    has_masks = False
    for k, a in enumerate(data.get("annotations", [])):
        where = f"{json_path.name} annotation {a.get('id', k) if isinstance(a, dict) else k}"
        if not isinstance(a, dict):
            skipped.append((where, "not an object"))
        elif a.get("image_id") not in images:
            skipped.append((where, f"unknown image_id {a.get('image_id')!r}"))
        elif a.get("category_id") not in cat_index:
            skipped.append((where, f"unknown category_id {a.get('category_id')!r}"))
        else:
            anns[a["image_id"]].append(a)
            has_masks = has_masks or bool(a.get("segmentation"))

    def find(file_name: str) -> Path:
        for root in image_roots:
            if (root / file_name).exists():
                return root / file_name
        return image_roots[0] / file_name  # decode_dense reports it as missing

    records = []
    for image_id, im in images.items():
        path = find(str(im["file_name"]))
        w, h = int(im.get("width", 0) or 0), int(im.get("height", 0) or 0)
        rec = DenseRecord(str(path))
        painted: list[tuple[Any, int, bool]] = []
        for a in anns[image_id]:
            where = f"{json_path.name} annotation {a.get('id', '?')} ({im['file_name']})"
            bbox = a.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                skipped.append((where, f"bbox {bbox!r} is not [x, y, w, h]"))
                continue
            try:
                x, y, bw, bh = (float(v) for v in bbox)
            except (TypeError, ValueError):
                skipped.append((where, f"bbox {bbox!r} is not numeric"))
                continue
            box = [x, y, x + bw, y + bh]
            problem = box_problem(box, w, h) if w and h else None
            if problem:
                skipped.append((where, problem))
                continue
            crowd = bool(a.get("iscrowd", 0))
            if not crowd:
                rec.boxes.append(clip_box(box, w, h) if w and h else box)
                rec.labels.append(cat_index[a["category_id"]])
            if a.get("segmentation"):
                painted.append((a["segmentation"], cat_index[a["category_id"]], crowd))
        if has_masks:
            rec.mask = _mask_painter(painted, h, w, im["file_name"])
        records.append(rec)
    return records, classes, has_masks, skipped


def _mask_painter(painted: list[tuple[Any, int, bool]], h: int, w: int, name: str):
    """A closure painting the objects' masks (crowds as ignored) when the image is decoded."""

    def paint() -> np.ndarray:
        if not (h and w):
            raise ValueError(f"image entry {name} lacks width/height, needed to decode masks")
        out = np.zeros((h, w), np.uint8)
        for seg, cls, crowd in painted:
            try:
                m = _polygon_or_rle(seg, h, w)
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"bad segmentation: {exc}") from None
            out[m] = IGNORE_INDEX if crowd else cls + 1
        return out

    return paint


def _jsons(root: Path) -> tuple[Path | None, Path | None, list[Path]]:
    files = sorted(
        [*root.glob("*.json"), *(root / "annotations").glob("*.json")], key=lambda p: p.name
    )
    train = next((p for p in files if "train" in p.stem.lower()), None)
    val = next(
        (p for p in files if any(k in p.stem.lower() for k in ("val", "test")) and p != train),
        None,
    )
    return train, val, files


@register_dataset("coco")
def load_coco(
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int = 3,
    val_fraction: float = 0.2,
    **_: object,
) -> DatasetSplits:
    """COCO-format boxes (and masks) from ``data_dir``; see the module docstring for the layout."""
    if data_dir is None:
        raise DataError("coco needs --data-dir: a folder with train.json/val.json (or one .json)")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist")
    train_json, val_json, files = _jsons(root)
    if not files:
        raise DataError(f"{root} holds no COCO .json annotation file")

    def roots(split: str, json_path: Path) -> list[Path]:
        return [root, json_path.parent, root / "images", root / split, root / "images" / split]

    def decode(recs: list, classes: list[str], masks: bool, skipped: list, split: str):
        return decode_dense(
            recs,
            classes,
            "coco",
            size=image_size,
            channels=channels,
            has_masks=masks,
            skipped=skipped,
        )

    if train_json is not None and val_json is not None:
        tr, classes, m1, s1 = read_coco(train_json, roots("train", train_json))
        va, val_classes, m2, s2 = read_coco(val_json, roots("val", val_json))
        if val_classes != classes:
            raise DataError(f"{val_json.name} and {train_json.name} list different categories")
        train = decode(tr, classes, m1 and m2, s1, "train")
        test = decode(va, classes, m1 and m2, s2, "val")
    else:
        if len(files) > 1:
            raise DataError(
                f"{root} has several .json files ({', '.join(p.name for p in files[:4])}) but no "
                "train/val pair; name them train.json and val.json"
            )
        recs, classes, masks, skipped = read_coco(files[0], roots("train", files[0]))
        tr, va = split_records(recs, val_fraction)
        train = decode(tr, classes, masks, skipped, "train")
        test = decode(va, classes, masks, [], "val")
    return DatasetSplits(*share_skipped(train, test))  # type: ignore[arg-type]
