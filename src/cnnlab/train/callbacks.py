"""The few hooks the training loop offers, fastai-style but explicit.

A callback subclasses :class:`Callback` and overrides what it needs; every hook receives the
:class:`TrainState`. Setting ``state.stop = True`` ends training after the current epoch. A callback
with state that must survive ``--resume`` returns it from ``state_dict()`` (plain numbers, strings,
lists and dicts) and takes it back in ``load_state_dict()``.

Built in: :class:`EarlyStopping` and :class:`TensorBoardLogger`; ``fit`` adds them from the config,
and the callbacks that write the run directory (``cnnlab.train.recorders``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.train.config import TrainConfig


@dataclass
class TrainState:
    """What the loop knows at any moment; callbacks read it and may set ``stop``.

    The first five fields are the run's objects; ``fit`` also fills the rest: the task, the bare
    model whose weights are saved (``inner``) and the one evaluated and published (``eval_model``,
    the EMA when on), the best epoch so far and whether this epoch improved on it, how the run is
    ending (``status``) and everything the checkpoint callback needs to make the run resumable.
    """

    config: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    run_dir: Path | None
    device: torch.device
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    last_loss: Any = None  # the last batch loss as a tensor (reading it forces a device sync)
    stop: bool = False
    stop_reason: str = ""
    task: Any = None
    inner: nn.Module | None = None
    eval_model: nn.Module | None = None
    best: dict[str, Any] = field(default_factory=dict)
    improved: bool = False
    elapsed: float = 0.0
    status: str = "running"  # then completed, stopped, diverged or interrupted
    is_main: bool = True
    world_size: int = 1
    callbacks: list[Callback] = field(default_factory=list)
    resumables: dict[str, Any] = field(default_factory=dict)  # scaler, ema, plateau, generator


class Callback:
    """Base class: every hook is a no-op."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_epoch_start(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def is_better(value: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` improves on ``best`` by more than ``min_delta`` (mode ``max`` or ``min``)."""
    if not math.isfinite(value):
        return False
    return value > best + min_delta if mode == "max" else value < best - min_delta


def metric_mode(name: str) -> str:
    """``min`` for losses, ``max`` for everything else (accuracies)."""
    return "min" if "loss" in name else "max"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "test_acc", patience: int = 5, min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = metric_mode(monitor)
        self.best = -math.inf if self.mode == "max" else math.inf
        self.bad_epochs = 0

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        if self.monitor not in metrics:  # an epoch without evaluation (eval_every) says nothing
            return
        value = float(metrics[self.monitor])
        if is_better(value, self.best, self.mode, self.min_delta):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            state.stop = True
            state.stop_reason = (
                f"early stopping: {self.monitor} did not improve by more than {self.min_delta:g} "
                f"for {self.patience} epoch(s) (best {self.best:.4f})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])


class TensorBoardLogger(Callback):
    """Event files in ``run_dir/tensorboard``: batch loss and LR every step, epoch metrics."""

    def __init__(self, log_dir: Path | None = None, every: int = 10):
        self.log_dir, self.every, self.writer = log_dir, every, None

    def on_train_start(self, state: TrainState) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            print("tensorboard is not installed; no event files are written", file=sys.stderr)
            return
        log_dir = self.log_dir or (state.run_dir / "tensorboard" if state.run_dir else None)
        if log_dir is not None:
            self.writer = SummaryWriter(str(log_dir), purge_step=state.step or None)

    def on_batch_end(self, state: TrainState) -> None:
        if self.writer is not None and state.step % self.every == 0:
            self.writer.add_scalar("train/batch_loss", float(state.last_loss), state.step)
            lr = state.optimizer.param_groups[0]["lr"]
            self.writer.add_scalar("train/lr", lr, state.step)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in metrics.items():
            if k != "epoch" and isinstance(v, (int, float)):
                group = "test" if k.startswith("test") else "train"
                self.writer.add_scalar(f"{group}/{k}", v, metrics["epoch"])
        self.writer.flush()

    def on_train_end(self, state: TrainState) -> None:
        if self.writer is not None:
            self.writer.close()
