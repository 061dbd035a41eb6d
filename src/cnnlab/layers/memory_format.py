"""Run a model in the memory format that is fastest for it (measured by ``benchmarks/zoo.py``).

Convolutions on CPU (oneDNN) can run NHWC ("channels-last") instead of NCHW. Whether that is faster
depends on the architecture, so each builder records the measured answer in
``model.default_cfg.extra["channels_last"]`` and :func:`prepare_model` applies it. Converting the
conv weights is enough: PyTorch then produces channels-last activations from an ordinary NCHW input.

Note for checkpoints: channels-last weights are not contiguous in NCHW order; call
``{k: v.contiguous() for k, v in model.state_dict().items()}`` before ``safetensors`` saves them.
"""

from __future__ import annotations

import torch
from torch import nn


def prefers_channels_last(model: nn.Module) -> bool:
    """Whether ``model``'s ``default_cfg.extra`` says channels-last was measured faster for it."""
    cfg = getattr(model, "default_cfg", None)
    return bool(getattr(cfg, "extra", {}).get("channels_last", False))


def prepare_model(model: nn.Module, channels_last: bool | None = None) -> nn.Module:
    """Convert ``model`` (in place) to its preferred memory format and return it.

    ``channels_last=None`` follows :func:`prefers_channels_last`; ``True``/``False`` forces it.

    Example::

        model = prepare_model(get_model("convnext_tiny")).eval()
    """
    use = prefers_channels_last(model) if channels_last is None else channels_last
    fmt = torch.channels_last if use else torch.contiguous_format
    return model.to(memory_format=fmt)
