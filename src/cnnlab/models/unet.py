"""U-Net (Ronneberger et al., 2015): the full encoder-decoder for per-pixel classification.

The encoder halves the resolution ``depth`` times (two 3x3 conv-BN-ReLU, then 2x2 max-pool), doubling
the channels each time; the decoder upsamples with 2x2 transposed convolutions and concatenates the
encoder feature map of the same scale (the skip connection that restores fine detail) before two more
convolutions. A 1x1 convolution maps the last map to ``num_classes`` logits per pixel.
(The course's version has only the encoder; this is the whole network.)

Odd sizes are handled: max-pooling floors, so after upsampling the decoder map can be one pixel short
of its skip; it is zero-padded to the skip's size, so the output always has the input's H x W.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.layers.conv_bn_act import ConvBNAct
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU (padding 1, so the size is kept, unlike the paper's unpadded convs)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBNAct(in_channels, out_channels, 3), ConvBNAct(out_channels, out_channels, 3)
        )


class Up(nn.Module):
    """Upsample x2 (transposed conv, or bilinear + 1x1 conv), pad to the skip, concat, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = False) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dy or dx:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(ClassifierMixin, nn.Module):
    """U-Net returning ``(N, num_classes, H, W)`` logits for an ``(N, in_chans, H, W)`` input.

    ``base_channels`` (64 in the paper) is the width of the first level; level ``i`` has
    ``base_channels * 2**i`` channels. ``depth`` is the number of down/up-sampling steps (4 in the
    paper), so inputs must be at least ``2**depth`` pixels on each side.
    """

    task = "segmentation"
    classifier_name = "head"

    def __init__(
        self,
        num_classes: int = 2,
        in_chans: int = 3,
        base_channels: int = 64,
        depth: int = 4,
        bilinear: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1; got {depth}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1; got {base_channels}")
        self.in_chans, self.num_classes, self.depth = in_chans, num_classes, depth
        self.default_cfg = DefaultCfg(input_size=(3, 256, 256), min_size=2**depth).for_chans(
            in_chans
        )
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_chans, widths[0])
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            Up(widths[i + 1], widths[i], bilinear) for i in reversed(range(depth))
        )
        self.num_features = widths[0]
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel features at full resolution, ``(N, base_channels, H, W)``."""
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(self.pool(skips[-1])))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


@register_model
def unet(*, num_classes: int = 2, in_chans: int = 3, **kwargs) -> UNet:
    """U-Net (31,037,698 parameters at base_channels=64, depth=4, 3 in, 2 classes).

    Options: ``base_channels`` (64), ``depth`` (4), ``bilinear`` (False: transposed convolutions).
    """
    return UNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
