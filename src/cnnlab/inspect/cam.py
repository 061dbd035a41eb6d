"""Where does the model look? Grad-CAM, Grad-CAM++ and gradient saliency for any classifier.

Grad-CAM (Selvaraju et al., 2017) weighs the channels of a convolutional feature map by the spatially
averaged gradient of the class score and keeps the positive part; Grad-CAM++ (Chattopadhay et al.,
2018) weighs each location's positive gradients instead, which localises several instances better;
saliency (Simonyan et al., 2014) is the absolute input gradient, max over channels.

The target layer is found automatically: the last module, in execution order, that contains a
convolution and outputs a spatial map larger than 1x1 (for a ResNet that is ``layer4``, for VGG the
``features`` stack, for SimpleCNN ``conv2``). ``layer="name"`` picks any other module by its
``named_modules()`` name. Modules called several times (a shared ReLU or pool) contribute their last
call.

Pure tensor arithmetic on an ``nn.Module``, with no files and no plotting, so the evaluation report
(:mod:`cnnlab.evaluate.explain`) and the HTTP service (:mod:`cnnlab.deploy.gradcam`) share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError, UnknownNameError

METHODS = ("gradcam", "gradcam++", "saliency")


def _main(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _contains_conv(mod: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in mod.modules())


def find_target_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last conv-containing module whose output is a spatial map bigger than 1x1."""
    order: list[tuple[str, tuple[int, ...]]] = []
    head = getattr(model, "get_classifier", None)
    head_mod = head() if callable(head) else None
    handles = []
    for name, mod in model.named_modules():
        if not name or mod is head_mod or not _contains_conv(mod):
            continue

        def hook(m, i, o, name=name):
            o = _main(o)
            if isinstance(o, torch.Tensor) and o.dim() == 4:
                order.append((name, tuple(o.shape)))

        handles.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = _main(model(x[:1]))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if out.dim() != 2:
        raise ConfigError(
            f"{type(model).__name__} outputs shape {tuple(out.shape)}, not class scores; "
            "Grad-CAM explains classifiers"
        )
    spatial = [n for n, s in order if s[-1] * s[-2] > 1]
    if not spatial:
        raise ConfigError(
            f"{type(model).__name__} has no convolutional layer with a spatial output larger than "
            f"1x1 at input {tuple(x.shape[1:])}; pass a larger image or --layer NAME"
        )
    return spatial[-1]


@dataclass
class Explanation:
    """Heat maps (N, H, W) in [0, 1] at input resolution, with the explained class per image."""

    maps: np.ndarray
    targets: np.ndarray
    probs: np.ndarray
    method: str
    layer: str | None


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    lo = flat.min(1).values[:, None, None]
    hi = flat.max(1).values[:, None, None]
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: int | list[int] | torch.Tensor | None = None,
    method: str = "gradcam",
    layer: str | None = None,
) -> Explanation:
    """Explain the class scores of the normalised batch ``x`` (N, C, H, W).

    ``target``: the class to explain per image (default: the predicted class). ``method``:
    ``gradcam``, ``gradcam++`` or ``saliency``. ``layer``: module name for the CAM methods
    (default: :func:`find_target_layer`).

    Example::

        exp = explain(model, batch, method="gradcam++")
        exp.maps.shape  # (N, H, W), each map scaled to [0, 1]
    """
    if method not in METHODS:
        raise UnknownNameError("explanation method", method, METHODS)
    was_training = model.training
    model.eval()
    try:
        if method == "saliency":
            return _saliency(model, x, target)
        return _cam(model, x, target, method, layer)
    finally:
        model.train(was_training)


def _targets(logits: torch.Tensor, target: Any) -> torch.Tensor:
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if len(t) == 1:
        t = t.expand(len(logits))
    if len(t) != len(logits):
        raise ConfigError(f"{len(t)} targets for {len(logits)} images")
    if (t < 0).any() or (t >= logits.shape[1]).any():
        raise ConfigError(f"target class out of range 0..{logits.shape[1] - 1}: {t.tolist()}")
    return t


def _saliency(model: nn.Module, x: torch.Tensor, target: Any) -> Explanation:
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = _main(model(x)).float()
        t = _targets(logits, target)
        score = logits.gather(1, t[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
    maps = _normalise(grad.abs().amax(1))
    probs = torch.softmax(logits.detach(), 1)
    return Explanation(maps.cpu().numpy(), t.cpu().numpy(), probs.cpu().numpy(), "saliency", None)


def _cam(
    model: nn.Module, x: torch.Tensor, target: Any, method: str, layer: str | None
) -> Explanation:
    modules = dict(model.named_modules())
    if layer is None:
        layer = find_target_layer(model, x)
    elif layer not in modules or not layer:
        conv_like = [n for n, m in modules.items() if n and _contains_conv(m)]
        raise UnknownNameError("layer", layer, conv_like)
    grabbed: list[torch.Tensor] = []

    def hook(m, i, o):
        grabbed.append(_main(o))

    handle = modules[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            # Parameters may be frozen; the input needs a graph so the hooked map has one too.
            xg = x.detach().clone().requires_grad_(True)
            logits = _main(model(xg)).float()
            t = _targets(logits, target)
            if not grabbed or grabbed[-1].dim() != 4:
                shape = tuple(grabbed[-1].shape) if grabbed else None
                raise ConfigError(
                    f"layer {layer!r} outputs {shape}, not an (N, C, H, W) feature map; pick a convolutional layer"
                )
            act = grabbed[-1]
            score = logits.gather(1, t[:, None])
            (grad,) = torch.autograd.grad(score.sum(), act)
    finally:
        handle.remove()
    a, g = act.detach().float(), grad.float()
    if method == "gradcam":
        w = g.mean((2, 3), keepdim=True)
    else:
        # Grad-CAM++ through exp(score): its 2nd and 3rd derivatives are powers of g, and the
        # common factor exp(score) cancels in the per-image normalisation.
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g3
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
        w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    cam = F.relu((w * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    probs = torch.softmax(logits.detach(), 1)
    return Explanation(
        _normalise(cam).cpu().numpy(), t.cpu().numpy(), probs.cpu().numpy(), method, layer
    )
