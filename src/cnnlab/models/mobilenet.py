"""MobileNet v1, v2 and v3: networks built from depthwise-separable convolutions.

A depthwise 3x3 convolution filters each channel on its own and a pointwise 1x1 convolution mixes
channels; together they cost ``k*k*C + C*C'`` weights instead of ``k*k*C*C'`` (about 8-9x fewer for
3x3 kernels), which is the whole idea of the family.

* ``mobilenet_v1`` is the published network (Howard et al., 2017): a padded stride-2 3x3 stem, 13
  depthwise-separable blocks, global average pooling and one linear layer -- 4,231,976 parameters at
  width 1.0 and 1000 classes. (The course's version ends in a 7x7 map flattened into a 50 M-weight
  linear layer, 53,383,976 parameters in total; that is not MobileNet.) torchvision has no v1.
* ``mobilenet_v2`` (inverted residuals with linear bottlenecks) and ``mobilenet_v3_small/large``
  (SE blocks, hard-swish) use torchvision's module names, so ``load_state_dict(tv.state_dict())``
  works strictly and gives the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from cnnlab.layers.conv_bn_act import ConvBNAct, make_divisible
from cnnlab.layers.squeeze_excite import SqueezeExcite
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model

IMAGENET_CFG = DefaultCfg(input_size=(3, 224, 224), min_size=32)


def _init_weights(model: nn.Module) -> None:
    # The papers' (and torchvision's) initialisation: He-normal fan-out convs, small-normal heads.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class _MobileNetBase(ClassifierMixin, nn.Module):
    """Shared forward: ``features`` → global average pool → ``classifier`` (a Sequential)."""

    classifier_name = "classifier.1"
    features: nn.Sequential
    classifier: nn.Sequential

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        if pre_logits:
            return self.classifier[:-1](x)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------- v1


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-BN-ReLU (carries the stride) followed by 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pw = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


# (output channels, stride) of the 13 depthwise-separable blocks, Table 1 of the paper.
MOBILENET_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)  # fmt: skip


class MobileNetV1(_MobileNetBase):
    """MobileNet v1 as published; ``width_mult`` (the paper's alpha) thins every layer."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive; got {width_mult}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = IMAGENET_CFG.for_chans(in_chans)

        def width(c: int) -> int:
            # TF-slim's rule for the published checkpoints: truncate, but never below 8 channels.
            return max(int(c * width_mult), 8)

        cin = width(32)
        layers: list[nn.Module] = [ConvBNAct(in_chans, cin, 3, stride=2)]
        for cout, stride in MOBILENET_V1_BLOCKS:
            layers.append(DepthwiseSeparable(cin, width(cout), stride))
            cin = width(cout)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))
        _init_weights(self)


# --------------------------------------------------------------------------------------------- v2


