"""The files of a run directory: names, atomic writes, ``config.json``, weights, the metrics log.

``runs/<name>/`` holds ``model.safetensors`` (weights, never pickled), ``config.json`` (architecture and
its arguments, class names, input size, normalisation, the resolved training config, final metrics),
``metrics.csv`` (one row per epoch) and plots. Files are written atomically (temp file + rename) so a
killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from cnnlab.errors import RunError
from cnnlab.run.schema import validate_run_config

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
SKIPPED_FILE = "skipped.txt"
MAX_CONFIG_BYTES = 32 << 20
METRIC_FIELDS = [
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "lr",
    "epoch_s",
    "elapsed_s",
]


def default_run_name(model: str, data: str) -> str:
    """``<model>-<data>-<YYYYmmdd-HHMMSS>``."""
    return f"{model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def make_run_dir(out_dir: str | Path, name: str) -> Path:
    """Create ``out_dir/name`` (adding ``-2``, ``-3``… if it already holds a run)."""
    if not re.fullmatch(r"[\w.+=-]+", name):
        raise RunError(f"run name '{name}' may only contain letters, digits and . _ + = -")
    base = Path(out_dir) / name
    path, i = base, 1
    while (path / CONFIG_FILE).exists() or (path / METRICS_FILE).exists():
        i += 1
        path = base.with_name(f"{name}-{i}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file and rename, so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_json(path: Path, data: dict) -> None:
    """Atomically write pretty JSON."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of the weights without DDP/compile wrappers, shared tensors de-duplicated."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    out, seen = {}, {}
    for k, v in inner.state_dict().items():
        ptr = (v.data_ptr(), v.shape, v.dtype) if v.numel() else None
        t = v.detach().to("cpu").contiguous()
        out[k] = t.clone() if ptr in seen else t
        if ptr is not None:
            seen[ptr] = k
    return out


def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The model's weights serialised as safetensors (what both the run and its checkpoints hold)."""
    return save_safetensors(state_dict_for_saving(model), metadata=metadata)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> str:
    """Atomically save the model's weights as safetensors; returns the file's SHA-256, which the
    run's ``config.json`` records so that readers can tell a damaged or replaced file."""
    data = weights_bytes(model, metadata)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from None
    return hashlib.sha256(data).hexdigest()


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run, or a :class:`RunError` naming the missing/corrupt file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise RunError(f"{path} is missing; is {run_dir} a cnnlab run directory?")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise RunError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; not a run config")
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise RunError(f"{path} is corrupt (not valid JSON: {str(exc)[:120]})") from None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    return validate_run_config(cfg, path)


def read_weights(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file, checked against ``sha256`` when given, or raise a one-line
    :class:`RunError` naming it."""
    if not path.exists():
        raise RunError(f"{path} is missing")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise RunError(
            f"{path} is damaged or was replaced (its SHA-256 does not match config.json)"
        )
    try:
        return load_safetensors(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise RunError(
            f"{path} is corrupt or not a safetensors file ({str(exc).splitlines()[0][:120]})"
        ) from None


class MetricsLog:
    """Appends one row per epoch to ``metrics.csv`` (flushed each time, so a killed run keeps it)."""

    def __init__(self, path: Path, fields: list[str] | None = None):
        self.path = path
        self.fields = fields or METRIC_FIELDS

    def truncate_after(self, epoch: int) -> None:
        """Drop rows after ``epoch`` (used when resuming from an earlier checkpoint)."""
        rows = (
            [r for r in read_metrics(self.path) if int(r["epoch"]) <= epoch]
            if self.path.exists()
            else []
        )
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv``."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
