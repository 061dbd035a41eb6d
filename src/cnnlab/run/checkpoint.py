"""Resumable checkpoints that cannot be half-written, silently damaged or mixed up.

A checkpoint is one directory under ``checkpoints/``, named by its tag and epoch
(``last-0007/``, ``best-0005/``), holding

* ``model.safetensors``: the raw model weights (never pickled);
* ``state.pt``: everything else needed to continue bit-for-bit — optimizer, AMP scaler, weight EMA,
  plateau and early-stopping trackers, history, and the RNG states of Python, NumPy, torch (CPU and
  CUDA) and the augmentation generator, per rank. Only tensors, numbers, strings, lists and dicts,
  read back with ``torch.load(weights_only=True)``, so it cannot run code;
* ``manifest.json``: the format, the epoch, a fingerprint of the run's config and the SHA-256 and
  size of both files.

It is written into a hidden temporary directory, every file fsynced, and published by a single
rename, so a kill at any moment leaves either the old set or the new one, never a mix. The two
newest ``last`` checkpoints and the newest ``best`` are kept; older ones are removed only after the
new one is published. Reading verifies the manifest before anything is unpickled and falls back —
to the previous ``last``, then to ``best`` — saying which epoch it used and why.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from cnnlab.errors import RunError
from cnnlab.run.files import weights_bytes

CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
KEEP = {"last": 2, "best": 1}
_NAME = re.compile(r"(last|best)-(\d{4,})")
_MAX_FILE = 16 << 30  # a checkpoint file larger than this is not ours: refuse before reading


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


@dataclass(frozen=True)
class CheckpointRef:
    """One published checkpoint directory."""

    path: Path
    tag: str
    epoch: int


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | Path, tag: str | None = None) -> list[CheckpointRef]:
    """Published checkpoints of ``run_dir`` (of ``tag`` when given), newest epoch first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    refs = []
    for p in root.iterdir():
        m = _NAME.fullmatch(p.name)
        if m and p.is_dir() and (tag is None or m.group(1) == tag):
            refs.append(CheckpointRef(p, m.group(1), int(m.group(2))))
    return sorted(refs, key=lambda r: (r.epoch, r.tag == "last"), reverse=True)


def clean_stray_files(run_dir: str | Path) -> list[Path]:
    """Remove what a killed checkpoint write left behind (hidden temporary directories and files);
    returns what was removed. Called when a run (re)starts."""
    root = Path(run_dir) / CHECKPOINT_DIR
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(".tmp-"):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name.startswith(".") and ".tmp" in p.name:  # older atomic writes
            p.unlink(missing_ok=True)
        else:
            continue
        removed.append(p)
    return removed


