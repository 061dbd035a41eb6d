"""Optimizers by name, with weight decay kept off normalisation and bias parameters.

Decaying BatchNorm/LayerNorm scales and biases only fights the normalisation and costs accuracy;
every serious recipe (timm, torchvision's references) splits the two groups, so cnnlab always does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from cnnlab.errors import UnknownNameError
from cnnlab.train.config import OptimConfig
from cnnlab.train.sgd import SGD

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that should get no weight decay: biases, norm layers, 1-D tensors,
    and embeddings such as a ViT's class token and position embedding."""
    names = set()
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if (
                isinstance(mod, _NORM_TYPES)
                or p.ndim <= 1
                or p_name.endswith("bias")
                or "token" in p_name
                or "pos_embed" in p_name
            ):
                names.add(full)
    return names


def param_groups(
    model: nn.Module, weight_decay: float, lr: float, lr_scales: dict[str, float] | None = None
) -> list[dict]:
    """Trainable parameters split into decay / no-decay groups (and per-prefix LR scale groups).

    ``lr_scales`` maps a parameter-name prefix to an LR multiplier (layer-wise / discriminative LR);
    the longest matching prefix wins.
    """
    skip = no_decay_names(model)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    names: dict[tuple[float, bool], list[str]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0
        if lr_scales:
            best = max((k for k in lr_scales if name.startswith(k)), key=len, default=None)
            scale = lr_scales[best] if best is not None else 1.0
        key = (scale, name not in skip)
        groups.setdefault(key, []).append(p)
        names.setdefault(key, []).append(name)
    return [
        {
            "params": ps,
            "param_names": names[key],
            "lr": lr * key[0],
            "initial_lr": lr * key[0],
            "lr_scale": key[0],
            "weight_decay": weight_decay if key[1] else 0.0,
        }
        for key, ps in groups.items()
    ]


def build_optimizer(
    params: nn.Module | Iterable[dict], cfg: OptimConfig, lr_scales: dict[str, float] | None = None
) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` over ``params`` (a model, or ready-made parameter groups)."""
    groups = (
        param_groups(params, cfg.weight_decay, cfg.lr, lr_scales)
        if isinstance(params, nn.Module)
        else list(params)
    )
    name = cfg.name.lower()
    if name == "sgd":  # torch's update, without the torch._dynamo import (see cnnlab.train.sgd)
        return SGD(  # type: ignore[return-value]
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps)
    raise UnknownNameError("optimizer", cfg.name, OPTIMIZERS)
