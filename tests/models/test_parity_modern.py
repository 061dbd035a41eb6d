"""Weight compatibility with torchvision for MobileNet v2/v3, EfficientNet, ConvNeXt and ViT.

For each architecture: torchvision's state dict (randomised, including BN running statistics, so
a wrong eps, a swapped layer or a missing scale would show) loads strictly into cnnlab's model,
eval-mode outputs agree within 1e-5 on the same input, and parameter counts are equal. One model
per family runs by default; the big variants are ``slow``. Nothing is downloaded (weights=None).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnlab.models import get_model


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    # Fresh models have BN statistics of 0/1, zero biases, unit LayerNorm scales and zero heads,
    # which would hide a wrong eps or a swapped norm. Randomise those (cheaply: the big weight
    # matrices are already random) so every tensor matters to the output.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() <= 1 or "layer_scale" in name or name.endswith("head.weight"):
                t.add_(torch.randn(t.shape, generator=g) * 0.05)


def check_parity(name: str, size: int, batch: int = 2) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    _randomise(theirs)
    ours = get_model(name).eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_theirs, f"{name}: {n_ours} parameters, torchvision has {n_theirs}"
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert got.shape == expected.shape == (batch, 1000)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "size"),
    [("mobilenet_v2", 64), ("efficientnet_b0", 64), ("convnext_tiny", 64), ("vit_b_16", 224)],
)
def test_parity_ci(name, size):
    check_parity(name, size, batch=2 if size < 224 else 1)


SLOW = [
    ("mobilenet_v3_small", 64),
    ("mobilenet_v3_large", 64),
    *[(f"efficientnet_b{i}", 64) for i in range(1, 8)],
    ("convnext_small", 64),
    ("convnext_base", 64),
    ("convnext_large", 64),
    ("vit_b_32", 224),
    ("vit_l_16", 224),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), SLOW)
def test_parity_slow(name, size):
    check_parity(name, size, batch=1)


def test_parity_catches_a_wrong_model():
    # The check is able to fail: a different architecture's weights are refused.
    theirs = torchvision.models.mobilenet_v3_small(weights=None)
    with pytest.raises(RuntimeError):
        get_model("mobilenet_v2").load_state_dict(theirs.state_dict(), strict=True)
