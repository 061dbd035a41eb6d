"""The LR range test (Smith 2015; fastai's ``lr_find``): raise the LR exponentially, watch the loss.

Training starts at ``start_lr`` and multiplies the LR every step until ``end_lr`` or until the
smoothed loss exceeds ``diverge`` times its minimum. The suggested LR is where the smoothed loss
falls fastest (the steepest negative slope against log LR, before the minimum), a value that trains
fast yet stays clear of the divergence edge. Nothing is written to a run directory; the model is
thrown away.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from cnnlab.data import DatasetSplits
from cnnlab.errors import ConfigError
from cnnlab.train.config import TrainConfig
from cnnlab.train.setup import setup_training


@dataclass
class LRFindResult:
    """LRs tried, the raw and smoothed losses at each, and the suggested LR."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float = math.nan
    min_loss_lr: float = math.nan
    diverged: bool = False


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float:
    """The LR of steepest descent of ``smoothed`` over log LR, searched before the minimum."""
    if len(lrs) < 3:
        return lrs[0] if lrs else math.nan
    stop = max(2, min(range(len(smoothed)), key=smoothed.__getitem__) + 1)
    logs = [math.log10(v) for v in lrs]
    slopes = [
        (smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1])
        for i in range(1, min(stop, len(lrs) - 1))
    ]
    i = min(range(len(slopes)), key=slopes.__getitem__) + 1
    return lrs[i]


def lr_find(
    cfg: TrainConfig,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.9,
    diverge: float = 4.0,
    splits: DatasetSplits | None = None,
    progress: bool | None = None,
) -> LRFindResult:
    """Run the LR range test for ``cfg``'s model, data, optimizer and augmentation.

    ``progress`` shows a bar of the steps with the LR and loss (None: when stderr is a terminal
    and ``cfg.progress``; a big model takes minutes).

    Example::

        res = lr_find(TrainConfig(model="fastnet", data=DataConfig(name="digits")))
        print(f"suggested lr {res.suggestion:.2e}")
    """
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"need 0 < start_lr < end_lr; got {start_lr} and {end_lr}")
    if num_steps < 5:
        raise ConfigError(f"--steps must be at least 5; got {num_steps}")
    setup = setup_training(cfg, splits)
    model, loader, task = setup.model, setup.train_loader, setup.task
    opt = setup.optimizer
    model.train()
    res, best, avg, epoch = LRFindResult(), math.inf, 0.0, 0
    batches = iter(loader)
    show = cfg.progress if progress is None else progress
    bar = tqdm(
        total=num_steps,
        desc="lr-find",
        unit="step",
        disable=(None if progress is None else False) if show else True,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5,
    )
    for i in range(num_steps):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        try:
            x, y = next(batches)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            batches = iter(loader)
            x, y = next(batches)
        loss = task.loss(model(x), y, model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        if not math.isfinite(value):
            res.diverged = True
            break
        avg = smooth * avg + (1 - smooth) * value
        debiased = avg / (1 - smooth ** (i + 1))
        res.lrs.append(lr)
        res.losses.append(value)
        res.smoothed.append(debiased)
        best = min(best, debiased)
        bar.update(1)
        bar.set_postfix(lr=f"{lr:.1e}", loss=f"{debiased:.3f}", refresh=False)
        if i > 5 and debiased > diverge * best:
            res.diverged = True
            break
    bar.close()
    if res.lrs:
        res.suggestion = suggest_lr(res.lrs, res.smoothed)
        res.min_loss_lr = res.lrs[min(range(len(res.smoothed)), key=res.smoothed.__getitem__)]
    return res


def plot_limits(res: LRFindResult) -> tuple[float, float]:
    """The loss axis: from below the lowest raw loss (the raw line used to run off the bottom,
    the limit being taken from the smoothed one) to 1.5 times the smoothed start, so the
    divergence spike at the end does not flatten everything else."""
    values = [v for v in (*res.losses, *res.smoothed) if math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    start = max(res.smoothed[: max(1, len(res.smoothed) // 10)] or [high])
    top = min(start * 1.5, high)
    if top <= low:
        top = high
    pad = 0.05 * max(top - low, 1e-6)
    return low - pad, top + pad


def plot_lr_find(res: LRFindResult, path: str | Path) -> Path:
    """Loss against LR (log scale) with the suggestion marked, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(res.lrs, res.losses, alpha=0.3, label="loss")
    ax.plot(res.lrs, res.smoothed, label="smoothed loss")
    if math.isfinite(res.suggestion):
        ax.axvline(res.suggestion, color="red", ls="--", label=f"suggested {res.suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_ylim(*plot_limits(res))
    ax.legend()
    ax.set_title("LR range test")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
