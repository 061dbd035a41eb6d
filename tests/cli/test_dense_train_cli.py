"""Detection and segmentation trained end to end from the command line on the embedded scenes:
the same engine, run directory, metrics log, checkpoints and --resume as classification."""

from __future__ import annotations

import json

import pytest

from cnnlab.run import read_metrics
from tests.conftest import run_cli

CASES = {
    "detect": (["--model", "yolo_tiny", "--model_kwargs.width", "8"], "test_map"),
    "segment": (
        ["--model", "unet", "--model_kwargs.base_channels", "4", "--model_kwargs.depth", "2"],
        "test_miou",
    ),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_dense_task_trains_and_resumes_from_the_cli(tmp_path, task):
    model_args, metric = CASES[task]
    common = ["--out-dir", str(tmp_path), "--name", task, "--no-progress", "--report", "false"]
    args = ["train", "--task", task, "--data", "digits-scenes", "--image-size", "64", *model_args]
    res = run_cli(*args, "--epochs", "1", "--batch-size", "32", *common, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / task
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["task"] == {"detect": "detection", "segment": "segmentation"}[task]
    assert cfg["train_config"]["monitor"] == metric
    assert metric.replace("_", " ") in res.stdout
    res = run_cli("train", "--resume", str(run), "--epochs", "2", "--no-progress", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and metric in rows[0]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    if task == "detect":
        assert (run / "detections.json").exists()  # COCO results any tool can re-score


def test_a_detection_task_on_a_classification_dataset_is_one_line(tmp_path):
    res = run_cli(
        "train", "--task", "detect", "--model", "yolo_tiny", "--data", "digits",
        "--epochs", "1", "--out-dir", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not any(tmp_path.iterdir())
