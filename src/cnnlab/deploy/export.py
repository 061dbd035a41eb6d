"""Export a trained model to ONNX or TorchScript, with its preprocessing inside, and prove it right.

The exported file carries everything a consumer needs (class names, input size, mean, std, model
name and weights hash) as JSON under the key ``cnnlab`` (ONNX ``metadata_props``; TorchScript
``_extra_files['cnnlab.json']``), so ``cnnlab.load("model.onnx")`` needs no run directory.

Every export is followed by a parity check against PyTorch on real samples (the run's own test
images when they can be loaded, random ones otherwise): the largest absolute logit difference and
the top-1 agreement. Exporters that silently change outputs are the common failure this catches.

Detection and segmentation models export their raw heads; the check then also compares what a user
gets after the documented post-processing (:meth:`DensePredictor.postprocess` run on the ONNX
Runtime outputs and on the eager ones): the same boxes after NMS (matched by class, IoU >= 0.99,
scores within ``atol``) or the same mask argmax on every pixel, reported as the agreement.

The file format itself (writing and reading the metadata) is :mod:`cnnlab.deploy.formats`.
ONNX uses PyTorch's TorchScript-based exporter: it is offline, fast, and folds BatchNorm and
constants with bit-for-bit parity on the zoo (the dynamo exporter is several times slower to run
and gave the same numbers).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data import normalize_batch
from cnnlab.deploy.backends import OnnxBackend, TorchBackend
from cnnlab.deploy.dense_predict import DENSE_TASKS, BoxPrediction, DensePredictor
from cnnlab.deploy.fold_bn import fold_batchnorm
from cnnlab.deploy.formats import (
    _Unwrap,
    export_onnx,
    export_torchscript,
    file_sha256,
    read_metadata,
    run_metadata,
)
from cnnlab.deploy.int8 import quantize_run
from cnnlab.deploy.latency import Latency, measure_latency
from cnnlab.errors import ConfigError, RunError, UnknownNameError
from cnnlab.run import load_model_from_run, load_run_splits

# re-exported: the export workflow is where users look for the file-format helpers
__all__ = [
    "DEFAULT_ATOL",
    "ExportCheckError",
    "ExportReport",
    "FORMATS",
    "Parity",
    "compare_logits",
    "export_onnx",
    "export_run",
    "export_torchscript",
    "file_sha256",
    "read_metadata",
    "run_metadata",
]

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
DEFAULT_ATOL = 1e-4
PARITY_CONF = 0.05


@dataclass(frozen=True)
class Parity:
    """How closely an exported model reproduces PyTorch on ``n`` samples."""

    max_abs_diff: float
    top1_agreement: float
    n: int
    atol: float
    source: str
    decoded: str = ""  # "detection"/"segmentation": agreement is of the post-processed outputs
    boxes: int = 0  # detection: the reference boxes compared

    @property
    def passed(self) -> bool:
        """Logits within ``atol`` and the same top-1 everywhere; for a dense model, the same
        decoded boxes / mask on every sample (raw heads may differ by float noise that changes
        no box and no pixel, so the raw difference is reported, not required)."""
        if self.decoded:
            return self.top1_agreement == 1.0
        return self.max_abs_diff <= self.atol and self.top1_agreement == 1.0


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else float(a == b)


def same_detections(
    reference: list[BoxPrediction], other: list[BoxPrediction], atol: float = 1e-3
) -> bool:
    """Whether two images' detections are the same boxes: as many, each matched in order of
    score to an unused one of the same class with IoU >= 0.99 and a score within ``atol``
    (NMS on near-equal scores may order ties differently, so order alone is not compared)."""
    if len(reference) != len(other):
        return False
    used = [False] * len(other)
    for r in reference:
        hit = next(
            (
                j
                for j, o in enumerate(other)
                if not used[j]
                and o.label == r.label
                and abs(o.score - r.score) <= atol
                and _box_iou(r.box, o.box) >= 0.99
            ),
            None,
        )
        if hit is None:
            return False
        used[hit] = True
    return True


def compare_decoded(
    predictor: DensePredictor,
    reference: torch.Tensor,
    other: torch.Tensor,
    atol: float = DEFAULT_ATOL,
    source: str = "",
) -> Parity:
    """Parity of two raw dense outputs after :meth:`DensePredictor.postprocess`: the largest raw
    difference, and the share of images with the same boxes (:func:`same_detections`) or the
    share of pixels with the same mask class; passed only when it is 1.0."""
    ref, oth = reference.float(), torch.as_tensor(other).float()
    diff = float((ref - oth).abs().max()) if ref.numel() else 0.0
    sizes = [tuple(predictor.input_size[1:])] * len(ref)
    conf = predictor.conf_thresh
    # below the deployed threshold too, so a barely trained detector still has boxes to compare
    predictor.conf_thresh = min(conf, PARITY_CONF)
    try:
        a, b = predictor.postprocess(ref, sizes), predictor.postprocess(oth, sizes)
    finally:
        predictor.conf_thresh = conf
    boxes = 0
    if predictor.task == "detection":
        score_tol = max(atol * 10, 1e-4)  # a sigmoid product: a logit diff of atol moves it less
        same = [same_detections(x, y, score_tol) for x, y in zip(a, b)]  # type: ignore[arg-type]
        agree = sum(same) / len(same) if same else 1.0
        boxes = sum(len(x) for x in a)  # type: ignore[arg-type]
    else:
        pixels = sum(np.asarray(x).size for x in a)
        equal = sum(int((np.asarray(x) == np.asarray(y)).sum()) for x, y in zip(a, b))
        agree = equal / pixels if pixels else 1.0
    return Parity(diff, agree, len(ref), atol, source, decoded=predictor.task, boxes=boxes)


def compare_logits(
    reference: torch.Tensor, other: torch.Tensor, atol: float = DEFAULT_ATOL, source: str = ""
) -> Parity:
    """Largest absolute logit difference and top-1 agreement between two (N, K) logit arrays."""
    ref, oth = reference.float(), torch.as_tensor(other).float()
    diff = float((ref - oth).abs().max()) if ref.numel() else 0.0
    agree = float((ref.argmax(1) == oth.argmax(1)).float().mean()) if len(ref) else 1.0
    return Parity(diff, agree, len(ref), atol, source)


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


def _latency(fn, x: torch.Tensor) -> Latency:
    """Batch-1 latency after a warm-up that lasts until the timing is stable (median and p90)."""
    return measure_latency(lambda: fn(x), budget_s=1.0, min_calls=10)


# Long by design: the export is a fixed sequence (load, reference logits, export, parity,
# optional int8, verdict) whose steps share the reference batch; it reads as that sequence.
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
    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 needs --format onnx (int8 runs on ONNX Runtime)")
    run_dir = Path(run_dir)
    model, cfg = load_model_from_run(run_dir)
    task = cfg.get("task", "classification")
    if int8 and task in DENSE_TASKS:
        raise ConfigError(
            f"--int8 is calibrated and scored for classification; export the {task} run in fp32"
        )
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
    if task in DENSE_TASKS:
        predictor = DensePredictor(model, cfg)
        parity = compare_decoded(predictor, reference, backend(x_test), atol, source)
    else:
        parity = compare_logits(reference, backend(x_test), atol, source)
    one = x_test[:1]
    lat, torch_lat = _latency(backend, one), _latency(TorchBackend(model), one)
    report.rows.append(
        {
            "format": fmt,
            "file": str(out),
            "size_mb": out.stat().st_size / 1e6,
            "latency_ms": lat.median_ms,
            "latency_p90_ms": lat.p90_ms,
            "torch_latency_ms": torch_lat.median_ms,
            "max_abs_diff": parity.max_abs_diff,
            "top1_agreement": parity.top1_agreement,
            "decoded": parity.decoded,
            "check": {
                "detection": f"same boxes after NMS at score >= {PARITY_CONF:g} (class, IoU >= "
                f"0.99, score; {parity.boxes} boxes)",
                "segmentation": "same mask argmax per pixel",
            }.get(parity.decoded, "logits within atol, same top-1"),
            "passed": parity.passed,
            "samples": source,
            "export_s": export_s,
        }
    )
    if int8:
        q_out = out.with_name(out.name.replace(".onnx", "") + ".int8.onnx")
        report.int8 = q = quantize_run(out, q_out, splits, cfg, meta, max_drop=int8_max_drop)
        # one set of figures: the row quotes quantize_run's, measured on the whole test split
        report.rows.append(
            {
                "format": f"onnx-int8 ({q['config']})",
                "file": str(q_out),
                "size_mb": q_out.stat().st_size / 1e6,
                "latency_ms": q["int8_ms"],
                "latency_p90_ms": q["int8_p90_ms"],
                "torch_latency_ms": report.rows[0]["torch_latency_ms"],
                "max_abs_diff": q["max_abs_diff"],
                "top1_agreement": q["agreement"] / 100,
                # int8 changes the numbers by design: the check is the test-set accuracy drop
                "passed": q["accuracy_drop"] <= int8_max_drop,
                "samples": f"{q['test_images']} test images (all of the split), against fp32 ONNX",
                "export_s": q.get("seconds", 0.0),
            }
        )
    if not report.passed:
        bad = [r for r in report.rows if not r["passed"]][0]
        if task in DENSE_TASKS:
            raise ExportCheckError(
                f"export check failed for {bad['file']}: {bad['check']} on "
                f"{bad['top1_agreement']:.2%} (max raw |diff| {bad['max_abs_diff']:.2e})",
                report,
            )
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
