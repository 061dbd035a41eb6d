"""BatchNorm without a learnt scale: only the shift trains; it normalises like BatchNorm2d with
weight 1, and folds/loads like an ordinary BatchNorm."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.layers.bn_no_scale import BatchNormNoScale


def test_only_the_shift_is_a_parameter_and_it_matches_batchnorm_with_unit_scale():
    torch.manual_seed(0)
    bn = BatchNormNoScale(3)
    assert [n for n, _ in bn.named_parameters()] == ["bias"]
    assert isinstance(bn, nn.BatchNorm2d) and torch.equal(bn.weight, torch.ones(3))
    ref = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.bias.fill_(0.5)
        ref.bias.fill_(0.5)
    x = torch.randn(8, 3, 5, 5) * 4 + 2
    assert torch.allclose(bn(x), ref(x), atol=1e-6)
    opt = torch.optim.SGD(bn.parameters(), lr=1.0)
    bn(x).pow(2).mean().backward()
    opt.step()
    assert torch.equal(bn.weight, torch.ones(3))  # the scale never moves
    # the state dict has the usual keys, so checkpoints and BN folding see a plain BatchNorm
    assert set(bn.state_dict()) == set(ref.state_dict())
