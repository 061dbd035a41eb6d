"""The training loop: plain functions you can read top to bottom.

``fit(config)`` prepares data, model and optimizer, then for each epoch runs :func:`train_one_epoch`
and :func:`evaluate`, logs a row to ``metrics.csv``, writes the checkpoints and calls the callbacks.
Optional behaviour lives in small pieces beside it: weight EMA (``ema.py``), freezing and layer-wise
LR (``transfer.py``), resumable checkpoints (``checkpoint.py``), torchrun/DDP (``distributed.py``),
early stopping and TensorBoard (``callbacks.py``).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.data import BatchLoader, DatasetSplits, ImageDataset, load_dataset
from cnnlab.errors import ConfigError, DataError, RunError, UnknownNameError
from cnnlab.train.callbacks import (
    Callback,
    EarlyStopping,
    TensorBoardLogger,
    TrainState,
    is_better,
    metric_mode,
)
from cnnlab.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from cnnlab.train.config import DataConfig, TrainConfig, apply_overrides, from_dict, to_dict
from cnnlab.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    env_dist_info,
    eval_shard,
    gather_objects,
    init_distributed,
    shard_indices,
)
from cnnlab.train.ema import ModelEma
from cnnlab.train.optim import OPTIMIZERS, build_optimizer
from cnnlab.train.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MetricsLog,
    default_run_name,
    make_run_dir,
    read_config,
    save_json,
    save_weights,
)
from cnnlab.train.schedules import PlateauTracker, lr_factor
from cnnlab.train.transfer import FREEZE_STRATEGIES, apply_freeze, layer_lr_scales, set_norm_eval

DEVICES = ("auto", "cpu", "cuda")
AMP_CHOICES = ("auto", "fastest", "off", "bf16", "fp16")
MONITORS = ("test_acc", "test_loss", "train_acc", "train_loss")
SUMMARY_FILE = "summary.json"


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
    output: Any,
    target: torch.Tensor,
    model: nn.Module,
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy for hard or soft (Mixup/CutMix) targets, plus weighted auxiliary-head losses.

    Models with auxiliary classifiers (GoogLeNet, Inception v3) return ``(logits, *aux)`` in training
    mode and carry ``aux_weight``. ``weight`` holds per-class weights (``data.class_weights``).
    """

    def ce(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), target, weight=weight, label_smoothing=label_smoothing
        )

    if isinstance(output, (tuple, list)):
        main, aux = output[0], [a for a in output[1:] if a is not None]
        loss = ce(main)
        w = getattr(getattr(model, "module", model), "aux_weight", 0.3)
        for a in aux:
            loss = loss + w * ce(a)
        return loss
    return ce(output)


def main_logits(output: Any) -> torch.Tensor:
    """The main logits of a model output (first element of an auxiliary-head tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Scale every group's ``initial_lr`` by ``factor``; returns the first group's LR."""
    for g in optimizer.param_groups:
        g["lr"] = g.get("initial_lr", g["lr"]) * factor
    return optimizer.param_groups[0]["lr"]


class TrainingDiverged(RunError):
    """The loss became NaN or infinite; the run directory keeps the last good epoch."""


