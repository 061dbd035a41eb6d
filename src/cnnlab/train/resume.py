"""Resuming a run: which config a resumed run uses, and what it may change.

A resumed run must compute exactly what the uninterrupted run would have, so its config is the
saved one; only options that do not change the result (how long to train, logging, threads,
device) may differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError, RunError
from cnnlab.run import CONFIG_FILE, read_run_config
from cnnlab.train.config import TrainConfig, apply_overrides, from_dict, to_dict

# Keys a resumed run may change: they do not alter what the finished run computes (``epochs``
# extends or shortens the run, and with it the schedule's length, which the user asked for).
RESUME_MAY_CHANGE = {
    "epochs",
    "progress",
    "threads",
    "device",
    "tensorboard",
    "report",
    "name",
    "out_dir",
}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_kwargs":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_fingerprint(config: TrainConfig) -> str:
    """A short hash of everything in ``config`` that a resumed run may not change: checkpoints
    carry it, so one written for another config in the same directory is never trained on."""
    kept = {k: v for k, v in _flatten(to_dict(config)).items() if k not in RESUME_MAY_CHANGE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_resume_config(config: TrainConfig, saved: dict[str, Any]) -> None:
    """Raise a one-line :class:`ConfigError` when ``config`` contradicts the run being resumed."""
    new, old = _flatten(to_dict(config)), _flatten(saved)
    diff = [
        k
        for k in sorted(set(new) | set(old))
        if k not in RESUME_MAY_CHANGE and new.get(k) != old.get(k)
    ]
    if diff:
        k = diff[0]
        raise ConfigError(
            f"--resume: {k} is {new.get(k)!r} but the run was trained with {old.get(k)!r}"
            f"{f' (and {len(diff) - 1} more)' if len(diff) > 1 else ''}; a resumed run keeps its "
            f"config: only {', '.join(sorted(RESUME_MAY_CHANGE - {'name', 'out_dir'}))} may change"
        )


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config of the run in ``run_dir`` with ``overrides`` applied (checked by ``fit``)."""
    saved = read_run_config(run_dir).get("train_config")
    if not isinstance(saved, dict):
        raise RunError(f"{Path(run_dir) / CONFIG_FILE} has no train_config; cannot resume it")
    return apply_overrides(from_dict(TrainConfig, saved), overrides or {})