class InvertedResidualV2(nn.Module):
    """1x1 expand (ReLU6) → 3x3 depthwise (ReLU6) → 1x1 linear projection, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act_layer=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act_layer=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# (expansion t, channels c, repeats n, first stride s), Table 2 of the MobileNetV2 paper.
MOBILENET_V2_SETTING = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)  # fmt: skip


class MobileNetV2(_MobileNetBase):
    """MobileNet v2 (torchvision-compatible keys: ``features.N.conv…``, ``classifier.1``)."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        # channels_last: measured faster for training and inference (BENCHMARKS.md, zoo).
        self.default_cfg = replace(IMAGENET_CFG, extra={"channels_last": True}).for_chans(in_chans)
        cin = make_divisible(32 * width_mult, round_nearest)
        last = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        layers: list[nn.Module] = [ConvBNAct(in_chans, cin, 3, 2, act_layer=nn.ReLU6)]
        for t, c, n, s in MOBILENET_V2_SETTING:
            cout = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                layers.append(InvertedResidualV2(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNAct(cin, last, 1, act_layer=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = last
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init_weights(self)


# --------------------------------------------------------------------------------------------- v3


@dataclass(frozen=True)
class BneckCfg:
    """One MobileNet v3 bottleneck row: kernel, expanded and output channels, SE, hard-swish, stride."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int

    def scaled(self, width_mult: float) -> BneckCfg:
        def w(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        return BneckCfg(
            w(self.in_channels),
            self.kernel,
            w(self.expanded),
            w(self.out_channels),
            self.use_se,
            self.use_hs,
            self.stride,
        )


_T, _F = True, False
# Tables 1 and 2 of "Searching for MobileNetV3": in, k, exp, out, SE, HS, stride.
MOBILENET_V3_LARGE = tuple(
    BneckCfg(*row)
    for row in (
        (16, 3, 16, 16, _F, _F, 1), (16, 3, 64, 24, _F, _F, 2), (24, 3, 72, 24, _F, _F, 1),
        (24, 5, 72, 40, _T, _F, 2), (40, 5, 120, 40, _T, _F, 1), (40, 5, 120, 40, _T, _F, 1),
        (40, 3, 240, 80, _F, _T, 2), (80, 3, 200, 80, _F, _T, 1), (80, 3, 184, 80, _F, _T, 1),
        (80, 3, 184, 80, _F, _T, 1), (80, 3, 480, 112, _T, _T, 1), (112, 3, 672, 112, _T, _T, 1),
        (112, 5, 672, 160, _T, _T, 2), (160, 5, 960, 160, _T, _T, 1), (160, 5, 960, 160, _T, _T, 1),
    )
)  # fmt: skip
MOBILENET_V3_SMALL = tuple(
    BneckCfg(*row)
    for row in (
        (16, 3, 16, 16, _T, _F, 2), (16, 3, 72, 24, _F, _F, 2), (24, 3, 88, 24, _F, _F, 1),
        (24, 5, 96, 40, _T, _T, 2), (40, 5, 240, 40, _T, _T, 1), (40, 5, 240, 40, _T, _T, 1),
        (40, 5, 120, 48, _T, _T, 1), (48, 5, 144, 48, _T, _T, 1), (48, 5, 288, 96, _T, _T, 2),
        (96, 5, 576, 96, _T, _T, 1), (96, 5, 576, 96, _T, _T, 1),
    )
)  # fmt: skip


class InvertedResidualV3(nn.Module):
    """v3 bottleneck: optional 1x1 expand → depthwise k x k → optional SE → 1x1 linear projection."""

    def __init__(self, cfg: BneckCfg, norm_layer: partial) -> None:
        super().__init__()
        act = nn.Hardswish if cfg.use_hs else nn.ReLU
        self.use_res_connect = cfg.stride == 1 and cfg.in_channels == cfg.out_channels
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.in_channels:
            layers.append(
                ConvBNAct(cfg.in_channels, cfg.expanded, 1, norm_layer=norm_layer, act_layer=act)
            )
        layers.append(
            ConvBNAct(
                cfg.expanded,
                cfg.expanded,
                cfg.kernel,
                cfg.stride,
                groups=cfg.expanded,
                norm_layer=norm_layer,
                act_layer=act,
            )
        )
        if cfg.use_se:
            squeeze = make_divisible(cfg.expanded // 4, 8)
            layers.append(SqueezeExcite(cfg.expanded, squeeze, nn.ReLU, nn.Hardsigmoid))
        layers.append(
            ConvBNAct(cfg.expanded, cfg.out_channels, 1, norm_layer=norm_layer, act_layer=None)
        )
        self.block = nn.Sequential(*layers)
        self.out_channels = cfg.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.block(x)
        return self.block(x)


class MobileNetV3(_MobileNetBase):
    """MobileNet v3 small/large (torchvision-compatible keys).

    The head is ``Linear(6*C, last) → hard-swish → dropout → Linear(last, classes)``, so
    ``num_features`` is ``last`` (1024 small, 1280 large) and ``pre_logits`` stops before the last layer.
    """

    classifier_name = "classifier.3"

    def __init__(
        self,
        setting: tuple[BneckCfg, ...],
        last_channel: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = IMAGENET_CFG.for_chans(in_chans)
        # The paper's BN hyper-parameters (TF defaults), which torchvision's weights were trained with.
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        cfgs = [c.scaled(width_mult) for c in setting]
        layers: list[nn.Module] = [
            ConvBNAct(
                in_chans, cfgs[0].in_channels, 3, 2, norm_layer=norm_layer, act_layer=nn.Hardswish
            )
        ]
        layers += [InvertedResidualV3(c, norm_layer) for c in cfgs]
        lastconv = 6 * cfgs[-1].out_channels
        layers.append(
            ConvBNAct(
                cfgs[-1].out_channels, lastconv, 1, norm_layer=norm_layer, act_layer=nn.Hardswish
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = make_divisible(last_channel * width_mult, 8)
        self.num_features = last
        self.classifier = nn.Sequential(
            nn.Linear(lastconv, last),
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout, inplace=True),
            nn.Linear(last, num_classes),
        )
        _init_weights(self)


# --------------------------------------------------------------------------------------- builders


@register_model
def mobilenet_v1(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    """MobileNet v1 as published (4,231,976 parameters at width 1.0, 1000 classes); ``width_mult``."""
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def mobilenet_v2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV2:
    """MobileNet v2 (3,504,872 parameters at 1000 classes), torchvision-compatible."""
    return MobileNetV2(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def mobilenet_v3_small(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV3:
    """MobileNet v3 small (2,542,856 parameters at 1000 classes), torchvision-compatible."""
    return MobileNetV3(
        MOBILENET_V3_SMALL, 1024, num_classes=num_classes, in_chans=in_chans, **kwargs
    )


@register_model
def mobilenet_v3_large(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV3:
    """MobileNet v3 large (5,483,032 parameters at 1000 classes), torchvision-compatible."""
    return MobileNetV3(
        MOBILENET_V3_LARGE, 1280, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
