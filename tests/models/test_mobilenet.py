"""MobileNet v1 as published (not the course's 53 M-parameter version), v2 and v3 behaviour."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import InputShapeError
from cnnlab.models import get_model


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_mobilenet_v1_has_the_published_4_2m_parameters():
    m = get_model("mobilenet_v1")
    # 4,231,976 is the published figure at width 1.0 and 1000 classes (the course's is 53,383,976).
    assert _params(m) == 4_231_976
    assert m.num_features == 1024
    # Padded stride-2 stem, 13 depthwise-separable blocks, global average pooling.
    stem = m.features[0][0]
    assert (stem.stride, stem.padding, stem.out_channels) == ((2, 2), (1, 1), 32)
    assert len(m.features) == 14
    assert sum(b.dw[0].groups == b.dw[0].in_channels for b in m.features[1:]) == 13
    with torch.no_grad():
        assert m.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 1024, 7, 7)


def test_mobilenet_v1_width_multiplier_thins_every_layer():
    half = get_model("mobilenet_v1", width_mult=0.5, num_classes=10, in_chans=1)
    assert half.num_features == 512
    assert half.features[0][0].out_channels == 16
    # Roughly width^2 fewer weights in the body (the 1x1 convolutions dominate).
    assert _params(half) < 0.3 * _params(get_model("mobilenet_v1", num_classes=10, in_chans=1))
    out = half(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in half.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]
)
def test_interface_channels_sizes_and_head(name):
    m = get_model(name, num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, 40, 48)  # non-square, above the 32 px minimum
    with torch.no_grad():
        feats = m.forward_features(x)
        assert m.forward_head(feats).shape == (2, 7)
        assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
        assert m(x).shape == (2, 7)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)
    assert m.default_cfg.min_size == 32 and m.default_cfg.input_size == (1, 224, 224)
    with pytest.raises(InputShapeError, match="1 input channel"):
        m(torch.randn(1, 3, 64, 64))
    with pytest.raises(InputShapeError, match="at least 32x32"):
        m(torch.randn(1, 1, 16, 16))