def save_checkpoint(
    run_dir: Path,
    tag: str,
    model: nn.Module,
    state: dict[str, Any],
    fingerprint: str = "",
) -> Path:
    """Publish checkpoint ``tag`` of ``state["epoch"]`` atomically; returns its directory.

    A write that fails (disk full, read-only directory) raises a one-line :class:`RunError` and
    leaves the previously published checkpoints untouched.
    """
    if tag not in KEEP:
        raise ValueError(f"checkpoint tag must be one of {sorted(KEEP)}; got {tag!r}")
    root = Path(run_dir) / CHECKPOINT_DIR
    epoch = int(state["epoch"])
    final = root / f"{tag}-{epoch:04d}"
    tmp = root / f".tmp-{tag}-{epoch:04d}-{os.getpid()}"
    buf = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buf)
    files = {WEIGHTS: weights_bytes(model, {"epoch": str(epoch)}), STATE: buf.getvalue()}
    manifest = {
        "format": FORMAT_VERSION,
        "tag": tag,
        "epoch": epoch,
        "fingerprint": fingerprint,
        "files": {n: {"sha256": _sha256(d), "bytes": len(d)} for n, d in files.items()},
    }
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in files.items():
            _write_synced(tmp / name, data)
        _write_synced(tmp / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        _fsync_dir(tmp)
        if final.exists():  # the same epoch again (a resumed run): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = list_checkpoints(run_dir)
        keep = f"; kept {kept[0].path.name}" if kept else ""
        raise RunError(f"cannot write checkpoint {final}: {exc.strerror or exc}{keep}") from None
    for old in list_checkpoints(run_dir, tag)[KEEP[tag] :]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def _read_verified(ref: CheckpointRef, fingerprint: str | None) -> tuple[dict, dict]:
    """The weights and state of ``ref`` after checking them against its manifest; a
    :class:`RunError` saying what is wrong otherwise."""
    try:
        manifest = json.loads((ref.path / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT_VERSION or int(manifest["epoch"]) != ref.epoch:
            raise ValueError("format or epoch does not match its name")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{ref.path.name}: missing or unreadable manifest ({exc})") from None
    if fingerprint and manifest.get("fingerprint") not in ("", fingerprint):
        raise RunError(f"{ref.path.name} belongs to a run with another config")
    data = {}
    for name in (WEIGHTS, STATE):
        path = ref.path / name
        expect = files.get(name) or {}
        try:
            size = path.stat().st_size
            if size != expect.get("bytes") or size > _MAX_FILE:
                raise RunError(
                    f"{ref.path.name}/{name} is {size} bytes, the manifest says "
                    f"{expect.get('bytes')}"
                )
            raw = path.read_bytes()
        except OSError as exc:
            raise RunError(f"{ref.path.name}/{name} is unreadable ({exc.strerror})") from None
        if _sha256(raw) != expect.get("sha256"):
            raise RunError(f"{ref.path.name}/{name} is damaged (its SHA-256 does not match)")
        data[name] = raw
    try:
        weights = load_safetensors(data[WEIGHTS])
        state = torch.load(io.BytesIO(data[STATE]), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a verified file that still fails is reported, not raised raw
        raise RunError(
            f"{ref.path.name} cannot be read: {str(exc).splitlines()[0][:120]}"
        ) from None
    if not isinstance(state, dict) or state.get("epoch") != ref.epoch:
        raise RunError(f"{ref.path.name}: the training state is not of epoch {ref.epoch}")
    return weights, state


def load_checkpoint(
    run_dir: str | Path, tag: str = "last", fingerprint: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(weights, state)`` of the newest checkpoint of ``run_dir`` that verifies.

    ``tag="last"`` tries the ``last`` checkpoints newest first, then ``best``; ``tag="best"`` only
    ``best``. When it had to skip one, ``state["fallback"]`` is a one-line account ("resuming from
    epoch 6 (best): last-0007/state.pt is damaged …"); otherwise it is empty. A directory with no
    usable checkpoint is a one-line :class:`RunError` listing what was wrong with each.
    """
    run_dir = Path(run_dir)
    order = list_checkpoints(run_dir, "last") + list_checkpoints(run_dir, "best")
    if tag == "best":
        order = list_checkpoints(run_dir, "best")
    problems: list[str] = []
    for ref in order:
        try:
            weights, state = _read_verified(ref, fingerprint)
        except RunError as exc:
            problems.append(str(exc))
            continue
        if tag == "last" and ref.tag == "best":
            problems = problems or ["there is no last checkpoint"]
        state["fallback"] = (
            f"using epoch {ref.epoch} ({ref.path.name}) because {'; '.join(problems)}"
            if problems
            else ""
        )
        state["source"] = str(ref.path)
        return weights, state
    if not order:
        legacy = (run_dir / CHECKPOINT_DIR / f"{tag}.safetensors").exists()
        why = (
            "its checkpoints are in the old two-file format of cnnlab < 0.2; retrain it"
            if legacy
            else "it was trained with checkpoint=false, or stopped before its first epoch ended"
        )
        raise RunError(f"{run_dir} has no resumable checkpoint ({tag}) in {CHECKPOINT_DIR}/: {why}")
    raise RunError(f"{run_dir}: no checkpoint verifies: {'; '.join(problems)}")
