"""Convolution → normalisation → activation, the unit most CNN families are built from.

It is an ``nn.Sequential`` whose children are numbered ``0`` (conv), ``1`` (norm) and ``2``
(activation), exactly like torchvision's ``Conv2dNormActivation``; that numbering is what makes
cnnlab's MobileNet / EfficientNet / ConvNeXt state dicts load torchvision weights with no converter.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a (width-scaled) channel count to a multiple of ``divisor``, never losing > 10 %.

    Hardware kernels prefer channel counts divisible by 8; MobileNet and EfficientNet round their
    scaled widths this way, so the rule must match theirs exactly for weights to be interchangeable.

    >>> make_divisible(32 * 1.1)
    32
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNAct(nn.Sequential):
    """``Conv2d(k, stride, 'same'-style padding) → norm → activation``.

    ``norm_layer=None`` gives a biased conv with no norm; ``act_layer=None`` leaves the activation
    out (the linear bottleneck of inverted residuals). The conv has no bias when a norm follows,
    since the norm's shift would cancel it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] | None = nn.ReLU,
        bias: bool | None = None,
        inplace: bool = True,
    ) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(_make_act(act_layer, inplace))
        super().__init__(*layers)
        self.out_channels = out_channels


def _make_act(act_layer: Callable[..., nn.Module], inplace: bool) -> nn.Module:
    # GELU and friends take no ``inplace`` argument; ReLU / SiLU / Hardswish / LeakyReLU do.
    try:
        return act_layer(inplace=inplace)
    except TypeError:
        return act_layer()
