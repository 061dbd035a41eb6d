"""Stochastic depth: identity at eval, whole-sample drops in training, expectation preserved."""

from __future__ import annotations

import pytest
import torch

from cnnlab.layers.drop_path import DropPath, drop_path


def test_identity_in_eval_and_at_zero_probability():
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(drop_path(x, 0.7, training=False), x)
    assert torch.equal(DropPath(0.0)(x), x)
    m = DropPath(0.5).eval()
    assert torch.equal(m(x), x)


def test_row_mode_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(20000, 3, 2, 2)
    out = drop_path(x, 0.3, training=True, mode="row")
    per_sample = out.flatten(1)
    # Each sample is either all zero or all 1 / (1 - p).
    assert torch.all(
        (per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(1)
    )
    assert abs(out.mean().item() - 1.0) < 0.03
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.3) < 0.02


def test_batch_mode_drops_everything_or_nothing_and_p1_zeroes():
    x = torch.ones(8, 4)
    out = drop_path(x, 0.5, training=True, mode="batch")
    assert out.unique().numel() == 1
    assert torch.count_nonzero(drop_path(x, 1.0, training=True)) == 0


def test_gradients_flow_through_kept_samples():
    x = torch.randn(6, 3, requires_grad=True)
    drop_path(x, 0.5, training=True).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_invalid_probability_is_refused(p):
    with pytest.raises(ValueError, match="drop probability"):
        DropPath(p)
    with pytest.raises(ValueError, match="drop probability"):
        drop_path(torch.ones(2, 2), p)
