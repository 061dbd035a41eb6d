"""The few hooks the training loop offers, fastai-style but explicit.

A callback subclasses :class:`Callback` and overrides what it needs; every hook receives the
:class:`TrainState`. Setting ``state.stop = True`` ends training after the current epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.train.config import TrainConfig


@dataclass
class TrainState:
    """What the loop knows at any moment; callbacks read it and may set ``stop``."""

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
    extra: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base class: every hook is a no-op."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_epoch_start(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...
