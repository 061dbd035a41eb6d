"""Frozen dataclass configs: loadable from YAML/JSON, overridable with dotted keys, saved resolved.

A run is fully described by one :class:`TrainConfig`. ``load_config`` reads a YAML file (a recipe),
``apply_overrides`` applies ``--optim.lr 3e-4``-style overrides with type checking, and ``to_dict``
gives the resolved form written to ``config.json`` beside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cnnlab.errors import ConfigError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared."""

    name: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    val_fraction: float = 0.2
    augment: str = ""
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    class_weights: bool = False
    # Progressive resizing: train at sizes[i] for size_epochs[i] epochs (evaluation stays at the
    # data's own size). Empty size_epochs splits the epochs evenly, the remainder going to the last.
    sizes: tuple[int, ...] = ()
    size_epochs: tuple[int, ...] = ()


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and its hyper-parameters (weight decay never applies to norm and bias weights)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule as a function of the step, with optional linear warm-up."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    step_size: float = 30.0
    gamma: float = 0.1
    milestones: tuple[float, ...] = ()
    restart_period: float = 10.0
    restart_mult: float = 1.0
    pct_start: float = 0.25
    patience: int = 2
    factor: float = 0.5


@dataclass(frozen=True)
class TransferConfig:
    """Transfer learning: start from other weights, freeze part of the network, scale LRs by depth.

    ``freeze`` is one of :data:`cnnlab.train.transfer.FREEZE_STRATEGIES` (see that module for the
    exact parameters each one freezes); ``unfreeze_at`` (epoch, 0 = never) switches to ``none``;
    ``layer_decay`` < 1 gives each earlier depth unit ``layer_decay`` times the LR of the next.
    """

    pretrained: str | None = None
    freeze: str = "none"
    unfreeze_at: int = 0
    layer_decay: float = 1.0
    freeze_bn: bool = False
    stem: str = "mean"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run."""

    model: str = "simplecnn"
    # what is learnt: "auto" takes the dataset's own task (classification for labelled images)
    task: str = "auto"
    model_kwargs: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 512
    seed: int = 0
    device: str = "auto"
    name: str | None = None
    out_dir: str = "runs"
    label_smoothing: float = 0.0
    # NHWC memory format; None follows the model's measured preference (default_cfg.extra)
    channels_last: bool | None = None
    threads: int | None = None
    progress: bool = True
    transfer: TransferConfig = field(default_factory=TransferConfig)
    # Optimisation details.
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimizer step
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    ema_decay: float = 0.0  # weight EMA (evaluated and saved when on); 0 = off
    lookahead_k: int = 0  # Lookahead: sync to the slow weights every k steps; 0 = off
    lookahead_alpha: float = 0.5  # how far the slow weights move toward the fast ones per sync
    amp: str = (
        "auto"  # auto (bf16/fp16 on CUDA, off on CPU), fastest (CPU: measured), off, bf16, fp16
    )
    compile: bool = False  # torch.compile the model
    # Evaluation: test-time augmentation views of the per-epoch test evaluation (classification;
    # "" = none, "flip", "flip,translate", see cnnlab.evaluate.tta) and how often it runs
    tta: str = ""
    eval_every: int = 1  # evaluate every k epochs (and after the last); 1 = every epoch
    # Checkpoints and stopping: `monitor` picks the `best` checkpoint and drives early stopping.
    monitor: str = "auto"  # auto: the task's headline test metric (test_acc, test_map, test_miou)
    patience: int = 0  # early stopping after this many epochs without improvement; 0 = off
    min_delta: float = 0.0
    checkpoint: bool = True  # checkpoints/last and best every epoch (needed for --resume)
    # Logging.
    tensorboard: bool = False
    report: bool = True  # write report.html at the end (when cnnlab.evaluate.report exists)


def to_dict(cfg: Any) -> dict:
    """The config as plain JSON/YAML-serialisable data (tuples become lists)."""

    def conv(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp`` or raise a one-line ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"bad value for {key}: {value!r}")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(
                f"{key} must be a mapping of {', '.join(f.name for f in fields(tp))}; got {value!r}"
            )
        return from_dict(tp, value, prefix=key + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} needs {len(args)} values; got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping; got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "yes",
            "1",
            "on",
            "false",
            "no",
            "0",
            "off",
        ):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be an integer; got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number; got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key} must be a string; got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are a one-line ConfigError."""
    hints = typing.get_type_hints(cls)
    valid = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys: {', '.join(sorted(prefix + v for v in valid))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """A command-line value parsed as YAML (``3e-4`` → float, ``true`` → bool, ``[1,2]`` → list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: T, overrides: dict[str, Any]) -> T:
    """A copy of ``cfg`` with dotted-key overrides applied, e.g. ``{"optim.lr": 3e-4}``."""
    for key, value in overrides.items():
        cfg = _set(cfg, key.split("."), value, key)
    return cfg


def _set(obj: Any, parts: list[str], value: Any, full: str) -> Any:
    valid = {f.name for f in fields(obj)}
    head = parts[0]
    if head not in valid:
        path = full[: len(full) - len(".".join(parts))]
        raise ConfigError(
            f"unknown config key '{full}'; valid keys: {', '.join(sorted(path + v for v in valid))}"
        )
    current = getattr(obj, head)
    if len(parts) > 1:
        if is_dataclass(current):
            return replace(obj, **{head: _set(current, parts[1:], value, full)})
        if isinstance(current, dict):
            if isinstance(value, str):
                value = parse_value(value)  # --model_kwargs.width 48 means the number 48
            return replace(obj, **{head: {**current, ".".join(parts[1:]): value}})
        raise ConfigError(f"config key '{full}': '{head}' has no sub-keys")
    tp = typing.get_type_hints(type(obj))[head]
    if isinstance(value, str) and tp is not str:
        value = parse_value(value)
    return replace(obj, **{head: _coerce(value, tp, full)})


def load_config(path: str | Path, cls: type[T] = TrainConfig) -> T:  # type: ignore[assignment]
    """Read a YAML or JSON file into a config (missing keys keep their defaults)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys; got {type(data).__name__}"
        )
    return from_dict(cls, data)


def field_names(cls: type) -> list[str]:
    """Dotted names of every leaf field of a config class (for help texts and docs)."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if is_dataclass(tp):
            out += [f"{f.name}.{n}" for n in field_names(tp)]
        else:
            out.append(f.name)
    return out


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``cnnlab/configs/*.yaml``."""
    root = resources.files("cnnlab") / "configs"
    if not root.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name: str) -> TrainConfig:
    """The shipped recipe ``name`` (e.g. ``fmnist-fast``) as a :class:`TrainConfig`."""

    if name not in list_recipes():
        raise UnknownNameError("recipe", name, list_recipes())
    with resources.as_file(resources.files("cnnlab") / "configs" / f"{name}.yaml") as path:
        return load_config(path)
