"""EfficientNet B0-B7 generated from the compound-scaling coefficients."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.layers.drop_path import DropPath
from cnnlab.models import get_model, get_model_builder
from cnnlab.models.efficientnet import EFFICIENTNET_PARAMS

RESOLUTIONS = {
    "b0": 224,
    "b1": 240,
    "b2": 260,
    "b3": 300,
    "b4": 380,
    "b5": 456,
    "b6": 528,
    "b7": 600,
}


@pytest.mark.parametrize("variant", list(RESOLUTIONS))
def test_variant_is_scaled_from_its_coefficients(variant):
    p = EFFICIENTNET_PARAMS[variant]
    m = get_model_builder(f"efficientnet_{variant}")(num_classes=10)
    assert m.default_cfg.input_size == (3, RESOLUTIONS[variant], RESOLUTIONS[variant])
    assert m.classifier[0].p == p.dropout
    stage_depths = [len(stage) for stage in m.features[1:-1]]
    assert stage_depths == [math.ceil(n * p.depth) for n in (1, 2, 2, 3, 3, 4, 1)]
    head_in = m.features[-1][0].in_channels
    assert head_in == int(320 * p.width + 4) // 8 * 8 or head_in % 8 == 0
    assert m.num_features == 4 * head_in


def test_stochastic_depth_rises_linearly_to_0_2():
    m = get_model("efficientnet_b0")
    probs = [mod.p for mod in m.modules() if isinstance(mod, DropPath)]
    assert len(probs) == 16 and probs[0] == 0.0
    assert probs == sorted(probs) and probs[-1] == pytest.approx(0.2 * 15 / 16)
    assert (
        get_model("efficientnet_b0", stochastic_depth_prob=0.0).features[6][0].stochastic_depth.p
        == 0
    )


def test_b0_trains_with_one_channel_and_small_inputs():
    m = get_model("efficientnet_b0", num_classes=5, in_chans=1)
    out = m(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 5)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    m.eval()
    with torch.no_grad():
        feats = m.forward_features(torch.randn(1, 1, 33, 47))
        assert m.forward_head(feats, pre_logits=True).shape == (1, 1280)
