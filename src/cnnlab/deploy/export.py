"""Export a trained model to ONNX or TorchScript, with its preprocessing inside, and prove it right.

The exported file carries everything a consumer needs (class names, input size, mean, std, model
name and weights hash) as JSON under the key ``cnnlab`` (ONNX ``metadata_props``; TorchScript
``_extra_files['cnnlab.json']``), so ``cnnlab.load("model.onnx")`` needs no run directory.

Every export is followed by a parity check against PyTorch on real samples (the run's own test
images when they can be loaded, random ones otherwise): the largest absolute logit difference and
the top-1 agreement. Exporters that silently change outputs are the common failure this catches.

ONNX uses PyTorch's TorchScript-based exporter: it is offline, fast, and folds BatchNorm and
constants with bit-for-bit parity on the zoo (the dynamo exporter is several times slower to run
and gave the same numbers).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import ConfigError, DataError, RunError, UnknownNameError

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
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
    from cnnlab.train.rundir import MODEL_FILE

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
    import onnx

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
        import onnx

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
    for key in ("classes", "input_size", "mean", "std"):
        if key not in meta:
            raise RunError(f"{path} metadata lacks '{key}'")
    return meta


@dataclass(frozen=True)
class Parity:
    """How closely an exported model reproduces PyTorch on ``n`` samples."""

    max_abs_diff: float
    top1_agreement: float
    n: int
    atol: float
    source: str

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.top1_agreement == 1.0


def compare_logits(
    reference: torch.Tensor, other: torch.Tensor, atol: float = DEFAULT_ATOL, source: str = ""
) -> Parity:
    """Largest absolute logit difference and top-1 agreement between two (N, K) logit arrays."""
    ref, oth = reference.float(), torch.as_tensor(other).float()
    diff = float((ref - oth).abs().max()) if ref.numel() else 0.0
    agree = float((ref.argmax(1) == oth.argmax(1)).float().mean()) if len(ref) else 1.0
    return Parity(diff, agree, len(ref), atol, source)


def load_run_splits(cfg: dict[str, Any]):
    """The run's (train, test) splits at the model's input size, or None when unavailable."""
    from cnnlab.data import DatasetSplits, load_dataset
    from cnnlab.train.loop import resize_dataset

    tc = cfg.get("train_config", {})
    d = tc.get("data", {})
    name = d.get("name") or cfg.get("dataset", {}).get("name")
    if not name:
        return None
    size = cfg["input_size"][1]
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
    if splits.test.classes != cfg["classes"] or splits.test.image_shape != tuple(cfg["input_size"]):
        if (
            splits.test.classes != cfg["classes"]
            or splits.test.image_shape[0] != cfg["input_size"][0]
        ):
            return None
        splits = DatasetSplits(
            resize_dataset(splits.train, size), resize_dataset(splits.test, size)
        )
    return splits


class ExportCheckError(RunError):
    """The exported model does not reproduce PyTorch; ``report`` holds the measured figures."""

    def __init__(self, message: str, report: ExportReport):
        super().__init__(message)
        self.report = report


@dataclass
class ExportReport:
    """What ``cnnlab export`` did: the files, their parity, size and latency."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    int8: dict[str, Any] | None = None
    folded_bn: int = 0

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.rows)


def _latency_ms(fn, x: torch.Tensor, iters: int = 10) -> float:
    from cnnlab.deploy.backends import time_backend

    return float(np.median(time_backend(fn, x, iters=iters, max_time=5.0)) * 1000)


