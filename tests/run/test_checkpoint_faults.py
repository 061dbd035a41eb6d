"""Faults injected into real runs: a kill mid-publish, flipped bytes, empty and missing files, a
read-only disk. Each must end in a verified checkpoint (and a bit-identical resumed run) or a
one-line error — never training on damaged state."""

from __future__ import annotations

import errno
import json

import pytest
from tests.train.conftest import tiny_cfg

from cnnlab.errors import RunError
from cnnlab.run import checkpoint as ck_mod
from cnnlab.run import list_checkpoints, load_checkpoint, load_model_from_run, read_metrics
from cnnlab.train import fit, resume_config


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it in the process runs (not even except-Exception)."""


def _rows(run):
    return [(r["epoch"], r["train_loss"], r["test_acc"]) for r in read_metrics(run / "metrics.csv")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_small):
    """An uninterrupted 3-epoch run to compare resumed runs with."""
    res = fit(tiny_cfg(tmp_path_factory.mktemp("ref"), epochs=3), splits=digits_small)
    return _rows(res.run_dir)


def test_kill_at_the_publishing_rename_resumes_from_the_last_good_checkpoint(
    tmp_path, digits_small, reference, monkeypatch
):
    real_rename = ck_mod.os.rename

    def rename(src, dst):
        if str(dst).endswith("last-0002"):
            raise Killed
        return real_rename(src, dst)

    monkeypatch.setattr(ck_mod.os, "rename", rename)
    with pytest.raises(Killed):
        fit(tiny_cfg(tmp_path, epochs=3), splits=digits_small)
    monkeypatch.setattr(ck_mod.os, "rename", real_rename)
    run = tmp_path / "t"
    stray = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert stray  # the kill left a half-published directory behind
    assert [r.path.name for r in list_checkpoints(run, "last")] == ["last-0001"]
    fit(resume_config(run), splits=digits_small, resume=run)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert _rows(run) == reference  # bit-identical to the run that was never killed


@pytest.mark.parametrize("victim", ["model.safetensors", "state.pt"])
def test_flipped_bytes_are_detected_and_the_previous_checkpoint_used(
    tmp_path, digits_small, reference, capsys, victim
):
    class Stop(BaseException):
        pass

    from cnnlab.train import Callback

    class StopAt3(Callback):
        def on_epoch_start(self, state):
            if state.epoch == 2:
                raise Stop

    with pytest.raises(Stop):
        fit(tiny_cfg(tmp_path, epochs=3), [StopAt3()], splits=digits_small)
    run = tmp_path / "t"
    path = run / "checkpoints" / "last-0002" / victim
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))
    capsys.readouterr()
    fit(resume_config(run), splits=digits_small, resume=run)
    err = capsys.readouterr().err
    assert "using epoch 1 (last-0001)" in err and f"last-0002/{victim} is damaged" in err
    assert _rows(run) == reference  # epoch 2 recomputed from epoch 1: the same numbers


@pytest.mark.parametrize("fault", ["zero-byte", "missing"])
def test_an_empty_or_missing_last_falls_back_to_best(tmp_path, digits_small, fault):
    res = fit(tiny_cfg(tmp_path, epochs=2), splits=digits_small)
    for ref in list_checkpoints(res.run_dir, "last"):
        if fault == "zero-byte":
            (ref.path / "state.pt").write_bytes(b"")
        else:
            for f in ref.path.iterdir():
                f.unlink()
            ref.path.rmdir()
    weights, state = load_checkpoint(res.run_dir)
    best = json.loads((res.run_dir / "summary.json").read_text())["best"]["epoch"]
    assert state["epoch"] == best and "best" in state["fallback"]
    assert ("there is no last checkpoint" in state["fallback"]) == (fault == "missing")


def test_a_read_only_disk_mid_run_is_one_line_and_keeps_the_last_good_checkpoint(
    tmp_path, digits_small, monkeypatch
):
    real = ck_mod._write_synced
    calls = {"n": 0}

    def write(path, data):
        if "last-0002" in str(path):
            raise OSError(errno.EROFS, "Read-only file system")
        calls["n"] += 1
        return real(path, data)

    monkeypatch.setattr(ck_mod, "_write_synced", write)
    with pytest.raises(RunError) as exc:
        fit(tiny_cfg(tmp_path, epochs=2), splits=digits_small)
    msg = str(exc.value)
    assert "\n" not in msg and "Read-only file system" in msg and "kept last-0001" in msg
    run = tmp_path / "t"
    assert [r.path.name for r in list_checkpoints(run, "last")] == ["last-0001"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    _, state = load_checkpoint(run)
    assert state["epoch"] == 1 and not state["fallback"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"


def test_damaged_model_weights_fall_back_to_the_best_checkpoint(tmp_path, digits_small, capsys):
    res = fit(tiny_cfg(tmp_path, epochs=2), splits=digits_small)
    path = res.run_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x55
    path.write_bytes(bytes(data))
    model, _ = load_model_from_run(res.run_dir)
    err = capsys.readouterr().err
    assert "model.safetensors is damaged" in err and "best-" in err
    best_w, _ = load_checkpoint(res.run_dir, "best")
    assert all((model.state_dict()[k] == v).all() for k, v in best_w.items())
