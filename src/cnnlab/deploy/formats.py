"""Exported model files: ONNX and TorchScript with cnnlab's metadata inside, written and read back.

The exported file carries everything a consumer needs (class names, input size, mean, std, model
name and weights hash; for detection and segmentation the task and its post-processing) as JSON under the key ``cnnlab`` (ONNX ``metadata_props``; TorchScript
``_extra_files['cnnlab.json']``), so ``cnnlab.load("model.onnx")`` needs no run directory. The
parity-checked export of a whole run is :mod:`cnnlab.deploy.export`; this module is only the file
format, so the backends can build an ONNX model without depending on the export workflow.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from cnnlab.errors import RunError
from cnnlab.run import MODEL_FILE
from cnnlab.run.schema import validate_run_config

META_KEY = "cnnlab"
TS_META_FILE = "cnnlab.json"
DEFAULT_ATOL = 1e-4


class _Unwrap(nn.Module):
    """Returns only the logits (GoogLeNet/Inception give (logits, *aux) in train mode)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (the model hash shown by ``/metadata``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_metadata(run_dir: str | Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """What an exported file must carry to be used alone: preprocessing, classes, provenance."""
    weights = Path(run_dir) / MODEL_FILE
    meta = {
        "classes": list(cfg["classes"]),
        "input_size": list(cfg["input_size"]),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "model": cfg["model"],
        "weights_sha256": file_sha256(weights) if weights.exists() else None,
        "source_run": str(run_dir),
    }
    task = cfg.get("task", "classification")
    if task != "classification":
        # how a consumer turns the raw outputs into boxes or a mask (DensePredictor.postprocess)
        meta["task"] = task
        if cfg.get("postprocess"):
            meta["postprocess"] = cfg["postprocess"]
        if "ignore_index" in cfg:
            meta["ignore_index"] = cfg["ignore_index"]
    temp = (cfg.get("calibration") or {}).get("temperature")
    if temp:
        meta["calibration"] = {"temperature": float(temp)}
    return meta


def export_onnx(
    model: nn.Module,
    f: str | Path | IO[bytes],
    *,
    input_size: Sequence[int],
    metadata: dict[str, Any] | None = None,
    opset: int = 17,
) -> None:
    """Write ``model`` as ONNX with a dynamic batch axis (input ``input``, output ``logits``)."""
    import onnx  # heavy; only exporting and reading .onnx files need it

    buf = io.BytesIO()
    example = torch.zeros(2, *input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Unwrap(model).eval(),
            (example,),
            buf,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    if metadata is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(metadata)
    data = proto.SerializeToString()
    if isinstance(f, (str, Path)):
        Path(f).write_bytes(data)
    else:
        f.write(data)


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: Sequence[int],
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` traced to TorchScript with the metadata in ``_extra_files``."""
    example = torch.zeros(2, *input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Unwrap(model).eval(), example, check_trace=False)
    extra = {TS_META_FILE: json.dumps(metadata or {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        torch.jit.save(traced, str(path), _extra_files=extra)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The cnnlab metadata stored in an exported ``.onnx`` or TorchScript file."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} does not exist")
    raw: str | None = None
    if path.suffix == ".onnx":
        import onnx  # heavy; only exporting and reading .onnx files need it

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf decode errors have no common base class
            raise RunError(f"{path} is not a valid ONNX file ({str(exc)[:120]})") from None
        raw = next((p.value for p in proto.metadata_props if p.key == META_KEY), None)
    else:
        extra = {TS_META_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise RunError(f"{path} is not a TorchScript file ({str(exc)[:120]})") from None
        raw = extra[TS_META_FILE] or None
    if not raw:
        raise RunError(f"{path} carries no cnnlab metadata; export it with `cnnlab export`")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise RunError(f"{path} has corrupt cnnlab metadata") from None
    return validate_run_config(meta, f"{path} metadata")
