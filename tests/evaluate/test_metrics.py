"""Metrics against scikit-learn on fixed inputs, and ECE on cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cnnlab.evaluate.metrics import (
    accuracy,
    averages,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    normalize_confusion,
    per_class_report,
    reliability_bins,
    top_k_accuracy,
    top_losses,
)

K = 6


@pytest.fixture(scope="module")
def fixed():
    rng = np.random.default_rng(1234)
    n = 500
    y = rng.integers(0, K, n)
    y[y == 5] = (
        4  # class 5 never occurs: precision/recall undefined → 0 like sklearn's zero_division=0
    )
    logits = rng.normal(size=(n, K)) + 2.0 * np.eye(K)[y] * rng.random((n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_confusion_and_accuracy_match_sklearn(fixed):
    y, p = fixed
    pred = p.argmax(1)
    cm = confusion_matrix(y, pred, K)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=range(K)))
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    np.testing.assert_allclose(
        normalize_confusion(cm),
        np.nan_to_num(skm.confusion_matrix(y, pred, labels=range(K), normalize="true")),
    )


def test_per_class_and_averages_match_sklearn(fixed):
    y, p = fixed
    pred = p.argmax(1)
    pc = per_class_report(confusion_matrix(y, pred, K))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(
        y, pred, labels=range(K), zero_division=0
    )
    np.testing.assert_allclose(pc["precision"], prec)
    np.testing.assert_allclose(pc["recall"], rec)
    np.testing.assert_allclose(pc["f1"], f1)
    np.testing.assert_array_equal(pc["support"], sup)
    av = averages(pc)
    for avg in ("macro", "weighted"):
        p_, r_, f_, _ = skm.precision_recall_fscore_support(
            y, pred, labels=range(K), average=avg, zero_division=0
        )
        assert av[avg]["precision"] == pytest.approx(p_)
        assert av[avg]["recall"] == pytest.approx(r_)
        assert av[avg]["f1"] == pytest.approx(f_)
        assert av[avg]["support"] == len(y)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_matches_sklearn(fixed, k):
    y, p = fixed
    assert top_k_accuracy(y, p, k) == pytest.approx(
        skm.top_k_accuracy_score(y, p, k=k, labels=range(K))
    )


def test_log_loss_matches_sklearn(fixed):
    y, p = fixed
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=range(K)), rel=1e-9)


def test_ece_zero_when_confidence_equals_accuracy():
    # 10 samples at confidence 0.8, 8 of them right: perfectly calibrated.
    y = np.array([0] * 8 + [1] * 2)
    p = np.tile([0.8, 0.2], (10, 1))
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.0)


def test_ece_known_value_two_bins():
    # bin (0.8, 0.9]: 4 samples at 0.9 confidence, 2 right → gap 0.4
    # bin (0.5, 0.6]: 6 samples at 0.6 confidence, 6 right → gap 0.4
    # ECE = (4 * 0.4 + 6 * 0.4) / 10 = 0.4
    y = np.array([0, 0, 1, 1] + [0] * 6)
    p = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 6)
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.4)
    # one right, one wrong at confidence 1.0 → gap 0.5; and a bin edge lands in the lower bin
    assert expected_calibration_error([0, 1], [[1.0, 0.0], [1.0, 0.0]], n_bins=10) == pytest.approx(
        0.5
    )


def test_reliability_bins_are_right_closed():
    b = reliability_bins([0, 0, 0], [[0.5, 0.5], [0.55, 0.45], [1.0, 0.0]], n_bins=10)
    assert b.counts[4] == 1 and b.counts[5] == 1 and b.counts[9] == 1 and b.counts.sum() == 3
    assert np.isnan(b.accuracy[0])


def test_top_losses_are_most_confident_mistakes():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array(
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.95, 0.03, 0.02], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]]
    )
    np.testing.assert_array_equal(top_losses(y, p, 5), [2, 1])
    np.testing.assert_array_equal(top_losses(y, p, 1), [2])
