"""The training loop: plain functions you can read top to bottom.

``fit(config)`` prepares data, model and optimizer, then for each epoch runs :func:`train_one_epoch`
and :func:`evaluate`, logs a row to ``metrics.csv``, writes the checkpoint and calls the callbacks.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.data import BatchLoader, DatasetSplits, ImageDataset, load_dataset
from cnnlab.errors import ConfigError, DataError
from cnnlab.train.callbacks import Callback, TrainState
from cnnlab.train.config import TrainConfig, to_dict
from cnnlab.train.optim import build_optimizer
from cnnlab.train.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MetricsLog,
    default_run_name,
    make_run_dir,
    save_json,
    save_weights,
)
from cnnlab.train.schedules import PlateauTracker, lr_factor

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; asking for CUDA without one is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was requested but no CUDA GPU is available; use --device cpu or auto"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device '{name}'; valid devices: {', '.join(DEVICES)} (or cuda:N)")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resize_dataset(ds: ImageDataset, size: int) -> ImageDataset:
    """The dataset with every image resized to ``size`` x ``size`` once, in memory (still uint8)."""
    if ds.images.shape[-2:] == (size, size):
        return ds
    out = []
    for chunk in ds.images.split(4096):
        x = F.interpolate(
            chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return replace(ds, images=torch.cat(out))


def prepare_data(cfg: TrainConfig) -> DatasetSplits:
    """Load the configured data source, resized to ``data.image_size`` when given."""
    d = cfg.data
    splits = load_dataset(
        d.name,
        data_dir=d.data_dir,
        image_size=d.image_size,
        val_fraction=d.val_fraction,
        seed=cfg.seed,
    )
    if d.image_size:
        splits = DatasetSplits(
            resize_dataset(splits.train, d.image_size), resize_dataset(splits.test, d.image_size)
        )
    return splits


def build_model_for_data(cfg: TrainConfig, train: ImageDataset) -> nn.Module:
    """The configured model with ``in_chans`` and ``num_classes`` taken from the data."""
    from cnnlab.models import get_model

    kwargs = {
        "num_classes": train.num_classes,
        "in_chans": train.image_shape[0],
        **cfg.model_kwargs,
    }
    model = get_model(cfg.model, **kwargs)
    check = getattr(model, "check_input", None)
    if check is not None:
        try:
            check(torch.zeros(1, *train.image_shape))
        except Exception as exc:
            raise DataError(f"{exc}; resize the data with --image-size") from None
    return model


def compute_loss(
    output: Any, target: torch.Tensor, model: nn.Module, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy for hard or soft (Mixup/CutMix) targets, plus weighted auxiliary-head losses.

    Models with auxiliary classifiers (GoogLeNet, Inception v3) return ``(logits, *aux)`` in training
    mode and carry ``aux_weight``.
    """
    if isinstance(output, (tuple, list)):
        main, aux = output[0], [a for a in output[1:] if a is not None]
        loss = F.cross_entropy(main, target, label_smoothing=label_smoothing)
        w = getattr(getattr(model, "module", model), "aux_weight", 0.3)
        for a in aux:
            loss = loss + w * F.cross_entropy(a, target, label_smoothing=label_smoothing)
        return loss
    return F.cross_entropy(output, target, label_smoothing=label_smoothing)


def main_logits(output: Any) -> torch.Tensor:
    """The main logits of a model output (first element of an auxiliary-head tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Scale every group's ``initial_lr`` by ``factor``; returns the first group's LR."""
    for g in optimizer.param_groups:
        g["lr"] = g.get("initial_lr", g["lr"]) * factor
    return optimizer.param_groups[0]["lr"]


def train_one_epoch(
    state: TrainState,
    loader: BatchLoader,
    callbacks: Sequence[Callback] = (),
    plateau_factor: float = 1.0,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy, images/s."""
    cfg, model, opt = state.config, state.model, state.optimizer
    model.train()
    loader.set_epoch(state.epoch)
    total_loss = torch.zeros((), device=state.device)
    correct = torch.zeros((), device=state.device, dtype=torch.long)
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
        disable=None if cfg.progress else True,  # None: no bar when stderr is not a terminal
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5,
    )
    for i, (x, y) in enumerate(bar):
        lr = set_lr(
            opt,
            lr_factor(
                cfg.schedule, state.step, state.total_steps, state.steps_per_epoch, plateau_factor
            ),
        )
        out = model(x)
        loss = compute_loss(out, y, model, cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state.step += 1
        n = len(x)
        seen += n
        total_loss += loss.detach() * n
        hard = y.argmax(1) if y.dim() == 2 else y
        correct += (main_logits(out).detach().argmax(1) == hard).sum()
        state.last_loss = loss.detach()
        for cb in callbacks:
            cb.on_batch_end(state)
        if cfg.progress and (i % 10 == 0 or i == len(loader) - 1):
            el = time.perf_counter() - t0
            bar.set_postfix(
                loss=f"{total_loss.item() / seen:.4f}",
                acc=f"{correct.item() / seen:.3f}",
                lr=f"{lr:.2e}",
                ips=f"{seen / max(el, 1e-9):.0f}",
            )
    elapsed = time.perf_counter() - t0
    mean_loss = total_loss.item() / max(seen, 1)
    if not math.isfinite(mean_loss):
        state.stop, state.stop_reason = True, "loss became NaN/Inf"
    return {
        "train_loss": mean_loss,
        "train_acc": correct.item() / max(seen, 1),
        "lr": lr,
        "images_per_s": seen / elapsed,
    }


@torch.no_grad()
def predict_logits(model: nn.Module, loader: BatchLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every batch of ``loader`` (model in eval mode), on the CPU."""
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(main_logits(model(x)).float().cpu())
        labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader: BatchLoader) -> dict[str, float]:
    """Test loss and accuracy of ``model`` on ``loader``."""
    logits, labels = predict_logits(model, loader)
    return {
        "test_loss": F.cross_entropy(logits, labels).item(),
        "test_acc": (logits.argmax(1) == labels).float().mean().item(),
    }


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    run_dir: Path
    model: nn.Module
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    config: TrainConfig


