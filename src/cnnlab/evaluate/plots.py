"""Matplotlib pictures of a run: curves, confusion matrix, per-class bars, reliability diagram,
top-loss gallery and explanation grids.

Uses the Agg backend so plots work on headless machines and in CI.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnlab.run import read_metrics  # noqa: E402

# Columns of metrics.csv that are not a metric of the model.
_NOT_METRICS = {"epoch", "lr", "epoch_s", "elapsed_s", "images_per_s"}


def epoch_ticks(ax, epochs: list[int]) -> None:
    """Whole-epoch ticks only: every epoch on short runs (matplotlib chose 1.0, 1.2, … for two
    epochs), at most about ten integer ticks on long ones."""
    from matplotlib.ticker import MaxNLocator

    if epochs and len(epochs) <= 12:
        ax.set_xticks(sorted(set(epochs)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))


def plot_curves(
    metrics_csv: str | Path, out: str | Path, markers: dict[float, str] | None = None
) -> Path:
    """Losses (left) and the task's other metrics (right) per epoch, train and test, from
    ``metrics.csv``; works for any task since it plots whichever columns the log has.

    ``markers`` maps an x position to a label drawn as a dashed vertical line on both panels,
    e.g. ``{3.5: "unfrozen"}`` between epochs 3 and 4 (see :func:`run_markers`)."""
    rows = read_metrics(metrics_csv)
    out = Path(out)
    cols = [c for c in (rows[0].keys() if rows else ()) if c not in _NOT_METRICS]
    losses = [c for c in cols if c.endswith("_loss")]
    others = [c for c in cols if c not in losses]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if rows:
        ep = [int(r["epoch"]) for r in rows]
        for ax, group, label in ((ax1, losses, "loss"), (ax2, others, "accuracy")):
            # one metric per split: label by split (as the classification plot always did)
            by_split = len(group) <= 2 and len({c.split("_", 1)[1] for c in group}) == 1
            for col in group:
                vals = [float(r[col]) if r.get(col) not in (None, "") else np.nan for r in rows]
                split = col.split("_", 1)[0]
                style = "-o" if split == "train" else "-s"
                ax.plot(ep, vals, style, label=split if by_split else col, markersize=3)
            ax.set_xlabel("epoch")
            epoch_ticks(ax, ep)
            for x, text in (markers or {}).items():
                ax.axvline(x, color="0.35", ls="--", lw=1, label=text)
            ax.set_ylabel(label if by_split or group is losses else "metric")
            ax.grid(alpha=0.3)
            if group:
                ax.legend()
    ax1.set_title("loss")
    ax2.set_title("accuracy" if others == ["train_acc", "test_acc"] or not others else "metrics")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_markers(train_config: dict) -> dict[float, str]:
    """Events of a run worth marking on its curves, from its resolved training config: the
    epoch at which a frozen network was unfrozen (``--unfreeze-at N``: between N and N+1)."""
    t = train_config.get("transfer", {}) or {}
    n = int(t.get("unfreeze_at") or 0)
    if n > 0 and t.get("freeze", "none") != "none" and n < int(train_config.get("epochs", 0)):
        return {n + 0.5: f"unfrozen after epoch {n} (--unfreeze-at {n})"}
    return {}


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


def plot_per_class(per_class: dict[str, np.ndarray], classes: list[str], out: str | Path) -> Path:
    """Grouped bars of precision, recall and F1 per class (the weakest classes stand out)."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * n + 2), 4))
    x = np.arange(n)
    for i, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, per_class[key], width=0.27, label=key)
    ax.set_xticks(x, classes, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title("per-class precision, recall and F1")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def plot_reliability(bins, out: str | Path, after=None) -> Path:
    """Reliability diagram: accuracy against confidence per bin (the diagonal is perfect
    calibration), bar widths the bins, with the confidence histogram below; ``after`` overlays
    the diagram after temperature scaling."""
    fig, (ax, hx) = plt.subplots(
        2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    acc = np.nan_to_num(bins.accuracy)
    # Opaque bars and lines only: translucent bars stacked on each other made a colour (purple)
    # that the legend did not have. The gap is a red line from accuracy to mean confidence.
    ax.bar(centers, acc, width=width * 0.9, color="#7fa7d6", label="accuracy")
    keep = bins.counts > 0
    ax.vlines(centers[keep], acc[keep], bins.confidence[keep], colors="tab:red", lw=2,
              label="gap to mean confidence")  # fmt: skip
    ax.plot(centers[keep], bins.confidence[keep], "_", color="tab:red", ms=12, mew=2)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    title = f"reliability (ECE {bins.ece:.4f})"
    if after is not None:
        keep = after.counts > 0
        ax.plot(after.confidence[keep], after.accuracy[keep], "o-", color="tab:green", ms=4,
                label=f"after temperature (ECE {after.ece:.4f})")  # fmt: skip
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hx.bar(centers, bins.counts, width=width * 0.95, color="gray")
    hx.set_xlabel("confidence (top-1 probability)")
    hx.set_ylabel("samples")
    hx.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def _show_image(ax, img) -> None:
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_top_losses(
    images,
    labels: np.ndarray,
    probs: np.ndarray,
    indices: np.ndarray,
    classes: list[str],
    out: str | Path,
) -> Path:
    """A gallery of the most confident mistakes: each image with predicted / true class and the
    probabilities of both."""
    n = len(indices)
    cols = min(8, max(n, 1))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.6 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), indices):
        ax.axis("on")
        img = images[int(i)]
        _show_image(ax, img.numpy() if hasattr(img, "numpy") else img)
        p, t = int(probs[i].argmax()), int(labels[i])
        ax.set_title(
            f"pred {classes[p][:10]} {probs[i, p]:.2f}\ntrue {classes[t][:10]} {probs[i, t]:.2f}",
            fontsize=10,
            color="firebrick",
        )
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("most confident mistakes (top losses)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def plot_explanations(
    images, rows: dict[str, np.ndarray], titles: list[str], out: str | Path
) -> Path:
    """A grid: the images on the first row, then one row of heat-map overlays per method."""
    from cnnlab.evaluate.explain import overlay

    n = len(images)
    fig, axes = plt.subplots(
        1 + len(rows), n, figsize=(2.0 * n + 0.6, 2.1 * (1 + len(rows)) + 0.5), squeeze=False
    )
    for j in range(n):
        img = images[j].numpy() if hasattr(images[j], "numpy") else np.asarray(images[j])
        _show_image(axes[0, j], img)
        axes[0, j].set_title(titles[j], fontsize=10)
        for r, (method, maps) in enumerate(rows.items(), start=1):
            axes[r, j].imshow(overlay(img, maps[j]))
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            if j == 0:
                axes[r, j].set_ylabel(method, fontsize=10)
    axes[0, 0].set_ylabel("input", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def plot_curves_compare(runs: dict[str, str | Path], out: str | Path) -> Path:
    """Test accuracy and test loss per epoch of several runs on shared axes."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, csv_path in runs.items():
        try:
            rows = read_metrics(csv_path)
        except OSError:
            continue
        ep = [int(r["epoch"]) for r in rows]
        for ax, col in ((ax1, "test_acc"), (ax2, "test_loss")):
            vals = [float(r[col]) if r.get(col) not in (None, "") else np.nan for r in rows]
            ax.plot(ep, vals, "-o", ms=3, label=name)
    all_epochs: list[int] = []
    for csv_path in runs.values():
        try:
            all_epochs += [int(r["epoch"]) for r in read_metrics(csv_path)]
        except OSError:
            continue
    for ax, t in ((ax1, "test accuracy"), (ax2, "test loss")):
        ax.set_title(t)
        ax.set_xlabel("epoch")
        epoch_ticks(ax, sorted(set(all_epochs)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
