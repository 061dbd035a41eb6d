"""EfficientNet B0-B7: one baseline network scaled by the compound-scaling rule.

Tan & Le (2019) scale width (channels), depth (blocks per stage) and input resolution together:
``depth = alpha**phi``, ``width = beta**phi``, ``resolution = gamma**phi`` with alpha=1.2, beta=1.1,
gamma=1.15. The published variants round those to the coefficients in :data:`EFFICIENTNET_PARAMS`,
which every builder here is generated from (together with the dropout rate before the classifier).

Blocks are MBConv (inverted residual + squeeze-excitation + SiLU) with stochastic depth whose drop
probability grows linearly with block index up to ``stochastic_depth_prob`` (0.2). Module names follow
torchvision, so ``load_state_dict(torchvision_model.state_dict())`` works strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from cnnlab.layers.conv_bn_act import ConvBNAct, make_divisible
from cnnlab.layers.drop_path import DropPath
from cnnlab.layers.squeeze_excite import SqueezeExcite
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model


@dataclass(frozen=True)
class ScalingParams:
    """Compound-scaling coefficients of one variant."""

    width: float
    depth: float
    resolution: int
    dropout: float


# Table of the paper / the reference implementation (width, depth, resolution, dropout).
EFFICIENTNET_PARAMS: dict[str, ScalingParams] = {
    "b0": ScalingParams(1.0, 1.0, 224, 0.2),
    "b1": ScalingParams(1.0, 1.1, 240, 0.2),
    "b2": ScalingParams(1.1, 1.2, 260, 0.3),
    "b3": ScalingParams(1.2, 1.4, 300, 0.3),
    "b4": ScalingParams(1.4, 1.8, 380, 0.4),
    "b5": ScalingParams(1.6, 2.2, 456, 0.4),
    "b6": ScalingParams(1.8, 2.6, 528, 0.5),
    "b7": ScalingParams(2.0, 3.1, 600, 0.5),
}


@dataclass(frozen=True)
class StageCfg:
    """One stage of the B0 baseline: expansion, kernel, first stride, in/out channels, blocks."""

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    num_layers: int


# EfficientNet-B0 (Table 1 of the paper); the other variants scale channels and num_layers.
B0_STAGES = (
    StageCfg(1, 3, 1, 32, 16, 1),
    StageCfg(6, 3, 2, 16, 24, 2),
    StageCfg(6, 5, 2, 24, 40, 2),
    StageCfg(6, 3, 2, 40, 80, 3),
    StageCfg(6, 5, 1, 80, 112, 3),
    StageCfg(6, 5, 2, 112, 192, 4),
    StageCfg(6, 3, 1, 192, 320, 1),
)


class TFPadConv2d(nn.Conv2d):
    """A stride-2 convolution padded the TensorFlow way: one pixel less before than after.

    TF's ``"SAME"`` padding (kept by Hugging Face's EfficientNet port) pads ``k//2 - 1`` on the
    top/left and ``k//2`` on the bottom/right; torchvision pads ``k//2`` on every side, which shifts
    every output by one pixel. Same parameters as ``nn.Conv2d``, so state dicts are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0] // 2
        return super().forward(nn.functional.pad(x, (k - 1, k, k - 1, k)))


def _use_tf_padding(model: nn.Module) -> None:
    # Swap every stride-2 convolution for a TF-padded one (weights are initialised afterwards).
    for parent in list(model.modules()):
        for name, conv in parent.named_children():
            if type(conv) is nn.Conv2d and conv.stride == (2, 2):
                new = TFPadConv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    2,
                    0,
                    groups=conv.groups,
                    bias=conv.bias is not None,
                )
                setattr(parent, name, new)


