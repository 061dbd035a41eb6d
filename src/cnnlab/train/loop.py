"""The training engine: one function you can read top to bottom.

``fit(config)`` is four steps: **setup** (``setup.py``: validate, data, task, model, loaders,
optimizer, precision — nothing written yet), **run directory** (create it, write ``config.json``),
**restore** (continue from ``checkpoints/last`` when resuming), then the **epochs**: for each,
:func:`train_one_epoch` and the task's evaluation, after which the callbacks run. Writing the run
directory (metrics log, weights, checkpoints, progress line, summary, plots and report) is done by
callbacks (``recorders.py``), like early stopping and TensorBoard (``callbacks.py``), so the loop
itself only trains. What is learnt is the task's business (``cnnlab.tasks``): the loop never looks
inside a target. Optional behaviour lives beside it: weight EMA (``ema.py``), freezing and
layer-wise LR (``transfer.py``), torchrun/DDP (``distributed.py``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from cnnlab.data import DatasetSplits, format_skipped, skipped_summary
from cnnlab.errors import ConfigError, RunError
from cnnlab.evaluate.tta import TTAModel
from cnnlab.run import (
    CONFIG_FILE,
    SKIPPED_FILE,
    clean_stray_files,
    default_run_name,
    load_checkpoint,
    make_run_dir,
    read_run_config,
    restore_rng,
    save_json,
)
from cnnlab.runtime import all_reduce_sum, resize_batch
from cnnlab.tasks import Task, get_task
from cnnlab.train.callbacks import (
    Callback,
    EarlyStopping,
    TensorBoardLogger,
    TrainState,
    is_better,
)
from cnnlab.train.config import TrainConfig
from cnnlab.train.distributed import barrier, broadcast_object, shard_indices
from cnnlab.train.ema import ModelEma
from cnnlab.train.lookahead import Lookahead
from cnnlab.train.recorders import Checkpointer, EpochPrinter, RunFiles, RunSummary
from cnnlab.train.resume import check_resume_config, config_fingerprint
from cnnlab.train.schedules import PlateauTracker, lr_factor, size_for_epoch
from cnnlab.train.setup import TrainingSetup, run_config_dict, setup_training
from cnnlab.train.transfer import apply_freeze, set_norm_eval


class TrainingDiverged(RunError):
    """The loss became NaN or infinite; the run directory keeps the last good epoch."""


@dataclass
class StepSettings:
    """How each optimizer step of an epoch is taken, beyond the model and optimizer: loss scaling
    and autocast dtype, weight EMA, the epoch's image size, plateau LR factor and freeze strategy."""

    scaler: torch.amp.GradScaler
    amp: torch.dtype | None = None
    ema: ModelEma | None = None
    lookahead: Lookahead | None = None
    size: int | None = None
    plateau_factor: float = 1.0
    freeze: str = "none"


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    run_dir: Path
    model: nn.Module
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    config: TrainConfig
    # the plots and report when fit(..., defer_pictures=True) left them for finish()
    pending: Any = None

    def finish(self) -> None:
        """Write what ``fit(..., defer_pictures=True)`` left: the plots and ``report.html``."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending()


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Scale every group's ``initial_lr`` by ``factor``; returns the first group's LR."""
    for g in optimizer.param_groups:
        g["lr"] = g.get("initial_lr", g["lr"]) * factor
    return optimizer.param_groups[0]["lr"]


def _check_finite(state: TrainState, loss: torch.Tensor, lr: float) -> None:
    if not torch.isfinite(loss).all():
        raise TrainingDiverged(
            f"the training loss became {loss.item()} at epoch {state.epoch + 1}, step "
            f"{state.step + 1} (lr {lr:.3g}); stopped and kept the last good epoch in "
            f"{state.run_dir}; lower --lr, add --grad_clip 1.0 or a warm-up"
        )


# two ETAs, each labelled: tqdm's own is the epoch's, the postfix's "run left" the whole run's
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, epoch left {remaining}{postfix}]"


def _progress_bar(state: TrainState, total: int) -> tqdm:
    return tqdm(
        total=total,
        desc=f"epoch {state.epoch + 1}/{state.config.epochs}",
        bar_format=BAR_FORMAT,
        disable=None if state.config.progress else True,  # None: no bar unless stderr is a tty
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5,
    )


