"""U-Net: full encoder-decoder, output size equals input size, trains."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import InputShapeError
from cnnlab.models import get_model


@pytest.mark.parametrize("size", [(16, 16), (17, 17), (31, 20), (33, 48), (25, 19)])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_output_has_the_input_size_and_finite_gradients(size, in_chans):
    m = get_model("unet", num_classes=5, in_chans=in_chans, base_channels=4, depth=3)
    assert m.task == "segmentation"
    x = torch.randn(2, in_chans, *size)
    out = m(x)
    assert out.shape == (2, 5, *size)
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_depth_channels_and_bilinear_option():
    m = get_model("unet", num_classes=1, base_channels=8, depth=2, bilinear=True)
    assert len(m.down) == len(m.up) == 2
    assert m.down[-1][1][0].out_channels == 32
    assert m(torch.randn(1, 3, 13, 11)).shape == (1, 1, 13, 11)
    assert sum(p.numel() for p in get_model("unet").parameters()) == 31_037_698


def test_too_small_input_is_a_clear_error():
    m = get_model("unet", base_channels=4, depth=3)
    with pytest.raises(InputShapeError, match="at least 8x8"):
        m(torch.randn(1, 3, 7, 16))


def test_overfits_two_batches(overfit):
    torch.manual_seed(0)
    m = get_model("unet", num_classes=3, in_chans=1, base_channels=8, depth=2)
    batches = []
    for _ in range(2):
        y = torch.zeros(4, 24, 24, dtype=torch.long)
        for i in range(4):
            r, c = torch.randint(0, 12, (2,)).tolist()
            y[i, r : r + 10, c : c + 8] = 1
            r, c = torch.randint(0, 16, (2,)).tolist()
            y[i, r : r + 6, c : c + 6] = 2
        x = y.float().unsqueeze(1) / 2 + 0.3 * torch.randn(4, 1, 24, 24)
        batches.append((x, y))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    final = max(overfit(m, batches, opt, 40))
    assert final < 0.05, final
