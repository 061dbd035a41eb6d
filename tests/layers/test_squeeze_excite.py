"""SqueezeExcite re-weights channels by a gate of their global average."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.layers.squeeze_excite import SqueezeExcite


def test_gate_of_zero_logits_halves_the_input():
    se = SqueezeExcite(6, 2)
    nn.init.zeros_(se.fc2.weight)
    nn.init.zeros_(se.fc2.bias)
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(se(x), x * 0.5)


def test_gate_depends_on_channel_mean_and_matches_torchvision():
    from torchvision.ops.misc import SqueezeExcitation

    ours = SqueezeExcite(8, 4, nn.SiLU, nn.Hardsigmoid)
    theirs = SqueezeExcitation(8, 4, activation=nn.SiLU, scale_activation=nn.Hardsigmoid)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 8, 4, 4)
    torch.testing.assert_close(ours(x), theirs(x))
    # One gate value per (sample, channel): the ratio out / x is constant over space.
    ratio = ours(x) / x
    torch.testing.assert_close(ratio, ratio[..., :1, :1].expand_as(ratio))
