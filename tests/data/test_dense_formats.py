"""COCO JSON, YOLO txt and mask folders: labels land on the right pixels; broken entries are listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import load_dataset
from cnnlab.data.dense import IGNORE_INDEX
from cnnlab.data.mask_folder import voc_colormap
from cnnlab.errors import DataError


def _image(
    path: Path, w: int = 40, h: int = 30, rect: tuple[int, int, int, int] | None = None
) -> None:
    arr = np.zeros((h, w, 3), np.uint8)
    if rect:
        x1, y1, x2, y2 = rect
        arr[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _reasons(ds) -> str:
    return "\n".join(f"{p}: {why}" for p, why in ds.skipped)


# ------------------------------------------------------------------------------------------- COCO


def _coco(tmp_path: Path) -> Path:
    from pycocotools import mask as mask_utils

    root = tmp_path / "coco"
    images, anns = [], []
    for i in range(1, 5):
        _image(root / "images" / f"{i}.png", rect=(10, 5, 30, 25))
        images.append({"id": i, "file_name": f"{i}.png", "width": 40, "height": 30})
    rle = np.zeros((30, 40), np.uint8, order="F")
    rle[5:25, 10:30] = 1
    enc = mask_utils.encode(rle)
    enc["counts"] = enc["counts"].decode()
    poly = [[10, 5, 30, 5, 30, 25, 10, 25]]
    for i in range(1, 5):
        seg = enc if i % 2 else poly
        anns.append({"id": i, "image_id": i, "category_id": 7, "bbox": [10, 5, 20, 20], "segmentation": seg, "iscrowd": 0})  # fmt: skip
    anns += [
        {"id": 90, "image_id": 1, "category_id": 3, "bbox": [35, 20, 50, 50]},  # outside the image
        {"id": 91, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 92, "image_id": 42, "category_id": 3, "bbox": [1, 1, 5, 5]},  # unknown image
        {"id": 93, "image_id": 2, "category_id": 3, "bbox": "oops"},
    ]
    images.append({"id": 5, "file_name": "missing.png", "width": 40, "height": 30})
    (root / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    images.append({"id": 6, "file_name": "broken.png", "width": 40, "height": 30})
    _image(root / "images" / "7.png", w=50, h=30)  # JSON says 40x30: its mask cannot match
    images.append({"id": 7, "file_name": "7.png", "width": 40, "height": 30})
    anns.append(
        {"id": 94, "image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5], "segmentation": poly}
    )
    cats = [{"id": 3, "name": "cup"}, {"id": 7, "name": "plate"}]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return root


def test_coco_boxes_and_masks_land_on_the_object(tmp_path: Path) -> None:
    root = _coco(tmp_path)
    splits = load_dataset("coco", data_dir=str(root), image_size=20, val_fraction=0.25)
    train, test = splits.train, splits.test
    assert train.classes == ["cup", "plate"] and train.task == "detection"
    assert set(train.tasks) == {"detection", "segmentation"}
    assert len(train) + len(test) == 4  # the missing, corrupt and wrong-size images are skipped
    for ds in (train, test):
        for i in range(len(ds)):
            assert ds.box_labels[i].tolist() == [1]
            # 40x30 -> 20x20: x scaled by 0.5, y by 2/3
            assert ds.boxes[i][0].tolist() == pytest.approx([5.0, 10 / 3, 15.0, 50 / 3])
            bright = ds.images[i, 0] > 127
            assert ((ds.masks[i] == 2) == bright).float().mean() > 0.97
    text = _reasons(train)
    for why in ("outside the 40x30 image", "unknown category_id 99", "unknown image_id 42",
                "not [x, y, w, h]", "image file not found", "mask is 40x30 but the image is 50x30", "broken.png"):  # fmt: skip
        assert why in text, f"{why!r} not in skipped:\n{text}"
    assert test.skipped == train.skipped


def test_coco_train_val_files_and_crowds(tmp_path: Path) -> None:
    root = tmp_path / "c2"
    for split in ("train", "val"):
        images, anns = [], []
        for i in range(1, 3):
            _image(root / split / f"{i}.png", rect=(0, 0, 10, 10))
            images.append({"id": i, "file_name": f"{i}.png", "width": 40, "height": 30})
            anns.append({"id": 2 * i, "image_id": i, "category_id": 1, "bbox": [0, 0, 10, 10], "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]})  # fmt: skip
            anns.append({"id": 2 * i + 1, "image_id": i, "category_id": 1, "bbox": [20, 0, 10, 10], "iscrowd": 1, "segmentation": [[20, 0, 30, 0, 30, 10, 20, 10]]})  # fmt: skip
        data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
        (root / f"{split}.json").write_text(json.dumps(data))
    splits = load_dataset("coco", data_dir=str(root))
    assert len(splits.train) == len(splits.test) == 2
    assert [len(b) for b in splits.train.boxes] == [1, 1]  # the crowd is not a training target
    m = splits.train.masks[0]
    assert (m == IGNORE_INDEX).any() and (m == 1).any()


def test_coco_without_annotations_file_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no COCO .json"):
        load_dataset("coco", data_dir=str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read COCO file"):
        load_dataset("coco", data_dir=str(tmp_path / "bad"))


# ------------------------------------------------------------------------------------------- YOLO


def test_yolo_labels_and_bad_lines(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    for split in ("train", "val"):
        for i in range(3):
            _image(root / "images" / split / f"{i}.png", rect=(8, 6, 24, 18))
            # centre (16, 12) of 40x30, size 16x12
            lines = ["1 0.4 0.4 0.4 0.4"]
            if i == 0:
                lines += ["5 0.5 0.5 0.1 0.1", "0 0.9 0.9 0.5 0.5", "0 0.5", "x y z w h"]
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines))
    _image(root / "images" / "train" / "nolabel.png")  # no label file: an image with no objects
    (root / "classes.txt").write_text("cat\ndog\n")
    splits = load_dataset("yolo", data_dir=str(root), image_size=40)
    tr = splits.train
    assert tr.classes == ["cat", "dog"] and len(tr) == 4 and len(splits.test) == 3
    assert (
        tr.boxes[0][0].tolist() == pytest.approx([8.0, 8.0, 24.0, 24.0]) and len(tr.boxes[0]) == 1
    )
    assert tr.box_labels[0].tolist() == [1]
    assert [len(b) for b in tr.boxes].count(0) == 1
    text = _reasons(tr)
    for why in (
        "unknown class id 5 (classes 0..1)",
        "outside the image",
        "expected 5 fields",
        "not numbers",
    ):
        assert why in text, text


def test_yolo_flat_folder_is_split_and_names_from_ids(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for i in range(5):
        _image(root / "images" / f"{i}.png")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{i}.txt").write_text("2 0.5 0.5 0.2 0.2\n")
    splits = load_dataset("yolo", data_dir=str(root), val_fraction=0.4)
    assert (
        splits.train.classes == ["0", "1", "2"] and len(splits.train) == 3 and len(splits.test) == 2
    )


# ------------------------------------------------------------------------------------ mask folders


def test_mask_folder_indices_palette_rgb_and_bad_masks(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    idx = np.zeros((30, 40), np.uint8)
    idx[5:25, 10:30] = 2
    idx[5, 10:30] = 255  # a VOC object border: ignored
    for split in ("train", "val"):
        for kind in ["L", "P", "RGB"]:
            _image(root / split / "images" / f"{kind}.jpg", rect=(10, 5, 30, 25))
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            path = root / split / "masks" / f"{kind}.png"
            if kind == "L":
                Image.fromarray(idx, "L").save(path)
            elif kind == "P":
                im = Image.fromarray(idx, "P")
                im.putpalette(voc_colormap().flatten().tolist())
                im.save(path)
            else:
                rgb = voc_colormap()[idx]
                rgb[idx == 255] = (224, 224, 192)
                Image.fromarray(rgb).save(path)
    bad = root / "train"
    _image(bad / "images" / "small.jpg")
    Image.fromarray(np.zeros((10, 10), np.uint8), "L").save(bad / "masks" / "small.png")
    _image(bad / "images" / "colour.jpg")
    Image.fromarray(np.full((30, 40, 3), (1, 2, 3), np.uint8)).save(bad / "masks" / "colour.png")
    _image(bad / "images" / "index.jpg")
    Image.fromarray(np.full((30, 40), 9, np.uint8), "L").save(bad / "masks" / "index.png")
    _image(bad / "images" / "nomask.jpg")
    (root / "classes.txt").write_text("background\naeroplane\nbicycle\n")
    splits = load_dataset("masks", data_dir=str(root), image_size=40)
    tr = splits.train
    assert tr.classes == ["aeroplane", "bicycle"] and tr.task == "segmentation" and tr.boxes is None
    assert len(tr) == 3 and len(splits.test) == 3
    want = torch.from_numpy(idx)
    want = torch.nn.functional.interpolate(
        want[None, None].float(), size=(40, 40), mode="nearest-exact"
    )[0, 0]
    for i in range(3):
        assert torch.equal(tr.masks[i].float(), want), tr.paths[i]
    text = _reasons(tr)
    for why in (
        "mask is 10x10 but the image is 40x30",
        "not in the VOC palette",
        "class index 9",
        "no mask",
    ):
        assert why in text, text


def test_detect_on_mask_only_data_is_one_line_error(tmp_path: Path) -> None:
    from cnnlab.tasks.base import get_task

    root = tmp_path / "m"
    for i in range(3):
        _image(root / "images" / f"{i}.png")
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ones((30, 40), np.uint8), "L").save(root / "masks" / f"{i}.png")
    splits = load_dataset("masks", data_dir=str(root))
    assert splits.train.classes == ["1"]
    with pytest.raises(DataError, match="needs boxes"):
        get_task("detection").check_data(splits)
