"""Resumable checkpoints: ``checkpoints/last`` and ``checkpoints/best`` in the run directory.

Each checkpoint is two files written atomically (temp file + rename):

* ``<tag>.safetensors``: the model weights (the raw weights, never pickled), and
* ``<tag>.state.pt``: everything else needed to continue bit-for-bit: optimizer, AMP scaler, weight
  EMA, plateau and early-stopping trackers, history, and the RNG states of Python, NumPy, torch (CPU
  and CUDA) and the augmentation generator, per rank. It holds only tensors, numbers, strings, lists
  and dicts, and is read back with ``torch.load(weights_only=True)``, so it cannot run code.

Both files record the epoch they belong to; a mismatch (a kill between the two renames) is reported
rather than silently mixing two epochs.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from cnnlab.errors import RunError
from cnnlab.run.files import atomic_write_bytes, save_weights

CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 1


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The RNG states of Python, NumPy, torch (and CUDA, and ``generator``) as plain data."""
    py = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        out["generator"] = generator.get_state()
    return out


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Put back the RNG states recorded by :func:`capture_rng`."""
    v, key, gauss = state["python"]
    random.setstate((v, tuple(key), gauss))
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["key"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def checkpoint_paths(run_dir: Path, tag: str) -> tuple[Path, Path]:
    """``(weights, state)`` paths of checkpoint ``tag`` (``last`` or ``best``)."""
    d = Path(run_dir) / CHECKPOINT_DIR
    return d / f"{tag}.safetensors", d / f"{tag}.state.pt"


def save_checkpoint(run_dir: Path, tag: str, model: nn.Module, state: dict[str, Any]) -> None:
    """Atomically write checkpoint ``tag``: the training state first, then the weights."""
    weights, state_path = checkpoint_paths(run_dir, tag)
    weights.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buf)
    atomic_write_bytes(state_path, buf.getvalue())
    save_weights(model, weights, metadata={"epoch": str(state["epoch"])})


def load_checkpoint(run_dir: Path, tag: str = "last") -> tuple[dict[str, torch.Tensor], dict]:
    """``(weights, state)`` of checkpoint ``tag``, or a one-line :class:`RunError`."""
    weights, state_path = checkpoint_paths(run_dir, tag)
    if not weights.exists() or not state_path.exists():
        raise RunError(
            f"{run_dir} has no resumable checkpoint ({CHECKPOINT_DIR}/{tag}.safetensors and "
            f"{tag}.state.pt); it was trained with checkpoint=false, or killed before its first "
            "epoch ended"
        )
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many types
        raise RunError(f"{state_path} is corrupt: {str(exc).splitlines()[0][:160]}") from None
    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(weights))
    except Exception as exc:
        raise RunError(f"{weights} is corrupt: {str(exc).splitlines()[0][:160]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise RunError(f"{state_path} is not a cnnlab v{FORMAT_VERSION} training state")
    if meta.get("epoch") != str(state["epoch"]):
        raise RunError(
            f"{weights.name} (epoch {meta.get('epoch')}) and {state_path.name} (epoch "
            f"{state['epoch']}) belong to different epochs; the run was killed while checkpointing"
        )
    return tensors, state
