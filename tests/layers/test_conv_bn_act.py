"""ConvBNAct and make_divisible: torchvision-compatible layout and the channel-rounding rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.layers.conv_bn_act import ConvBNAct, make_divisible


@pytest.mark.parametrize(
    ("value", "expected"),
    [(32, 32), (32 * 1.1, 32), (16 * 0.75, 16), (1280 * 1.4, 1792), (3, 8), (100, 104), (91, 88)],
)
def test_make_divisible_rounds_to_multiple_of_8_without_losing_10_percent(value, expected):
    out = make_divisible(value)
    assert out == expected
    assert out % 8 == 0 and out >= 0.9 * value


def test_conv_bn_act_children_are_numbered_like_torchvision():
    from torchvision.ops.misc import Conv2dNormActivation

    ours = ConvBNAct(3, 16, 3, stride=2, act_layer=nn.SiLU)
    theirs = Conv2dNormActivation(3, 16, 3, stride=2, activation_layer=nn.SiLU)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours(x).shape == (2, 16, 5, 5)


def test_conv_bn_act_bias_only_without_norm_and_optional_activation():
    with_norm = ConvBNAct(4, 8, 1)
    assert with_norm[0].bias is None and isinstance(with_norm[1], nn.BatchNorm2d)
    bare = ConvBNAct(4, 8, 1, norm_layer=None, act_layer=None)
    assert bare[0].bias is not None and len(bare) == 1
    gelu = ConvBNAct(4, 8, 3, act_layer=nn.GELU)  # takes no ``inplace``
    assert isinstance(gelu[2], nn.GELU)


def test_conv_bn_act_same_padding_with_dilation():
    m = ConvBNAct(2, 2, 3, dilation=2)
    assert m(torch.randn(1, 2, 11, 13)).shape == (1, 2, 11, 13)
