"""Every schedule's shape at chosen steps, warm-up, and reduce-on-plateau bookkeeping."""

from __future__ import annotations

import math

import pytest

from cnnlab.errors import UnknownNameError
from cnnlab.train.config import ScheduleConfig
from cnnlab.train.schedules import SCHEDULES, PlateauTracker, lr_factor

SPE, TOTAL = 10, 100  # 10 steps per epoch, 10 epochs


def f(step: int, **kw) -> float:
    return lr_factor(ScheduleConfig(**kw), step, TOTAL, SPE)


def test_constant_and_cosine():
    assert [f(s, name="constant") for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert f(0, name="cosine") == pytest.approx(1.0)
    assert f(50, name="cosine") == pytest.approx(0.5)
    assert f(100, name="cosine") == pytest.approx(0.0, abs=1e-12)
    assert f(50, name="cosine", min_lr_ratio=0.1) == pytest.approx(0.55)


def test_step_and_multistep():
    kw = dict(name="step", step_size=3, gamma=0.1)
    assert [f(s, **kw) for s in (0, 29, 30, 59, 60)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    kw = dict(name="multistep", milestones=(2, 5), gamma=0.5)
    assert [f(s, **kw) for s in (19, 20, 49, 50, 99)] == pytest.approx([1, 0.5, 0.5, 0.25, 0.25])


def test_exponential_is_per_epoch_continuous():
    kw = dict(name="exponential", gamma=0.9)
    assert f(0, **kw) == 1.0
    assert f(10, **kw) == pytest.approx(0.9)
    assert f(25, **kw) == pytest.approx(0.9**2.5)


def test_cosine_restarts_periods_grow():
    kw = dict(name="cosine_restarts", restart_period=2, restart_mult=2)
    assert f(0, **kw) == pytest.approx(1.0)
    assert f(10, **kw) == pytest.approx(0.5)  # half of the first 2-epoch period
    assert f(20, **kw) == pytest.approx(1.0)  # restart; the next period lasts 4 epochs
    assert f(40, **kw) == pytest.approx(0.5)
    assert f(60, **kw) == pytest.approx(1.0)  # second restart


def test_onecycle_rises_then_anneals():
    kw = dict(name="onecycle", pct_start=0.25)
    vals = [f(s, **kw) for s in range(TOTAL)]
    peak = max(range(TOTAL), key=vals.__getitem__)
    assert peak == 25 and vals[25] == pytest.approx(1.0)
    assert vals[0] == pytest.approx(0.04)
    assert all(a <= b for a, b in zip(vals[:25], vals[1:26]))
    assert all(a >= b for a, b in zip(vals[25:], vals[26:]))
    assert vals[-1] < 0.001


@pytest.mark.parametrize("name", ["constant", "cosine", "step", "exponential", "multistep"])
def test_linear_warmup_then_schedule(name):
    kw = dict(name=name, warmup_epochs=2, milestones=(5,), step_size=5)
    warm = [f(s, **kw) for s in range(20)]
    assert warm == pytest.approx([(s + 1) / 20 for s in range(20)])
    assert f(20, **kw) == pytest.approx(1.0)  # the schedule starts after the warm-up


def test_plateau_uses_tracker_factor():
    t = PlateauTracker(factor=0.5, patience=1)
    got = [t.update(v) for v in (0.5, 0.6, 0.6, 0.6, 0.59, 0.7, 0.7)]
    assert got == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    assert lr_factor(ScheduleConfig(name="plateau"), 7, TOTAL, SPE, plateau_factor=0.25) == 0.25


def test_every_schedule_is_finite_and_positive_at_start():
    for name in SCHEDULES:
        v = lr_factor(ScheduleConfig(name=name), 0, TOTAL, SPE)
        assert math.isfinite(v) and v > 0, name


def test_unknown_schedule_names_valid_ones():
    with pytest.raises(UnknownNameError) as exc:
        f(0, name="cosin")
    msg = str(exc.value)
    assert "unknown schedule 'cosin'" in msg and "Did you mean: cosine" in msg and "onecycle" in msg
