"""The task protocol: what the training engine asks of a task, and nothing more.

The engine (``cnnlab.train``) knows epochs, optimizer steps, checkpoints and callbacks; a task knows
what a batch's target is, how to turn a model output into a loss, and how to score a model. So a
classifier, a detector (a variable-length list of boxes per image) and a segmenter (a label per
pixel) are trained by the same loop: the loop only moves ``(x, target)`` pairs from the task's
loader to ``task.loss`` and ``task.evaluate``, and never looks inside a target.

A task is registered by name (``register_task``) and built from the training config with
``get_task(name, config)``; ``config.task`` selects it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from cnnlab.errors import UnknownNameError


@runtime_checkable
class Task(Protocol):
    """What the engine calls. ``name`` and the metric names are plain attributes.

    ``metric_names`` are the keys :meth:`evaluate` returns (``test_*``) and ``train_metric_names``
    the ``train_*`` keys the loop logs (``train_loss`` plus those :meth:`batch_stats` sums). Both go
    to ``metrics.csv`` in that order, after ``epoch`` and before ``lr`` and the timings.
    """

    name: str
    metric_names: tuple[str, ...]
    train_metric_names: tuple[str, ...]
    default_monitor: str

    def metric_mode(self, metric: str) -> str:
        """``max`` when a larger value of ``metric`` is better, else ``min``."""
        ...

    def check_data(self, splits: Any) -> None:
        """Raise a one-line :class:`~cnnlab.errors.DataError` when the data cannot serve this task."""
        ...

    def setup(self, train: Any, device: torch.device) -> None:
        """Derive what the task needs from the training split (class weights…) before training."""
        ...

    def model_kwargs(self, train: Any) -> dict[str, Any]:
        """Builder arguments the data decides (``num_classes``, ``in_chans``)."""
        ...

    def check_model(self, model: nn.Module, train: Any) -> None:
        """Raise a one-line error when ``model`` cannot do this task on this data."""
        ...

    def train_transform(self, config: Any, train: Any, generator: torch.Generator) -> Any:
        """The batch augmentation of ``config.data`` (``None`` for none); it must move the targets
        with the pixels. Called before any file is written, so a bad spec leaves nothing behind."""
        ...

    def make_loader(self, dataset: Any, batch_size: int, **options: Any) -> Any:
        """An iterable of ``(x, target)`` batches on the device, with ``set_epoch``, ``__len__``,
        ``drop_last``, ``transform`` and ``indices`` like :class:`cnnlab.data.BatchLoader`."""
        ...

    def loss(self, output: Any, target: Any, model: nn.Module) -> torch.Tensor:
        """The scalar training loss of one batch."""
        ...

    def batch_stats(self, output: Any, target: Any) -> dict[str, torch.Tensor]:
        """Per-batch sums (tensors, no device sync) the loop divides by the images seen, keyed by
        ``train_*`` metric name; empty when only the loss is logged during training."""
        ...

    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        """Score ``model`` on ``loader``: every key of ``metric_names`` (summed over ranks)."""
        ...

    def run_config(self, train: Any) -> dict[str, Any]:
        """The task's fields of ``config.json`` (``task``, ``classes``, ``dataset``…)."""
        ...


TaskFactory = Callable[..., Task]
_TASKS: dict[str, TaskFactory] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a task factory under ``name``; it is called with the training config."""

    def wrap(factory: TaskFactory) -> TaskFactory:
        if name in _TASKS:
            raise ValueError(f"task '{name}' is already registered")
        _TASKS[name] = factory
        return factory

    return wrap


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return sorted(_TASKS)


def get_task(name: str, config: Any = None) -> Task:
    """The task ``name`` built for ``config`` (a :class:`~cnnlab.train.TrainConfig` or ``None``)."""
    if name not in _TASKS:
        raise UnknownNameError("task", name, _TASKS)
    return _TASKS[name](config)


def metric_fields(task: Task) -> list[str]:
    """The ``metrics.csv`` columns of ``task``: epoch, train and test metrics, LR, timings."""
    return [
        "epoch",
        *task.train_metric_names,
        *task.metric_names,
        "lr",
        "epoch_s",
        "elapsed_s",
    ]
