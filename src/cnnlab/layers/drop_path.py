"""Stochastic depth ("drop path"): randomly skip a residual branch during training.

Dropping whole branches per sample regularises deep residual networks (EfficientNet, ConvNeXt)
and makes the expected depth shorter while training; at eval time it is the identity. The
surviving samples are scaled by ``1 / (1 - p)`` so the expected output is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, p: float, training: bool = True, mode: str = "row") -> torch.Tensor:
    """Zero the residual branch ``x`` with probability ``p`` per sample (``"row"``) or per batch.

    >>> drop_path(torch.ones(2, 3), 0.5, training=False).sum().item()
    6.0
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1]; got {p}")
    if mode not in ("row", "batch"):
        raise ValueError(f"drop_path mode must be 'row' or 'batch'; got {mode!r}")
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    shape = [x.shape[0]] + [1] * (x.dim() - 1) if mode == "row" else [1] * x.dim()
    mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (no parameters, so no state-dict keys)."""

    def __init__(self, p: float = 0.0, mode: str = "row") -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop probability must be in [0, 1]; got {p}")
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training, self.mode)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"
