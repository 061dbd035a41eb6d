"""Local response normalisation as AlexNet (Krizhevsky et al., 2012) defines it.

The paper normalises each activation by ``(k + alpha * sum of squares over n neighbouring channels) **
beta``. PyTorch's ``nn.LocalResponseNorm`` divides ``alpha`` by ``n`` (it averages instead of summing),
so passing the paper's ``alpha=1e-4`` to it gives a five times weaker normalisation. This layer takes
the paper's constants and converts them, so AlexNet's hyper-parameters can be copied as published.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError


class LocalResponseNorm(nn.Module):
    """``b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2) ** beta`` across channels (paper form).

    Example::

        lrn = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)  # AlexNet's constants
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        if size < 1:
            raise ConfigError(f"LocalResponseNorm size must be >= 1; got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sum of squares over a window of `size` channels, as a 3-D pool over (C, H, W) with a
        # (size, 1, 1) window. Written out rather than calling F.local_response_norm, whose
        # internal reshape hides the shapes from the TorchScript ONNX exporter.
        sq = x.pow(2).unsqueeze(1)
        if self.size % 2:  # symmetric window: let the pool pad (keeps shapes known to exporters)
            pooled = F.avg_pool3d(sq, (self.size, 1, 1), stride=1, padding=(self.size // 2, 0, 0))
        else:
            sq = F.pad(sq, (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
            pooled = F.avg_pool3d(sq, (self.size, 1, 1), stride=1)
        window_sum = pooled.squeeze(1) * self.size
        return x / (self.k + self.alpha * window_sum).pow(self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
