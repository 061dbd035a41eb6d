"""prepare_model applies the measured memory-format preference without changing results."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.layers.memory_format import prefers_channels_last, prepare_model
from cnnlab.models import DefaultCfg, get_model


def test_prepare_model_follows_the_flag_and_keeps_outputs():
    torch.manual_seed(0)
    m = get_model("mobilenet_v1", num_classes=3, width_mult=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
    m.default_cfg = DefaultCfg(extra={"channels_last": True})
    assert prefers_channels_last(m)
    prepare_model(m)
    conv = m.features[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    prepare_model(m, channels_last=False)
    assert m.features[0][0].weight.is_contiguous()


def test_models_without_a_cfg_stay_nchw():
    m = nn.Conv2d(3, 4, 3)
    assert not prefers_channels_last(m)
    assert prepare_model(m).weight.is_contiguous()
