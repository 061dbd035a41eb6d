"""Everything a training run needs before its first step, built with no side effect on disk.

:func:`setup_training` validates the whole config, loads the data, picks the task, builds the model
(with pretrained weights), the batch augmentation, the loaders, the optimizer and the precision.
Nothing here creates a file or a folder: a config that fails anywhere in it fails before a run
directory exists, so a typo never leaves an orphan folder behind (and never pushes the next run
with the same ``--name`` to ``-2``). ``fit`` and ``lr_find`` both start from it.
"""

from __future__ import annotations

import importlib
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from cnnlab._version import __version__
from cnnlab.data import DatasetSplits, load_dataset, resize_dataset
from cnnlab.data.loader import normalize_batch
from cnnlab.errors import CnnlabError, ConfigError, UnknownNameError
from cnnlab.evaluate.tta import resolve_views
from cnnlab.models import get_model, prefers_channels_last
from cnnlab.models.pretrained import load_pretrained
from cnnlab.runtime import resolve_device, seed_everything, set_threads
from cnnlab.tasks import Task, get_task, list_tasks
from cnnlab.train.amp_probe import amp_dtype
from cnnlab.train.config import TrainConfig, to_dict
from cnnlab.train.distributed import (
    DistInfo,
    broadcast_object,
    env_dist_info,
    eval_shard,
    init_distributed,
    shard_indices,
)
from cnnlab.train.optim import OPTIMIZERS, build_optimizer
from cnnlab.train.schedules import lr_factor, size_for_epoch
from cnnlab.train.transfer import FREEZE_STRATEGIES, layer_lr_scales

# ``--task`` spellings users type, mapped onto the registered task names.
TASK_ALIASES = {"classify": "classification", "detect": "detection", "segment": "segmentation"}


@dataclass
class TrainingSetup:
    """The objects a run trains with; ``model`` is the bare module (no DDP/compile wrapper)."""

    config: TrainConfig
    task: Task
    device: torch.device
    dist: DistInfo
    splits: DatasetSplits
    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    generator: torch.Generator
    train_loader: Any
    test_loader: Any
    optimizer: torch.optim.Optimizer
    amp: torch.dtype | None
    pretrained_report: Any = None


def validate_config(config: TrainConfig) -> None:
    """The checks that need no data: numbers in range and every named choice known."""
    if config.epochs < 1 or config.batch_size < 1:
        raise ConfigError(
            f"epochs and batch_size must be at least 1; got epochs={config.epochs}, "
            f"batch_size={config.batch_size}"
        )
    if config.eval_batch_size < 1:
        raise ConfigError(f"eval_batch_size must be at least 1; got {config.eval_batch_size}")
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be positive; got {config.optim.lr}")
    if config.accum_steps < 1:
        raise ConfigError(f"accum_steps must be at least 1; got {config.accum_steps}")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"ema_decay must be in [0, 1); got {config.ema_decay}")
    if config.lookahead_k < 0 or not 0 < config.lookahead_alpha <= 1:
        raise ConfigError(
            f"lookahead_k must be >= 0 (0 = off) and lookahead_alpha in (0, 1]; got "
            f"{config.lookahead_k}, {config.lookahead_alpha}"
        )
    if config.eval_every < 1:
        raise ConfigError(
            f"eval_every must be at least 1 (1 = every epoch); got {config.eval_every}"
        )
    if config.tta:
        resolve_views(config.tta)  # an unknown view fails here, naming the valid ones
    if not 0 <= config.label_smoothing < 1:
        raise ConfigError(f"label_smoothing must be in [0, 1); got {config.label_smoothing}")
    if config.transfer.freeze not in FREEZE_STRATEGIES:
        raise UnknownNameError("freeze strategy", config.transfer.freeze, FREEZE_STRATEGIES)
    lr_factor(config.schedule, 0, 1, 1)  # an unknown schedule name fails here
    if config.optim.name.lower() not in OPTIMIZERS:
        raise UnknownNameError("optimizer", config.optim.name, OPTIMIZERS)
    size_for_epoch(config.data, 0, config.epochs)  # sizes and size_epochs must agree
    if any(s < 1 for s in config.data.sizes) or (config.data.image_size or 1) < 1:
        raise ConfigError(
            f"image sizes must be positive; got image_size={config.data.image_size}, "
            f"sizes={list(config.data.sizes)}"
        )
    resolve_device(config.device)


