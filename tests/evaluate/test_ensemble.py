"""Ensembles: mean, weighted and vote on hand-made probabilities; refusing mismatched members."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cnnlab.errors import DataError
from cnnlab.evaluate.ensemble import check_same_classes, combine, fit_weights

# three members, three samples, three classes
P = np.array(
    [
        [[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.4, 0.35, 0.25]],
        [[0.5, 0.4, 0.1], [0.3, 0.3, 0.4], [0.1, 0.2, 0.7]],
        [[0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.5, 0.2]],
    ]
)


def test_mean():
    np.testing.assert_allclose(combine(P, "mean"), P.mean(0))
    np.testing.assert_array_equal(combine(P, "mean").argmax(1), [1, 1, 2])


def test_vote_is_majority_with_mean_probability_tie_break():
    s = combine(P, "vote")
    # sample 0: votes 0,0,1 → 0; sample 1: votes 1,2,2 → 2; sample 2: votes 0,2,1 (a tie) →
    # the highest mean probability among the tied classes (class 2: 0.383)
    np.testing.assert_array_equal(s.argmax(1), [0, 2, 2])
    np.testing.assert_allclose(s.sum(1), 1.0)
    # the vote and the mean disagree on samples 0 and 1
    assert (combine(P, "mean").argmax(1)[:2] == [1, 1]).all()


def test_weighted():
    w = [2.0, 1.0, 1.0]
    np.testing.assert_allclose(combine(P, "weighted", w), 0.5 * P[0] + 0.25 * P[1] + 0.25 * P[2])
    with pytest.raises(ValueError):
        combine(P, "weighted", [1.0, -1.0, 0.0])


def test_fitted_weights_prefer_the_better_member():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    good = np.full((300, 4), 0.1)
    good[np.arange(300), y] = 0.7
    noise = rng.dirichlet(np.ones(4), 300)
    w = fit_weights(np.stack([noise, good]), y)
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.9


def test_members_with_different_classes_are_refused_naming_the_difference():
    with pytest.raises(DataError, match=r"runs/b lacks \['7'\] and adds \['x'\]"):
        check_same_classes([list("0123456789"), list("012345689x")], ["runs/a", "runs/b"])
    with pytest.raises(DataError, match="different order"):
        check_same_classes([["a", "b"], ["b", "a"]], ["runs/a", "runs/b"])


def test_evaluate_ensemble_of_identical_runs_equals_the_member(digits_run, tmp_path):
    from cnnlab.evaluate.run_eval import evaluate_ensemble

    copy = tmp_path / "copy"
    shutil.copytree(digits_run, copy)
    for method in ("mean", "vote", "weighted"):
        ens = evaluate_ensemble([digits_run, copy], method=method, device="cpu")
        assert ens.ensemble.accuracy == pytest.approx(ens.members[0].accuracy)
    assert ens.weights is not None and sum(ens.weights) == pytest.approx(1.0)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["classes"] = [*cfg["classes"][:-1], "nine"]
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=r"lacks \['9'\] and adds \['nine'\]"):
        evaluate_ensemble([digits_run, copy], device="cpu")
