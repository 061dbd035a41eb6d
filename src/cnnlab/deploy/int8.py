"""Choose and write the int8 model of a run: every candidate recipe built, timed and scored.

Which int8 flavour is fast depends on the CPU (see :mod:`cnnlab.deploy.quantize`), so each
candidate is measured here — batch-1 latency interleaved with fp32, test-set accuracy and top-1
agreement with fp32 — and the fastest within the allowed accuracy drop is kept.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import normalize_batch
from cnnlab.deploy.backends import OnnxBackend, time_backend
from cnnlab.deploy.quantize import CANDIDATES, QuantConfig, quantize_onnx
from cnnlab.errors import RunError


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
