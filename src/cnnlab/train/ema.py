"""Exponential moving average of the weights, evaluated and saved in place of the raw weights.

An EMA of the weights is a cheap ensemble over the last ~1/(1-decay) steps: it usually evaluates a
little better than the raw weights late in training. Buffers (BatchNorm statistics) are copied, not
averaged, so the EMA model's statistics always describe its current inputs' scale.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    The first steps use ``min(decay, (1 + n) / (10 + n))`` so a short run is not dominated by the
    random initialisation (the warm-up timm and TensorFlow use).
    """

    def __init__(self, model: nn.Module, decay: float):
        inner = getattr(model, "module", model)
        inner = getattr(inner, "_orig_mod", inner)
        self.module = copy.deepcopy(inner).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        inner = getattr(model, "module", model)
        inner = getattr(inner, "_orig_mod", inner)
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in inner.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for eb, b in zip(self.module.buffers(), inner.buffers()):
            eb.copy_(b)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
