"""DenseNet-121/161/169/201 (Huang et al., 2016), weight-compatible with torchvision.

Every layer of a dense block receives the concatenation of all earlier feature maps in the block and
adds ``growth_rate`` new ones; 1x1 "bottleneck" convolutions (to ``bn_size * growth_rate`` channels)
keep the 3x3 cheap, and transitions halve channels and resolution between blocks. State-dict keys
are torchvision's (``features.denseblock1.denselayer1.norm1.weight`` …).

``memory_efficient=True`` recomputes each layer's concatenation + bottleneck in the backward pass
(gradient checkpointing) instead of storing it: quadratic activation memory becomes linear, at
~15–20 % more compute.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model

# 29 px is the smallest input whose last transition still has a 2x2 map to average-pool.
DENSENET_CFG = DefaultCfg(input_size=(3, 224, 224), min_size=29)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck) then BN-ReLU-conv3x3 producing ``growth_rate`` maps."""

    def __init__(
        self,
        num_input_features: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool,
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and any(t.requires_grad for t in features):
            out = cp.checkpoint(self.bottleneck, *features, use_reentrant=False)
        else:
            out = self.bottleneck(*features)
        out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; the output concatenates the input and every layer's maps."""

    def __init__(
        self,
        num_layers: int,
        num_input_features: int,
        bn_size: int,
        growth_rate: int,
        drop_rate: float,
        memory_efficient: bool = False,
    ):
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                num_input_features + i * growth_rate,
                growth_rate,
                bn_size,
                drop_rate,
                memory_efficient,
            )
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (halving channels) and a 2x2 average pool (halving resolution)."""

    def __init__(self, num_input_features: int, num_output_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(ClassifierMixin, nn.Module):
    """DenseNet-BC: stem, dense blocks joined by transitions, final BN, global pooling, classifier."""

    classifier_name = "classifier"

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, int, int, int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        memory_efficient: bool = False,
    ):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = DENSENET_CFG.for_chans(in_chans)
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv0", nn.Conv2d(in_chans, num_init_features, 7, 2, 3, bias=False)),
                    ("norm0", nn.BatchNorm2d(num_init_features)),
                    ("relu0", nn.ReLU(inplace=True)),
                    ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
                ]
            )
        )
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(
                num_layers, channels, bn_size, growth_rate, drop_rate, memory_efficient
            )
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # The last BN has no ReLU inside `features` (torchvision's layout); it belongs to the features.
        return F.relu(self.features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


def _densenet(
    growth_rate: int,
    block_config: tuple[int, int, int, int],
    num_init_features: int,
    num_classes: int,
    in_chans: int,
    **kwargs,
) -> DenseNet:
    return DenseNet(
        growth_rate,
        block_config,
        num_init_features,
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )


@register_model
def densenet121(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> DenseNet:
    """DenseNet-121: growth 32, blocks (6, 12, 24, 16) (7,978,856 parameters)."""
    return _densenet(32, (6, 12, 24, 16), 64, num_classes, in_chans, **kwargs)


@register_model
def densenet161(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> DenseNet:
    """DenseNet-161: growth 48, blocks (6, 12, 36, 24), 96 stem filters (28,681,000 parameters)."""
    return _densenet(48, (6, 12, 36, 24), 96, num_classes, in_chans, **kwargs)


@register_model
def densenet169(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> DenseNet:
    """DenseNet-169: growth 32, blocks (6, 12, 32, 32) (14,149,480 parameters)."""
    return _densenet(32, (6, 12, 32, 32), 64, num_classes, in_chans, **kwargs)


@register_model
def densenet201(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> DenseNet:
    """DenseNet-201: growth 32, blocks (6, 12, 48, 32) (20,013,928 parameters)."""
    return _densenet(32, (6, 12, 48, 32), 64, num_classes, in_chans, **kwargs)
