"""The schema of a run's ``config.json`` (and of an exported model's metadata): one place that
checks every field before anything is built or allocated from it.

The run files are an interface, and an untrusted one: a user may hand us a ``config.json`` that was
edited, truncated or written to hurt. Every field is checked for type, range and consistency with
the others, and the first problem is a one-line :class:`~cnnlab.errors.RunError` naming the field
and what is allowed. Sizes are bounded before anything is allocated, so a hostile file costs
neither memory nor a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cnnlab.errors import RunError

MAX_CHANNELS = 64
MAX_SIDE = 8192
MAX_PIXELS = 64 * 1024 * 1024  # C * H * W of one input
MAX_CLASSES = 100_000
MAX_NAME = 1000


def _fail(where: str | Path, field: str, problem: str) -> RunError:
    return RunError(f"{where}: '{field}' {problem}")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_model(cfg: dict[str, Any], where: str | Path) -> None:
    spec = cfg.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise _fail(where, "model.name", "must be a model name string (see `cnnlab models`)")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise _fail(where, "model.kwargs", "must be a mapping of builder options")
    for k, v in kwargs.items():
        if not isinstance(v, (bool, int, float, str, list, type(None))):
            raise _fail(
                where, f"model.kwargs.{k}", f"must be a number, string, list or null; got {v!r}"
            )
        if (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and (not math.isfinite(v) or abs(v) > 1e6)
        ):
            raise _fail(where, f"model.kwargs.{k}", f"is out of range: {v!r}")


def _check_input(cfg: dict[str, Any], where: str | Path) -> int:
    size = cfg.get("input_size")
    if (
        not isinstance(size, list)
        or len(size) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise _fail(
            where, "input_size", f"must be [channels, height, width] integers; got {size!r}"
        )
    c, h, w = size
    if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise _fail(
            where,
            "input_size",
            f"{size} is out of range (1-{MAX_CHANNELS} channels, 1-{MAX_SIDE} pixels a side)",
        )
    if c * h * w > MAX_PIXELS:
        raise _fail(where, "input_size", f"{size} is larger than {MAX_PIXELS:,} values per image")
    for key in ("mean", "std"):
        vals = cfg.get(key)
        if not isinstance(vals, list) or len(vals) != c or not all(_number(v) for v in vals):
            raise _fail(
                where, key, f"must be a list of {c} finite numbers (one per channel); got {vals!r}"
            )
    if not all(v > 0 for v in cfg["std"]):
        raise _fail(where, "std", f"must be positive for every channel; got {cfg['std']}")
    return c


def _check_classes(cfg: dict[str, Any], where: str | Path) -> None:
    classes = cfg.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or len(classes) > MAX_CLASSES
        or not all(isinstance(c, str) and len(c) <= MAX_NAME for c in classes)
    ):
        raise _fail(where, "classes", f"must be a list of 1-{MAX_CLASSES:,} class-name strings")
    if len(set(classes)) != len(classes):
        raise _fail(where, "classes", "has duplicate names")


def _check_calibration(cfg: dict[str, Any], where: str | Path) -> None:
    cal = cfg.get("calibration")
    if cal is None:
        return
    if not isinstance(cal, dict):
        raise _fail(where, "calibration", "must be a mapping with a 'temperature'")
    t = cal.get("temperature")
    if t is not None and not (_number(t) and 0 < t <= 1e4):
        raise _fail(where, "calibration.temperature", f"must be a number in (0, 10000]; got {t!r}")


def validate_run_config(cfg: Any, where: str | Path = "config.json") -> dict[str, Any]:
    """``cfg`` (a parsed ``config.json``) checked field by field; returns it unchanged.

    Required: ``model`` {name, kwargs}, ``classes``, ``input_size``, ``mean``, ``std``; optional
    and checked when present: ``calibration.temperature``, ``task``, ``metrics``,
    ``train_config``, ``weights_sha256``.
    """
    if not isinstance(cfg, dict):
        raise RunError(f"{where}: must be a JSON object; got {type(cfg).__name__}")
    _check_model(cfg, where)
    _check_classes(cfg, where)
    _check_input(cfg, where)
    _check_calibration(cfg, where)
    for key, kind in (
        ("task", str),
        ("metrics", dict),
        ("train_config", dict),
        ("weights_sha256", str),
    ):
        if key in cfg and cfg[key] is not None and not isinstance(cfg[key], kind):
            raise _fail(where, key, f"must be a {kind.__name__}; got {cfg[key]!r}")
    return cfg


def check_head(num_outputs: int, cfg: dict[str, Any], where: str | Path) -> None:
    """The model's output width must match ``classes``: a mismatch means the config and the
    weights are from different runs (and predictions would be mislabelled)."""
    n = len(cfg["classes"])
    if num_outputs != n:
        raise _fail(
            where, "classes", f"lists {n} classes but the model outputs {num_outputs} values"
        )
