"""VGG: parameter counts, He initialisation, layouts, minimum size."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnlab.models import get_model
from cnnlab.models.vgg import LAYOUTS, make_layers


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    # One build shared by the tests below: VGG-16 has 138 M parameters.
    torch.manual_seed(0)
    return get_model("vgg16").eval()


def test_vgg16_has_138_357_544_parameters(vgg16: nn.Module) -> None:
    assert sum(p.numel() for p in vgg16.parameters()) == 138_357_544


@torch.no_grad()
def test_he_initialisation(vgg16: nn.Module) -> None:
    for conv in [m for m in vgg16.features if isinstance(m, nn.Conv2d)][4:7]:  # 256-channel 3x3s
        expected = math.sqrt(2.0 / (conv.out_channels * 9))  # kaiming normal, fan-out, ReLU gain
        assert abs(float(conv.weight.std()) / expected - 1) < 0.02
        assert float(conv.bias.abs().max()) == 0.0
    for fc in (vgg16.classifier[0], vgg16.classifier[3]):
        assert abs(float(fc.weight.std()) - 0.01) < 5e-4 and float(fc.bias.abs().max()) == 0.0


@torch.no_grad()
def test_min_size_is_tight_and_pre_logits_are_4096(vgg16: nn.Module) -> None:
    assert vgg16.default_cfg.min_size == 32
    feats = vgg16.forward_features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 512, 1, 1)
    assert vgg16.forward_head(feats, pre_logits=True).shape == (1, 4096)
    with pytest.raises(RuntimeError):
        vgg16.forward_features(torch.randn(1, 3, 31, 31))


@pytest.mark.parametrize("layout,convs", [("A", 8), ("B", 10), ("D", 13), ("E", 16)])
@pytest.mark.parametrize("bn", [False, True])
def test_layouts(layout: str, convs: int, bn: bool) -> None:
    trunk = make_layers(LAYOUTS[layout], in_chans=1, batch_norm=bn)
    assert sum(isinstance(m, nn.Conv2d) for m in trunk) == convs
    assert sum(isinstance(m, nn.MaxPool2d) for m in trunk) == 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in trunk) == (convs if bn else 0)
    assert trunk[0].in_channels == 1


def test_builds_on_the_meta_device() -> None:
    # `cnnlab models` counts parameters and MACs on "meta" (shapes only); the classifier's skipped
    # default initialisation must not pull a 400 MB layer onto the CPU.
    with torch.device("meta"):
        model = get_model("vgg19_bn")
    assert {p.device.type for p in model.parameters()} == {"meta"}
