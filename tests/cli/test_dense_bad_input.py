"""Bad input to the dense tasks from the command line (issue 15's acceptance): broken COCO entries
and masks of the wrong size are skipped and listed in skipped.txt while the run trains; a detection
task on a classification folder and a segmentation model asked to detect are one-line errors
(exit 2) that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import run_cli

TRAIN = ("--epochs", "1", "--batch-size", "4", "--no-progress", "--report", "false")


def _square(path: Path, w: int = 40, h: int = 40, box=(8, 8, 24, 24)) -> None:
    arr = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    arr[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _one_line_refusal(res, out: Path) -> None:
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_coco_with_broken_entries_trains_and_lists_them(tmp_path):
    root = tmp_path / "coco"
    images, anns = [], []
    for i in range(1, 9):
        _square(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 40, "height": 40})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [8, 8, 16, 16]})
    images.append({"id": 20, "file_name": "missing.png", "width": 40, "height": 40})
    anns += [
        {"id": 30, "image_id": 1, "category_id": 1, "bbox": [30, 30, 50, 50]},  # off the image
        {"id": 31, "image_id": 2, "category_id": 9, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 32, "image_id": 77, "category_id": 1, "bbox": [1, 1, 5, 5]},  # unknown image
    ]
    cats = [{"id": 1, "name": "square"}]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    out = tmp_path / "runs"
    res = run_cli(
        "train", "--task", "detect", "--data", "coco", "--data-dir", str(root), "--model",
        "yolo_tiny", "--model_kwargs.width", "4", "--image-size", "64", "--out-dir", str(out),
        "--name", "r", *TRAIN, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    listed = (out / "r" / "skipped.txt").read_text()
    for why in ("outside the 40x40 image", "unknown category_id 9", "unknown image_id 77",
                "image file not found"):  # fmt: skip
        assert why in listed, f"{why!r} not in skipped.txt:\n{listed}"


def test_masks_of_the_wrong_size_are_skipped_and_listed(tmp_path):
    root = tmp_path / "masks"
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nsquare\n")
    for i in range(8):
        _square(root / "images" / f"{i}.png")
        m = np.zeros((40, 40), np.uint8)
        m[8:24, 8:24] = 1
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(m if i else m[:30]).save(root / "masks" / f"{i}.png")  # 0.png: 40x30
    out = tmp_path / "runs"
    res = run_cli(
        "train", "--task", "segment", "--data", "masks", "--data-dir", str(root), "--model",
        "unet", "--model_kwargs.base_channels", "4", "--model_kwargs.depth", "2",
        "--image-size", "32", "--out-dir", str(out), "--name", "r", *TRAIN, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    listed = (out / "r" / "skipped.txt").read_text()
    assert "0.png" in listed and "40x30" in listed, listed


def test_detection_on_a_classification_folder_is_one_line(tmp_path):
    folder = tmp_path / "photos"
    for cls in ("cat", "dog"):
        for i in range(3):
            _square(folder / cls / f"{i}.png")
    out = tmp_path / "runs"
    res = run_cli(
        "train", "--task", "detect", "--data", "imagefolder", "--data-dir", str(folder), "--model", "yolo_tiny",
        "--out-dir", str(out), *TRAIN,
    )  # fmt: skip
    _one_line_refusal(res, out)
    assert "classification dataset" in res.stderr


def test_a_segmentation_model_asked_to_detect_is_one_line(tmp_path):
    out = tmp_path / "runs"
    res = run_cli(
        "train", "--task", "detect", "--data", "digits-scenes", "--model", "unet",
        "--image-size", "64", "--out-dir", str(out), *TRAIN,
    )  # fmt: skip
    _one_line_refusal(res, out)
    assert "unet is a segmentation model" in res.stderr and "yolo_tiny" in res.stderr
