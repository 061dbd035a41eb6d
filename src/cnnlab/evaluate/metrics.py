"""Classification metrics as pure functions of labels, predictions and probabilities.

Written with numpy (no scikit-learn at run time) and tested against scikit-learn on fixed inputs.
Conventions follow scikit-learn where it has one: precision/recall/F1 of a class with no predicted
(or no true) samples is 0, macro averages weigh classes equally, weighted averages by support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-12


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples of true class ``i`` predicted as ``j``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def normalize_confusion(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix: row ``i`` is the distribution of predictions for class
    ``i`` (its diagonal is the per-class recall); rows of absent classes stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    return cm / np.maximum(cm.sum(1, keepdims=True), 1)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of exact matches."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores."""
    probs = np.asarray(probs)
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(1).mean())


def per_class_report(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    pred = cm.sum(0)
    support = cm.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def averages(per_class: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Macro (classes weigh equally) and support-weighted averages of precision, recall and F1,
    as scikit-learn's ``classification_report`` computes them."""
    support = np.asarray(per_class["support"], dtype=np.float64)
    w = support / max(support.sum(), 1)
    out: dict[str, dict[str, float]] = {}
    for name, weights in (("macro", np.full(len(w), 1 / max(len(w), 1))), ("weighted", w)):
        out[name] = {
            k: float((per_class[k] * weights).sum()) for k in ("precision", "recall", "f1")
        }
        out[name]["support"] = int(support.sum())
    return out


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-12)."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1.0)).mean())


@dataclass(frozen=True)
class ReliabilityBins:
    """Confidence histogram behind the ECE and the reliability diagram.

    ``edges`` has ``n_bins + 1`` entries; per bin: number of samples, mean confidence (top-1
    probability) and accuracy (NaN for empty bins).
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: ``sum_b |acc_b - conf_b| * n_b / N`` over non-empty bins."""
        n = self.counts.sum()
        if n == 0:
            return float("nan")
        keep = self.counts > 0
        gap = np.abs(self.accuracy[keep] - self.confidence[keep])
        return float((gap * self.counts[keep]).sum() / n)


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Bin samples by top-1 confidence into ``n_bins`` equal-width bins over (0, 1].

    Bins are right-closed, ``(lo, hi]`` (a confidence of exactly 1.0 lands in the last bin), the
    convention of Guo et al. (2017), "On Calibration of Modern Neural Networks".
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
        mean_acc = np.bincount(idx, weights=correct, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, mean_conf, mean_acc)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (see :func:`reliability_bins`).

    Example::

        >>> expected_calibration_error([0, 1], [[0.9, 0.1], [0.8, 0.2]], n_bins=10)  # doctest: +SKIP
        0.45
    """
    return reliability_bins(y_true, probs, n_bins).ece


def top_losses(y_true: np.ndarray, probs: np.ndarray, k: int = 16) -> np.ndarray:
    """Indices of the ``k`` most confident mistakes: misclassified samples sorted by the
    probability given to the wrong prediction, highest first (ties broken by index)."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    conf = probs[wrong, pred[wrong]]
    order = np.lexsort((wrong, -conf))
    return wrong[order[:k]]