class MBConv(nn.Module):
    """Expand 1x1 → depthwise k x k → SE (squeeze to in/4) → project 1x1; residual with drop path."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand_ratio: int,
        drop_path: float,
        norm_layer: partial,
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = make_divisible(in_channels * expand_ratio, 8)
        layers: list[nn.Module] = []
        if hidden != in_channels:
            layers.append(
                ConvBNAct(in_channels, hidden, 1, norm_layer=norm_layer, act_layer=nn.SiLU)
            )
        layers += [
            ConvBNAct(
                hidden,
                hidden,
                kernel,
                stride,
                groups=hidden,
                norm_layer=norm_layer,
                act_layer=nn.SiLU,
            ),
            SqueezeExcite(hidden, max(1, in_channels // 4), nn.SiLU, nn.Sigmoid),
            ConvBNAct(hidden, out_channels, 1, norm_layer=norm_layer, act_layer=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = DropPath(drop_path, "row")
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(ClassifierMixin, nn.Module):
    """EfficientNet scaled from B0 by ``width_mult`` / ``depth_mult``.

    ``features`` = stem, seven MBConv stages, 1x1 head conv (4x the last stage's channels);
    then global average pooling and ``classifier`` = dropout + linear.
    """

    classifier_name = "classifier.1"

    def __init__(
        self,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        dropout: float = 0.2,
        num_classes: int = 1000,
        in_chans: int = 3,
        stochastic_depth_prob: float = 0.2,
        bn_eps: float = 1e-5,
        input_size: int = 224,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = DefaultCfg(
            input_size=(3, input_size, input_size),
            min_size=32,
            # channels_last: measured faster on B0 (BENCHMARKS.md, zoo); B1-B7 are the same blocks.
            extra={
                "width_mult": width_mult,
                "depth_mult": depth_mult,
                "dropout": dropout,
                "channels_last": True,
            },
        ).for_chans(in_chans)
        # B5-B7 were trained with TF's BN hyper-parameters; torchvision keeps them for those variants.
        norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=0.01 if bn_eps != 1e-5 else 0.1)

        def width(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        def depth(n: int) -> int:
            return int(math.ceil(n * depth_mult))

        stem = width(B0_STAGES[0].in_channels)
        layers: list[nn.Module] = [
            ConvBNAct(in_chans, stem, 3, 2, norm_layer=norm_layer, act_layer=nn.SiLU)
        ]
        total_blocks = sum(depth(s.num_layers) for s in B0_STAGES)
        block_id = 0
        for s in B0_STAGES:
            stage: list[nn.Module] = []
            cin, cout = width(s.in_channels), width(s.out_channels)
            for i in range(depth(s.num_layers)):
                # Linear decay rule: the deeper the block, the more often it is skipped in training.
                p = stochastic_depth_prob * block_id / total_blocks
                stage.append(
                    MBConv(
                        cin if i == 0 else cout,
                        cout,
                        s.kernel,
                        s.stride if i == 0 else 1,
                        s.expand_ratio,
                        p,
                        norm_layer,
                    )
                )
                block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = width(B0_STAGES[-1].out_channels)
        last = 4 * last_in
        layers.append(ConvBNAct(last_in, last, 1, norm_layer=norm_layer, act_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = last
        self.classifier = nn.Sequential(
            nn.Dropout(dropout, inplace=True), nn.Linear(last, num_classes)
        )
        if tf_padding:  # checkpoints ported from TensorFlow (Hugging Face's EfficientNet)
            _use_tf_padding(self)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        if pre_logits:
            return self.classifier[0](x)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


def _efficientnet(variant: str, num_classes: int, in_chans: int, **kwargs) -> EfficientNet:
    p = EFFICIENTNET_PARAMS[variant]
    kwargs.setdefault("dropout", p.dropout)
    kwargs.setdefault("bn_eps", 1e-3 if variant in ("b5", "b6", "b7") else 1e-5)
    return EfficientNet(
        width_mult=p.width,
        depth_mult=p.depth,
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=p.resolution,
        **kwargs,
    )


@register_model
def efficientnet_b0(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B0 (width 1.0, depth 1.0, 224 px, dropout 0.2; 5,288,548 parameters)."""
    return _efficientnet("b0", num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b1(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B1 (width 1.0, depth 1.1, 240 px, dropout 0.2)."""
    return _efficientnet("b1", num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B2 (width 1.1, depth 1.2, 260 px, dropout 0.3)."""
    return _efficientnet("b2", num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b3(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B3 (width 1.2, depth 1.4, 300 px, dropout 0.3)."""
    return _efficientnet("b3", num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b4(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B4 (width 1.4, depth 1.8, 380 px, dropout 0.4)."""
    return _efficientnet("b4", num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b5(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B5 (width 1.6, depth 2.2, 456 px, dropout 0.4)."""
    return _efficientnet("b5", num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b6(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B6 (width 1.8, depth 2.6, 528 px, dropout 0.5)."""
    return _efficientnet("b6", num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b7(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B7 (width 2.0, depth 3.1, 600 px, dropout 0.5)."""
    return _efficientnet("b7", num_classes, in_chans, **kwargs)
