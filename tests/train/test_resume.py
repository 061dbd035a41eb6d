"""A run killed with SIGKILL mid-epoch and resumed ends with the same metrics as an uninterrupted
one (CPU, same seed); --resume refuses directories without checkpoints and contradicting configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from tests.conftest import run_cli

from cnnlab.errors import ConfigError, RunError
from cnnlab.run import read_metrics
from cnnlab.train import fit, resume_config

# Dropout, EMA, Lookahead, a data-fitted whitening stem, flip+crop augmentation and a one-cycle
# schedule: every RNG and every piece of optimizer state has to come back for the resumed run to
# match.
CFG = dict(
    model="fastnet",
    model_kwargs={"width": 8, "dropout": 0.2, "whiten": True},
    lookahead_k=4,
    epochs=2,
    batch_size=64,
    optim={"name": "adamw", "lr": 3e-3, "weight_decay": 0.05},
    schedule={"name": "onecycle"},
    data={"augment": "flip,crop:2"},
    ema_decay=0.9,
    label_smoothing=0.1,
    progress=False,
    report=False,
    threads=1,
)
KILL_AT_STEP = 30  # 22 steps per epoch on digits at batch 64: the middle of epoch 2

KILLED_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from cnnlab.train import fit
    from cnnlab.train.callbacks import Callback
    from cnnlab.train.config import TrainConfig, from_dict
    import json

    class KillAt(Callback):
        def on_batch_end(self, state):
            if state.step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    fit(from_dict(TrainConfig, json.loads(sys.argv[1])), callbacks=[KillAt()])
    """
)


def _numbers(rows):
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
    return [{k: float(r[k]) for k in keys} for r in rows]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    cfg = {**CFG, "out_dir": str(tmp_path), "name": "killed"}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_SCRIPT, json.dumps(cfg), str(KILL_AT_STEP)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    killed = tmp_path / "killed"
    assert [r["epoch"] for r in read_metrics(killed / "metrics.csv")] == ["1"]

    res = run_cli("train", "--resume", str(killed))
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stdout

    from cnnlab.train.config import TrainConfig, from_dict

    ref = fit(from_dict(TrainConfig, {**cfg, "name": "reference"}))
    got = _numbers(read_metrics(killed / "metrics.csv"))
    want = _numbers(read_metrics(ref.run_dir / "metrics.csv"))
    assert [r["epoch"] for r in got] == [1, 2]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-6, abs=1e-7)
    final = json.loads((killed / "config.json").read_text())["metrics"]
    assert final["test_acc"] == pytest.approx(ref.metrics["test_acc"], abs=1e-9)
    assert final["epoch"] == 2

    # eval on the resumed run agrees with its recorded metrics (the end-to-end invariant)
    ev = run_cli("eval", "--run", str(killed))
    assert ev.returncode == 0, ev.stderr
    assert float(ev.stdout.split()[1]) == pytest.approx(final["test_acc"], abs=1e-4)


def test_resume_refuses_missing_checkpoint_and_contradicting_config(tmp_path, digits_small):
    from tests.train.conftest import tiny_cfg

    cfg = tiny_cfg(tmp_path, epochs=1, checkpoint=False)
    res = fit(cfg, splits=digits_small)
    with pytest.raises(RunError, match="no resumable checkpoint"):
        fit(resume_config(res.run_dir), splits=digits_small, resume=res.run_dir)

    cfg = tiny_cfg(tmp_path, name="ck", epochs=1)
    done = fit(cfg, splits=digits_small)
    with pytest.raises(ConfigError, match=r"optim.lr is 0.5 but the run was trained with 0.001"):
        fit(
            resume_config(done.run_dir, {"optim.lr": 0.5, "epochs": 2}),
            splits=digits_small,
            resume=done.run_dir,
        )
    with pytest.raises(RunError, match="already finished epoch 1 of 1"):
        fit(resume_config(done.run_dir), splits=digits_small, resume=done.run_dir)
    more = fit(resume_config(done.run_dir, {"epochs": 2}), splits=digits_small, resume=done.run_dir)
    assert [h["epoch"] for h in more.history] == [1, 2]


def test_resume_cli_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_cli("train", "--resume", str(tmp_path / "empty"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "config.json" in res.stderr
