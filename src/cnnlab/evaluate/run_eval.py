"""Evaluate saved runs on test data: metrics, calibration, TTA, latency and ensembles of runs.

The model and preprocessing come from the run directory alone; the data is the run's own source
unless another is given, and a source with different classes or image size is refused by name.

Temperature and ensemble weights are fitted on the run's test split, the only data the model never
trained on (the engine trains on all of the training split). Their effect is reported honestly by
2-fold cross-fitting: each test image is scored with a temperature (or weights) fitted on the other
half, so the after-calibration numbers never grade parameters on the images they were fitted to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data import BatchLoader, ImageDataset, load_dataset, resize_dataset
from cnnlab.deploy.latency import Latency
from cnnlab.deploy.latency import measure_latency as time_calls
from cnnlab.errors import DataError, UnknownNameError
from cnnlab.evaluate import plots
from cnnlab.evaluate.calibration import calibration_summary, stratified_folds
from cnnlab.evaluate.ensemble import METHODS, check_same_classes, combine, fit_weights
from cnnlab.evaluate.metrics import (
    ReliabilityBins,
    accuracy,
    averages,
    confusion_matrix,
    log_loss,
    per_class_report,
    reliability_bins,
    top_k_accuracy,
    top_losses,
)
from cnnlab.evaluate.tta import PRESETS, predict_tta
from cnnlab.layers.memory_format import prefers_channels_last
from cnnlab.run import CONFIG_FILE, MODEL_FILE, load_model_from_run, read_run_config, save_json
from cnnlab.runtime import main_logits, resolve_device

N_BINS = 15


@dataclass
class EvalResult:
    """Metrics of one model (or ensemble) on one dataset.

    ``probs`` are the model's own probabilities (no temperature); ``calibration`` holds the fitted
    temperature and NLL/ECE before and after; ``tta`` the same metrics with test-time augmentation.
    """

    run_dir: Path
    classes: list[str]
    num_samples: int
    accuracy: float
    top5_accuracy: float
    log_loss: float
    confusion: np.ndarray
    per_class: dict[str, np.ndarray]
    probs: np.ndarray
    labels: np.ndarray
    artefacts: dict[str, Path] = field(default_factory=dict)
    reliability: ReliabilityBins | None = None
    calibration: dict[str, Any] | None = None
    tta: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    images: torch.Tensor | None = None
    name: str = ""

    @property
    def ece(self) -> float:
        """Expected calibration error of ``probs`` (15 equal-width bins)."""
        return self.reliability.ece if self.reliability is not None else float("nan")

    @property
    def averages(self) -> dict[str, dict[str, float]]:
        """Macro and weighted precision / recall / F1."""
        return averages(self.per_class)

    def summary(self) -> dict[str, Any]:
        """Headline numbers as plain data."""
        out = {
            "samples": self.num_samples,
            "accuracy": self.accuracy,
            "top5_accuracy": self.top5_accuracy,
            "log_loss": self.log_loss,
            "ece": self.ece,
            "macro_f1": float(self.per_class["f1"].mean()),
            "weighted_f1": self.averages["weighted"]["f1"],
        }
        if self.tta:
            out["tta"] = {k: v for k, v in self.tta.items() if k != "probs"}
        if self.calibration:
            out["calibration"] = {k: v for k, v in self.calibration.items() if k != "probs_after"}
        if self.latency:
            out["latency"] = self.latency
        return out


def _test_split(cfg: dict[str, Any], data: str | None, data_dir: str | None) -> ImageDataset:
    tc = cfg.get("train_config", {}).get("data", {})
    name = data or tc.get("name") or cfg.get("dataset", {}).get("name")
    if not name:
        raise DataError("the run does not record its data source; pass --data")
    if data_dir is None and (data is None or data == tc.get("name")):
        data_dir = tc.get("data_dir")
    return load_dataset(
        name,
        data_dir=data_dir,
        image_size=tc.get("image_size") or cfg["input_size"][1],
        val_fraction=tc.get("val_fraction", 0.2),
        seed=cfg.get("train_config", {}).get("seed", 0),
    ).test


def fit_data_to_model(
    test: ImageDataset, cfg: dict[str, Any], name: str = "the model", resize: bool = True
) -> ImageDataset:
    """``test`` checked against a run's classes, channels and image size.

    Different classes or channels are refused, naming the difference. A different height/width is
    resized to the model's input when ``resize`` is true and refused otherwise.
    """
    if test.classes != cfg["classes"]:
        missing = sorted(set(cfg["classes"]) - set(test.classes))
        extra = sorted(set(test.classes) - set(cfg["classes"]))
        raise DataError(
            f"the data's classes differ from {name}'s: missing {missing or 'none'}, unexpected {extra or 'none'}"
            + ("" if missing or extra else " (same names, different order)")
        )
    c, h, w = cfg["input_size"]
    if test.image_shape[0] != c:
        raise DataError(
            f"the data has {test.image_shape[0]} channel(s) but {name} expects {c} "
            f"(data images {'x'.join(map(str, test.image_shape))}, model input {c}x{h}x{w})"
        )
    if list(test.image_shape[1:]) != [h, w]:
        if not resize:
            raise DataError(
                f"the data's images are {test.image_shape[1]}x{test.image_shape[2]} but {name} expects "
                f"{h}x{w}; pass --resize to resize them to the model's input"
            )
        test = resize_dataset(test, h)
    return test


def load_eval_data(
    cfg: dict[str, Any],
    data: str | None = None,
    data_dir: str | None = None,
    resize: bool | None = None,
) -> ImageDataset:
    """The test split a run should be evaluated on, checked against the run's classes and size.

    ``resize`` (default: only for the run's own data source, which training resized the same way)
    allows images of another height/width to be resized to the model's input.
    """
    return fit_data_to_model(
        _test_split(cfg, data, data_dir), cfg, resize=data is None if resize is None else resize
    )


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    ds: ImageDataset,
    cfg: dict[str, Any],
    device: torch.device,
    batch_size: int = 512,
    tta: str = "none",
) -> tuple[torch.Tensor | None, np.ndarray]:
    """Logits (no TTA; None with TTA) and probabilities of ``model`` on every image of ``ds``."""

    nhwc = prefers_channels_last(model)  # as the training loop ran it: ~1.5x faster on a CPU
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    loader = BatchLoader(
        ds, batch_size, mean=cfg["mean"], std=cfg["std"], device=device, channels_last=nhwc
    )
    model.eval()
    if tta in ("none", "identity") or PRESETS.get(tta) == ["identity"]:
        logits = torch.cat([main_logits(model(x)).float().cpu() for x, _ in loader])
        return logits, torch.softmax(logits.double(), 1).numpy()
    probs = torch.cat([predict_tta(model, x, tta).cpu() for x, _ in loader])
    return None, probs.double().numpy()


def result_from_probs(
    run_dir: Path, classes: list[str], probs: np.ndarray, labels: np.ndarray, name: str = ""
) -> EvalResult:
    """An :class:`EvalResult` computed from probabilities and labels alone."""
    pred = probs.argmax(1)
    cm = confusion_matrix(labels, pred, len(classes))
    return EvalResult(
        Path(run_dir),
        list(classes),
        len(labels),
        accuracy(labels, pred),
        top_k_accuracy(labels, probs, 5),
        log_loss(labels, probs),
        cm,
        per_class_report(cm),
        probs,
        labels,
        reliability=reliability_bins(labels, probs, N_BINS),
        name=name or Path(run_dir).name,
    )


def measure_latency(
    model: torch.nn.Module,
    input_size: list[int] | tuple[int, ...],
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    budget_s: float = 1.0,
) -> dict[str, Any]:
    """Milliseconds per single image (median and p90) and images/s at ``batch_size``, each
    measured after warming up until the timing is stable (:func:`cnnlab.deploy.latency.warm_up`).

    ``budget_s`` is split between the two measurements; medians resist other processes' noise.
    """
    device = torch.device(device)
    model = model.eval().to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def timed(n: int) -> Latency:
        x = torch.randn(n, *input_size, device=device)
        with torch.inference_mode():
            # the warm-up scales with the budget: a quick report at the end of training must not
            # spend seconds settling a timing it measures for 0.15 s
            return time_calls(
                lambda: model(x),
                budget_s=budget_s / 2,
                min_calls=5,
                sync=sync,
                warmup_s=max(0.5, 2 * budget_s),
            )

    one, many = timed(1), timed(batch_size)
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "ms_per_image_batch1": one.median_ms,
        "p90_ms_batch1": one.p90_ms,
        "warmup_calls": one.warmup_calls,
        "batch_size": batch_size,
        "images_per_s": batch_size / many.median,
    }


def calibration_improves(calibration: dict[str, Any]) -> bool:
    """Whether the fitted temperature lowers the cross-fitted NLL (the honest estimate of what it
    does to unseen images). A temperature that makes it worse is never worth saving: on a small
    test split the fit can chase noise (0.0929 -> 0.1009 in issue 20)."""
    after, before = calibration.get("nll_after"), calibration.get("nll_before")
    return after is not None and before is not None and after < before


def save_calibration(run_dir: str | Path, calibration: dict[str, Any]) -> Path:
    """Write ``calibration`` (with ``temperature``) into the run's ``config.json`` atomically; the
    predictor divides logits by it before the softmax."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    cfg["calibration"] = {k: v for k, v in calibration.items() if k != "probs_after"}
    save_json(run_dir / CONFIG_FILE, cfg)
    return run_dir / CONFIG_FILE


def evaluate_run(
    run_dir: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 512,
    write_plots: bool = True,
    *,
    tta: str = "none",
    calibrate: bool = False,
    latency: bool = True,
    top_loss_count: int = 16,
    resize: bool | None = None,
    weights: str = MODEL_FILE,
    out_dir: str | Path | None = None,
) -> EvalResult:
    """Evaluate the model of ``run_dir`` on its test split.

    Always computes top-1/top-5 accuracy, per-class precision/recall/F1, confusion matrix,
    log-loss, ECE and the temperature that would calibrate the model (with cross-fitted before /
    after NLL and ECE). ``tta`` adds the same metrics with test-time augmentation (``flip``,
    ``flip+crops``, or view names) next to the plain ones; ``calibrate=True`` saves the temperature
    into ``config.json`` when it lowers the cross-fitted NLL (``calibration["saved_now"]`` says
    whether it did); ``latency`` measures ms/image and images/s. ``write_plots`` writes
    ``confusion.png``, ``confusion_normalized.png``, ``per_class.png``, ``reliability.png``,
    ``top_losses.png`` and ``eval.json`` into the run directory. ``resize`` allows data of another
    image size (default: only the run's own source). ``weights`` is the weights file inside the
    run (default the final ``model.safetensors``; e.g. a best checkpoint's), ``out_dir`` where
    the pictures go (default the run directory).

    Example::

        res = evaluate_run("runs/simplecnn-digits", tta="flip")
        print(res.accuracy, res.tta["accuracy"], res.calibration["temperature"])
    """

    run_dir = Path(run_dir)
    model, cfg = load_model_from_run(run_dir, weights)
    dev = resolve_device(device)
    model = model.to(dev)
    test = load_eval_data(cfg, data, data_dir, resize)
    logits, probs = predict_dataset(model, test, cfg, dev, batch_size)
    y = test.labels.numpy()
    res = result_from_probs(run_dir, list(test.classes), probs, y)
    res.images = test.images
    assert logits is not None
    res.calibration = calibration_summary(logits, test.labels, N_BINS)
    saved = cfg.get("calibration", {}).get("temperature")
    res.calibration["saved_temperature"] = saved
    res.calibration["improves"] = calibration_improves(res.calibration)
    res.calibration["saved_now"] = False
    if calibrate and res.calibration["improves"]:
        save_calibration(run_dir, {**res.calibration, "fitted_on": _fitted_on(cfg, data, len(y))})
        res.calibration["saved_temperature"] = res.calibration["temperature"]
        res.calibration["saved_now"] = True
    if tta not in ("none", "identity"):
        _, tprobs = predict_dataset(model, test, cfg, dev, batch_size, tta)
        t = result_from_probs(run_dir, res.classes, tprobs, y)
        res.tta = {
            "views": tta,
            "accuracy": t.accuracy,
            "top5_accuracy": t.top5_accuracy,
            "log_loss": t.log_loss,
            "ece": t.ece,
            "macro_f1": float(t.per_class["f1"].mean()),
        }
    if latency:
        res.latency = measure_latency(model, cfg["input_size"], dev, batch_size=min(batch_size, 64))
    if write_plots:
        write_eval_artefacts(res, Path(out_dir or run_dir), top_loss_count=top_loss_count)
    return res


def _fitted_on(cfg: dict[str, Any], data: str | None, n: int) -> dict[str, Any]:
    tc = cfg.get("train_config", {})
    return {
        "data": data or tc.get("data", {}).get("name"),
        "split": "test",
        "samples": n,
        "seed": tc.get("seed", 0),
        "note": "NLL/ECE after calibration are 2-fold cross-fitted",
    }


def write_eval_artefacts(res: EvalResult, out_dir: Path, top_loss_count: int = 16) -> None:
    """The evaluation's PNGs and ``eval.json`` into ``out_dir``; paths land in ``res.artefacts``."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    a = res.artefacts
    a["confusion"] = plots.plot_confusion(res.confusion, res.classes, out_dir / "confusion.png")
    a["confusion_normalized"] = plots.plot_confusion(
        res.confusion, res.classes, out_dir / "confusion_normalized.png", normalize=True
    )
    a["per_class"] = plots.plot_per_class(res.per_class, res.classes, out_dir / "per_class.png")
    if res.reliability is not None:
        after = None
        if res.calibration and "probs_after" in res.calibration:
            after = reliability_bins(res.labels, res.calibration["probs_after"], N_BINS)
        a["reliability"] = plots.plot_reliability(
            res.reliability, out_dir / "reliability.png", after
        )
    if res.images is not None:
        idx = top_losses(res.labels, res.probs, top_loss_count)
        a["top_losses"] = plots.plot_top_losses(
            res.images, res.labels, res.probs, idx, res.classes, out_dir / "top_losses.png"
        )
    path = out_dir / "eval.json"
    path.write_text(json.dumps(_jsonable(res.summary()), indent=2) + "\n")
    a["eval_json"] = path


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


@dataclass
class EnsembleResult:
    """Each member's result and the ensemble's, on one shared test set."""

    method: str
    members: list[EvalResult]
    ensemble: EvalResult
    weights: list[float] | None = None
    note: str = ""


def evaluate_ensemble(
    run_dirs: list[str | Path],
    method: str = "mean",
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 512,
    tta: str = "none",
    resize: bool | None = None,
) -> EnsembleResult:
    """Evaluate several runs and their ensemble (``mean``, ``weighted`` or ``vote``).

    All members are scored on the first member's test split, each with its own preprocessing
    (input size, normalisation). Members with different class lists are refused, naming the
    difference. ``weighted`` fits weights minimising the NLL on the test split; the ensemble's
    reported metrics use 2-fold cross-fitted weights (each half scored with weights fitted on the
    other) while ``weights`` are those fitted on all of it.

    Example::

        ens = evaluate_ensemble(["runs/a", "runs/b", "runs/c"], method="vote")
        print([m.accuracy for m in ens.members], ens.ensemble.accuracy)
    """

    if method not in METHODS:
        raise UnknownNameError("ensemble method", method, METHODS)
    dirs = [Path(r) for r in run_dirs]
    if len(dirs) < 2:
        raise DataError("an ensemble needs at least two runs")
    cfgs = [read_run_config(d) for d in dirs]
    check_same_classes([c["classes"] for c in cfgs], [str(d) for d in dirs])
    raw = _test_split(cfgs[0], data, data_dir)
    dev = resolve_device(device)
    members, member_probs = [], []
    for d, cfg in zip(dirs, cfgs):
        model, _ = load_model_from_run(d)
        ds = fit_data_to_model(raw, cfg, str(d), resize=data is None if resize is None else resize)
        _, probs = predict_dataset(model.to(dev), ds, cfg, dev, batch_size, tta)
        y = ds.labels.numpy()
        members.append(result_from_probs(d, cfg["classes"], probs, y, name=d.name))
        member_probs.append(probs)
    stacked = np.stack(member_probs)
    y = members[0].labels
    weights, note = None, ""
    if method == "weighted":
        weights = [float(w) for w in fit_weights(stacked, y)]
        scores = np.zeros_like(stacked[0])
        folds = stratified_folds(y, 2, cfgs[0].get("train_config", {}).get("seed", 0))
        for i, fold in enumerate(folds):
            rest = np.concatenate([f for j, f in enumerate(folds) if j != i])
            w = fit_weights(stacked[:, rest], y[rest])
            scores[fold] = combine(stacked[:, fold], "weighted", w)
        note = "weights fitted on the test split; ensemble metrics 2-fold cross-fitted"
    else:
        scores = combine(stacked, method)
    ens = result_from_probs(dirs[0], members[0].classes, scores, y, name=f"ensemble ({method})")
    return EnsembleResult(method, members, ens, weights, note)
