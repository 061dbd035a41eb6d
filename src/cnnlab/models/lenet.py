"""LeNet-5 (LeCun et al., 1998) as published, and a modern ReLU/max-pool variant.

Published LeNet-5 on a 1x32x32 image: C1 conv5(6) → S2 2x2 average subsampling → C3 conv5(16) →
S4 2x2 average subsampling → C5 conv5(120) (a convolution: on a 5x5 map it acts like a fully
connected layer, on larger inputs it still slides) → F6 fc(84) → output layer, with tanh throughout.

Two simplifications that every modern re-implementation makes, kept explicit here:
C3 connects to all six S2 maps (the paper's sparse connection table was a 1998 compute saving) and
the output layer is a linear layer trained with cross-entropy instead of the paper's Euclidean RBF
units. S2/S4 are plain average pools (the paper's trainable per-map coefficient and bias are
absorbed by the next layer's weights). At 1 input channel and 10 classes this gives 61,706
parameters: 156 + 2,416 + 48,120 + 10,164 + 850.

Inputs larger than 32x32 are adaptively pooled to 5x5 before C5, so any size >= 32 works.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model

LENET_CFG = DefaultCfg(input_size=(1, 32, 32), min_size=32, mean=(0.5,), std=(0.5,))


class LeNet5(ClassifierMixin, nn.Module):
    """LeNet-5; ``modern=True`` swaps tanh/average-pool for ReLU/max-pool (``lenet5_relu``)."""

    classifier_name = "fc"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, modern: bool = False):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = LENET_CFG.for_chans(in_chans)
        act: type[nn.Module] = nn.ReLU if modern else nn.Tanh
        pool: type[nn.Module] = nn.MaxPool2d if modern else nn.AvgPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5),  # C1: 32 → 28
            act(),
            pool(2),  # S2: 28 → 14
            nn.Conv2d(6, 16, 5),  # C3: 14 → 10
            act(),
            pool(2),  # S4: 10 → 5
        )
        self.adapt = nn.AdaptiveAvgPool2d(5)
        self.c5 = nn.Conv2d(16, 120, 5)  # 5 → 1
        self.f6 = nn.Linear(120, 84)
        self.act = act()
        self.num_features = 84
        self.fc = nn.Linear(84, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if x.shape[-2:] != (5, 5):
            x = self.adapt(x)
        return self.act(self.c5(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act(self.f6(torch.flatten(x, 1)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


@register_model
def lenet5(*, num_classes: int = 10, in_chans: int = 1, **kwargs) -> LeNet5:
    """LeNet-5 as published: tanh, average-pool subsampling, C5 as a 5x5 conv, F6 84 (61,706 params)."""
    return LeNet5(num_classes=num_classes, in_chans=in_chans, modern=False, **kwargs)


@register_model
def lenet5_relu(*, num_classes: int = 10, in_chans: int = 1, **kwargs) -> LeNet5:
    """LeNet-5 with ReLU and max-pooling: same shapes and parameter count, trains faster."""
    return LeNet5(num_classes=num_classes, in_chans=in_chans, modern=True, **kwargs)