def prepare_data(config: TrainConfig) -> DatasetSplits:
    """Load the configured data source, resized to ``data.image_size`` when given."""
    d = config.data
    splits = load_dataset(
        d.name,
        data_dir=d.data_dir,
        image_size=d.image_size,
        val_fraction=d.val_fraction,
        seed=config.seed,
    )
    if d.image_size:
        splits = DatasetSplits(
            resize_dataset(splits.train, d.image_size), resize_dataset(splits.test, d.image_size)
        )
    return splits


def prepare_data_overlapped(config: TrainConfig) -> DatasetSplits:
    """:func:`prepare_data` in a worker thread while this one imports ``torch._dynamo``, when
    the run will need it (a torch optimizer or ``compile``).

    Every torch optimizer imports ``torch._dynamo`` on its first step (~1.5-2 s of Python, about
    as long as ``import torch``), and decompressing and decoding the data mostly runs outside the
    GIL, so on two cores the two overlap and a run reaches its first step about a second sooner.
    The worker only imports cnnlab's data modules, which dynamo never imports, so the two
    imports cannot wait on each other.
    """
    # cnnlab's own SGD never imports it (cnnlab.train.sgd): nothing to overlap then
    needs_dynamo = config.compile or config.optim.name.lower() != "sgd"
    if "torch._dynamo" in sys.modules or not needs_dynamo:
        return prepare_data(config)
    with ThreadPoolExecutor(1, thread_name_prefix="cnnlab-data") as pool:
        future = pool.submit(prepare_data, config)
        importlib.import_module("torch._dynamo")
        return future.result()


def resolve_task(config: TrainConfig, splits: DatasetSplits) -> tuple[Task, TrainConfig]:
    """The task of ``config.task`` (``auto``: the dataset's own, else classification), checked
    against the data and the monitored metric, and ``config`` with both ``auto`` values resolved
    (so the saved config says what the run really did)."""
    name = TASK_ALIASES.get(config.task, config.task)
    if name == "auto":
        name = getattr(splits.train, "task", "classification")
    if name not in list_tasks():
        raise UnknownNameError("task", config.task, [*list_tasks(), "auto", *TASK_ALIASES])
    task = get_task(name, config)
    if config.tta and name != "classification":
        raise ConfigError(
            f"tta {config.tta!r} averages class probabilities, so it applies to classification "
            f"only; drop --tta for this {name} run"
        )
    task.check_data(splits)
    monitor = task.default_monitor if config.monitor == "auto" else config.monitor
    monitors = (*task.metric_names, *task.train_metric_names)
    if monitor not in monitors:
        raise UnknownNameError("monitor metric", config.monitor, [*monitors, "auto"])
    return task, replace(config, task=task.name, monitor=monitor)


def build_model(config: TrainConfig, task: Task, train: Any) -> nn.Module:
    """The configured model with the arguments the data decides, checked against the data."""
    try:
        model = get_model(config.model, **{**task.model_kwargs(train), **config.model_kwargs})
    except (TypeError, ValueError) as e:  # a builder refusing an option the user gave
        if isinstance(e, CnnlabError) or not config.model_kwargs:
            raise
        from cnnlab.models._registry import builder_options

        raise ConfigError(
            f"model_kwargs {config.model_kwargs} for {config.model}: {e} "
            f"(its options: {', '.join(builder_options(config.model))})"
        ) from None
    task.check_model(model, train)
    min_size = getattr(getattr(model, "default_cfg", None), "min_size", 1)
    small = [s for s in config.data.sizes if s < min_size]
    if small:
        raise ConfigError(
            f"data.sizes {list(config.data.sizes)}: {config.model} needs inputs of at least "
            f"{min_size}x{min_size}; drop {', '.join(map(str, small))} or use a larger model input"
        )
    return model


DATA_INIT_IMAGES = 10_000  # enough for a patch covariance; a fraction of a second to use


