"""Test-time augmentation on batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import UnknownNameError
from cnnlab.evaluate.tta import PRESETS, VIEWS, TTAModel, predict_tta, resolve_views


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


def test_translate_views_shift_by_one_pixel_with_edge_fill_and_presets_combine():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    dr = VIEWS["shift_dr"](x)
    assert torch.equal(dr[0, 0, 1:, 1:], x[0, 0, :3, :3])  # content moved down-right
    assert torch.equal(dr[0, 0, 0, 1:], x[0, 0, 0, :3])  # the uncovered row repeats the edge
    ul = VIEWS["shift_ul"](x)
    assert torch.equal(ul[0, 0, :3, :3], x[0, 0, 1:, 1:])
    names = [n for n, _ in resolve_views("flip,translate")]
    assert names == ["identity", "hflip", "shift_ul", "shift_dr"]  # identity once


def test_tta_model_returns_log_of_the_averaged_probabilities():
    m, x = _model(), torch.randn(6, 1, 12, 12)
    wrapped = TTAModel(m, "flip,translate").eval()
    out = wrapped(x)
    torch.testing.assert_close(out.exp(), predict_tta(m, x, "flip,translate"), atol=1e-6, rtol=1e-5)
    # usable as logits: argmax is the TTA prediction, cross-entropy the TTA loss
    assert torch.equal(out.argmax(1), predict_tta(m, x, "flip,translate").argmax(1))
    with pytest.raises(UnknownNameError, match="translate"):
        TTAModel(m, "flip,wobble")
