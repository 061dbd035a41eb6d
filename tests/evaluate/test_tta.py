"""Test-time augmentation on batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import UnknownNameError
from cnnlab.evaluate.tta import PRESETS, predict_tta, resolve_views


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 5)
    )


def test_identity_view_equals_no_tta():
    m, x = _model(), torch.randn(7, 1, 12, 12)
    plain = torch.softmax(m(x), 1)
    for views in ("none", "identity", ["identity"]):
        torch.testing.assert_close(predict_tta(m, x, views), plain)


def test_flip_averages_the_two_views():
    m, x = _model(), torch.randn(7, 1, 12, 12)
    expected = (torch.softmax(m(x), 1) + torch.softmax(m(x.flip(-1)), 1)) / 2
    torch.testing.assert_close(predict_tta(m, x, "flip"), expected)
    torch.testing.assert_close(predict_tta(m, x, "identity,hflip"), expected)


def test_every_preset_runs_on_batches_and_gives_distributions():
    m, x = _model(), torch.randn(5, 1, 12, 12)
    for preset in PRESETS:
        p = predict_tta(m, x, preset)
        assert p.shape == (5, 5)
        torch.testing.assert_close(p.sum(1), torch.ones(5))


def test_callable_views_and_unknown_names():
    m, x = _model(), torch.randn(3, 1, 12, 12)
    torch.testing.assert_close(predict_tta(m, x, [lambda t: t]), predict_tta(m, x, "none"))
    with pytest.raises(UnknownNameError, match="flip"):
        resolve_views("flipp")


def test_tuple_output_models_use_main_logits():
    class Aux(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.sum((2, 3))

    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(predict_tta(Aux(), x, "none"), torch.softmax(x.mean((2, 3)), 1))
