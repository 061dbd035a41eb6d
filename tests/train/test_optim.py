"""Optimizers, weight-decay groups, gradient accumulation and clipping through the real loop."""

from __future__ import annotations

import pytest
import torch
from tests.train.conftest import tiny_cfg
from torch import nn

from cnnlab.errors import UnknownNameError
from cnnlab.models import get_model
from cnnlab.train import fit
from cnnlab.train.config import OptimConfig
from cnnlab.train.optim import OPTIMIZERS, build_optimizer, param_groups
from cnnlab.train.sgd import SGD


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_steps(name):
    model = get_model("fastnet", width=4)
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.01, weight_decay=0.1, nesterov=True))
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    before = model.fc.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.fc.weight)


def test_sgd_nesterov_and_adamw_types():
    model = get_model("fastnet", width=4)
    sgd = build_optimizer(model, OptimConfig(name="sgd", nesterov=True, momentum=0.9))
    assert isinstance(sgd, SGD) and sgd.defaults["nesterov"]  # torch's update, no dynamo import
    assert isinstance(build_optimizer(model, OptimConfig(name="AdamW")), torch.optim.AdamW)


def test_no_weight_decay_on_norm_and_bias():
    model = get_model("fastnet", width=4)
    groups = param_groups(model, weight_decay=0.05, lr=0.1)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["param_names"]}
    plain = {n for g in groups if g["weight_decay"] == 0 for n in g["param_names"]}
    assert decayed == {"features.0.weight", "features.3.weight", "features.7.weight", "fc.weight"}
    assert "fc.bias" in plain and "features.1.weight" in plain  # BN scale
    assert decayed | plain == {n for n, _ in model.named_parameters()}


def test_unknown_optimizer_names_valid_ones():
    with pytest.raises(UnknownNameError) as exc:
        build_optimizer(nn.Linear(2, 2), OptimConfig(name="adamx"))
    msg = str(exc.value)
    assert "unknown optimizer 'adamx'" in msg and "adamw" in msg and "rmsprop" in msg


def _weights(res) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in res.model.state_dict().items()}


@pytest.mark.parametrize("optim", ["adam"])
def test_accumulating_4_micro_batches_equals_one_4x_batch(tmp_path, digits_small, optim):
    """BatchNorm-free SimpleCNN without dropout: 4 x 16 accumulated == one batch of 64."""
    common = dict(
        model="simplecnn",
        model_kwargs={"dropout": 0.0},
        epochs=1,
        optim={"name": optim, "lr": 0.05 if optim == "sgd" else 1e-3, "weight_decay": 1e-3},
        schedule={"name": "onecycle"},
        checkpoint=False,
    )
    big = fit(tiny_cfg(tmp_path, name="big", batch_size=64, **common), splits=digits_small)
    acc = fit(
        tiny_cfg(tmp_path, name="acc", batch_size=16, accum_steps=4, **common), splits=digits_small
    )
    plain = fit(tiny_cfg(tmp_path, name="plain", batch_size=16, **common), splits=digits_small)
    wb, wa, wp = _weights(big), _weights(acc), _weights(plain)
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], atol=2e-5, rtol=1e-4)
    assert any((wp[k] - wb[k]).abs().max() > 1e-3 for k in wb)  # the test can fail
    assert len(acc.history) == 1 and acc.history[0]["train_loss"] == pytest.approx(
        big.history[0]["train_loss"], rel=1e-5
    )


def test_grad_clip_bounds_the_update(tmp_path, digits_small):
    """With SGD (no momentum) and clip c, no single step moves the weights by more than lr * c."""
    from cnnlab.train.callbacks import Callback

    class Watch(Callback):
        def __init__(self):
            self.prev, self.max_step = None, 0.0

        def on_batch_end(self, state):
            flat = torch.cat([p.detach().flatten() for p in state.model.parameters()])
            if self.prev is not None:
                self.max_step = max(self.max_step, (flat - self.prev).norm().item())
            self.prev = flat.clone()

    w = Watch()
    fit(
        tiny_cfg(
            tmp_path,
            epochs=1,
            grad_clip=0.01,
            optim={"name": "sgd", "lr": 1.0, "momentum": 0.0},
            schedule={"name": "constant"},
            checkpoint=False,
        ),
        callbacks=[w],
        splits=digits_small,
    )
    assert 0 < w.max_step <= 0.01 + 1e-5
