"""Lookahead averaging: every k steps the weights become slow + alpha * (fast - slow), the slow
weights follow, and the state round-trips for --resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.train.lookahead import Lookahead


def test_every_kth_step_pulls_the_weights_to_the_slow_average():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    la = Lookahead(model, k=3, alpha=0.5)
    start = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    for step in range(1, 7):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        fast = [p.detach().clone() for p in model.parameters()]
        la.update(model)
        if step % 3:  # between syncs the fast weights are left alone
            assert all(torch.equal(p, f) for p, f in zip(model.parameters(), fast))
            continue
        expected = [s + 0.5 * (f - s) for s, f in zip(start, fast)]
        for p, e, s in zip(model.parameters(), expected, la.slow):
            torch.testing.assert_close(p.detach(), e)
            torch.testing.assert_close(s, e)
        start = expected


def test_state_round_trip_and_bad_arguments():
    model = nn.Linear(3, 2)
    la = Lookahead(model, k=2)
    la.update(model)
    other = Lookahead(nn.Linear(3, 2), k=2)
    other.load_state_dict(la.state_dict())
    assert other.steps == 1
    assert all(torch.equal(a, b) for a, b in zip(other.slow, la.slow))
    with pytest.raises(ValueError, match="k >= 1"):
        Lookahead(model, k=0)
    with pytest.raises(ValueError, match="tensors"):
        Lookahead(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))).load_state_dict(la.state_dict())
