"""Early stopping, the NaN guard, EMA, TensorBoard, progressive resizing and the run summary."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.train.conftest import tiny_cfg

from cnnlab.run import read_metrics
from cnnlab.train import fit
from cnnlab.train.callbacks import Callback, EarlyStopping, TrainState
from cnnlab.train.config import DataConfig
from cnnlab.train.loop import TrainingDiverged
from cnnlab.train.schedules import size_for_epoch


def _state() -> TrainState:
    return TrainState(None, None, None, None, torch.device("cpu"))  # type: ignore[arg-type]


def test_early_stopping_patience_and_min_delta():
    es, st = EarlyStopping("test_acc", patience=2, min_delta=0.01), _state()
    for epoch, acc in enumerate([0.50, 0.60, 0.605, 0.609], 1):  # +0.005, +0.009: not enough
        es.on_epoch_end(st, {"epoch": epoch, "test_acc": acc})
    assert st.stop and "did not improve" in st.stop_reason and es.best == 0.60

    es, st = EarlyStopping("test_loss", patience=2), _state()
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.85, 0.86], 1):  # a loss: lower is better
        es.on_epoch_end(st, {"epoch": epoch, "test_loss": loss})
    assert not st.stop and es.best == 0.85 and es.bad_epochs == 1


def test_early_stopping_ends_fit(tmp_path, digits_small):
    """min_delta 1.0 can never be met: the run stops after 1 + patience epochs."""
    res = fit(
        tiny_cfg(tmp_path, epochs=6, patience=2, min_delta=1.0, checkpoint=False),
        splits=digits_small,
    )
    assert len(res.history) == 3
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and "early stopping" in summary["stop_reason"]
    assert summary["epochs_run"] == 3 and summary["best"]["metric"] == "test_acc"
    assert len(read_metrics(res.run_dir / "metrics.csv")) == 3


class Poison(Callback):
    """Make the weights NaN at a given optimizer step (a stand-in for a diverging run)."""

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, state):
        if state.step == self.step:
            with torch.no_grad():
                next(state.model.parameters()).fill_(math.nan)


def test_nan_guard_stops_with_message_and_keeps_last_good_epoch(tmp_path, digits_small):
    cfg = tiny_cfg(tmp_path, epochs=3)
    steps = len(digits_small.train) // cfg.batch_size
    with pytest.raises(TrainingDiverged) as exc:
        fit(cfg, callbacks=[Poison(steps + 3)], splits=digits_small)  # in the 2nd epoch
    msg = str(exc.value)
    assert "became nan at epoch 2" in msg and "kept the last good epoch" in msg
    assert "\n" not in msg
    run = tmp_path / "t"
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1"]
    cfg_json = json.loads((run / "config.json").read_text())
    assert cfg_json["metrics"]["epoch"] == 1
    from cnnlab.train import load_model_from_run

    model, _ = load_model_from_run(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    from cnnlab.run import load_checkpoint

    _, state = load_checkpoint(run)
    assert state["epoch"] == 1


def test_ema_weights_are_evaluated_and_saved(tmp_path, digits_small):
    res = fit(tiny_cfg(tmp_path, epochs=1, ema_decay=0.5), splits=digits_small)
    from cnnlab.run import load_checkpoint
    from cnnlab.train import load_model_from_run

    saved, _ = load_model_from_run(res.run_dir)
    raw, _ = load_checkpoint(res.run_dir)
    ema_w = saved.state_dict()["fc.weight"]
    assert torch.equal(ema_w, res.model.state_dict()["fc.weight"])
    assert not torch.equal(ema_w, raw["fc.weight"])  # the last checkpoint holds the raw weights


def test_tensorboard_event_files(tmp_path, digits_small):
    pytest.importorskip("tensorboard")
    res = fit(tiny_cfg(tmp_path, epochs=1, tensorboard=True), splits=digits_small)
    events = list((res.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100


def test_progressive_resizing_sizes_per_epoch(tmp_path, digits_small):
    d = DataConfig(sizes=(16, 20, 28), size_epochs=(1, 1, 2))
    assert [size_for_epoch(d, e, 4) for e in range(4)] == [16, 20, 28, 28]
    even = DataConfig(sizes=(16, 28))
    assert [size_for_epoch(even, e, 5) for e in range(5)] == [16, 16, 28, 28, 28]

    shapes: list[tuple[int, ...]] = []

    class Shape(Callback):
        def on_train_start(self, state):
            state.model.register_forward_pre_hook(
                lambda m, a: shapes.append(tuple(a[0].shape[-2:])) if m.training else None
            )

    fit(
        tiny_cfg(tmp_path, epochs=2, data={"sizes": [32, 28], "augment": "flip"}),
        callbacks=[Shape()],
        splits=digits_small,
    )
    assert shapes[0] == (32, 32) and shapes[-1] == (28, 28)


def test_sizes_below_the_models_minimum_fail_before_training(tmp_path, digits_small):
    from cnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"needs inputs of at least 28x28; drop 16"):
        fit(
            tiny_cfg(tmp_path, model="simplecnn", model_kwargs={}, data={"sizes": [16, 28]}),
            splits=digits_small,
        )
    with pytest.raises(ConfigError, match=r"needs inputs of at least 8x8; drop 6"):
        fit(tiny_cfg(tmp_path, data={"sizes": [6, 28]}), splits=digits_small)


def test_class_weights_are_inverse_frequency(tmp_path, digits_small):
    from cnnlab.tasks.classification import inverse_frequency_weights

    ds = digits_small.train.subset(torch.cat([torch.arange(300), torch.arange(300, 310)]))
    w = inverse_frequency_weights(ds)
    counts = torch.tensor(ds.class_counts(), dtype=torch.float32).clamp_min(1)
    assert torch.allclose(w * counts, torch.full_like(w, len(ds) / len(counts)))
    res = fit(
        tiny_cfg(tmp_path, epochs=1, data={"class_weights": True}, checkpoint=False),
        splits=digits_small,
    )
    assert math.isfinite(res.metrics["train_loss"])


@pytest.mark.slow
def test_torch_compile_trains(tmp_path, digits_small):
    res = fit(tiny_cfg(tmp_path, epochs=1, compile=True), splits=digits_small)
    assert math.isfinite(res.metrics["train_loss"])
    from cnnlab.train import load_model_from_run

    load_model_from_run(res.run_dir)  # weights saved without the _orig_mod. prefix
