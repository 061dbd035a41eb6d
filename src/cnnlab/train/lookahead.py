"""Lookahead (Zhang et al., 2019): every k steps, pull the weights back toward a slow average.

The inner optimizer (AdamW, SGD…) takes k "fast" steps; then the slow weights move a fraction
``alpha`` of the way to the fast ones and the fast weights restart from there. It damps the noise
of a large learning rate at almost no cost (one lerp every k steps), which is what short,
high-LR schedules need. The inner optimizer's state (momenta) is kept across syncs, as in the
paper. Buffers (BatchNorm statistics) are not averaged: they always describe the current weights.
"""

from __future__ import annotations

import torch
from torch import nn


def _inner(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


class Lookahead:
    """``slow += alpha * (fast - slow); fast = slow`` after every ``k``-th optimizer step.

    Example::

        la = Lookahead(model, k=5, alpha=0.5)
        for x, y in loader:
            ...; optimizer.step(); la.update(model)
    """

    def __init__(self, model: nn.Module, k: int = 5, alpha: float = 0.5):
        if k < 1 or not 0 < alpha <= 1:
            raise ValueError(f"Lookahead needs k >= 1 and 0 < alpha <= 1; got k={k}, alpha={alpha}")
        self.k, self.alpha = k, alpha
        self.slow = [p.detach().clone() for p in _inner(model).parameters()]
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        if self.steps % self.k:
            return
        fast = [p.detach() for p in _inner(model).parameters()]
        torch._foreach_lerp_(self.slow, fast, self.alpha)
        torch._foreach_copy_(fast, self.slow)

    def state_dict(self) -> dict:
        return {"slow": [t.clone() for t in self.slow], "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if len(state["slow"]) != len(self.slow):
            raise ValueError(
                f"Lookahead state has {len(state['slow'])} tensors; the model has {len(self.slow)}"
            )
        for t, s in zip(self.slow, state["slow"]):
            t.copy_(s)
        self.steps = int(state["steps"])
