"""ResNet (He et al., 2015), Wide ResNet and ResNeXt, weight-compatible with torchvision.

Stride sits on the 3x3 convolution of a bottleneck (ResNet v1.5, as torchvision and most checkpoints
do), downsampling shortcuts are 1x1 conv + BN, and weights start with He (fan-out) initialisation.

``small_input=True`` replaces the 7x7/2 stem and its max-pool by a 3x3 stride-1 convolution, the
usual CIFAR/MNIST adaptation: the 224 px stem would shrink a 32 px image to 8x8 before the first
residual stage and throw most of it away. ``zero_init_residual=True`` starts every block's last BN
at zero so each residual branch begins as the identity (Goyal et al., 2017), which helps large-batch
training.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model

# At 32 px the ImageNet stem leaves a 1x1 map for the last stage; the small stem leaves 4x4.
RESNET_CFG = DefaultCfg(input_size=(3, 224, 224), min_size=32)
RESNET_SMALL_CFG = DefaultCfg(input_size=(3, 32, 32), min_size=8)


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding and no bias (a BN follows)."""
    return nn.Conv2d(
        cin, cout, 3, stride, padding=dilation, groups=groups, bias=False, dilation=dilation
    )


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (a BN follows)."""
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus the shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
    ):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        # dilation > 1 keeps the resolution of dense-prediction backbones (DeepLab-style)
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, optionally grouped), 1x1 expand by 4, plus the shortcut."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(ClassifierMixin, nn.Module):
    """Stem, four residual stages (``layer1``…``layer4``), global average pooling, ``fc``."""

    classifier_name = "fc"

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        small_input: bool = False,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.small_input = small_input
        self.default_cfg = (RESNET_SMALL_CFG if small_input else RESNET_CFG).for_chans(in_chans)
        self.groups, self.base_width = groups, width_per_group
        self.inplanes = 64
        if small_input:
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.drop = nn.Dropout(drop_rate)
        self.num_features = 512 * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
            )
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


def _resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    num_classes: int,
    in_chans: int,
    **kwargs,
) -> ResNet:
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-18 (11,689,512 parameters). ``small_input=True`` for 28–32 px images."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_chans, **kwargs)


@register_model
def resnet34(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-34 (21,797,672 parameters)."""
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_chans, **kwargs)


@register_model
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-50 (25,557,032 parameters)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_chans, **kwargs)


@register_model
def resnet101(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-101 (44,549,160 parameters)."""
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes, in_chans, **kwargs)


@register_model
def resnet152(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-152 (60,192,808 parameters)."""
    return _resnet(Bottleneck, [3, 8, 36, 3], num_classes, in_chans, **kwargs)


@register_model
def wide_resnet50_2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """Wide ResNet-50-2: bottlenecks twice as wide (68,883,240 parameters)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_chans, width_per_group=128, **kwargs)


@register_model
def resnext50_32x4d(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNeXt-50 32x4d: 32 groups of width 4 in each 3x3 (25,028,904 parameters)."""
    return _resnet(
        Bottleneck, [3, 4, 6, 3], num_classes, in_chans, groups=32, width_per_group=4, **kwargs
    )
