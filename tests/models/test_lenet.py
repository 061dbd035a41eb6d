"""LeNet-5 as published and its ReLU/max-pool variant."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import get_model


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["lenet5", "lenet5_relu"])
def test_parameter_count_is_the_published_layer_sum(name: str) -> None:
    # C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850 (full C3 connections, linear output).
    assert _num_params(get_model(name)) == 61_706


def test_lenet5_uses_tanh_and_average_subsampling_relu_variant_does_not() -> None:
    classic, modern = get_model("lenet5"), get_model("lenet5_relu")
    kinds = {type(m) for m in classic.modules()}
    assert nn.Tanh in kinds and nn.AvgPool2d in kinds
    assert nn.ReLU not in kinds and nn.MaxPool2d not in kinds
    kinds = {type(m) for m in modern.modules()}
    assert nn.ReLU in kinds and nn.MaxPool2d in kinds and nn.Tanh not in kinds


def test_published_feature_map_sizes() -> None:
    model = get_model("lenet5").eval()
    x = torch.randn(1, 1, 32, 32)
    sizes = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.AvgPool2d)):
            sizes.append(tuple(x.shape[1:]))
    assert sizes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5)]
    assert isinstance(model.c5, nn.Conv2d) and model.c5.kernel_size == (5, 5)
    assert model.c5.out_channels == 120 and model.f6.out_features == 84
    assert model.forward_features(torch.randn(1, 1, 32, 32)).shape == (1, 120, 1, 1)


@pytest.mark.parametrize("size", [32, 33, 48, 100])
def test_any_input_of_at_least_32_pixels(size: int) -> None:
    model = get_model("lenet5", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, size, size)).shape == (3, 10)


def test_rgb_lenet() -> None:
    model = get_model("lenet5_relu", in_chans=3, num_classes=4)
    assert model.default_cfg.input_size == (3, 32, 32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
