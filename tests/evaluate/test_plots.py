"""The pictures of issue 20: whole-epoch ticks, a reliability diagram without blended colours,
an LR plot that keeps its raw loss on the axes, a labelled augmentation grid, a named slope."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image


def _metrics_csv(path, epochs: int):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr"])
        for e in range(1, epochs + 1):
            w.writerow([e, 1 / e, 0.5 + e / 100, 1.2 / e, 0.4 + e / 100, 1e-3])
    return path


@pytest.mark.parametrize("epochs", [1, 2, 3, 40])
def test_curve_ticks_are_whole_epochs(epochs, tmp_path):
    import matplotlib.pyplot as plt

    from cnnlab.evaluate.plots import epoch_ticks

    fig, ax = plt.subplots()
    ep = list(range(1, epochs + 1))
    ax.plot(ep, ep)
    epoch_ticks(ax, ep)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    plt.close(fig)
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    if epochs <= 12:
        assert ticks == ep


def test_curves_with_an_unfreeze_marker(tmp_path):
    from cnnlab.evaluate.plots import plot_curves

    out = plot_curves(_metrics_csv(tmp_path / "m.csv", 4), tmp_path / "c.png", {2.5: "unfrozen"})
    assert Image.open(out).size[0] > 500


def _purple_fraction(path) -> float:
    """Share of pixels blended from blue and red (the colour overlapping translucent bars made)."""
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    purple = (r > 120) & (b > 120) & (g < 0.75 * np.minimum(r, b)) & (abs(r - b) < 90)
    return float(purple.mean())


def test_reliability_diagram_has_only_legend_colours(tmp_path):
    from cnnlab.evaluate.metrics import reliability_bins
    from cnnlab.evaluate.plots import plot_reliability

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.3, size=2000)
    labels = np.array(
        [rng.choice(4, p=p) if i % 3 else rng.integers(4) for i, p in enumerate(probs)]
    )
    bins = reliability_bins(labels, probs, 15)
    out = plot_reliability(bins, tmp_path / "rel.png", after=bins)
    assert _purple_fraction(out) < 0.001


def test_lr_find_plot_keeps_the_raw_loss_in_view():
    from cnnlab.train.lr_find import LRFindResult, plot_limits

    raw = [2.3, 2.2, 2.4, 1.1, 0.6, 0.9, 0.4, 0.8, 3.0, 9.0]  # noisy, then diverging
    smoothed = [2.3, 2.25, 2.3, 2.0, 1.7, 1.5, 1.3, 1.2, 1.4, 2.2]
    res = LRFindResult(lrs=[10.0**-i for i in range(10, 0, -1)], losses=raw, smoothed=smoothed)
    low, high = plot_limits(res)
    assert low < min(raw)  # the raw line used to run off the bottom
    assert high < max(raw)  # the divergence spike still does not flatten the rest
    assert high >= max(smoothed[:1]) * 1.2


def test_lr_find_writes_a_plot_with_a_progress_bar(tmp_path, capsys):
    from cnnlab.train import TrainConfig
    from cnnlab.train.lr_find import lr_find, plot_lr_find

    res = lr_find(TrainConfig(model="simplecnn", batch_size=32), num_steps=8, progress=True)
    err = capsys.readouterr().err
    assert "lr-find" in err and "step" in err
    assert len(res.lrs) >= 6
    assert plot_lr_find(res, tmp_path / "lr.png").stat().st_size > 0


def test_augment_preview_is_titled_labelled_and_warns_about_flips(tmp_path):
    from cnnlab.data.preview import augment_preview, augment_warnings

    out = augment_preview("digits", "crop:4,erase", tmp_path / "a.png", n=3, variants=2)
    im = np.asarray(Image.open(out).convert("RGB")).astype(int)
    # a white band with dark text above the grid, and the green frame of the original column
    assert (im[:40] < 100).any() and (im[:40] > 240).mean() > 0.8
    green = (im[..., 1] > 100) & (im[..., 0] < 60) & (im[..., 2] < 60)
    assert green[:, :12].sum() > 50
    assert augment_warnings("digits", "crop:4,flip") and augment_warnings("mnist", "vflip:0.5")
    assert augment_warnings("fashion-mnist", "flip") == []
    assert augment_warnings("digits", "crop:4,erase") == []


def test_augment_preview_cli_prints_the_warning(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["augment-preview", "--data", "digits", "--augment", "flip", "--n", "2",
                 "--variants", "1", "--out", str(tmp_path / "p.png")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "mirrored digit" in err


def test_activation_legend_names_leaky_relus_slope(tmp_path):
    from cnnlab.inspect.viz import activation_label, plot_activations

    assert activation_label("leaky_relu") == "leaky_relu (slope 0.1)"
    assert activation_label("relu") == "relu"
    assert plot_activations(tmp_path / "act.png", ["relu", "leaky_relu"]).stat().st_size > 0
