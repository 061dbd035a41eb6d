"""AlexNet: torchvision's single-tower variant and the original 2012 network with LRN.

``alexnet`` has torchvision's layout and state-dict keys (64-192-384-256-256 filters, no LRN), so
torchvision checkpoints load strictly. ``alexnet_lrn`` is the network of Krizhevsky et al. (2012):
96 first-layer 11x11 stride-4 filters, 256-384-384-256 after it, local response normalisation
(size 5, alpha 1e-4, beta 0.75, k 2, in the paper's summed form) after the first two ReLUs, and
overlapping 3x3 stride-2 max-pooling. The paper split layers 2, 4 and 5 across two GPUs
(``groups=2``); this is the single-tower form everyone trains today, which has 62,378,344 parameters
at 3x224x224 and 1000 classes (the two-GPU split has ~61 M; the paper rounds to "60 million").
First-layer padding 2 makes a 224x224 input give the paper's 55x55 map (the paper's 224 only works
with 227 px or padding).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.layers.lrn import LocalResponseNorm
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model

# 63 px is the smallest input for which the third 3x3/2 max-pool still gets a 3x3 map.
ALEXNET_CFG = DefaultCfg(input_size=(3, 224, 224), min_size=63)


class AlexNet(ClassifierMixin, nn.Module):
    """AlexNet with torchvision's module names (``features``, ``avgpool``, ``classifier``).

    ``lrn=True`` builds the original network (96/256/384/384/256 filters, LRN after conv1 and conv2)
    with the paper's initialisation: N(0, 0.01) weights, biases 1 in conv2, conv4, conv5 and the
    hidden fully connected layers (so ReLUs start in their active region), 0 elsewhere.
    """

    classifier_name = "classifier.6"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        lrn: bool = False,
    ):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = ALEXNET_CFG.for_chans(in_chans)
        widths = (96, 256, 384, 384, 256) if lrn else (64, 192, 384, 256, 256)
        c1, c2, c3, c4, c5 = widths

        def norm() -> list[nn.Module]:
            return [LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []

        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            *norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            *norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        self.num_features = 4096
        if lrn:
            self._init_as_paper()

    def _init_as_paper(self) -> None:
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        for m in convs + linears:
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        for m in (convs[1], convs[3], convs[4], linears[0], linears[1]):
            nn.init.ones_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


@register_model
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> AlexNet:
    """AlexNet as torchvision builds it (weight-compatible; 61,100,840 parameters)."""
    return AlexNet(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def alexnet_lrn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> AlexNet:
    """The original AlexNet: 96 11x11/4 filters, LRN, overlapping pooling (62,378,344 parameters)."""
    return AlexNet(num_classes=num_classes, in_chans=in_chans, lrn=True, **kwargs)
