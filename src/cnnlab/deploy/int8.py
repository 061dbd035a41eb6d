"""Choose and write the int8 model of a run: every candidate recipe built, timed and scored.

Which int8 flavour is fast depends on the CPU (see :mod:`cnnlab.deploy.quantize`), so each
candidate is measured here — batch-1 latency interleaved with fp32 after a warm-up, and accuracy,
top-1 agreement and the largest logit difference against fp32 on the *whole* test split (one set
of figures: the export table and the text below it quote the same numbers).

The rule (:func:`choose_recipe`, printed by ``cnnlab export``): among the recipes within the
allowed accuracy drop, those whose latency is within timing noise of the fastest are equally fast,
and of those the most accurate wins. Taking the fastest outright picked a recipe 0.83 points worse
than one that was slower by less than the noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import normalize_batch
from cnnlab.deploy.backends import OnnxBackend, time_backend
from cnnlab.deploy.latency import percentile, warm_up
from cnnlab.deploy.quantize import CANDIDATES, QuantConfig, quantize_onnx
from cnnlab.errors import RunError

MIN_NOISE = 0.05  # latencies within 5 % are never told apart, however steady the timings


def logits_of(backend, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``backend``'s logits for every row of ``x``, in batches."""
    return torch.cat(
        [torch.as_tensor(backend(x[i : i + batch])).float() for i in range(0, len(x), batch)]
    )


def accuracy(
    backend, x: torch.Tensor, y: torch.Tensor, batch: int = 256
) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy in percent of ``backend`` on (x, y), and its predictions."""
    preds = logits_of(backend, x, batch).argmax(1)
    return float((preds == y).float().mean() * 100), preds


def timing_noise(times: list[float]) -> float:
    """Relative spread of one backend's call times: the interquartile range over the median,
    at least :data:`MIN_NOISE`."""
    med = statistics.median(times)
    iqr = percentile(times, 75) - percentile(times, 25)
    return max(MIN_NOISE, iqr / med if med > 0 else 0.0)


def choose_recipe(
    rows: Mapping[str, Mapping[str, float]], max_drop: float, noise: float
) -> tuple[str, str]:
    """The recipe to keep and the rule, in words, that picked it.

    ``rows`` maps a recipe to its ``latency_ms`` and ``accuracy_drop`` (points, positive = worse).
    Recipes within ``max_drop`` whose latency is at most ``(1 + noise)`` times the fastest's are
    equally fast; the most accurate of them wins (then the faster). With none within
    ``max_drop``, the most accurate recipe is kept and the export check reports the drop.
    """
    ok = [k for k, r in rows.items() if r["accuracy_drop"] <= max_drop]
    if not ok:
        best = min(rows, key=lambda k: (rows[k]["accuracy_drop"], rows[k]["latency_ms"]))
        return best, f"no recipe within the allowed {max_drop:g}-point drop; kept the most accurate"
    fastest = min(rows[k]["latency_ms"] for k in ok)
    close = [k for k in ok if rows[k]["latency_ms"] <= fastest * (1 + noise)]
    best = min(close, key=lambda k: (rows[k]["accuracy_drop"], rows[k]["latency_ms"]))
    return best, (
        f"of the recipes within the allowed {max_drop:g}-point drop, those within {noise:.0%} "
        f"(timing noise) of the fastest ({len(close)} of {len(ok)}) count as equally fast; "
        "the most accurate of them is kept"
    )


# Long by design: build, time (interleaved) and score every candidate, then apply the rule;
# the figures of all candidates are gathered in one pass and reported together.
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
    fp32_logits = logits_of(fp32, x_test)
    fp32_pred = fp32_logits.argmax(1)
    fp32_acc = float((fp32_pred == y_test).float().mean() * 100)
    built = {}
    for c in candidates:
        built[c.name] = (c, quantize_onnx(fp32_path, calib, config=c))
    backends = {name: OnnxBackend(data, name) for name, (_, data) in built.items()}
    one = x_test[:1]
    timings: dict[str, list[float]] = {"fp32": [], **{k: [] for k in backends}}
    for b in [fp32, *backends.values()]:
        warm_up(lambda b=b: b(one), max_s=2.0)  # until stable: first calls are many times slower
    for _ in range(timing_rounds):  # interleaved so contention hits every candidate alike
        timings["fp32"] += time_backend(fp32, one, warmup=0, iters=3)
        for name, b in backends.items():
            timings[name] += time_backend(b, one, warmup=0, iters=3)
    rows = {}
    for name, b in backends.items():
        logits = logits_of(b, x_test)
        pred = logits.argmax(1)
        acc = float((pred == y_test).float().mean() * 100)
        rows[name] = {
            "int8_acc": acc,
            "accuracy_drop": fp32_acc - acc,
            "agreement": float((pred == fp32_pred).float().mean() * 100),
            "max_abs_diff": float((logits - fp32_logits).abs().max()) if n else 0.0,
            "latency_ms": statistics.median(timings[name]) * 1000,
            "latency_p90_ms": percentile(timings[name], 90) * 1000,
        }
    ok = [k for k in rows if rows[k]["accuracy_drop"] <= max_drop] or list(rows)
    fastest = min(ok, key=lambda k: rows[k]["latency_ms"])
    noise = timing_noise(timings[fastest])
    best, rule = choose_recipe(rows, max_drop, noise)
    Path(output).write_bytes(built[best][1])
    fp32_ms = statistics.median(timings["fp32"]) * 1000
    return {
        "config": best,
        "rule": rule,
        "noise": noise,
        "fp32_acc": fp32_acc,
        "int8_acc": rows[best]["int8_acc"],
        "accuracy_drop": rows[best]["accuracy_drop"],
        "agreement": rows[best]["agreement"],
        "max_abs_diff": rows[best]["max_abs_diff"],
        "fp32_ms": fp32_ms,
        "int8_ms": rows[best]["latency_ms"],
        "int8_p90_ms": rows[best]["latency_p90_ms"],
        "test_images": n,
        "calibration_images": len(calib),
        "candidates": rows,
        "seconds": time.perf_counter() - t0,
    }
