import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlab.errors import ConfigError, InputShapeError
from cnnlab.inspect import (
    batchnorm_params,
    compare_5x5_vs_two_3x3,
    compare_inception_naive_vs_reduced,
    compare_standard_vs_separable,
    conv_params,
    depthwise_separable_params,
    linear_params,
    output_size,
    padding_for,
    parse_input_size,
    same_padding,
)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 20),
    k=st.integers(1, 5),
    s=st.integers(1, 3),
    p=st.integers(0, 2),
    d=st.integers(1, 3),
    kind=st.sampled_from(["conv", "maxpool", "avgpool", "convT"]),
    ceil=st.booleans(),
)
def test_output_size_matches_modules(n, k, s, p, d, kind, ceil):
    x = torch.zeros(1, 1, n, n)
    if kind == "convT":
        mod = nn.ConvTranspose2d(1, 1, k, s, p, dilation=d)
        if (n - 1) * s - 2 * p + d * (k - 1) + 1 < 1:
            with pytest.raises(InputShapeError):
                output_size(n, k, s, p, d, transposed=True)
            return
        assert output_size(n, k, s, p, d, transposed=True) == mod(x).shape[-1]
        return
    if kind != "conv" and p > k // 2:
        return  # torch refuses pooling padding over half the kernel
    if kind == "avgpool":
        d = 1
    mod = {
        "conv": lambda: nn.Conv2d(1, 1, k, s, p, d),
        "maxpool": lambda: nn.MaxPool2d(k, s, p, d, ceil_mode=ceil),
        "avgpool": lambda: nn.AvgPool2d(k, s, p, ceil_mode=ceil),
    }[kind]()
    ceil = ceil and kind != "conv"
    if d * (k - 1) + 1 > n + 2 * p:
        with pytest.raises(InputShapeError, match="larger than the padded input"):
            output_size(n, k, s, p, d, ceil_mode=ceil)
        return
    assert output_size(n, k, s, p, d, ceil_mode=ceil) == mod(x).shape[-1]


@pytest.mark.parametrize("k,d", [(1, 1), (3, 1), (3, 2), (5, 1), (4, 1), (2, 3)])
def test_same_padding_keeps_size(k, d):
    conv = nn.Conv2d(1, 1, k, padding="same", dilation=d)
    assert (
        output_size(11, k, padding="same", dilation=d)
        == conv(torch.zeros(1, 1, 11, 11)).shape[-1]
        == 11
    )
    before, after = same_padding(k, d)
    assert before + after == d * (k - 1)
    assert padding_for("full", k, d) == d * (k - 1) and padding_for("valid", k) == 0


def test_bad_padding_and_input_size_messages():
    with pytest.raises(ConfigError, match="valid, same, full"):
        padding_for("sam", 3)
    for bad in ["3x224", "3x224x", "axbxc", "0x2x2", ""]:
        with pytest.raises(ConfigError, match="CxHxW"):
            parse_input_size(bad)
    assert parse_input_size("3x224x224") == (3, 224, 224)


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "cin,cout,k,g,bias", [(3, 64, 3, 1, True), (32, 32, 3, 32, False), (8, 16, (1, 7), 2, True)]
)
def test_param_formulas_match_numel(cin, cout, k, g, bias):
    assert conv_params(cin, cout, k, g, bias) == _n(nn.Conv2d(cin, cout, k, groups=g, bias=bias))
    sep = nn.Sequential(nn.Conv2d(cin, cin, 3, groups=cin), nn.Conv2d(cin, cout, 1))
    assert depthwise_separable_params(cin, cout, 3) == _n(sep)
    assert linear_params(cin, cout) == _n(nn.Linear(cin, cout))
    assert batchnorm_params(cout) == _n(nn.BatchNorm2d(cout))


def test_comparisons_are_data():
    c = compare_5x5_vs_two_3x3(64)
    assert (c.a_params, c.b_params) == (25 * 64 * 64, 18 * 64 * 64)
    assert c.saving == pytest.approx(0.28)
    s = compare_standard_vs_separable(32, 64)
    assert s.b_params / s.a_params == pytest.approx(1 / 64 + 1 / 9)
    i = compare_inception_naive_vs_reduced()
    assert (i.a_params, i.b_params) == (387_296, 163_696)
    assert i.to_dict()["b"]["params"] == 163_696
