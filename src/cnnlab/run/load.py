"""Rebuild what a run directory describes: its model (with weights), or the data it was trained on.

This is the one place where a run's ``config.json`` is turned back into objects; ``evaluate``,
``deploy``, ``inspect`` and the CLI all come here instead of each reading the fields themselves.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data import DatasetSplits, load_dataset, resize_dataset
from cnnlab.data.dense import DenseDataset
from cnnlab.errors import CnnlabError, DataError, RunError, UnknownNameError
from cnnlab.models import get_model
from cnnlab.run.checkpoint import list_checkpoints, load_checkpoint
from cnnlab.run.files import CONFIG_FILE, MODEL_FILE, read_run_config, read_weights
from cnnlab.run.schema import check_head

MAX_PARAMETERS = 4_000_000_000  # a config asking for more is refused before allocating


def build_model_from_run_config(
    run_config: dict[str, Any], where: str | Path = CONFIG_FILE
) -> nn.Module:
    """The architecture recorded in a run's ``config.json`` (random weights).

    The model is first built on the ``meta`` device (no memory) to count its parameters, so a
    config whose options ask for a giant model is refused instead of allocated.
    """
    spec = run_config["model"]
    name, kwargs = spec["name"], dict(spec.get("kwargs", {}))
    try:
        with torch.device("meta"):
            probe = get_model(name, **kwargs)
        n = sum(p.numel() for p in probe.parameters())
    except CnnlabError:
        raise
    except Exception:  # noqa: BLE001 - a builder that cannot run on meta is built for real below
        n = 0
    if n > MAX_PARAMETERS:
        raise RunError(f"{where}: model.kwargs ask for {n:,} parameters; refusing to allocate them")
    try:
        model = get_model(name, **kwargs)
    except CnnlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - a builder rejecting its options is the config's fault
        raise RunError(
            f"{where}: model {name!r} cannot be built from model.kwargs {kwargs}: "
            f"{str(exc).splitlines()[0][:160]}"
        ) from None
    task = run_config.get("task", "classification")
    outputs = getattr(model, "num_classes", None)
    if task == "classification" and isinstance(outputs, int):
        check_head(outputs, run_config, where)
    return model


def _fallback_weights(run_dir: Path, problem: str) -> dict[str, torch.Tensor]:
    """The evaluated weights of the newest verified checkpoint (best first), announced on stderr."""
    for tag in ("best", "last"):
        try:
            weights, state = load_checkpoint(run_dir, tag)
        except RunError:
            continue
        ema = state.get("ema") or {}
        print(
            f"warning: {problem}; using the weights of {Path(state['source']).name} "
            f"(epoch {state['epoch']}) instead",
            file=sys.stderr,
        )
        return ema.get("module") or weights
    raise RunError(f"{problem}, and no checkpoint of the run verifies either")


def load_model_from_run(
    run_dir: str | Path, weights: str = MODEL_FILE
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model (in eval mode) and its config from a run directory alone.

    The config is validated (:mod:`cnnlab.run.schema`) and the weights are checked against the
    SHA-256 that training recorded; damaged weights fall back to the run's best checkpoint, with
    a warning line, rather than serving a wrecked model.
    """
    run_dir = Path(run_dir)
    run_config = read_run_config(run_dir)
    model = build_model_from_run_config(run_config, run_dir / CONFIG_FILE)
    expected = run_config.get("weights_sha256") if weights == MODEL_FILE else None
    try:
        state = read_weights(run_dir / weights, expected)
    except RunError as exc:
        if weights != MODEL_FILE or not list_checkpoints(run_dir):
            raise
        state = _fallback_weights(run_dir, str(exc))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise RunError(
            f"{run_dir / weights} does not match the architecture in {CONFIG_FILE}: {first[0].strip()}"
        ) from None
    return model.eval(), run_config


@dataclass
class ModelSource:
    """A model from a zoo name or a run directory, its input size (C, H, W) and, for a run, its
    ``config.json`` (``None`` for a zoo name)."""

    model: nn.Module
    input_size: tuple[int, int, int] | None
    run_config: dict[str, Any] | None


def resolve_model_source(source: str, **kwargs: Any) -> ModelSource:
    """``source`` as a model: a run directory gives its trained model (eval mode) and the size it
    was trained at; a zoo name is built with ``kwargs`` at its ``default_cfg.input_size``."""
    if Path(source).is_dir():
        model, run_config = load_model_from_run(source)
        size = run_config.get("input_size")
        return ModelSource(model, tuple(size) if size else None, run_config)  # type: ignore[arg-type]
    model = get_model(source, **kwargs)
    cfg = getattr(model, "default_cfg", None)
    return ModelSource(model, tuple(cfg.input_size) if cfg is not None else None, None)  # type: ignore[arg-type]


def load_model_source(source: str, **kwargs: Any) -> tuple[nn.Module, tuple[int, int, int] | None]:
    """A model and its default input size (C, H, W) from a zoo name or a run directory.

    Example: ``model, size = load_model_source("resnet18", num_classes=10)``.
    """
    found = resolve_model_source(source, **kwargs)
    return found.model, found.input_size


def load_run_splits(run_config: dict[str, Any]) -> DatasetSplits | None:
    """The run's (train, test) splits at the model's input size, or ``None`` when unavailable.

    The data source, directory, split fraction and seed come from the saved training config, so
    the test split is the one the run was scored on.
    """
    tc = run_config.get("train_config", {})
    d = tc.get("data", {})
    name = d.get("name") or run_config.get("dataset", {}).get("name")
    if not name:
        return None
    size = run_config["input_size"][1]
    try:
        splits = load_dataset(
            name,
            data_dir=d.get("data_dir"),
            image_size=d.get("image_size") or size,
            val_fraction=d.get("val_fraction", 0.2),
            seed=tc.get("seed", 0),
        )
    except (DataError, UnknownNameError, OSError):
        return None
    test, shape = splits.test, tuple(run_config["input_size"])
    if test.classes != data_classes(run_config) or test.image_shape[0] != shape[0]:
        return None
    if test.image_shape != shape:
        if isinstance(test, DenseDataset):  # boxes and masks move with the pixels
            return DatasetSplits(splits.train.resized(size), test.resized(size))  # type: ignore[attr-defined]
        splits = DatasetSplits(
            resize_dataset(splits.train, size), resize_dataset(splits.test, size)
        )
    return splits


def data_classes(run_config: dict[str, Any]) -> list[str]:
    """The class names the run's dataset lists: a segmentation run's ``classes`` are the model's
    output channels, ``background`` first, which the dataset does not name."""
    classes = list(run_config["classes"])
    if run_config.get("task") == "segmentation" and classes[:1] == ["background"]:
        return classes[1:]
    return classes