def _optimizer_step(
    state: TrainState, settings: StepSettings, callbacks: Sequence[Callback]
) -> None:
    """Clip, step (through the loss scaler), clear the gradients, update the EMA, count the step."""
    cfg, opt = state.config, state.optimizer
    if cfg.grad_clip > 0:
        settings.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(
            [p for g in opt.param_groups for p in g["params"]], cfg.grad_clip
        )
    settings.scaler.step(opt)
    settings.scaler.update()
    opt.zero_grad(set_to_none=True)
    if settings.lookahead is not None:
        settings.lookahead.update(state.model)
    if settings.ema is not None:
        settings.ema.update(state.model)
    state.step += 1
    for cb in callbacks:
        cb.on_batch_end(state)


def _show_progress(
    bar: tqdm,
    state: TrainState,
    total_loss: torch.Tensor,
    sums: dict[str, torch.Tensor],
    seen: int,
    lr: float,
    t0: float,
    step0: int,
) -> None:
    """The running figures on the progress bar (its own ETA is the epoch's; ``run_left`` the run's)."""
    el = time.perf_counter() - t0
    left = (state.total_steps - state.step) * el / max(1, state.step - step0)
    shown = {k.removeprefix("train_"): f"{v.item() / seen:.3f}" for k, v in sums.items()}
    bar.set_postfix(
        loss=f"{total_loss.item() / seen:.4f}",
        **shown,
        lr=f"{lr:.2e}",
        ips=f"{seen / max(el, 1e-9):.0f}",
        **{"run left": f"{left:.0f}s"},
    )


