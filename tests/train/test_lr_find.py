"""The LR range test: exponential LR sweep, divergence stop, steepest-descent suggestion."""

from __future__ import annotations

import math

import pytest
from tests.train.conftest import tiny_cfg

from cnnlab.errors import ConfigError
from cnnlab.train.lr_find import lr_find, plot_lr_find, suggest_lr


def test_suggestion_is_steepest_descent_before_the_minimum():
    lrs = [10 ** (-6 + i * 0.5) for i in range(11)]
    losses = [2.3, 2.3, 2.29, 2.2, 1.8, 1.0, 0.8, 0.7, 0.9, 3.0, 9.0]
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[4])


def test_range_test_on_digits(tmp_path, digits_small):
    res = lr_find(tiny_cfg(tmp_path, optim={"name": "adamw"}), num_steps=60, splits=digits_small)
    assert res.lrs[0] == pytest.approx(1e-7)
    assert all(b > a for a, b in zip(res.lrs, res.lrs[1:]))
    assert 1e-6 < res.suggestion < 1.0 and math.isfinite(res.min_loss_lr)
    assert min(res.smoothed) < res.smoothed[0]  # the loss did go down somewhere
    assert plot_lr_find(res, tmp_path / "lr.png").stat().st_size > 1000


def test_bad_range_is_a_config_error(tmp_path, digits_small):
    with pytest.raises(ConfigError):
        lr_find(tiny_cfg(tmp_path), start_lr=1.0, end_lr=0.1, splits=digits_small)
