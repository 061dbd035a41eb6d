"""int8 static quantisation with ONNX Runtime, calibrated on training images, chosen by measuring.

Which int8 flavour is fast depends on the CPU: with VNNI, uint8 activations × int8 weights (U8S8)
run the fused integer kernels, while ORT's default S8S8 can leave convolutions unfused and end up
slower than fp32; some models (depthwise-heavy EfficientNets) are slower in int8 either way. So
:func:`quantize_run` builds each candidate, measures its batch-1 latency and its test-set accuracy,
and keeps the fastest one whose accuracy drop stays within the allowed points — reporting all.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import RunError


@dataclass(frozen=True)
class QuantConfig:
    """One int8 recipe: activation and weight types, per-channel weights or not."""

    name: str
    activations: str  # "uint8" | "int8"
    weights: str
    per_channel: bool


CANDIDATES = (
    QuantConfig("U8S8-per-channel", "uint8", "int8", True),
    QuantConfig("U8S8-per-tensor", "uint8", "int8", False),
    QuantConfig("S8S8-per-channel", "int8", "int8", True),
)


class _Reader:
    """ORT CalibrationDataReader over normalised float32 batches."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int = 32):
        self._it: Iterator[dict[str, np.ndarray]] = (
            {input_name: np.ascontiguousarray(images[i : i + batch], dtype=np.float32)}
            for i in range(0, len(images), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - only some ORT calibrators call it
        pass


def _pre_process(src: Path, dst: Path) -> Path:
    """ORT's quantisation pre-processing (graph optimisation + shape inference), or ``src``.

    The exported graph carries Identity nodes and unfolded constants between Conv and Relu; left
    in, they keep ORT from fusing the QDQ pairs into integer kernels, and the int8 model ran slower
    than fp32 (resnet18 at 224, 2 threads: 20.6 ms int8 vs 17.7 ms fp32; pre-processed: 8.9 ms).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - an optimisation only: quantise the graph as exported
        return src
    return dst


def quantize_onnx(
    model: bytes | str | Path,
    calibration: np.ndarray | torch.Tensor,
    output: str | Path | None = None,
    config: QuantConfig = CANDIDATES[0],
) -> bytes:
    """Statically quantise an fp32 ONNX model to int8 QDQ; returns the bytes (and writes ``output``).

    ``calibration`` is a normalised float batch (N, C, H, W) of training images; a few hundred
    are enough for MinMax ranges on small models.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    calib = np.asarray(
        calibration.numpy() if isinstance(calibration, torch.Tensor) else calibration
    )
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    meta = [(p.key, p.value) for p in proto.metadata_props]
    input_name = proto.graph.input[0].name

    class Reader(_Reader, CalibrationDataReader):
        pass

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs a pre-processing hint on the root logger every call
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        src = _pre_process(src, Path(tmp) / "pre.onnx")
        quantize_static(
            str(src),
            str(dst),
            Reader(calib, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=types[config.activations],
            weight_type=types[config.weights],
        )
        q = onnx.load(str(dst))
    root.setLevel(level)
    del q.metadata_props[:]
    for key, value in meta:
        if key == "cnnlab":
            d = json.loads(value)
            d["int8"] = config.name
            value = json.dumps(d)
        entry = q.metadata_props.add()
        entry.key, entry.value = key, value
    data = q.SerializeToString()
    if output is not None:
        Path(output).write_bytes(data)
    return data


def accuracy(
    backend, x: torch.Tensor, y: torch.Tensor, batch: int = 256
) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy in percent of ``backend`` on (x, y), and its predictions."""
    preds = torch.cat([backend(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((preds == y).float().mean() * 100), preds


def quantize_run(
    fp32_path: str | Path,
    output: str | Path,
    splits,
    cfg: dict[str, Any],
    meta: dict[str, Any] | None = None,
    *,
    calib_images: int = 256,
    test_images: int | None = None,
    max_drop: float = 1.0,
    candidates: tuple[QuantConfig, ...] = CANDIDATES,
    timing_rounds: int = 5,
) -> dict[str, Any]:
    """Quantise ``fp32_path`` with each candidate, measure, write the chosen one to ``output``.

    Returns a dict: ``config`` (the winner), ``fp32_acc`` / ``int8_acc`` / ``accuracy_drop``
    (percentage points on the test set, None without data), ``agreement`` (top-1 agreement with
    fp32), ``fp32_ms`` and per-candidate ``candidates`` figures.
    """
    from cnnlab.data import normalize_batch
    from cnnlab.deploy.backends import OnnxBackend, time_backend

    t0 = time.perf_counter()
    if splits is None:
        raise RunError(
            "int8 calibration needs the run's training images, which could not be loaded; "
            "check the run's data source (train_config.data)"
        )
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(splits.train), generator=g)[:calib_images]
    calib = normalize_batch(splits.train.images[idx], cfg["mean"], cfg["std"])
    test = splits.test
    n = len(test) if test_images is None else min(test_images, len(test))
    x_test = normalize_batch(test.images[:n], cfg["mean"], cfg["std"])
    y_test = test.labels[:n]

    fp32 = OnnxBackend(fp32_path, "onnx-fp32")
    fp32_acc, fp32_pred = accuracy(fp32, x_test, y_test)
    built = {}
    for c in candidates:
        built[c.name] = (c, quantize_onnx(fp32_path, calib, config=c))
    backends = {name: OnnxBackend(data, name) for name, (_, data) in built.items()}
    one = x_test[:1]
    timings: dict[str, list[float]] = {"fp32": [], **{k: [] for k in backends}}
    for b in [fp32, *backends.values()]:
        b(one)
    for _ in range(timing_rounds):  # interleaved so contention hits every candidate alike
        timings["fp32"] += time_backend(fp32, one, warmup=0, iters=3)
        for name, b in backends.items():
            timings[name] += time_backend(b, one, warmup=0, iters=3)
    rows = {}
    for name, b in backends.items():
        acc, pred = accuracy(b, x_test, y_test)
        rows[name] = {
            "int8_acc": acc,
            "accuracy_drop": fp32_acc - acc,
            "agreement": float((pred == fp32_pred).float().mean() * 100),
            "latency_ms": statistics.median(timings[name]) * 1000,
        }
    ok = [k for k, r in rows.items() if r["accuracy_drop"] <= max_drop]
    best = (
        min(ok, key=lambda k: rows[k]["latency_ms"])
        if ok
        else min(rows, key=lambda k: rows[k]["accuracy_drop"])
    )
    Path(output).write_bytes(built[best][1])
    fp32_ms = statistics.median(timings["fp32"]) * 1000
    return {
        "config": best,
        "fp32_acc": fp32_acc,
        "int8_acc": rows[best]["int8_acc"],
        "accuracy_drop": rows[best]["accuracy_drop"],
        "agreement": rows[best]["agreement"],
        "fp32_ms": fp32_ms,
        "int8_ms": rows[best]["latency_ms"],
        "test_images": n,
        "calibration_images": len(calib),
        "candidates": rows,
        "seconds": time.perf_counter() - t0,
    }
