"""Reading foreign weight files: safetensors (plain or sharded) and weights-only torch pickles.

Training scripts wrap their weights in containers (``{"state_dict": ..., "state_dict_ema": ...}``,
``{"model": ...}``) and wrappers prefix every key (``module.`` from DistributedDataParallel,
``_orig_mod.`` from ``torch.compile``); both are undone here so the key mappers see bare names.
Pickles are opened only with ``torch.load(weights_only=True)``: a file cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cnnlab.errors import RunError

# Prefixes wrappers add to every key: DDP/DataParallel, torch.compile, Lightning-style modules.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# timm's training checkpoints keep the EMA weights beside the raw ones; like timm's own
# ``load_checkpoint(use_ema=True)``, the EMA copy is preferred because it is what timm evaluates.
CONTAINER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model_state_dict", "model")
_MAX_LISTED = 8


def one_line(e: BaseException | str) -> str:
    """An exception's message squeezed onto one short line."""
    text = " ".join(str(e).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def listing(keys: list[str], limit: int = _MAX_LISTED) -> str:
    """``a, b, c (+5 more)``: the first keys of a list, for one-line errors."""
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def read_tensor_file(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """Tensors of a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` file, and the
    container they were taken from (``"state_dict_ema"``…, or None for a bare state dict).

    A ``model.safetensors.index.json`` (sharded weights) reads every shard it lists.
    """
    p = Path(path)
    if not p.is_file():
        raise RunError(f"weights file not found: {p}")
    name = p.name.lower()
    if name.endswith(".index.json"):
        return _read_sharded(p), None
    if p.suffix.lower() == ".safetensors":
        return strip_prefixes(_read_safetensors(p)), None
    if p.suffix.lower() in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling refusals and corrupt files raise many types
            raise RunError(
                f"cannot read {p} as a weights-only torch file (cnnlab never unpickles code): "
                f"{one_line(e)}"
            ) from None
        state, container = unwrap(obj, p)
        return strip_prefixes(state), container
    raise RunError(
        f"unsupported weights file {p.name}: expected .safetensors, .pth/.pt/.bin, or a folder"
    )


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunError(f"cannot read {p} as safetensors: {one_line(e)}") from None


def _read_sharded(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(
            f"{index} is not a safetensors index (no weight_map): {one_line(e)}"
        ) from None
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(_read_safetensors(index.parent / shard))
    return strip_prefixes(state)


def unwrap(obj: object, p: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside a training checkpoint, and the container key it sat under."""
    container = None
    if isinstance(obj, dict):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), dict) and obj[key]:
                obj, container = obj[key], key
                break
    if not isinstance(obj, dict) or not obj:
        raise RunError(f"{p} does not hold a state dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise RunError(f"{p} is not a plain state dict: non-tensor entries {listing(bad)}")
    return obj, container  # type: ignore[return-value]


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes shared by *every* key (repeatedly: ``module._orig_mod.``)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or a one-line :class:`RunError` naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not valid JSON: {one_line(e)}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a JSON object")
    return data
