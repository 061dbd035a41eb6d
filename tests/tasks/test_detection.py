"""Detection task: COCO metrics on hand-built cases (by pycocotools), anchors, the task contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnlab.data import DatasetSplits, load_dataset
from cnnlab.data.dense import DenseLoader
from cnnlab.errors import ConfigError, DataError
from cnnlab.models import get_model
from cnnlab.tasks.base import get_task
from cnnlab.tasks.detection import (
    ImageRecord,
    coco_evaluate,
    coco_ground_truth,
    coco_results,
    kmeans_anchors,
)

CLASSES = ["cat", "dog"]


def _rec(i: int, gt: list, det: list) -> ImageRecord:
    """gt: [(cls, x1, y1, x2, y2)], det: [(cls, score, x1, y1, x2, y2)]."""
    g = np.array([d[1:] for d in gt], np.float32).reshape(-1, 4)
    d = np.array([d[2:] for d in det], np.float32).reshape(-1, 4)
    return ImageRecord(
        i,
        100,
        100,
        g,
        np.array([d[0] for d in gt], np.int64),
        d,
        np.array([x[1] for x in det], np.float32),
        np.array([x[0] for x in det], np.int64),
    )


def _score(records: list[ImageRecord]):
    return coco_evaluate(coco_ground_truth(records, CLASSES), coco_results(records), CLASSES)


def test_perfect_predictions_score_one() -> None:
    recs = [
        _rec(1, [(0, 10, 10, 50, 50), (1, 60, 60, 90, 95)], [(0, 0.9, 10, 10, 50, 50), (1, 0.8, 60, 60, 90, 95)]),
        _rec(2, [(1, 5, 5, 40, 30)], [(1, 0.7, 5, 5, 40, 30)]),
    ]  # fmt: skip
    m = _score(recs)
    assert m.stats["map"] == pytest.approx(1.0)
    assert m.stats["map50"] == m.stats["map75"] == pytest.approx(1.0)
    assert m.stats["ar100"] == pytest.approx(1.0)
    assert m.per_class_ap == pytest.approx({"cat": 1.0, "dog": 1.0})
    assert m.stats["map_large"] == -1.0  # no object above 96x96 pixels: COCO's "not scored"


def test_shifted_box_scores_only_the_iou_thresholds_it_passes() -> None:
    # 40x40 box shifted 8 px right: IoU = 32*40 / (48*40) = 0.667 -> passes .50 .55 .60 .65 of 10
    m = _score([_rec(1, [(0, 10, 10, 50, 50)], [(0, 0.9, 18, 10, 58, 50)])])
    assert m.stats["map50"] == pytest.approx(1.0)
    assert m.stats["map75"] == pytest.approx(0.0)
    assert m.stats["map"] == pytest.approx(0.4)


def test_duplicate_is_a_false_positive_after_the_match() -> None:
    # the lower-scored duplicate comes after recall reached 1: interpolated precision stays 1
    dup_low = _score(
        [_rec(1, [(0, 10, 10, 50, 50)], [(0, 0.9, 10, 10, 50, 50), (0, 0.5, 11, 10, 51, 50)])]
    )
    assert dup_low.stats["map"] == pytest.approx(1.0)
    # a higher-scored duplicate of another object's box pushes the true match to precision 1/2
    recs = [_rec(1, [(0, 10, 10, 50, 50), (0, 60, 60, 90, 90)],
                 [(0, 0.95, 10, 10, 50, 50), (0, 0.9, 10, 10, 50, 50), (0, 0.8, 60, 60, 90, 90)])]  # fmt: skip
    m = _score(recs)
    # recall 0.5 at precision 1, recall 1 at precision 2/3 -> AP = (51*1 + 50*2/3) / 101
    assert m.stats["map50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-6)


def test_missed_class_scores_zero_for_that_class() -> None:
    m = _score([_rec(1, [(0, 10, 10, 50, 50), (1, 60, 60, 90, 90)], [(0, 0.9, 10, 10, 50, 50)])])
    assert m.per_class_ap == pytest.approx({"cat": 1.0, "dog": 0.0})
    assert m.stats["map"] == pytest.approx(0.5)


def test_no_detections_at_all_is_zero_not_a_crash() -> None:
    m = _score([_rec(1, [(0, 10, 10, 50, 50)], [])])
    assert m.stats["map"] == 0.0 and m.per_class_ap["cat"] == 0.0


def test_matches_pycocotools_run_directly_on_the_written_files(tmp_path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    recs = []
    for i in range(1, 6):
        gt = [
            (int(rng.integers(2)), *(lambda x, y: (x, y, x + 20, y + 25))(*rng.integers(0, 70, 2)))
            for _ in range(3)
        ]
        det = [
            (c, float(rng.random()), x1 + rng.normal(0, 3), y1, x2, y2 + rng.normal(0, 3))
            for c, x1, y1, x2, y2 in gt
        ]
        recs.append(_rec(i, gt, det + [(1, 0.3, 0, 0, 30, 30)]))  # fmt: skip
    ours = _score(recs)
    (tmp_path / "gt.json").write_text(json.dumps(coco_ground_truth(recs, CLASSES)))
    (tmp_path / "dt.json").write_text(json.dumps(coco_results(recs)))
    gt = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ours.stats["map"] == pytest.approx(ev.stats[0], abs=1e-4)
    assert ours.stats["map50"] == pytest.approx(ev.stats[1], abs=1e-4)
    assert ours.stats["ar100"] == pytest.approx(ev.stats[8], abs=1e-4)
    assert 0 < ours.stats["map"] < 1


def test_kmeans_anchors_find_the_box_shapes() -> None:
    wh = torch.tensor([[10.0, 10.0]] * 50 + [[30.0, 15.0]] * 50 + [[60.0, 60.0]] * 50)
    assert kmeans_anchors(wh, 3) == [(10.0, 10.0), (30.0, 15.0), (60.0, 60.0)]


@pytest.fixture(scope="module")
def scenes() -> DatasetSplits:
    return load_dataset("digits-scenes", image_size=64, num_train=24, num_test=8)


def test_task_contract_trains_and_evaluates_yolo(scenes: DatasetSplits, tmp_path) -> None:
    from cnnlab.train.config import TrainConfig

    cfg = TrainConfig(model="yolo_tiny", model_kwargs={"width": 4})
    task = get_task("detection", cfg)
    task.check_data(scenes)
    train = scenes.train
    task.setup(train, torch.device("cpu"))
    kw = task.model_kwargs(train)
    assert kw["num_classes"] == 10 and kw["in_chans"] == 1 and len(kw["anchors"]) == 3
    torch.manual_seed(0)
    model = get_model("yolo_tiny", **kw, width=4)
    task.check_model(model, train)
    mean, std = train.mean_std()
    tf = task.train_transform(cfg, train, torch.Generator().manual_seed(0))
    loader = task.make_loader(train, 8, mean=mean, std=std, shuffle=True, transform=tf)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = task.loss(model(x), y, model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            assert task.batch_stats(model(x), y) == {}
    assert losses[-1] < losses[0]
    test = task.make_loader(scenes.test, 4, mean=mean, std=std)
    metrics = task.evaluate(model, test)
    assert set(metrics) == set(task.metric_names)
    assert all(np.isfinite(v) for v in metrics.values())
    paths = task.write_artifacts(tmp_path)
    assert json.loads(paths[1].read_text())["categories"][0] == {"id": 1, "name": "0"}
    rc = task.run_config(train)
    assert rc["task"] == "detection" and rc["classes"] == train.classes


def test_bad_pairings_are_one_line_errors(scenes: DatasetSplits) -> None:
    task = get_task("detection")
    with pytest.raises(DataError, match="classification dataset"):
        task.check_data(load_dataset("digits"))
    with pytest.raises(ConfigError, match="segmentation model"):
        task.check_model(
            get_model("unet", num_classes=11, in_chans=1, base_channels=4, depth=2), scenes.train
        )
    with pytest.raises(ConfigError, match="classification model"):
        task.check_model(get_model("lenet5", num_classes=10, in_chans=1), scenes.train)


def test_loader_yields_targets_per_image(scenes: DatasetSplits) -> None:
    loader = DenseLoader(scenes.test, 3, mean=(0.0,), std=(1.0,))
    x, y = next(iter(loader))
    assert x.shape == (3, 1, 64, 64) and x.dtype == torch.float32 and len(y) == 3
    assert [len(b) for b in y.boxes] == [len(scenes.test.boxes[i]) for i in range(3)]
    assert y.masks.shape == (3, 64, 64) and y.masks.dtype == torch.int64
    assert len(loader) == 3
