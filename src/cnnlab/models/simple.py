"""The course's teaching networks: SimpleCNN (MNIST) and the BatchNorm LeNet (CIFAR-10).

SimpleCNN has 421,642 parameters at 1x28x28 and 10 classes. The course text says 421,066, but its own
per-layer list (288 + 32 + 18,432 + 64 + 401,408 + 128 + 1,280 + 10) adds up to 421,642, which is what
this model has (tested).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from cnnlab.layers.bn_no_scale import BatchNormNoScale
from cnnlab.layers.whitening import PatchWhitening
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model

MNIST_CFG = DefaultCfg(input_size=(1, 28, 28), min_size=28, mean=(0.5,), std=(0.5,))
CIFAR_CFG = DefaultCfg(
    input_size=(3, 32, 32), min_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
)


class SimpleCNN(ClassifierMixin, nn.Module):
    """conv3(32)-ReLU-pool2, conv3(64)-ReLU-pool2, flatten, fc(128)-ReLU-dropout, fc(classes).

    Both convolutions use padding 1, so a 28x28 input reaches the first linear layer as 64x7x7.
    Inputs larger than 28x28 are adaptively pooled to 7x7 so the same weights still apply.
    """

    classifier_name = "fc2"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, dropout: float = 0.25):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = MNIST_CFG.for_chans(in_chans)
        self.conv1 = nn.Conv2d(in_chans, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.adapt = nn.AdaptiveAvgPool2d(7)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.dropout = nn.Dropout(dropout)
        self.num_features = 128
        self.fc2 = nn.Linear(128, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        if x.shape[-2:] != (7, 7):
            x = self.adapt(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.relu(self.fc1(torch.flatten(x, 1))))
        return x if pre_logits else self.fc2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


class LeNetBN(ClassifierMixin, nn.Module):
    """The course's BatchNorm LeNet for 3x32x32 CIFAR-10 (62,050 parameters at 10 classes).

    conv5(6)-BN-ReLU-pool2, conv5(16)-BN-ReLU-pool2, fc120-ReLU, fc84-ReLU, fc(classes), exactly as
    the course builds it (its torchsummary table is reproduced by ``cnnlab summary lenet_bn``).
    Inputs larger than 32x32 are adaptively pooled to 5x5 before the first linear layer.
    """

    classifier_name = "fc3"

    def __init__(self, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = CIFAR_CFG.for_chans(in_chans)
        self.conv1 = nn.Conv2d(in_chans, 6, 5)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.adapt = nn.AdaptiveAvgPool2d(5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.num_features = 84
        self.fc3 = nn.Linear(84, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.relu(self.bn2(self.conv2(x))))
        return x if x.shape[-2:] == (5, 5) else self.adapt(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        x = self.relu(self.fc2(x))
        return x if pre_logits else self.fc3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


class FastBNNet(ClassifierMixin, nn.Module):
    """A small BatchNorm network built for time-to-accuracy on 28x28 grayscale data.

    A stride-2 first convolution quarters the work of every later layer; three conv-BN-ReLU stages
    keep it at ~100 k parameters. ``width`` scales all channel counts. ``head_pool`` is the side of
    the grid the last feature map is average-pooled to before the linear classifier: 1 is global
    average pooling; 3 keeps the 3x3 layout a 28x28 input ends with (where on a garment a feature
    fired), which is worth about a point on Fashion-MNIST for 10 k more parameters. ``stem_stride=1``
    keeps the first convolution at full resolution: 4x the FLOPs of every later layer.

    Speed-run options (airbench / hlb-CIFAR10; measured in BENCHMARKS.md, time_to_accuracy):
    ``whiten=True`` replaces the learnt stem by a frozen :class:`PatchWhitening` of
    ``whiten_kernel`` x ``whiten_kernel`` patches (stride ``stem_stride``), fitted to the training
    images by :meth:`init_from_data` before the first step; ``dirac=True`` starts each
    convolution as an identity on its first input channels (a near-identity network trains
    faster from step one); ``bn_scale=False`` fixes every BatchNorm scale at 1. ``depth`` (1) is
    the number of conv-BN-ReLU layers in each of the two stages: the extra ones keep the stage's
    width and resolution, as airbench's two convolutions per block do, for more accuracy per epoch
    at more FLOPs per image. ``pool_first=True`` is airbench's block order: each stage max-pools
    right after its first convolution, so its BatchNorm, ReLU and later convolutions run on a
    quarter of the positions (with ``depth=2``, ~2x fewer FLOPs per image at the same width).
    """

    classifier_name = "fc"

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        width: int = 32,
        dropout: float = 0.0,
        head_pool: int = 1,
        stem_stride: int = 2,
        whiten: bool = False,
        whiten_kernel: int = 2,
        dirac: bool = False,
        bn_scale: bool = True,
        depth: int = 1,
        pool_first: bool = False,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        if head_pool < 1:
            raise ValueError(f"head_pool must be >= 1, got {head_pool}")
        if whiten and whiten_kernel not in (2, 3):
            raise ValueError(f"whiten_kernel must be 2 or 3, got {whiten_kernel}")
        self.in_chans, self.num_classes = in_chans, num_classes
        # Global average pooling makes any size from 8 px work, which progressive resizing relies on.
        self.default_cfg = replace(MNIST_CFG, min_size=8).for_chans(in_chans)
        w = width

        norm = nn.BatchNorm2d if bn_scale else BatchNormNoScale

        def cbr(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                norm(cout),
                nn.ReLU(inplace=True),
            ]

        if whiten:
            # 2x2 patches at stride 2 tile a 28x28 image exactly; 3x3 ones (padding 1) overlap
            pad = 1 if whiten_kernel == 3 else 0
            whitening = PatchWhitening(in_chans, whiten_kernel, stem_stride, pad)
            stem: list[nn.Module] = [whitening, nn.ReLU(inplace=True)]
            stem_out = whitening.out_chans
        else:
            stem, stem_out = cbr(in_chans, w, stem_stride), w

        def stage(cin: int, cout: int) -> list[nn.Module]:
            conv, *norm_relu = cbr(cin, cout)
            later = [m for _ in range(depth - 1) for m in cbr(cout, cout)]
            if pool_first:  # conv, pool, then BN-ReLU and the later convs at a quarter the size
                return [conv, nn.MaxPool2d(2), *norm_relu, *later]
            return [conv, *norm_relu, *later, nn.MaxPool2d(2)]

        self.features = nn.Sequential(*stem, *stage(stem_out, 2 * w), *stage(2 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(head_pool)
        self.head_pool = head_pool
        self.dropout = nn.Dropout(dropout)
        self.num_features = 4 * w * head_pool * head_pool
        self.fc = nn.Linear(self.num_features, num_classes)
        if dirac:
            for m in self.features.modules():
                if isinstance(m, nn.Conv2d) and m.out_channels >= m.in_channels:
                    nn.init.dirac_(m.weight.data[: m.in_channels])

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Fit the whitening stem to normalised training images (no-op without ``whiten``)."""
        for m in self.features.modules():
            if isinstance(m, PatchWhitening):
                m.fit(images)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # a 28x28 input already ends at 3x3, where the pool is the identity; its backward still
        # cost ~4 % of a training step (measured with torch.profiler), so it is skipped
        if x.shape[-1] != self.head_pool or x.shape[-2] != self.head_pool:
            x = self.pool(x)
        x = self.dropout(torch.flatten(x, 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


@register_model
def simplecnn(*, num_classes: int = 10, in_chans: int = 1, **kwargs) -> SimpleCNN:
    """The course's MNIST SimpleCNN (421,642 parameters at 1x28x28, 10 classes)."""
    return SimpleCNN(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def lenet_bn(*, num_classes: int = 10, in_chans: int = 3, **kwargs) -> LeNetBN:
    """The course's BatchNorm LeNet for CIFAR-10 (62,050 parameters at 3x32x32, 10 classes)."""
    return LeNetBN(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def fastnet(*, num_classes: int = 10, in_chans: int = 1, **kwargs) -> FastBNNet:
    """A ~100 k-parameter BatchNorm net with a stride-2 stem, tuned for fast training on 28x28 data."""
    return FastBNNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
