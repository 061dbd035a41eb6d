"""Training: configs, the loop, optimizers, schedules, checkpoints, transfer learning, callbacks."""

from cnnlab.run import load_model_from_run
from cnnlab.train.callbacks import Callback, EarlyStopping, TensorBoardLogger, TrainState
from cnnlab.train.config import (
    DataConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    TransferConfig,
    apply_overrides,
    list_recipes,
    load_config,
    load_recipe,
)
from cnnlab.train.loop import TrainingDiverged, TrainResult, evaluate_model, fit
from cnnlab.train.resume import resume_config

__all__ = [
    "Callback",
    "DataConfig",
    "EarlyStopping",
    "OptimConfig",
    "ScheduleConfig",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDiverged",
    "TransferConfig",
    "apply_overrides",
    "evaluate_model",
    "fit",
    "list_recipes",
    "load_config",
    "load_model_from_run",
    "load_recipe",
    "resume_config",
]
