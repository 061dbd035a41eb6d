"""Temperature scaling: recovers a known over-confidence and lowers held-out NLL; saved with the run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cnnlab.evaluate.calibration import (
    calibration_summary,
    fit_temperature,
    nll,
    stratified_folds,
)


def _overconfident(n=4000, k=10, scale=4.0, seed=0):
    """Labels drawn from softmax(z) (so z is perfectly calibrated) and logits scale * z."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 1.5
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    return z * scale, y


def test_temperature_recovers_overconfidence_and_lowers_validation_nll():
    logits, y = _overconfident(scale=4.0)
    fit_idx, val_idx = torch.arange(0, 2000), torch.arange(2000, 4000)
    t = fit_temperature(logits[fit_idx], y[fit_idx])
    assert t == pytest.approx(4.0, rel=0.15)
    before = nll(logits[val_idx], y[val_idx])
    after = nll(logits[val_idx], y[val_idx], t)
    assert after < before - 0.1
    # dividing by T never changes a prediction
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def test_temperature_of_a_calibrated_model_is_about_one():
    logits, y = _overconfident(scale=1.0, seed=3)
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.12)


def test_nll_matches_torch_cross_entropy():
    logits, y = _overconfident(n=50, scale=2.0)
    expected = torch.nn.functional.cross_entropy(logits.double() / 1.7, y).item()
    assert nll(logits, y, 1.7) == pytest.approx(expected, rel=1e-9)


def test_stratified_folds_partition_every_class():
    y = np.array([0] * 7 + [1] * 5 + [2] * 2)
    folds = stratified_folds(y, 2, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(y)))
    for c in (0, 1, 2):
        counts = [int((y[f] == c).sum()) for f in folds]
        assert abs(counts[0] - counts[1]) <= 1
    assert [f.tolist() for f in folds] == [f.tolist() for f in stratified_folds(y, 2, seed=1)]


def test_summary_cross_fitted_after_is_better_for_overconfident():
    logits, y = _overconfident(n=2000, scale=3.0)
    s = calibration_summary(logits, y)
    assert s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"]
    assert len(s["fold_temperatures"]) == 2


def test_evaluate_run_saves_temperature_into_config(digits_run, tmp_path):
    from cnnlab.evaluate.run_eval import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    res = evaluate_run(run, device="cpu", write_plots=False, latency=False, calibrate=True)
    cfg = json.loads((run / "config.json").read_text())
    t = cfg["calibration"]["temperature"]
    assert t == pytest.approx(res.calibration["temperature"]) and 0.05 < t < 20
    assert cfg["calibration"]["fitted_on"]["split"] == "test"
    # config.json stays a valid run config and the test accuracy invariant still holds
    assert res.accuracy == pytest.approx(cfg["metrics"]["test_acc"], abs=1e-4)