# Long by design: the inner loop of training, kept whole so the order of schedule, forward,
# backward, accumulation and step is visible in one place (the step itself is a helper).
def train_one_epoch(
    state: TrainState,
    loader: Any,
    callbacks: Sequence[Callback] = (),
    settings: StepSettings | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean loss, the task's train metrics, LR and images/s.

    With ``accum_steps`` > 1, consecutive micro-batches are accumulated into one optimizer step
    (their losses averaged), which equals one step on the concatenated batch for BatchNorm-free
    models. The LR is set from the schedule before every optimizer step. Callbacks'
    ``on_batch_end`` runs after every optimizer step.
    """
    cfg, model, opt, task = state.config, state.model, state.optimizer, state.task
    settings = settings or StepSettings(torch.amp.GradScaler("cpu", enabled=False))
    model.train()
    if settings.freeze != "none" or cfg.transfer.freeze_bn:
        set_norm_eval(model, settings.freeze, cfg.transfer.freeze_bn)
    loader.set_epoch(state.epoch)
    accum = max(1, cfg.accum_steps)
    n_micro = len(loader)
    if loader.drop_last and n_micro >= accum:
        n_micro -= n_micro % accum  # only whole accumulation groups, like drop_last for batches
    total_loss = torch.zeros((), device=state.device)
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    check_every = 1 if state.device.type == "cpu" else 25  # a check is a device sync on GPUs
    t0 = time.perf_counter()
    bar = _progress_bar(state, n_micro)
    if hasattr(loader.transform, "set_output_size"):
        loader.transform.set_output_size(settings.size)
    if hasattr(loader.transform, "set_epoch"):
        loader.transform.set_epoch(state.epoch)
    lr = cfg.optim.lr
    group, step0 = 1, state.step
    autocast = torch.autocast(
        state.device.type, dtype=settings.amp or torch.float32, enabled=settings.amp is not None
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
                settings.plateau_factor,
            )
            set_lr(opt, factor)
            lr = cfg.optim.lr * factor
            group = min(accum, n_micro - i)
        boundary = (i + 1) % accum == 0 or i + 1 == n_micro
        if settings.size is not None:
            x = resize_batch(x, settings.size)
        sync = nullcontext() if boundary or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast:
                out = model(x)
            loss = task.loss(out, y, model)
            settings.scaler.scale(loss / group).backward()
        if i % check_every == 0:
            _check_finite(state, loss.detach(), lr)
        n = len(x)
        seen += n
        total_loss += loss.detach() * n
        for k, v in task.batch_stats(out, y).items():
            sums[k] = sums[k] + v if k in sums else v
        state.last_loss = loss.detach()
        if boundary:
            _optimizer_step(state, settings, callbacks)
        bar.update(1)
        if cfg.progress and not bar.disable and (i % 10 == 0 or i + 1 == n_micro):
            _show_progress(bar, state, total_loss, sums, seen, lr, t0, step0)
    bar.close()
    elapsed = time.perf_counter() - t0
    names = list(sums)
    totals = all_reduce_sum(
        [total_loss.item(), *(float(sums[k].item()) for k in names), float(seen)], state.device
    )
    count = max(totals[-1], 1)
    mean_loss = totals[0] / count
    if not math.isfinite(mean_loss):
        _check_finite(state, torch.tensor(mean_loss), lr)
    return {
        "train_loss": mean_loss,
        **{k: totals[1 + j] / count for j, k in enumerate(names)},
        "lr": lr,
        "images_per_s": totals[-1] / max(elapsed, 1e-9),
    }


def evaluate_model(model: nn.Module, loader: Any, task: Task | None = None) -> dict[str, float]:
    """The test metrics of ``model`` on ``loader`` for ``task`` (default: classification); the
    metrics ``fit`` logs each epoch. (The ``cnnlab.evaluate`` package evaluates whole runs.)"""
    return (task or get_task("classification")).evaluate(model, loader)


def _freeze_for_epoch(cfg: TrainConfig, epoch: int) -> str:
    t = cfg.transfer
    return "none" if t.unfreeze_at and epoch >= t.unfreeze_at else t.freeze


def _wrap(inner: nn.Module, setup: TrainingSetup) -> nn.Module:
    """``inner`` in DistributedDataParallel under torchrun (rebuilt when the trainable set changes)."""
    if not setup.dist.enabled:
        return inner
    device = setup.device
    return DDP(inner, device_ids=[device.index] if device.type == "cuda" else None)


def _open_run_dir(setup: TrainingSetup, resume: str | Path | None) -> tuple[Path, dict]:
    """Create the run directory (rank 0; the others are told its path) or reopen the resumed one,
    and write ``config.json`` and ``skipped.txt``. Returns the directory and the config dict."""
    cfg, info = setup.config, setup.dist
    run_config = run_config_dict(setup)
    if resume is not None:
        run_dir = Path(resume)
        saved = read_run_config(run_dir)
        check_resume_config(cfg, saved.get("train_config", {}))
        run_config["metrics"] = saved.get("metrics", {})
    else:
        name = cfg.name or default_run_name(cfg.model, cfg.data.name)
        made = str(make_run_dir(cfg.out_dir, name)) if info.is_main else None
        run_dir = Path(broadcast_object(made))
    if info.is_main:
        save_json(run_dir / CONFIG_FILE, run_config)
        skipped = list(
            dict.fromkeys([*setup.splits.train.skipped, *getattr(setup.splits.test, "skipped", [])])
        )
        if skipped:
            path = run_dir / SKIPPED_FILE
            path.write_text(format_skipped(skipped), encoding="utf-8")
            print(skipped_summary(len(skipped), path), file=sys.stderr)
    return run_dir, run_config


def _restore(state: TrainState, settings: StepSettings, setup: TrainingSetup) -> None:
    """Continue ``state`` from the run's ``checkpoints/last``: weights, optimizer, scaler, EMA,
    plateau and callback state, history, best, and every RNG, so the rest is bit-identical."""
    clean_stray_files(state.run_dir)
    weights, ck = load_checkpoint(state.run_dir, fingerprint=config_fingerprint(state.config))
    if ck["fallback"] and setup.dist.is_main:
        print(f"--resume: {ck['fallback']}", file=sys.stderr)
    if ck["world_size"] != setup.dist.world_size:
        raise ConfigError(
            f"--resume: the run was trained by {ck['world_size']} process(es), not "
            f"{setup.dist.world_size}; resume it with the same --nproc_per_node"
        )
    if ck["epoch"] >= state.config.epochs:
        raise RunError(
            f"{state.run_dir} already finished epoch {ck['epoch']} of {ck['epochs']}; "
            "pass a larger --epochs to train it further"
        )
    setup.model.load_state_dict(weights)
    setup.optimizer.load_state_dict(ck["optimizer"])
    if ck["scaler"]:
        settings.scaler.load_state_dict(ck["scaler"])
    if settings.ema is not None:
        settings.ema.load_state_dict(ck["ema"])
    if settings.lookahead is not None:
        settings.lookahead.load_state_dict(ck["lookahead"])
    for k, v in ck["plateau"].items():
        setattr(state.resumables["plateau"], k, v)
    for cb in state.callbacks:  # stateful callbacks are matched by class name
        if type(cb).__name__ in ck["callbacks"]:
            cb.load_state_dict(ck["callbacks"][type(cb).__name__])
    state.epoch, state.step, state.elapsed = ck["epoch"], ck["step"], ck["elapsed"]
    state.history, state.best = list(ck["history"]), dict(ck["best"])
    restore_rng(ck["rng"][setup.dist.rank], setup.generator)
    if state.config.progress and setup.dist.is_main:
        print(f"resuming {state.run_dir} after epoch {state.epoch}", file=sys.stderr)


def _callbacks(
    cfg: TrainConfig,
    user: Sequence[Callback],
    run_config: dict,
    setup: TrainingSetup,
    defer_pictures: bool = False,
) -> list[Callback]:
    """The user's callbacks, then those the config asks for, then the run-directory writers."""
    out = list(user)
    if cfg.patience > 0:
        out.append(EarlyStopping(cfg.monitor, cfg.patience, cfg.min_delta))
    if cfg.tensorboard and setup.dist.is_main:
        out.append(TensorBoardLogger())
    out += [RunFiles(run_config)]
    if cfg.checkpoint:
        out.append(Checkpointer())
    if cfg.progress:
        out.append(EpochPrinter())
    out.append(RunSummary(setup.test_loader, cfg.report, defer_pictures))
    return out


def _announce(setup: TrainingSetup) -> None:
    """What the setup decided that a user should know: pretrained keys, the measured precision."""
    cfg = setup.config
    if not setup.dist.is_main:
        return
    if setup.pretrained_report is not None and cfg.progress:
        print(f"pretrained: {setup.pretrained_report}", file=sys.stderr)
    if cfg.amp.lower() == "fastest" and setup.device.type == "cpu":
        chosen = "bf16" if setup.amp else "float32"
        print(f"amp fastest: measured {chosen} faster for this model on this CPU", file=sys.stderr)


def _new_state(
    setup: TrainingSetup, settings: StepSettings, model: nn.Module, run_dir: Path
) -> TrainState:
    """The loop's state before its first epoch (or before restoring a checkpoint into it)."""
    cfg, loader = setup.config, setup.train_loader
    accum, micro = max(1, cfg.accum_steps), len(loader)
    spe = max(1, micro // accum if loader.drop_last and micro >= accum else -(-micro // accum))
    state = TrainState(cfg, model, setup.optimizer, run_dir, setup.device, steps_per_epoch=spe)
    state.total_steps = cfg.epochs * spe
    state.task, state.inner = setup.task, setup.model
    state.is_main, state.world_size = setup.dist.is_main, setup.dist.world_size
    state.eval_model = settings.ema.module if settings.ema is not None else setup.model
    worst = -math.inf if setup.task.metric_mode(cfg.monitor) == "max" else math.inf
    state.best = {"epoch": 0, "value": worst}
    state.resumables = {
        "scaler": settings.scaler,
        "ema": settings.ema,
        "lookahead": settings.lookahead,
        "plateau": PlateauTracker(cfg.schedule.factor, cfg.schedule.patience),
        "generator": setup.generator,
    }
    return state


def _prepare_epoch(
    state: TrainState,
    setup: TrainingSetup,
    settings: StepSettings,
    compiled: nn.Module,
    freeze: str,
) -> str:
    """Unfreeze on schedule, set the epoch's image size and LR factor and this rank's shard;
    returns the freeze strategy now in force."""
    cfg, info, epoch = state.config, setup.dist, state.epoch
    if _freeze_for_epoch(cfg, epoch) != freeze:
        freeze = _freeze_for_epoch(cfg, epoch)
        apply_freeze(setup.model, freeze)
        state.model = _wrap(compiled, setup)
        if cfg.progress and info.is_main:
            print(
                f"epoch {epoch + 1}: everything unfrozen after {cfg.transfer.unfreeze_at} frozen "
                f"epoch(s) (--unfreeze-at {cfg.transfer.unfreeze_at}; freeze strategy now "
                f"'{freeze}')",
                file=sys.stderr,
            )
    settings.freeze = freeze
    settings.plateau_factor = state.resumables["plateau"].current
    settings.size = size_for_epoch(cfg.data, epoch, cfg.epochs)
    if info.enabled:
        setup.train_loader.indices = shard_indices(
            len(setup.splits.train), info.rank, info.world_size, cfg.seed, epoch
        )
    return freeze


def _score_epoch(
    state: TrainState, setup: TrainingSetup, train: dict[str, float], epoch_s: float
) -> dict[str, Any]:
    """Evaluate the epoch's model, update the plateau tracker and the best epoch; the metrics row."""
    cfg, task = state.config, state.task
    state.elapsed += epoch_s
    last = state.epoch + 1 == cfg.epochs
    if (state.epoch + 1) % cfg.eval_every and not last:
        ev: dict[str, float] = {}  # not evaluated this epoch (eval_every): no test metrics
    else:
        model = TTAModel(state.eval_model, cfg.tta) if cfg.tta else state.eval_model
        ev = task.evaluate(model, setup.test_loader)
    if cfg.schedule.name == "plateau" and ev:
        # the test loss when a loss is monitored, else the task's headline test metric
        loss_key = next((k for k in ev if k.endswith("loss")), task.default_monitor)
        value = -ev[loss_key] if "loss" in cfg.monitor else ev[task.default_monitor]
        state.resumables["plateau"].update(value)
    metrics = {"epoch": state.epoch + 1, **train, **ev, "epoch_s": epoch_s}
    metrics["elapsed_s"] = state.elapsed
    state.history.append(metrics)
    mode = task.metric_mode(cfg.monitor)
    state.improved = cfg.monitor in metrics and is_better(
        metrics[cfg.monitor], state.best["value"], mode
    )
    if state.improved:
        state.best = {"epoch": state.epoch + 1, "value": metrics[cfg.monitor]}
    return metrics


def _interrupted_line(state: TrainState) -> str:
    """What a Ctrl-C leaves behind and how to continue (``summary.json`` is written on the way
    out with status ``interrupted``)."""
    done = len(state.history)
    if done and state.config.checkpoint:
        return (
            f"interrupted during epoch {done + 1}; {state.run_dir} keeps epoch {done} "
            f"(summary.json: interrupted); continue with: cnnlab train --resume {state.run_dir}"
        )
    return (
        f"interrupted before the first epoch finished; nothing to resume in {state.run_dir} "
        "(summary.json: interrupted)"
    )


def fit(
    cfg: TrainConfig,
    callbacks: Sequence[Callback] = (),
    splits: DatasetSplits | None = None,
    *,
    resume: str | Path | None = None,
    defer_pictures: bool = False,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` for ``cfg.task`` and write the run directory.

    ``resume`` continues the run in that directory from its ``checkpoints/last`` (``cfg`` must be
    its config, see :func:`resume_config`; only ``epochs`` and logging options may differ). Under
    ``torchrun`` every process calls ``fit``; rank 0 writes the files. ``defer_pictures`` leaves
    the plots and ``report.html`` to :meth:`TrainResult.finish`, so the caller can show the
    final metrics first.

    Example::

        from cnnlab.train import TrainConfig, fit
        result = fit(TrainConfig(model="simplecnn", epochs=3))
        print(result.run_dir, result.metrics["test_acc"])
    """
    # 1. setup: everything validated and built before anything is written
    setup = setup_training(cfg, splits)
    cfg = setup.config  # with the task and monitored metric resolved
    _announce(setup)
    inner = setup.model
    settings = StepSettings(
        scaler=torch.amp.GradScaler(setup.device.type, enabled=setup.amp == torch.float16),
        amp=setup.amp,
        ema=ModelEma(inner, cfg.ema_decay) if cfg.ema_decay > 0 else None,
        lookahead=(
            Lookahead(inner, cfg.lookahead_k, cfg.lookahead_alpha) if cfg.lookahead_k > 0 else None
        ),
    )
    compiled = torch.compile(inner) if cfg.compile else inner
    # 2. the run directory
    run_dir, run_config = _open_run_dir(setup, resume)
    state = _new_state(setup, settings, compiled, run_dir)
    state.callbacks = _callbacks(cfg, callbacks, run_config, setup, defer_pictures)
    # 3. restore
    if resume is not None:
        _restore(state, settings, setup)
    freeze = _freeze_for_epoch(cfg, state.epoch)
    if cfg.transfer.freeze != "none":
        apply_freeze(inner, freeze)
    state.model = _wrap(compiled, setup)
    # 4. the epochs
    for cb in state.callbacks:
        cb.on_train_start(state)
    state.status = "interrupted"  # until the loop says otherwise
    try:
        for epoch in range(state.epoch, cfg.epochs):
            state.epoch = epoch
            freeze = _prepare_epoch(state, setup, settings, compiled, freeze)
            for cb in state.callbacks:
                cb.on_epoch_start(state)
            t0 = time.perf_counter()
            tr = train_one_epoch(state, setup.train_loader, state.callbacks, settings)
            metrics = _score_epoch(state, setup, tr, time.perf_counter() - t0)
            for cb in state.callbacks:
                cb.on_epoch_end(state, metrics)
            barrier()
            if state.stop:
                if cfg.progress and setup.dist.is_main and state.stop_reason:
                    print(state.stop_reason, file=sys.stderr)
                break
        state.status = "stopped" if state.stop else "completed"
    except TrainingDiverged as exc:
        state.status, state.stop_reason = "diverged", str(exc)
        raise
    except KeyboardInterrupt:
        if setup.dist.is_main:
            print(_interrupted_line(state), file=sys.stderr)
        raise
    finally:
        for cb in state.callbacks:
            cb.on_train_end(state)
    barrier()
    final = state.history[-1] if state.history else {}
    pending = next((cb.pending for cb in state.callbacks if isinstance(cb, RunSummary)), None)
    return TrainResult(run_dir, state.eval_model, state.history, final, cfg, pending)
