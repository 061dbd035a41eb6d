"""The time-to-accuracy options of the engine: evaluation every k epochs, TTA in the epoch
evaluation, Lookahead, and data-fitted layers (the whitening stem) fitted before training."""

from __future__ import annotations

import pytest
from tests.train.conftest import tiny_cfg

from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.evaluate.tta import TTAModel
from cnnlab.run import load_checkpoint, read_metrics
from cnnlab.tasks import get_task
from cnnlab.train import fit


def test_eval_every_skips_test_metrics_but_always_scores_the_last_epoch(tmp_path, digits_small):
    res = fit(tiny_cfg(tmp_path, epochs=5, eval_every=2, monitor="test_acc"), splits=digits_small)
    evaluated = [h["epoch"] for h in res.history if "test_acc" in h]
    assert evaluated == [2, 4, 5]
    rows = read_metrics(res.run_dir / "metrics.csv")
    assert [r["test_acc"] != "" for r in rows] == [False, True, False, True, True]
    assert res.metrics["test_acc"] > 0


def test_tta_in_the_epoch_evaluation_scores_the_tta_ensemble(tmp_path, digits_small):
    res = fit(tiny_cfg(tmp_path, epochs=1, tta="flip,translate"), splits=digits_small)
    task = get_task("classification")
    from cnnlab.data import BatchLoader

    mean, std = digits_small.train.mean_std()
    loader = BatchLoader(digits_small.test, 512, mean=mean, std=std)
    expected = task.evaluate(TTAModel(res.model, "flip,translate"), loader)
    plain = task.evaluate(res.model, loader)
    assert res.metrics["test_acc"] == pytest.approx(expected["test_acc"])
    assert res.metrics["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-4)
    assert res.metrics["test_loss"] != pytest.approx(plain["test_loss"], rel=1e-4)


def test_whitening_stem_is_fitted_to_the_training_data_and_lookahead_trains(tmp_path, digits_small):
    cfg = tiny_cfg(
        tmp_path, epochs=2, model_kwargs={"width": 8, "whiten": True}, lookahead_k=3, report=False
    )
    res = fit(cfg, splits=digits_small)
    stem = res.model.features[0]
    # fitted: not the identity basis an unfitted layer starts from
    assert stem.weight[:4].flatten(1).abs().amax(1).tolist() != [1.0] * 4
    # the Lookahead state is checkpointed for --resume (the SIGKILL resume test uses it too)
    _, ck = load_checkpoint(res.run_dir)
    steps = 2 * (len(digits_small.train) // 32)
    assert ck["step"] == steps and ck["lookahead"]["steps"] == steps
    assert len(ck["lookahead"]["slow"]) == len(list(res.model.parameters()))


@pytest.mark.parametrize(
    "kw,err,needle",
    [
        ({"eval_every": 0}, ConfigError, "eval_every"),
        ({"lookahead_k": -1}, ConfigError, "lookahead"),
        ({"lookahead_k": 5, "lookahead_alpha": 1.5}, ConfigError, "lookahead_alpha"),
        ({"tta": "flip,wobble"}, UnknownNameError, "shift_ul"),
    ],
)
def test_bad_speed_options_are_one_line_errors(tmp_path, digits_small, kw, err, needle):
    with pytest.raises(err, match=needle) as exc:
        fit(tiny_cfg(tmp_path, **kw), splits=digits_small)
    assert "\n" not in str(exc.value)


def test_data_loads_in_a_worker_while_dynamo_imports_and_errors_still_surface(tmp_path):
    import sys

    from cnnlab.errors import DataError
    from cnnlab.train.setup import prepare_data_overlapped

    splits = prepare_data_overlapped(tiny_cfg(tmp_path, data={"name": "digits"}))
    assert len(splits.train) > 1000 and "torch._dynamo" in sys.modules
    bad = tiny_cfg(tmp_path, data={"name": "imagefolder", "data_dir": str(tmp_path / "none")})
    with pytest.raises(DataError):
        prepare_data_overlapped(bad)
