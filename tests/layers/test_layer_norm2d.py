"""LayerNorm2d normalises over channels at each pixel, whatever the memory format."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cnnlab.layers.layer_norm2d import LayerNorm2d


def test_matches_layer_norm_over_channels_and_keeps_layout():
    torch.manual_seed(0)
    ln = LayerNorm2d(5, eps=1e-6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 5, 3, 4)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,), ln.weight, ln.bias, 1e-6).permute(
        0, 3, 1, 2
    )
    torch.testing.assert_close(ln(x), expected)
    torch.testing.assert_close(ln(x.contiguous(memory_format=torch.channels_last)), expected)
    assert ln(x).shape == x.shape