def run_config_dict(
    cfg: TrainConfig,
    model: nn.Module,
    train: ImageDataset,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """The ``config.json`` content: enough to rebuild and use the model with no code from the run."""
    from cnnlab import __version__

    arch = getattr(model, "cnnlab_arch", {"name": cfg.model, "kwargs": {}})
    return {
        "cnnlab_version": __version__,
        "model": {"name": arch["name"], "kwargs": arch["kwargs"]},
        "classes": list(train.classes),
        "input_size": list(train.image_shape),
        "mean": list(mean),
        "std": list(std),
        "dataset": {
            "name": train.name,
            "train_size": len(train),
            "class_counts": train.class_counts(),
        },
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_config": to_dict(cfg),
        "metrics": {},
    }


def fit(
    cfg: TrainConfig, callbacks: Sequence[Callback] = (), splits: DatasetSplits | None = None
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` and write the run directory.

    Example::

        from cnnlab.train import TrainConfig, fit
        result = fit(TrainConfig(model="simplecnn", epochs=3))
        print(result.run_dir, result.metrics["test_acc"])
    """
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError(
            f"epochs and batch_size must be at least 1; got epochs={cfg.epochs}, batch_size={cfg.batch_size}"
        )
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be positive; got {cfg.optim.lr}")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    splits = splits or prepare_data(cfg)
    train_ds, test_ds = splits.train, splits.test
    model = build_model_for_data(cfg, train_ds).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = train_ds.mean_std()
    run_dir = make_run_dir(cfg.out_dir, cfg.name or default_run_name(cfg.model, cfg.data.name))
    run_cfg = run_config_dict(cfg, model, train_ds, mean, std)
    save_json(run_dir / CONFIG_FILE, run_cfg)
    if splits.train.skipped:
        (run_dir / "skipped.txt").write_text(
            "".join(f"{p}\t{why}\n" for p, why in splits.train.skipped)
        )

    common = dict(mean=mean, std=std, device=device, channels_last=cfg.channels_last)
    train_loader = BatchLoader(
        train_ds,
        cfg.batch_size,
        shuffle=True,
        drop_last=len(train_ds) > cfg.batch_size,
        seed=cfg.seed,
        **common,
    )
    test_loader = BatchLoader(test_ds, cfg.eval_batch_size, **common)
    optimizer = build_optimizer(model, cfg.optim)
    state = TrainState(cfg, model, optimizer, run_dir, device, steps_per_epoch=len(train_loader))
    state.total_steps = cfg.epochs * len(train_loader)
    log = MetricsLog(run_dir / METRICS_FILE)
    plateau = PlateauTracker(cfg.schedule.factor, cfg.schedule.patience)
    plateau_factor = 1.0
    for cb in callbacks:
        cb.on_train_start(state)
    elapsed = 0.0
    metrics: dict[str, Any] = {}
    for epoch in range(cfg.epochs):
        state.epoch = epoch
        for cb in callbacks:
            cb.on_epoch_start(state)
        t0 = time.perf_counter()
        tr = train_one_epoch(state, train_loader, callbacks, plateau_factor)
        epoch_s = time.perf_counter() - t0
        elapsed += epoch_s
        if state.stop and "NaN" in state.stop_reason:
            print(
                f"stopping: {state.stop_reason} in epoch {epoch + 1}; the last good checkpoint is kept in {run_dir}",
                file=sys.stderr,
            )
            break
        ev = evaluate(model, test_loader)
        if cfg.schedule.name == "plateau":
            plateau_factor = plateau.update(ev["test_acc"])
        metrics = {"epoch": epoch + 1, **tr, **ev, "epoch_s": epoch_s, "elapsed_s": elapsed}
        state.history.append(metrics)
        log.append(metrics)
        save_weights(model, run_dir / MODEL_FILE)
        if cfg.progress:
            print(
                f"epoch {epoch + 1}/{cfg.epochs}  train loss {tr['train_loss']:.4f} acc {tr['train_acc']:.4f}  "
                f"test loss {ev['test_loss']:.4f} acc {ev['test_acc']:.4f}  lr {tr['lr']:.2e}  "
                f"{epoch_s:.1f}s ({tr['images_per_s']:.0f} img/s)",
                file=sys.stderr,
            )
        for cb in callbacks:
            cb.on_epoch_end(state, metrics)
        if state.stop:
            break
    for cb in callbacks:
        cb.on_train_end(state)
    run_cfg["metrics"] = {k: v for k, v in metrics.items() if k != "lr"}
    save_json(run_dir / CONFIG_FILE, run_cfg)
    _write_plots(run_dir, model, test_loader, test_ds.classes)
    return TrainResult(run_dir, model, state.history, metrics, cfg)


def _write_plots(
    run_dir: Path, model: nn.Module, test_loader: BatchLoader, classes: list[str]
) -> None:
    from cnnlab.evaluate.metrics import confusion_matrix
    from cnnlab.evaluate.plots import plot_confusion, plot_curves

    logits, labels = predict_logits(model, test_loader)
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), len(classes))
    plot_confusion(cm, classes, run_dir / "confusion.png")
    plot_curves(run_dir / METRICS_FILE, run_dir / "curves.png")
