"""The course's teaching networks: parameter counts and that they really learn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import get_model


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_simplecnn_has_the_parameters_its_layer_list_adds_up_to() -> None:
    # The course text says 421,066; its own per-layer list sums to 421,642 (see models/simple.py).
    per_layer = 288 + 32 + 18_432 + 64 + 401_408 + 128 + 1_280 + 10
    assert per_layer == 421_642
    assert _num_params(get_model("simplecnn", num_classes=10, in_chans=1)) == per_layer


def test_lenet_bn_parameter_count() -> None:
    assert _num_params(get_model("lenet_bn", num_classes=10, in_chans=3)) == 62_050


@pytest.mark.parametrize("name,size", [("simplecnn", 28), ("lenet_bn", 32), ("fastnet", 28)])
def test_larger_inputs_work(name: str, size: int) -> None:
    model = get_model(name, num_classes=5).eval()
    c = model.in_chans
    with torch.no_grad():
        assert model(torch.randn(2, c, size, size)).shape == (2, 5)
        assert model(torch.randn(2, c, size + 19, size + 5)).shape == (2, 5)


def test_simplecnn_overfits_two_batches(overfit) -> None:
    torch.manual_seed(0)
    model = get_model("simplecnn", num_classes=10, dropout=0.0)
    batches = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(2)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = overfit(model, batches, opt, 25)
    assert max(losses) < 0.02, losses


@pytest.mark.parametrize("head_pool", [1, 3])
def test_fastnet_head_pool_parameters_and_sizes(head_pool: int) -> None:
    w = 32
    convs = 1 * w * 9 + w * 2 * w * 9 + 2 * w * 4 * w * 9
    bns = 2 * (w + 2 * w + 4 * w)
    fc = 4 * w * head_pool**2 * 10 + 10
    model = get_model("fastnet", num_classes=10, width=w, head_pool=head_pool).eval()
    assert _num_params(model) == convs + bns + fc
    assert model.num_features == 4 * w * head_pool**2
    with torch.no_grad():  # down to the 8 px progressive resizing starts from
        for size in (8, 16, 28, 40):
            assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
        feats = model.forward_head(model.forward_features(torch.randn(2, 1, 28, 28)), True)
    assert feats.shape == (2, model.num_features)


def test_fastnet_rejects_a_zero_head_pool() -> None:
    with pytest.raises(ValueError, match="head_pool"):
        get_model("fastnet", head_pool=0)


def test_fastnet_full_resolution_stem_keeps_parameters_and_sizes() -> None:
    strided = get_model("fastnet", width=8, head_pool=3)
    full = get_model("fastnet", width=8, head_pool=3, stem_stride=1).eval()
    assert _num_params(full) == _num_params(strided)
    with torch.no_grad():
        assert full(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        assert full.forward_features(torch.randn(1, 1, 28, 28)).shape[-1] == 7  # 28 → 14 → 7
    with pytest.raises(ValueError, match="stem_stride"):
        get_model("fastnet", stem_stride=3)


def test_fastnet_speed_run_options() -> None:
    plain = get_model("fastnet", width=8)
    white = get_model("fastnet", width=8, whiten=True, bn_scale=False)
    # the whitening stem has no parameters; no BatchNorm has a learnt scale
    stem_params = 1 * 8 * 9 + 2 * 8  # conv 1->8 and its BatchNorm
    bn_scales = 8 + 16 + 32
    n = sum(p.numel() for p in plain.parameters())
    # at width 8 the second convolution keeps 8 inputs (2 signs x 2x2 patch = 8 channels)
    assert sum(p.numel() for p in white.parameters()) == n - stem_params - (bn_scales - 8)
    x = torch.randn(64, 1, 28, 28)
    white.init_from_data(x)  # fitted: the filters are no longer the identity basis
    w = white.features[0].weight
    assert not torch.equal(w[:4].flatten(1).abs().amax(1), torch.ones(4))
    assert white(x).shape == (64, 10)
    # dirac: each convolution starts as the identity on its first input channels
    d = get_model("fastnet", width=8, dirac=True)
    conv = d.features[3]
    assert isinstance(conv, torch.nn.Conv2d) and conv.in_channels == 8
    x8 = torch.randn(2, 8, 6, 6)
    y = conv(x8)
    torch.testing.assert_close(y[:, :8], x8)
    assert y.shape == (2, 16, 6, 6)
    with pytest.raises(ValueError, match="whiten_kernel"):
        get_model("fastnet", whiten=True, whiten_kernel=5)


def test_fastnet_depth_adds_same_width_layers_per_stage() -> None:
    w = 8
    base = get_model("fastnet", width=w, head_pool=3)
    deep = get_model("fastnet", width=w, head_pool=3, depth=3).eval()
    extra = 2 * (2 * w * 2 * w * 9 + 2 * 2 * w) + 2 * (4 * w * 4 * w * 9 + 2 * 4 * w)
    assert _num_params(deep) == _num_params(base) + extra
    convs = [m for m in deep.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [w, 2 * w, 2 * w, 2 * w, 4 * w, 4 * w, 4 * w]
    with torch.no_grad():
        assert deep(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # the default keeps the state-dict keys checkpoints were written with
    assert list(base.state_dict()) == list(
        get_model("fastnet", width=w, head_pool=3, depth=1).state_dict()
    )
    with pytest.raises(ValueError, match="depth"):
        get_model("fastnet", depth=0)


def test_fastnet_pool_first_runs_the_later_layers_at_a_quarter_of_the_positions() -> None:
    """airbench's block order: same parameters, but conv 2 of a stage sees the pooled map."""
    kw = {"width": 8, "depth": 2, "head_pool": 3, "whiten": True, "whiten_kernel": 3}
    late = get_model("fastnet", **kw).eval()
    early = get_model("fastnet", pool_first=True, **kw).eval()
    assert _num_params(early) == _num_params(late)

    def conv_input_sides(model: nn.Module) -> list[int]:
        sides: list[int] = []
        hooks = [
            m.register_forward_hook(lambda _m, inp, _out: sides.append(inp[0].shape[-1]))
            for m in model.features
            if isinstance(m, nn.Conv2d)
        ]
        with torch.no_grad():
            out = model(torch.randn(2, 1, 28, 28))
        for h in hooks:
            h.remove()
        assert out.shape == (2, 10)
        return sides

    assert conv_input_sides(late) == [14, 14, 7, 7]
    assert conv_input_sides(early) == [14, 7, 7, 3]
    # every BatchNorm after a stage's first convolution normalises the pooled map
    mods = list(early.features)
    first_convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)][::2]
    assert all(isinstance(mods[i + 1], nn.MaxPool2d) for i in first_convs)
