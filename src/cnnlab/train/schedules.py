"""Learning-rate schedules as pure functions of the step.

``lr_factor(cfg, step, total_steps, steps_per_epoch)`` returns the multiplier of the base LR at a
step; the loop sets ``group["lr"] = group["initial_lr"] * factor`` before every optimizer step. Being
pure functions, schedules are trivially resumable (no scheduler state) and testable at any step.
Reduce-on-plateau is the one schedule that depends on metrics: see :class:`PlateauTracker`.
Progressive resizing is a schedule of image sizes: :func:`size_for_epoch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.train.config import DataConfig, ScheduleConfig

SCHEDULES = (
    "constant",
    "step",
    "multistep",
    "exponential",
    "cosine",
    "cosine_restarts",
    "onecycle",
    "plateau",
)


def _cosine(t: float, lo: float) -> float:
    return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def lr_factor(
    cfg: ScheduleConfig,
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    plateau_factor: float = 1.0,
) -> float:
    """The LR multiplier at ``step`` (0-based) of ``total_steps``.

    Epoch-valued options (``warmup_epochs``, ``step_size``, ``milestones``, ``restart_period``) are
    converted to steps with ``steps_per_epoch``, so fractional epochs work.
    """
    name = cfg.name.lower()
    if name not in SCHEDULES:
        raise UnknownNameError("schedule", cfg.name, SCHEDULES)
    spe = max(1, steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * spe))
    lo = cfg.min_lr_ratio
    if name == "onecycle":
        # One-cycle: linear warm-up over pct_start of training, then cosine annealing to min_lr_ratio.
        up = max(1, int(round(cfg.pct_start * total_steps)))
        if step < up:
            return 0.04 + (1 - 0.04) * step / up
        return _cosine((step - up) / max(1, total_steps - up), lo)
    if warm and step < warm:
        return (step + 1) / warm
    s = step - warm
    span = max(1, total_steps - warm)
    epoch = s / spe
    if name == "constant":
        return 1.0
    if name == "cosine":
        return _cosine(s / span, lo)
    if name == "step":
        return cfg.gamma ** math.floor(epoch / cfg.step_size)
    if name == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if name == "exponential":
        return cfg.gamma**epoch
    if name == "cosine_restarts":
        period, t = cfg.restart_period, epoch
        while t >= period:
            t -= period
            period *= cfg.restart_mult
        return _cosine(t / period, lo)
    return plateau_factor  # "plateau"


@dataclass
class PlateauTracker:
    """Reduce-on-plateau bookkeeping: multiply the LR by ``factor`` after ``patience`` epochs
    without improvement of the monitored metric (higher is better)."""

    factor: float = 0.5
    patience: int = 2
    min_factor: float = 1e-3
    best: float = -math.inf
    bad_epochs: int = 0
    current: float = 1.0

    def update(self, value: float) -> float:
        """Record one epoch's metric; returns the LR multiplier to use from now on."""
        if value > self.best + 1e-12:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.current = max(self.min_factor, self.current * self.factor)
                self.bad_epochs = 0
        return self.current


def size_for_epoch(d: DataConfig, epoch: int, epochs: int) -> int | None:
    """The training image size of ``epoch`` under progressive resizing (``None``: native size)."""
    if not d.sizes:
        return None
    if d.size_epochs:
        if len(d.size_epochs) != len(d.sizes):
            raise ConfigError(
                f"data.size_epochs needs one entry per size in data.sizes {list(d.sizes)}; "
                f"got {list(d.size_epochs)}"
            )
        counts = list(d.size_epochs)
    else:
        base = epochs // len(d.sizes)
        counts = [base] * len(d.sizes)
        counts[-1] += epochs - base * len(d.sizes)
    end = 0
    for size, n in zip(d.sizes, counts):
        end += n
        if epoch < end:
            return size
    return d.sizes[-1]
