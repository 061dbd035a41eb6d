"""Training: configs, the loop, optimizers, schedules, checkpoints and callbacks."""

from cnnlab.train.callbacks import Callback, TrainState
from cnnlab.train.config import (
    DataConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from cnnlab.train.loop import TrainResult, evaluate, fit
from cnnlab.train.rundir import load_model_from_run

__all__ = [
    "Callback",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "apply_overrides",
    "evaluate",
    "fit",
    "load_config",
    "load_model_from_run",
]
