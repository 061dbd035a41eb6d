"""Dense runs end to end: train a tiny detector and segmenter, evaluate, report sections, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import load_dataset
from cnnlab.deploy.dense_predict import DensePredictor, write_predictions
from cnnlab.evaluate.dense_report import evaluate_dense_run, image_errors, per_image_miou
from cnnlab.tasks.detection import ImageRecord
from cnnlab.train.config import DataConfig, TrainConfig


@pytest.fixture(scope="module")
def scenes():
    return load_dataset("digits-scenes", image_size=64, num_train=16, num_test=6)


def _train(tmp_path, splits, task: str, model: str, kwargs: dict, monitor: str):
    from cnnlab.train import fit

    cfg = TrainConfig(
        model=model, task=task, model_kwargs=kwargs, epochs=1, batch_size=8, device="cpu",
        data=DataConfig(name="digits-scenes", image_size=64, augment="flip"), monitor=monitor,
        out_dir=str(tmp_path), progress=False, report=False, amp="off",
    )  # fmt: skip
    return fit(cfg, splits=splits).run_dir


@pytest.mark.parametrize(
    "task,model,kwargs,monitor",
    [
        ("detection", "yolo_tiny", {"width": 4}, "test_map"),
        ("segmentation", "unet", {"base_channels": 4, "depth": 2}, "test_miou"),
    ],
)
def test_train_evaluate_report_predict(tmp_path, scenes, task, model, kwargs, monitor) -> None:
    run_dir = _train(tmp_path, scenes, task, model, kwargs, monitor)
    ev = evaluate_dense_run(run_dir, dataset=scenes.test)
    assert monitor in ev.metrics and all(p.exists() for p in ev.files)
    ids = [sid for sid, _, _ in ev.sections]
    if task == "detection":
        assert {"det-summary", "det-per-class", "det-samples", "det-worst"} <= set(ids)
        assert json.loads((run_dir / "detections.json").read_text()) is not None
    else:
        assert {"seg-summary", "seg-per-class", "seg-confusion", "seg-worst"} <= set(ids)
    assert all("<script" not in html for _, _, html in ev.sections)
    # predict on image files of another size: boxes in that image's pixels / masks of its size
    paths = []
    for i in range(2):
        p = tmp_path / f"in{i}.png"
        Image.fromarray(np.kron(scenes.test.images[i, 0].numpy(), np.ones((2, 2), np.uint8))).save(
            p
        )
        paths.append(p)
    pred = DensePredictor.from_run(run_dir)
    pred.conf_thresh = 0.0  # an untrained detector: every box counts
    out = pred.predict(paths)
    if task == "detection":
        boxes = np.array([d.box for d in out[0]]).reshape(-1, 4)
        assert len(boxes) and boxes.max() <= 128 and all(len(d.line().split()) == 6 for d in out[0])
    else:
        assert out[0].shape == (128, 128)
    js = json.loads(write_predictions(pred, paths, tmp_path / "pred").read_text())
    assert len(js) == 2


def test_worst_image_counting_and_per_image_miou() -> None:
    r = ImageRecord(
        1, 50, 50,
        np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([0, 1]),
        np.array([[0, 0, 10, 10], [40, 40, 45, 45]], np.float32), np.array([0.9, 0.8], np.float32),
        np.array([0, 1]),
    )  # fmt: skip
    assert image_errors(r) == (1, 1)
    t = np.array([[0, 1], [1, 255]])
    assert per_image_miou(t, np.array([[0, 1], [0, 0]])) == pytest.approx((0.5 + 0.5) / 2)
