"""Evaluate a saved run on its test data: accuracy, per-class report, confusion matrix.

The model and preprocessing come from the run directory alone; the data is the run's own source
unless another is given, and a source with different classes or image size is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data import BatchLoader, ImageDataset, load_dataset
from cnnlab.errors import DataError
from cnnlab.evaluate.metrics import accuracy, confusion_matrix, per_class_report, top_k_accuracy
from cnnlab.train.loop import predict_logits, resize_dataset, resolve_device
from cnnlab.train.rundir import load_model_from_run


@dataclass
class EvalResult:
    """Metrics of one model on one dataset."""

    run_dir: Path
    classes: list[str]
    num_samples: int
    accuracy: float
    top5_accuracy: float
    log_loss: float
    confusion: np.ndarray
    per_class: dict[str, np.ndarray]
    probs: np.ndarray
    labels: np.ndarray
    artefacts: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Headline numbers as plain data."""
        return {
            "samples": self.num_samples,
            "accuracy": self.accuracy,
            "top5_accuracy": self.top5_accuracy,
            "log_loss": self.log_loss,
            "macro_f1": float(self.per_class["f1"].mean()),
        }


def load_eval_data(
    cfg: dict[str, Any], data: str | None = None, data_dir: str | None = None
) -> ImageDataset:
    """The test split a run should be evaluated on, checked against the run's classes and size."""
    tc = cfg.get("train_config", {}).get("data", {})
    name = data or tc.get("name") or cfg.get("dataset", {}).get("name")
    if not name:
        raise DataError("the run does not record its data source; pass --data")
    if data_dir is None and (data is None or data == tc.get("name")):
        data_dir = tc.get("data_dir")
    size = cfg["input_size"][1]
    splits = load_dataset(
        name,
        data_dir=data_dir,
        image_size=tc.get("image_size") or size,
        val_fraction=tc.get("val_fraction", 0.2),
        seed=cfg.get("train_config", {}).get("seed", 0),
    )
    test = splits.test
    if test.classes != cfg["classes"]:
        missing = sorted(set(cfg["classes"]) - set(test.classes))
        extra = sorted(set(test.classes) - set(cfg["classes"]))
        raise DataError(
            f"the data's classes differ from the model's: missing {missing or 'none'}, unexpected {extra or 'none'}"
            + ("" if missing or extra else " (same names, different order)")
        )
    if test.image_shape[0] != cfg["input_size"][0]:
        raise DataError(
            f"the data has {test.image_shape[0]} channel(s) but the model expects {cfg['input_size'][0]}"
        )
    if list(test.image_shape[1:]) != list(cfg["input_size"][1:]):
        test = resize_dataset(test, size)
    return test


def evaluate_run(
    run_dir: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 512,
    write_plots: bool = True,
) -> EvalResult:
    """Evaluate the model of ``run_dir`` on its test split; writes ``confusion.png`` (and the
    row-normalised ``confusion_normalized.png``) into the run directory.

    Example::

        res = evaluate_run("runs/simplecnn-digits")
        print(res.accuracy, res.per_class["f1"])
    """
    run_dir = Path(run_dir)
    model, cfg = load_model_from_run(run_dir)
    dev = resolve_device(device)
    model = model.to(dev)
    test = load_eval_data(cfg, data, data_dir)
    loader = BatchLoader(test, batch_size, mean=cfg["mean"], std=cfg["std"], device=dev)
    logits, labels = predict_logits(model, loader)
    probs = torch.softmax(logits, 1).numpy()
    y = labels.numpy()
    pred = probs.argmax(1)
    cm = confusion_matrix(y, pred, len(test.classes))
    eps = 1e-12
    log_loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], eps, 1)).mean())
    res = EvalResult(
        run_dir,
        list(test.classes),
        len(y),
        accuracy(y, pred),
        top_k_accuracy(y, probs, 5),
        log_loss,
        cm,
        per_class_report(cm),
        probs,
        y,
    )
    if write_plots:
        from cnnlab.evaluate.plots import plot_confusion

        res.artefacts["confusion"] = plot_confusion(cm, test.classes, run_dir / "confusion.png")
        res.artefacts["confusion_normalized"] = plot_confusion(
            cm, test.classes, run_dir / "confusion_normalized.png", normalize=True
        )
    return res
