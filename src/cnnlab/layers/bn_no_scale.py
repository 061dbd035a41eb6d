"""BatchNorm with a learnt shift but no learnt scale (the scale is fixed at 1).

In a ReLU network followed by another BatchNorm the per-channel scale is redundant (the next
normalisation undoes it) and, with weight decay, only adds noise to the effective learning rate;
airbench and hlb-CIFAR10 drop it. It stays a :class:`torch.nn.BatchNorm2d` — the fixed scale is a
buffer named ``weight`` — so folding into a convolution, export and the checkpoint format see an
ordinary BatchNorm.
"""

from __future__ import annotations

from torch import nn


class BatchNormNoScale(nn.BatchNorm2d):
    """``nn.BatchNorm2d(num_features)`` whose ``weight`` is a constant 1 (a buffer, not trained)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        ones = self.weight.detach().clone()
        del self.weight
        self.register_buffer("weight", ones)
