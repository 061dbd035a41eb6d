"""VGG 11/13/16/19 (Simonyan & Zisserman, 2014), with and without BatchNorm.

Module names and state-dict keys match torchvision (``features.N``, ``classifier.N``), so its
checkpoints load strictly; vgg16 has 138,357,544 parameters at 3x224x224 and 1000 classes. Weights
start as torchvision starts them: He (kaiming-normal, fan-out) convolutions, because the ReLU stack
is too deep for the paper's N(0, 0.01) to train without its staged pre-training; N(0, 0.01) linear
layers; zero biases. Five 2x2 max-pools need at least a 32x32 input; larger inputs are adaptively
pooled to 7x7 before the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model

# channels_last: measured faster than NCHW on both CPU kinds (BENCHMARKS.md, zoo); fit and the
# predictor follow it unless told otherwise.
VGG_CFG = DefaultCfg(input_size=(3, 224, 224), min_size=32, extra={"channels_last": True})

# Output channels per conv layer; "M" is a 2x2 max-pool. Keys are the paper's configurations.
LAYOUTS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M"]
    + [512, 512, 512, 512, "M"],
}


def make_layers(
    layout: list[int | str], in_chans: int = 3, batch_norm: bool = False
) -> nn.Sequential:
    """The convolutional trunk: 3x3 same-padding convs (+BN) + ReLU, 2x2 max-pools at "M"."""
    layers: list[nn.Module] = []
    cin = in_chans
    for v in layout:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(v, int)
        layers.append(nn.Conv2d(cin, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        cin = v
    return nn.Sequential(*layers)


class VGG(ClassifierMixin, nn.Module):
    """A VGG trunk (``features``), 7x7 adaptive pooling and the 4096-4096 classifier."""

    classifier_name = "classifier.6"

    def __init__(
        self,
        features: nn.Sequential,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        init_weights: bool = True,
    ):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = VGG_CFG.for_chans(in_chans)
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        # The first linear layer holds 103 M of the ~138 M weights: skip its default initialisation
        # when ours overwrites it anyway (halves build time).
        fc6 = (
            nn.utils.skip_init(
                nn.Linear, 512 * 7 * 7, 4096, device=torch.get_default_device()
            )  # the default device: stays on "meta" when a caller builds shapes only
            if init_weights
            else nn.Linear(512 * 7 * 7, 4096)
        )
        self.classifier = nn.Sequential(
            fc6,
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        self.num_features = 4096
        if init_weights:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


def _vgg(layout: str, batch_norm: bool, num_classes: int, in_chans: int, **kwargs) -> VGG:
    features = make_layers(LAYOUTS[layout], in_chans=in_chans, batch_norm=batch_norm)
    return VGG(features, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-11 (configuration A), 132,863,336 parameters."""
    return _vgg("A", False, num_classes, in_chans, **kwargs)


@register_model
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-11 with BatchNorm after every convolution."""
    return _vgg("A", True, num_classes, in_chans, **kwargs)


@register_model
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-13 (configuration B), 133,047,848 parameters."""
    return _vgg("B", False, num_classes, in_chans, **kwargs)


@register_model
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-13 with BatchNorm after every convolution."""
    return _vgg("B", True, num_classes, in_chans, **kwargs)


@register_model
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-16 (configuration D), 138,357,544 parameters."""
    return _vgg("D", False, num_classes, in_chans, **kwargs)


@register_model
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-16 with BatchNorm after every convolution (138,365,992 parameters)."""
    return _vgg("D", True, num_classes, in_chans, **kwargs)


@register_model
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-19 (configuration E), 143,667,240 parameters."""
    return _vgg("E", False, num_classes, in_chans, **kwargs)


@register_model
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-19 with BatchNorm after every convolution."""
    return _vgg("E", True, num_classes, in_chans, **kwargs)
