"""The pictures written into a run directory when training ends, per task.

``curves.png`` comes from ``metrics.csv`` for every task; each task adds its own pictures
(classification: ``confusion.png``). A task with pictures of its own registers a writer in
:data:`TASK_PLOTS`, so the training engine never needs to know which task it trained.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from cnnlab.data import BatchLoader
from cnnlab.evaluate.metrics import confusion_matrix
from cnnlab.evaluate.plots import plot_confusion, plot_curves
from cnnlab.run import METRICS_FILE
from cnnlab.runtime import predict_logits

PlotWriter = Callable[[Path, nn.Module, Any, list[str]], list[Path]]


def _classification_plots(
    run_dir: Path, model: nn.Module, loader: BatchLoader, classes: list[str]
) -> list[Path]:
    logits, labels = predict_logits(model, loader)
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), len(classes))
    return [plot_confusion(cm, classes, run_dir / "confusion.png")]


TASK_PLOTS: dict[str, PlotWriter] = {"classification": _classification_plots}


def write_run_plots(
    run_dir: Path, task: str, model: nn.Module, test_loader: Any, classes: list[str]
) -> list[Path]:
    """``curves.png`` and the task's own pictures of ``model`` on the whole test split."""
    paths = [plot_curves(run_dir / METRICS_FILE, run_dir / "curves.png")]
    writer = TASK_PLOTS.get(task)
    if writer is not None:
        paths += writer(run_dir, model, test_loader, classes)
    return paths