def amp_dtype(
    cfg: TrainConfig,
    device: torch.device,
    model: nn.Module | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int = 10,
) -> torch.dtype | None:
    """The autocast dtype. ``auto`` and ``fastest`` are bf16 (fp16 on GPUs without bf16) on CUDA.
    On a CPU ``auto`` is float32 (deterministic and never slower than expected), while ``fastest``
    times a few training steps of this model in float32 and bf16 and picks bf16 only when it is
    clearly faster (native-bf16 CPUs) — CPUs differ too much to assume either way."""
    choice = cfg.amp.lower()
    if choice not in AMP_CHOICES:
        raise UnknownNameError("amp mode", cfg.amp, AMP_CHOICES)
    if choice == "off":
        return None
    if choice in ("auto", "fastest") and device.type != "cuda":
        if choice == "auto" or model is None or input_shape is None:
            return None
        from cnnlab.train.amp_probe import bf16_faster_on_cpu

        return (
            torch.bfloat16
            if bf16_faster_on_cpu(model, input_shape, num_classes, min(cfg.batch_size, 128))
            else None
        )
    if choice in ("auto", "fastest"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if choice == "bf16" else torch.float16


def size_for_epoch(d: DataConfig, epoch: int, epochs: int) -> int | None:
    """The training image size of ``epoch`` under progressive resizing (``None``: native size)."""
    if not d.sizes:
        return None
    if d.size_epochs:
        if len(d.size_epochs) != len(d.sizes):
            raise ConfigError(
                f"data.size_epochs needs one entry per size in data.sizes {list(d.sizes)}; "
                f"got {list(d.size_epochs)}"
            )
        counts = list(d.size_epochs)
    else:
        base = epochs // len(d.sizes)
        counts = [base] * len(d.sizes)
        counts[-1] += epochs - base * len(d.sizes)
    end = 0
    for size, n in zip(d.sizes, counts):
        end += n
        if epoch < end:
            return size
    return d.sizes[-1]


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A float batch resized to ``size`` x ``size`` (bilinear, antialiased when shrinking)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


@dataclass
class StepTools:
    """What one optimizer step needs besides the model and optimizer."""

    scaler: torch.amp.GradScaler
    amp: torch.dtype | None = None
    ema: ModelEma | None = None
    class_weight: torch.Tensor | None = None
    size: int | None = None
    plateau_factor: float = 1.0
    freeze: str = "none"


def _check_finite(state: TrainState, loss: torch.Tensor, lr: float) -> None:
    if not torch.isfinite(loss).all():
        raise TrainingDiverged(
            f"the training loss became {loss.item()} at epoch {state.epoch + 1}, step "
            f"{state.step + 1} (lr {lr:.3g}); stopped and kept the last good epoch in "
            f"{state.run_dir}; lower --lr, add --grad_clip 1.0 or a warm-up"
        )


def train_one_epoch(
    state: TrainState,
    loader: BatchLoader,
    callbacks: Sequence[Callback] = (),
    plateau_factor: float = 1.0,
    tools: StepTools | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy, LR and images/s.

    With ``accum_steps`` > 1, consecutive micro-batches are accumulated into one optimizer step
    (their losses averaged), which equals one step on the concatenated batch for BatchNorm-free
    models. The LR is set from the schedule before every optimizer step. Callbacks'
    ``on_batch_end`` runs after every optimizer step.
    """
    cfg, model, opt = state.config, state.model, state.optimizer
    tools = tools or StepTools(
        torch.amp.GradScaler("cpu", enabled=False), plateau_factor=plateau_factor
    )
    model.train()
    if tools.freeze != "none" or cfg.transfer.freeze_bn:
        set_norm_eval(model, tools.freeze, cfg.transfer.freeze_bn)
    loader.set_epoch(state.epoch)
    accum = max(1, cfg.accum_steps)
    n_micro = len(loader)
    if loader.drop_last and n_micro >= accum:
        n_micro -= n_micro % accum  # only whole accumulation groups, like drop_last for batches
    total_loss = torch.zeros((), device=state.device)
    correct = torch.zeros((), device=state.device, dtype=torch.long)
    seen = 0
    check_every = 1 if state.device.type == "cpu" else 25  # a check is a device sync on GPUs
    t0 = time.perf_counter()
    bar = tqdm(
        total=n_micro,
        desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
        disable=None if cfg.progress else True,  # None: no bar when stderr is not a terminal
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5,
    )
    if hasattr(loader.transform, "set_output_size"):
        loader.transform.set_output_size(tools.size)
    if hasattr(loader.transform, "set_epoch"):
        loader.transform.set_epoch(state.epoch)
    lr = cfg.optim.lr
    group, step0 = 1, state.step
    autocast = torch.autocast(
        state.device.type, dtype=tools.amp or torch.float32, enabled=tools.amp is not None
    )
    for i, (x, y) in enumerate(loader):
        if i >= n_micro:
            break
        if i % accum == 0:
            factor = lr_factor(
                cfg.schedule,
                state.step,
                state.total_steps,
                state.steps_per_epoch,
                tools.plateau_factor,
            )
            set_lr(opt, factor)
            lr = cfg.optim.lr * factor
            group = min(accum, n_micro - i)
        boundary = (i + 1) % accum == 0 or i + 1 == n_micro
        if tools.size is not None:
            x = resize_batch(x, tools.size)
        sync = nullcontext() if boundary or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast:
                out = model(x)
            loss = compute_loss(out, y, model, cfg.label_smoothing, tools.class_weight)
            tools.scaler.scale(loss / group).backward()
        if i % check_every == 0:
            _check_finite(state, loss.detach(), lr)
        n = len(x)
        seen += n
        total_loss += loss.detach() * n
        hard = y.argmax(1) if y.dim() == 2 else y
        correct += (main_logits(out).detach().argmax(1) == hard).sum()
        state.last_loss = loss.detach()
        if boundary:
            if cfg.grad_clip > 0:
                tools.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(
                    [p for g in opt.param_groups for p in g["params"]], cfg.grad_clip
                )
            tools.scaler.step(opt)
            tools.scaler.update()
            opt.zero_grad(set_to_none=True)
            if tools.ema is not None:
                tools.ema.update(model)
            state.step += 1
            for cb in callbacks:
                cb.on_batch_end(state)
        bar.update(1)
        if cfg.progress and not bar.disable and (i % 10 == 0 or i + 1 == n_micro):
            el = time.perf_counter() - t0
            left = (state.total_steps - state.step) * el / max(1, state.step - step0)
            bar.set_postfix(
                loss=f"{total_loss.item() / seen:.4f}",
                acc=f"{correct.item() / seen:.3f}",
                lr=f"{lr:.2e}",
                ips=f"{seen / max(el, 1e-9):.0f}",
                eta=f"{left:.0f}s",
            )
    bar.close()
    elapsed = time.perf_counter() - t0
    sums = all_reduce_sum([total_loss.item(), float(correct.item()), float(seen)], state.device)
    mean_loss = sums[0] / max(sums[2], 1)
    if not math.isfinite(mean_loss):
        _check_finite(state, torch.tensor(mean_loss), lr)
    return {
        "train_loss": mean_loss,
        "train_acc": sums[1] / max(sums[2], 1),
        "lr": lr,
        "images_per_s": sums[2] / max(elapsed, 1e-9),
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
    """Test loss and accuracy of ``model`` on ``loader`` (summed over ranks under torchrun)."""
    logits, labels = predict_logits(model, loader)
    n = len(labels)
    loss_sum = F.cross_entropy(logits, labels, reduction="sum").item() if n else 0.0
    correct = (logits.argmax(1) == labels).sum().item() if n else 0
    loss_sum, correct, n = all_reduce_sum([loss_sum, float(correct), float(n)], loader.device)
    return {"test_loss": loss_sum / max(n, 1), "test_acc": correct / max(n, 1)}


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


# Keys a resumed run may change: they do not alter what the finished run computes (``epochs``
# extends or shortens the run, and with it the schedule's length, which the user asked for).
RESUME_MAY_CHANGE = {
    "epochs",
    "progress",
    "threads",
    "device",
    "tensorboard",
    "report",
    "name",
    "out_dir",
}


def check_resume_config(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    """Raise a one-line :class:`ConfigError` when ``cfg`` contradicts the run being resumed."""

    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "model_kwargs":
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    new, old = flat(to_dict(cfg)), flat(saved)
    diff = [
        k
        for k in sorted(set(new) | set(old))
        if k not in RESUME_MAY_CHANGE and new.get(k) != old.get(k)
    ]
    if diff:
        k = diff[0]
        raise ConfigError(
            f"--resume: {k} is {new.get(k)!r} but the run was trained with {old.get(k)!r}"
            f"{f' (and {len(diff) - 1} more)' if len(diff) > 1 else ''}; a resumed run keeps its "
            f"config: only {', '.join(sorted(RESUME_MAY_CHANGE - {'name', 'out_dir'}))} may change"
        )


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config of the run in ``run_dir`` with ``overrides`` applied (checked by :func:`fit`)."""
    saved = read_config(run_dir).get("train_config")
    if not isinstance(saved, dict):
        raise RunError(f"{Path(run_dir) / CONFIG_FILE} has no train_config; cannot resume it")
    return apply_overrides(from_dict(TrainConfig, saved), overrides or {})


def _class_weights(train: ImageDataset, device: torch.device) -> torch.Tensor:
    """Inverse-frequency weights ``n / (K * count)`` (1 for every class when balanced)."""
    counts = torch.tensor(train.class_counts(), dtype=torch.float32).clamp_min(1)
    return (counts.sum() / (len(counts) * counts)).to(device)


def build_train_transform(cfg: TrainConfig, train: ImageDataset, generator: torch.Generator) -> Any:
    """The batch augmentation of ``data.augment`` / Mixup / CutMix (``None`` when there is none)."""
    d = cfg.data
    if not d.augment and d.mixup_alpha <= 0 and d.cutmix_alpha <= 0:
        return None
    from cnnlab.data.augment import build_batch_transform

    return build_batch_transform(
        d.augment,
        image_size=None,
        num_classes=train.num_classes,
        mixup_alpha=d.mixup_alpha,
        cutmix_alpha=d.cutmix_alpha,
        generator=generator,
    )


def _validate(cfg: TrainConfig) -> None:
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError(
            f"epochs and batch_size must be at least 1; got epochs={cfg.epochs}, batch_size={cfg.batch_size}"
        )
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be positive; got {cfg.optim.lr}")
    if cfg.accum_steps < 1:
        raise ConfigError(f"accum_steps must be at least 1; got {cfg.accum_steps}")
    if not 0 <= cfg.ema_decay < 1:
        raise ConfigError(f"ema_decay must be in [0, 1); got {cfg.ema_decay}")
    if cfg.monitor not in MONITORS:
        raise UnknownNameError("monitor metric", cfg.monitor, MONITORS)
    if cfg.transfer.freeze not in FREEZE_STRATEGIES:
        raise UnknownNameError("freeze strategy", cfg.transfer.freeze, FREEZE_STRATEGIES)
    lr_factor(cfg.schedule, 0, 1, 1)  # unknown schedule names fail before any data is loaded
    if cfg.optim.name.lower() not in OPTIMIZERS:
        raise UnknownNameError("optimizer", cfg.optim.name, OPTIMIZERS)


def _check_sizes(cfg: TrainConfig, model: nn.Module) -> None:
    """Progressive-resizing sizes the model cannot take fail now, not epochs into the run."""
    min_size = getattr(getattr(model, "default_cfg", None), "min_size", 1)
    small = [s for s in cfg.data.sizes if s < min_size]
    if small:
        raise ConfigError(
            f"data.sizes {list(cfg.data.sizes)}: {cfg.model} needs inputs of at least "
            f"{min_size}x{min_size}; drop {', '.join(map(str, small))} or use a larger model input"
        )


def _freeze_for_epoch(cfg: TrainConfig, epoch: int) -> str:
    t = cfg.transfer
    return "none" if t.unfreeze_at and epoch >= t.unfreeze_at else t.freeze


def _wrap(inner: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``inner`` in DistributedDataParallel under torchrun (rebuilt when the trainable set changes)."""
    if not info.enabled:
        return inner
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(inner, device_ids=[device.index] if device.type == "cuda" else None)


def fit(
    cfg: TrainConfig,
    callbacks: Sequence[Callback] = (),
    splits: DatasetSplits | None = None,
    *,
    resume: str | Path | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` and write the run directory.

    ``resume`` continues the run in that directory from its ``checkpoints/last`` (``cfg`` must be
    its config, see :func:`resume_config`; only ``epochs`` and logging options may differ). Under
    ``torchrun`` every process calls ``fit``; rank 0 writes the files.

    Example::

        from cnnlab.train import TrainConfig, fit
        result = fit(TrainConfig(model="simplecnn", epochs=3))
        print(result.run_dir, result.metrics["test_acc"])
    """
    _validate(cfg)
    device = resolve_device(cfg.device)
    info = env_dist_info()
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    info = init_distributed(device)
    if info.enabled and cfg.batch_size % info.world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
            f"{info.world_size} processes"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    verbose = cfg.progress and info.is_main
    seed_everything(cfg.seed)
    splits = splits or prepare_data(cfg)
    train_ds, test_ds = splits.train, splits.test
    inner = build_model_for_data(cfg, train_ds)
    _check_sizes(cfg, inner)
    if cfg.transfer.pretrained:
        from cnnlab.models.pretrained import load_pretrained

        report = load_pretrained(inner, cfg.transfer.pretrained, stem=cfg.transfer.stem)  # type: ignore[arg-type]
        if verbose:
            print(f"pretrained: {report}", file=sys.stderr)
    inner = inner.to(device)
    if cfg.channels_last:
        inner = inner.to(memory_format=torch.channels_last)
    if info.enabled:
        seed_everything(cfg.seed + 1000 * info.rank)  # independent dropout/augmentation per rank
    mean, std = train_ds.mean_std()

    # The run directory: rank 0 creates it (or reuses it when resuming) and tells the others.
    saved: dict[str, Any] | None = None
    if resume is not None:
        run_dir = Path(resume)
        saved = read_config(run_dir)
        check_resume_config(cfg, saved.get("train_config", {}))
    else:
        name = cfg.name or default_run_name(cfg.model, cfg.data.name)
        run_dir = Path(
            broadcast_object(str(make_run_dir(cfg.out_dir, name)) if info.is_main else None)
        )
    run_cfg = run_config_dict(cfg, inner, train_ds, mean, std)
    if info.is_main:
        if saved is not None:
            run_cfg["metrics"] = saved.get("metrics", {})
        save_json(run_dir / CONFIG_FILE, run_cfg)
        if train_ds.skipped:
            (run_dir / "skipped.txt").write_text(
                "".join(f"{p}\t{why}\n" for p, why in train_ds.skipped)
            )

    # Data: per-process batches of the global batch size; shards change every epoch.
    local_batch = cfg.batch_size // info.world_size
    generator = torch.Generator().manual_seed(cfg.seed * 7919 + info.rank)
    common = dict(mean=mean, std=std, device=device, channels_last=cfg.channels_last)
    train_loader = BatchLoader(
        train_ds,
        local_batch,
        shuffle=not info.enabled,
        drop_last=len(train_ds) > cfg.batch_size,
        seed=cfg.seed,
        transform=build_train_transform(cfg, train_ds, generator),
        **common,
    )
    if info.enabled:
        train_loader.indices = shard_indices(len(train_ds), info.rank, info.world_size, cfg.seed, 0)
    test_loader = BatchLoader(
        test_ds,
        cfg.eval_batch_size,
        indices=eval_shard(len(test_ds), info.rank, info.world_size) if info.enabled else None,
        **common,
    )

    # Optimizer over every parameter (frozen ones get no gradient, so no update or decay) so that
    # unfreezing later and resuming build exactly the same parameter groups.
    scales = (
        layer_lr_scales(inner, cfg.transfer.layer_decay) if cfg.transfer.layer_decay < 1 else None
    )
    optimizer = build_optimizer(inner, cfg.optim, lr_scales=scales)
    first_size = size_for_epoch(cfg.data, 0, cfg.epochs)
    probe_shape = (
        (train_ds.image_shape[0], first_size, first_size) if first_size else train_ds.image_shape
    )
    dtype = amp_dtype(cfg, device, inner, probe_shape, train_ds.num_classes)
    if cfg.amp.lower() == "fastest" and device.type == "cpu" and info.is_main:
        print(
            f"amp fastest: measured {'bf16' if dtype else 'float32'} faster for this model on this CPU",
            file=sys.stderr,
        )
    tools = StepTools(
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        amp=dtype,
        ema=ModelEma(inner, cfg.ema_decay) if cfg.ema_decay > 0 else None,
        class_weight=_class_weights(train_ds, device) if cfg.data.class_weights else None,
    )
    compiled = torch.compile(inner) if cfg.compile else inner
    accum = max(1, cfg.accum_steps)
    micro = len(train_loader)
    spe = max(
        1, micro // accum if train_loader.drop_last and micro >= accum else -(-micro // accum)
    )
    state = TrainState(cfg, compiled, optimizer, run_dir, device, steps_per_epoch=spe)
    state.total_steps = cfg.epochs * spe
    callbacks = list(callbacks)
    if cfg.patience > 0:
        callbacks.append(EarlyStopping(cfg.monitor, cfg.patience, cfg.min_delta))
    if cfg.tensorboard and info.is_main:
        callbacks.append(TensorBoardLogger())
    log = MetricsLog(run_dir / METRICS_FILE)
    plateau = PlateauTracker(cfg.schedule.factor, cfg.schedule.patience)
    mode = metric_mode(cfg.monitor)
    best = {"epoch": 0, "value": -math.inf if mode == "max" else math.inf}
    start_epoch, elapsed = 0, 0.0
    metrics: dict[str, Any] = {}

    if resume is not None:
        weights, ck = load_checkpoint(run_dir)
        if ck["world_size"] != info.world_size:
            raise ConfigError(
                f"--resume: the run was trained by {ck['world_size']} process(es), not "
                f"{info.world_size}; resume it with the same --nproc_per_node"
            )
        if ck["epoch"] >= cfg.epochs:
            raise RunError(
                f"{run_dir} already finished epoch {ck['epoch']} of {ck['epochs']}; "
                "pass a larger --epochs to train it further"
            )
        inner.load_state_dict(weights)
        optimizer.load_state_dict(ck["optimizer"])
        if ck["scaler"]:
            tools.scaler.load_state_dict(ck["scaler"])
        if tools.ema is not None:
            tools.ema.load_state_dict(ck["ema"])
        for k, v in ck["plateau"].items():
            setattr(plateau, k, v)
        for cb in callbacks:  # stateful callbacks are matched by class name
            if type(cb).__name__ in ck["callbacks"]:
                cb.load_state_dict(ck["callbacks"][type(cb).__name__])
        start_epoch, state.step, elapsed = ck["epoch"], ck["step"], ck["elapsed"]
        state.history, best, metrics = list(ck["history"]), dict(ck["best"]), dict(ck["metrics"])
        restore_rng(ck["rng"][info.rank], generator)
        run_cfg["metrics"] = {k: v for k, v in metrics.items() if k != "lr"}
        if info.is_main:
            log.truncate_after(start_epoch)
            if verbose:
                print(f"resuming {run_dir} after epoch {start_epoch}", file=sys.stderr)

    freeze = _freeze_for_epoch(cfg, start_epoch)
    if cfg.transfer.freeze != "none":
        apply_freeze(inner, freeze)
    model = _wrap(compiled, info, device)
    state.model = model
    for cb in callbacks:
        cb.on_train_start(state)
    status = "completed"
    try:
        for epoch in range(start_epoch, cfg.epochs):
            state.epoch = epoch
            if _freeze_for_epoch(cfg, epoch) != freeze:
                freeze = _freeze_for_epoch(cfg, epoch)
                apply_freeze(inner, freeze)
                model = state.model = _wrap(compiled, info, device)
                if verbose:
                    print(f"epoch {epoch + 1}: freeze strategy now '{freeze}'", file=sys.stderr)
            tools.freeze, tools.plateau_factor = freeze, plateau.current
            tools.size = size_for_epoch(cfg.data, epoch, cfg.epochs)
            if info.enabled:
                train_loader.indices = shard_indices(
                    len(train_ds), info.rank, info.world_size, cfg.seed, epoch
                )
            for cb in callbacks:
                cb.on_epoch_start(state)
            t0 = time.perf_counter()
            tr = train_one_epoch(state, train_loader, callbacks, tools=tools)
            epoch_s = time.perf_counter() - t0
            elapsed += epoch_s
            eval_model = tools.ema.module if tools.ema is not None else inner
            ev = evaluate(eval_model, test_loader)
            if cfg.schedule.name == "plateau":
                plateau.update(-ev["test_loss"] if "loss" in cfg.monitor else ev["test_acc"])
            metrics = {"epoch": epoch + 1, **tr, **ev, "epoch_s": epoch_s, "elapsed_s": elapsed}
            state.history.append(metrics)
            for cb in callbacks:
                cb.on_epoch_end(state, metrics)
            value = metrics[cfg.monitor]
            improved = is_better(value, best["value"], mode)
            if improved:
                best = {"epoch": epoch + 1, "value": value}
            rng = gather_objects(capture_rng(generator))
            if info.is_main:
                log.append(metrics)
                save_weights(eval_model, run_dir / MODEL_FILE)
                run_cfg["metrics"] = {k: v for k, v in metrics.items() if k != "lr"}
                save_json(run_dir / CONFIG_FILE, run_cfg)
                if cfg.checkpoint:
                    ck = {
                        "epoch": epoch + 1,
                        "epochs": cfg.epochs,
                        "step": state.step,
                        "elapsed": elapsed,
                        "world_size": info.world_size,
                        "optimizer": optimizer.state_dict(),
                        "scaler": tools.scaler.state_dict() if tools.scaler.is_enabled() else {},
                        "ema": tools.ema.state_dict() if tools.ema is not None else {},
                        "plateau": {
                            k: getattr(plateau, k) for k in ("best", "bad_epochs", "current")
                        },
                        "callbacks": {
                            type(cb).__name__: cb.state_dict()
                            for cb in callbacks
                            if cb.state_dict()
                        },
                        "history": state.history,
                        "best": best,
                        "metrics": metrics,
                        "rng": rng,
                    }
                    save_checkpoint(run_dir, "last", inner, ck)
                    if improved:
                        save_checkpoint(run_dir, "best", eval_model, ck)
                if verbose:
                    print(
                        f"epoch {epoch + 1}/{cfg.epochs}  train loss {tr['train_loss']:.4f} acc {tr['train_acc']:.4f}  "
                        f"test loss {ev['test_loss']:.4f} acc {ev['test_acc']:.4f}  lr {tr['lr']:.2e}  "
                        f"{epoch_s:.1f}s ({tr['images_per_s']:.0f} img/s)",
                        file=sys.stderr,
                    )
            barrier()
            if state.stop:
                status = "stopped"
                if verbose and state.stop_reason:
                    print(state.stop_reason, file=sys.stderr)
                break
    except TrainingDiverged as exc:
        if info.is_main:
            _write_summary(run_dir, cfg, state, best, metrics, "diverged", str(exc), info)
        raise
    finally:
        for cb in callbacks:
            cb.on_train_end(state)
    final_model = tools.ema.module if tools.ema is not None else inner
    if info.is_main:
        _write_summary(run_dir, cfg, state, best, metrics, status, state.stop_reason, info)
        _write_plots(run_dir, final_model, test_loader, test_ds.classes)
        if cfg.report:
            _write_report(run_dir)
    barrier()
    return TrainResult(run_dir, final_model, state.history, metrics, cfg)


def _write_summary(
    run_dir: Path,
    cfg: TrainConfig,
    state: TrainState,
    best: dict[str, Any],
    metrics: dict[str, Any],
    status: str,
    reason: str,
    info: DistInfo,
) -> None:
    """``summary.json``: how the run ended, its final and best metrics, where the weights are."""
    save_json(
        run_dir / SUMMARY_FILE,
        {
            "status": status,
            "stop_reason": reason,
            "epochs_run": len(state.history),
            "epochs": cfg.epochs,
            "steps": state.step,
            "train_time_s": metrics.get("elapsed_s", 0.0),
            "final": metrics,
            "best": {**best, "metric": cfg.monitor, "checkpoint": "checkpoints/best.safetensors"},
            "world_size": info.world_size,
        },
    )


def _write_report(run_dir: Path) -> None:
    """report.html through the evaluation package; a failure warns and never loses the run."""
    try:
        from cnnlab.evaluate.report import write_report
    except ImportError:
        return  # this installation has no report module
    try:
        write_report(run_dir, quick=True)
    except Exception as exc:  # the run is already complete on disk; the report is a bonus
        print(f"warning: could not write report.html: {exc}", file=sys.stderr)


def _write_plots(
    run_dir: Path, model: nn.Module, test_loader: BatchLoader, classes: list[str]
) -> None:
    from cnnlab.evaluate.metrics import confusion_matrix
    from cnnlab.evaluate.plots import plot_confusion, plot_curves

    if test_loader.indices is not None:  # a rank's shard: plot the whole test set
        test_loader = BatchLoader(
            test_loader.dataset,
            test_loader.batch_size,
            mean=test_loader.mean,
            std=test_loader.std,
            device=test_loader.device,
            channels_last=test_loader.channels_last,
        )
    logits, labels = predict_logits(model, test_loader)
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), len(classes))
    plot_confusion(cm, classes, run_dir / "confusion.png")
    plot_curves(run_dir / METRICS_FILE, run_dir / "curves.png")