def export_run(
    run_dir: str | Path,
    fmt: str = "onnx",
    output: str | Path | None = None,
    *,
    int8: bool = False,
    fold_bn: bool = False,
    samples: int = 128,
    atol: float = DEFAULT_ATOL,
    int8_max_drop: float = 1.0,
) -> ExportReport:
    """Export the model of ``run_dir`` to ``fmt`` and check it; raises :class:`RunError` on a failed
    check (the files stay for inspection).

    Example::

        report = export_run("runs/fastnet-fmnist", "onnx", int8=True)
        report.rows[0]["max_abs_diff"], report.int8["accuracy_drop"]
    """
    from cnnlab.data import normalize_batch
    from cnnlab.deploy.backends import OnnxBackend, TorchBackend
    from cnnlab.train.rundir import load_model_from_run

    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 needs --format onnx (int8 runs on ONNX Runtime)")
    run_dir = Path(run_dir)
    model, cfg = load_model_from_run(run_dir)
    input_size = tuple(cfg["input_size"])
    meta = run_metadata(run_dir, cfg)
    out = Path(output) if output else run_dir / f"model{SUFFIXES[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = ExportReport()

    splits = load_run_splits(cfg)
    if splits is not None:
        x_test = normalize_batch(splits.test.images[:samples], cfg["mean"], cfg["std"])
        source = f"{len(x_test)} test images of {splits.test.name}"
    else:
        x_test = torch.randn(
            min(samples, 32), *input_size, generator=torch.Generator().manual_seed(0)
        )
        source = f"{len(x_test)} random inputs (the run's data could not be loaded)"
    with torch.no_grad():
        reference = _Unwrap(model)(x_test).float()

    export_model = model
    if fold_bn:
        from cnnlab.deploy.fold_bn import fold_batchnorm

        export_model, report.folded_bn = fold_batchnorm(model, input_size)
        meta["folded_bn"] = report.folded_bn
    meta["format"] = fmt
    t0 = time.perf_counter()
    if fmt == "onnx":
        export_onnx(export_model, out, input_size=input_size, metadata=meta)
        backend = OnnxBackend(out)
    else:
        export_torchscript(export_model, out, input_size=input_size, metadata=meta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            backend = TorchBackend(torch.jit.load(str(out), map_location="cpu"), "torch")
    export_s = time.perf_counter() - t0
    parity = compare_logits(reference, backend(x_test), atol, source)
    one = x_test[:1]
    report.rows.append(
        {
            "format": fmt,
            "file": str(out),
            "size_mb": out.stat().st_size / 1e6,
            "latency_ms": _latency_ms(backend, one),
            "torch_latency_ms": _latency_ms(TorchBackend(model), one),
            "max_abs_diff": parity.max_abs_diff,
            "top1_agreement": parity.top1_agreement,
            "passed": parity.passed,
            "samples": source,
            "export_s": export_s,
        }
    )
    if int8:
        from cnnlab.deploy.quantize import quantize_run

        q_out = out.with_name(out.name.replace(".onnx", "") + ".int8.onnx")
        report.int8 = quantize_run(out, q_out, splits, cfg, meta)
        qb = OnnxBackend(q_out, "int8")
        qp = compare_logits(reference, qb(x_test), atol, source)
        ok = (
            report.int8.get("accuracy_drop") is None
            or report.int8["accuracy_drop"] <= int8_max_drop
        )
        report.rows.append(
            {
                "format": f"onnx-int8 ({report.int8['config']})",
                "file": str(q_out),
                "size_mb": q_out.stat().st_size / 1e6,
                "latency_ms": _latency_ms(qb, one),
                "torch_latency_ms": report.rows[0]["torch_latency_ms"],
                "max_abs_diff": qp.max_abs_diff,
                "top1_agreement": qp.top1_agreement,
                # int8 changes the numbers by design: the check is the test-set accuracy drop
                "passed": ok,
                "samples": source,
                "export_s": report.int8.get("seconds", 0.0),
            }
        )
    if not report.passed:
        bad = [r for r in report.rows if not r["passed"]][0]
        raise ExportCheckError(
            f"export check failed for {bad['file']}: max |diff| {bad['max_abs_diff']:.2e} "
            f"(allowed {atol:.0e}), top-1 agreement {bad['top1_agreement']:.2%}"
            + (
                f", int8 accuracy drop {report.int8['accuracy_drop']:.2f} points"
                if report.int8 and "int8" in bad["format"]
                else ""
            ),
            report,
        )
    return report
