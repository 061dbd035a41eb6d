"""ConvNeXt (Liu et al., 2022): a ResNet modernised step by step towards the Vision Transformer.

Each block is a 7x7 depthwise convolution, LayerNorm, and an inverted MLP (1x1 conv x4 expansion,
GELU, 1x1 conv back) applied per pixel, scaled by a learnable per-channel *layer scale* (init 1e-6)
and added to the input through stochastic depth. A 4x4 stride-4 "patchify" stem and 2x2 stride-2
downsampling layers between the four stages replace ResNet's 7x7 stem, max-pool and strided blocks.

Module names follow torchvision (``features.S.B.block.{0,2,3,5}``, ``layer_scale``,
``classifier.{0,2}``), so torchvision weights load strictly and give the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.layers.drop_path import DropPath
from cnnlab.layers.layer_norm2d import LayerNorm2d
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model


class _ToChannelsLast(nn.Module):
    # A module (not an inline permute) so the block's Sequential indices match torchvision's.
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    """dwconv7x7 → LayerNorm → Linear(4C) → GELU → Linear(C), times layer scale, plus drop-path residual."""

    def __init__(self, dim: int, layer_scale: float, drop_path: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            _ToChannelsLast((0, 2, 3, 1)),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            _ToChannelsLast((0, 3, 1, 2)),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.stochastic_depth = DropPath(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stochastic_depth(self.layer_scale * self.block(x))


@dataclass(frozen=True)
class ConvNeXtCfg:
    """Channel widths and block counts of the four stages, and the maximal drop-path rate."""

    dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    stochastic_depth_prob: float


CONVNEXT_CFGS = {
    "tiny": ConvNeXtCfg((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "small": ConvNeXtCfg((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "base": ConvNeXtCfg((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
    "large": ConvNeXtCfg((192, 384, 768, 1536), (3, 3, 27, 3), 0.5),
}


class ConvNeXt(ClassifierMixin, nn.Module):
    """ConvNeXt with torchvision's layout: ``features`` (stem, 4 stages, 3 downsamplers),
    ``avgpool`` and ``classifier`` = LayerNorm2d → Flatten → Linear."""

    classifier_name = "classifier.2"

    def __init__(
        self,
        cfg: ConvNeXtCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        stochastic_depth_prob: float | None = None,
        layer_scale: float = 1e-6,
        head_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        # Total stride 32 (4 x 2 x 2 x 2): 32 px is the smallest input that keeps a 1x1 final map.
        # channels_last: measured faster than NCHW (BENCHMARKS.md, zoo); LayerNorm permutes are free.
        self.default_cfg = DefaultCfg(
            input_size=(3, 224, 224), min_size=32, extra={"channels_last": True}
        ).for_chans(in_chans)
        sd = cfg.stochastic_depth_prob if stochastic_depth_prob is None else stochastic_depth_prob
        dims = cfg.dims
        stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4, bias=True),
            LayerNorm2d(dims[0], eps=1e-6),
        )
        layers: list[nn.Module] = [stem]
        total = sum(cfg.depths)
        block_id = 0
        for i, (dim, depth) in enumerate(zip(dims, cfg.depths)):
            blocks = []
            for _ in range(depth):
                # Drop-path rate rises linearly from 0 (first block) to ``sd`` (last block).
                blocks.append(CNBlock(dim, layer_scale, sd * block_id / max(total - 1, 1)))
                block_id += 1
            layers.append(nn.Sequential(*blocks))
            if i < 3:
                layers.append(
                    nn.Sequential(
                        LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, dims[i + 1], 2, stride=2)
                    )
                )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = dims[-1]
        self.classifier = nn.Sequential(
            # Hugging Face's ConvNeXt uses its config's layer_norm_eps (1e-12) for this one norm.
            LayerNorm2d(dims[-1], eps=head_norm_eps),
            nn.Flatten(1),
            nn.Linear(dims[-1], num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x)
        if pre_logits:
            return self.classifier[1](self.classifier[0](x))
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


@register_model
def convnext_tiny(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ConvNeXt:
    """ConvNeXt-T (28,589,128 parameters at 1000 classes), torchvision-compatible."""
    return ConvNeXt(CONVNEXT_CFGS["tiny"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def convnext_small(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ConvNeXt:
    """ConvNeXt-S (50,223,688 parameters at 1000 classes), torchvision-compatible."""
    return ConvNeXt(CONVNEXT_CFGS["small"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def convnext_base(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ConvNeXt:
    """ConvNeXt-B (88,591,464 parameters at 1000 classes), torchvision-compatible."""
    return ConvNeXt(CONVNEXT_CFGS["base"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def convnext_large(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ConvNeXt:
    """ConvNeXt-L (197,767,336 parameters at 1000 classes), torchvision-compatible."""
    return ConvNeXt(CONVNEXT_CFGS["large"], num_classes=num_classes, in_chans=in_chans, **kwargs)