def init_from_data(model: nn.Module, train: Any, mean: Any, std: Any) -> None:
    """Let a model fit data-dependent layers (e.g. a whitening stem) to the training images.

    A model opts in with an ``init_from_data(images)`` method; it gets up to
    :data:`DATA_INIT_IMAGES` evenly spread training images, normalised as its inputs will be.
    """
    init = getattr(model, "init_from_data", None)
    images = getattr(train, "images", None)
    if init is None or images is None or not len(images):
        return
    pick = torch.linspace(0, len(images) - 1, min(len(images), DATA_INIT_IMAGES)).long()
    init(normalize_batch(images[pick], mean, std))


def setup_training(config: TrainConfig, splits: DatasetSplits | None = None) -> TrainingSetup:
    """Validate ``config`` and build everything its run needs, writing nothing.

    Under ``torchrun`` it joins the process group; each process gets its shard of the data and
    ``batch_size`` stays the global batch.
    """
    validate_config(config)
    device = resolve_device(config.device)
    info = env_dist_info()
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    info = init_distributed(device)
    if info.enabled and config.batch_size % info.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} (the global batch) must be divisible by the "
            f"{info.world_size} processes"
        )
    set_threads(config.threads)
    seed_everything(config.seed)
    splits = splits or prepare_data_overlapped(config)
    task, config = resolve_task(config, splits)
    train, test = splits.train, splits.test
    model = build_model(config, task, train)
    mean, std = train.mean_std()
    init_from_data(model, train, mean, std)
    report = None
    if config.transfer.pretrained:
        report = load_pretrained(model, config.transfer.pretrained, stem=config.transfer.stem)  # type: ignore[arg-type]
    model = model.to(device)
    channels_last = (
        prefers_channels_last(model) if config.channels_last is None else config.channels_last
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if info.enabled:
        seed_everything(config.seed + 1000 * info.rank)  # independent dropout/augmentation per rank
    task.setup(train, device)
    generator = torch.Generator().manual_seed(config.seed * 7919 + info.rank)
    common = dict(mean=mean, std=std, device=device, channels_last=channels_last)
    train_loader = task.make_loader(
        train,
        config.batch_size // info.world_size,
        shuffle=not info.enabled,
        drop_last=len(train) > config.batch_size,
        seed=config.seed,
        transform=task.train_transform(config, train, generator),
        **common,
    )
    if info.enabled:  # this rank's shard, so len(train_loader) counts this rank's batches
        train_loader.indices = shard_indices(len(train), info.rank, info.world_size, config.seed, 0)
    test_loader = task.make_loader(
        test,
        config.eval_batch_size,
        indices=eval_shard(len(test), info.rank, info.world_size) if info.enabled else None,
        **common,
    )
    # One optimizer over every parameter (frozen ones get no gradient, so no update or decay), so
    # unfreezing later and resuming build exactly the same parameter groups.
    scales = (
        layer_lr_scales(model, config.transfer.layer_decay)
        if config.transfer.layer_decay < 1
        else None
    )
    optimizer = build_optimizer(model, config.optim, lr_scales=scales)
    first = size_for_epoch(config.data, 0, config.epochs)
    shape = (train.image_shape[0], first, first) if first else train.image_shape
    num_classes = len(getattr(train, "classes", ())) or 10
    amp = amp_dtype(config, device, model, shape, num_classes)
    if info.enabled:  # ranks timing the probe apart could disagree: rank 0 decides
        amp = broadcast_object(amp)
    return TrainingSetup(
        config, task, device, info, splits, model, mean, std, generator,
        train_loader, test_loader, optimizer, amp, report,
    )  # fmt: skip


def run_config_dict(setup: TrainingSetup) -> dict[str, Any]:
    """The ``config.json`` content: enough to rebuild and use the model with no code from the run."""
    config, model = setup.config, setup.model
    arch = getattr(model, "cnnlab_arch", {"name": config.model, "kwargs": {}})
    return {
        "cnnlab_version": __version__,
        "model": {"name": arch["name"], "kwargs": arch["kwargs"]},
        **setup.task.run_config(setup.splits.train),
        "mean": list(setup.mean),
        "std": list(setup.std),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_config": to_dict(config),
        "metrics": {},
    }
