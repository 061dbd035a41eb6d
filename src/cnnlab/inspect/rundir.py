"""Resolve a model argument that is either a zoo name or a run directory.

A run directory holds ``model.safetensors`` + ``config.json`` with ``config["model"] = {"name",
"kwargs"}`` and ``config["input_size"] = [C, H, W]``. The training package's
``cnnlab.train.rundir.load_model_from_run`` is used when it exists; until then this small reader
uses the same fields, so ``cnnlab summary runs/x`` works either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from cnnlab.errors import RunError


def _read_run(path: Path) -> tuple[nn.Module, tuple[int, int, int] | None]:
    cfg_path, weights = path / "config.json", path / "model.safetensors"
    if not cfg_path.is_file():
        raise RunError(f"{path} is not a run directory: config.json is missing")
    try:
        cfg = json.loads(cfg_path.read_text())
        spec = cfg["model"]
        name, kwargs = spec["name"], dict(spec.get("kwargs", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunError(
            f"{cfg_path} is malformed ({exc}); it needs model.name and model.kwargs"
        ) from None
    size = cfg.get("input_size")
    try:
        from cnnlab.train.rundir import load_model_from_run  # type: ignore[import-not-found]
    except ImportError:
        load_model_from_run = None
    if load_model_from_run is not None:
        loaded = load_model_from_run(path)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
    else:
        from safetensors.torch import load_file

        from cnnlab.models import get_model

        model = get_model(name, **kwargs)
        if weights.is_file():
            try:
                state = load_file(str(weights))
            except Exception as exc:  # safetensors raises its own error types
                raise RunError(f"cannot read {weights}: {exc}") from None
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise RunError(
                    f"{weights} does not match model {name!r}: "
                    f"{len(missing)} missing and {len(unexpected)} unexpected tensors"
                )
    return model, (tuple(size) if size else None)  # type: ignore[return-value]


def load_model_source(source: str, **kwargs) -> tuple[nn.Module, tuple[int, int, int] | None]:
    """A model and its default input size (C, H, W) from a zoo name or a run directory.

    For zoo names the size is the model's ``default_cfg.input_size``; ``kwargs`` go to the builder.
    Example: ``model, size = load_model_source("resnet18", num_classes=10)``.
    """
    path = Path(source)
    if path.is_dir():
        return _read_run(path)
    from cnnlab.models import get_model

    model = get_model(source, **kwargs)
    cfg = getattr(model, "default_cfg", None)
    return model, (tuple(cfg.input_size) if cfg is not None else None)  # type: ignore[return-value]
