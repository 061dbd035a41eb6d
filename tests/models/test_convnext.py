"""ConvNeXt: layer scale, stochastic depth schedule, interface."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import InputShapeError
from cnnlab.layers.drop_path import DropPath
from cnnlab.models import get_model


@pytest.fixture(scope="module")
def tiny():
    return get_model("convnext_tiny", num_classes=7, in_chans=1)


def test_layer_scale_and_drop_path_schedule(tiny):
    scales = [b.layer_scale for stage in tiny.features[1::2] for b in stage]
    assert len(scales) == 18 and all(torch.all(s == 1e-6) for s in scales)
    probs = [m.p for m in tiny.modules() if isinstance(m, DropPath)]
    assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.1)
    assert all(b > a for a, b in zip(probs, probs[1:]))


def test_forward_backward_one_channel_min_size(tiny):
    tiny.train()
    out = tiny(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in tiny.parameters() if p.grad is not None)
    tiny.eval()
    with torch.no_grad():
        feats = tiny.forward_features(torch.randn(1, 1, 64, 96))
        assert feats.shape == (1, 768, 2, 3)
        assert tiny.forward_head(feats, pre_logits=True).shape == (1, 768)
    with pytest.raises(InputShapeError, match="at least 32x32"):
        tiny(torch.randn(1, 1, 31, 64))


def test_reset_classifier_keeps_the_norm(tiny):
    tiny.reset_classifier(4)
    assert tiny.classifier[2].out_features == 4
    assert tiny.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 4)
