"""Matplotlib pictures of a run: training curves and the confusion matrix.

Uses the Agg backend so plots work on headless machines and in CI.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnlab.train.rundir import read_metrics  # noqa: E402


def plot_curves(metrics_csv: str | Path, out: str | Path) -> Path:
    """Loss and accuracy per epoch (train and test) from ``metrics.csv``."""
    rows = read_metrics(metrics_csv)
    out = Path(out)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if rows:
        ep = [int(r["epoch"]) for r in rows]
        for key, ax, label in (("loss", ax1, "loss"), ("acc", ax2, "accuracy")):
            for split, style in (("train", "-o"), ("test", "-s")):
                col = f"{split}_{key}"
                vals = [float(r[col]) if r.get(col) not in (None, "") else np.nan for r in rows]
                ax.plot(ep, vals, style, label=split, markersize=3)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
    ax1.set_title("loss")
    ax2.set_title("accuracy")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_confusion(
    cm: np.ndarray, classes: list[str], out: str | Path, normalize: bool = False
) -> Path:
    """A confusion-matrix heat map with counts (or row-normalised rates) written in the cells."""
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    n = len(classes)
    size = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(shown, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    if n <= 30:
        thresh = shown.max() / 2 if shown.size else 0
        for i in range(n):
            for j in range(n):
                txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(
                    j,
                    i,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shown[i, j] > thresh else "black",
                )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
