"""Transfer learning: depth units, freezing strategies, layer-wise learning rates, frozen BatchNorm.

Every strategy is defined on the classifier interface alone, so no architecture is special-cased:

* The **head** is ``model.get_classifier()`` (the final layer that maps features to logits).
* The **body** is split into *depth units* in registration order (input to output): each top-level
  child module holding parameters is one unit, except ``nn.Sequential`` / ``nn.ModuleList``
  containers, whose parameter-holding children are units of their own; a normalisation layer joins
  the unit before it (a conv and its BatchNorm train or freeze together); parameters registered on
  the model itself (a ViT's class token) join the first unit. For ResNet-18 the units are
  ``conv1+bn1, layer1.0, layer1.1, …, layer4.1`` (stem and residual blocks); for ``fastnet`` the
  three conv-BN pairs; for VGG each conv and each hidden linear layer.

Freezing strategies (``--freeze``):

* ``none``: everything trains.
* ``early``: the first third of the body units (rounded up) is frozen: the stem and the first stage
  (ResNet-18: ``conv1``, ``bn1``, ``layer1``; fastnet: its first conv-BN pair).
* ``most``: every body unit except the last is frozen: the last unit (ResNet-18: ``layer4.1``) and
  the head train.
* ``all-but-head``: only the head trains (feature extraction).

A frozen unit has ``requires_grad=False`` *and* its BatchNorm layers kept in eval mode, so its running
statistics do not drift either (a unit whose statistics change is not frozen). ``freeze_bn`` keeps
every BatchNorm layer's statistics frozen, which helps when fine-tuning with small batches.
Layer-wise LR decay gives unit ``i`` of ``n`` the multiplier ``decay ** (n - i)`` and the head 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from cnnlab.errors import ConfigError, UnknownNameError

FREEZE_STRATEGIES = ("none", "early", "most", "all-but-head")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


@dataclass
class DepthUnit:
    """One freezable, LR-scalable piece of the network: module names and their parameter names."""

    modules: list[str]
    params: list[str]

    @property
    def label(self) -> str:
        return "+".join(self.modules)


def _inner(model: nn.Module) -> nn.Module:
    """The model behind DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def head_module_name(model: nn.Module) -> str | None:
    """The dotted name of ``model.get_classifier()`` (``None`` for models without one)."""
    model = _inner(model)
    get = getattr(model, "get_classifier", None)
    if get is None:
        return None
    head = get()
    for name, mod in model.named_modules():
        if mod is head and name:
            return name
    return None


def depth_units(model: nn.Module) -> tuple[list[DepthUnit], DepthUnit]:
    """The body's depth units (input to output) and the head unit (see the module docstring)."""
    model = _inner(model)
    head = head_module_name(model)
    if head is None:
        raise ConfigError(
            f"{type(model).__name__} has no get_classifier(); freezing strategies and layer-wise LR "
            "need a cnnlab classifier"
        )

    def in_head(name: str) -> bool:
        return name == head or name.startswith(head + ".")

    candidates: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            for sub, grandchild in child.named_children():
                candidates.append((f"{name}.{sub}", grandchild))
        else:
            candidates.append((name, child))
    units: list[DepthUnit] = []
    for name, mod in candidates:
        if in_head(name) or not _has_params(mod):
            continue
        params = [
            f"{name}.{p}"
            for p, _ in mod.named_parameters()
            if not in_head(f"{name}.{p}".rsplit(".", 1)[0])
        ]
        if not params:
            continue
        if isinstance(mod, _NORM_TYPES) and units:
            units[-1].modules.append(name)
            units[-1].params += params
        else:
            units.append(DepthUnit([name], params))
    own = [n for n, _ in model.named_parameters(recurse=False)]
    if own:
        if units:
            units[0].params = own + units[0].params
        else:
            units.append(DepthUnit([""], own))
    head_params = [n for n, _ in model.named_parameters() if in_head(n)]
    return units, DepthUnit([head], head_params)


def frozen_units(model: nn.Module, strategy: str) -> list[DepthUnit]:
    """The body units that ``strategy`` freezes."""
    if strategy not in FREEZE_STRATEGIES:
        raise UnknownNameError("freeze strategy", strategy, FREEZE_STRATEGIES)
    if strategy == "none":
        return []
    units, _ = depth_units(model)
    if strategy == "early":
        return units[: math.ceil(len(units) / 3)]
    if strategy == "most":
        return units[:-1]
    return units  # all-but-head


def apply_freeze(model: nn.Module, strategy: str) -> set[str]:
    """Set ``requires_grad`` for ``strategy`` (everything else trainable); returns frozen names."""
    frozen = {p for u in frozen_units(model, strategy) for p in u.params}
    for name, p in _inner(model).named_parameters():
        p.requires_grad_(name not in frozen)
    return frozen


def set_norm_eval(model: nn.Module, strategy: str, freeze_bn: bool = False) -> None:
    """After ``model.train()``: put BatchNorm layers of frozen units (or all, with ``freeze_bn``)
    into eval mode so their running statistics stay fixed."""
    inner = _inner(model)
    if freeze_bn:
        prefixes: tuple[str, ...] | None = None
    else:
        mods = [m for u in frozen_units(inner, strategy) for m in u.modules]
        if not mods:
            return
        prefixes = tuple(m + "." for m in mods)
        names = set(mods)
    for name, mod in inner.named_modules():
        if not isinstance(mod, nn.modules.batchnorm._BatchNorm):
            continue
        if prefixes is None or name in names or name.startswith(prefixes):
            mod.eval()


def layer_lr_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """Exact parameter name → LR multiplier for layer-wise LR decay (head 1, earlier units less).

    Example: fastnet with ``decay=0.5``: ``fc`` ×1, ``features.7/8`` ×0.5, ``features.3/4`` ×0.25,
    ``features.0/1`` ×0.125.
    """
    if not 0 < decay <= 1:
        raise ConfigError(f"transfer.layer_decay must be in (0, 1]; got {decay}")
    if decay == 1:
        return {}
    units, _ = depth_units(model)
    n = len(units)
    return {p: decay ** (n - i) for i, u in enumerate(units) for p in u.params}
