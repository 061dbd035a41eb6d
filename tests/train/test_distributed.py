"""Two DDP processes on CPU (gloo, 127.0.0.1) train, write one run directory, and resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from cnnlab.run import read_metrics
from cnnlab.train.distributed import eval_shard, shard_indices


def test_shards_are_disjoint_equal_and_change_per_epoch():
    a, b = shard_indices(101, 0, 2, seed=3, epoch=0), shard_indices(101, 1, 2, seed=3, epoch=0)
    assert len(a) == len(b) == 50 and not set(a.tolist()) & set(b.tolist())
    assert not torch.equal(a, shard_indices(101, 0, 2, seed=3, epoch=1))
    assert torch.equal(a, shard_indices(101, 0, 2, seed=3, epoch=0))  # a pure function
    e0, e1 = eval_shard(101, 0, 2), eval_shard(101, 1, 2)
    assert sorted(e0.tolist() + e1.tolist()) == list(range(101))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "cnnlab",
        "train",
        *args,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_two_process_ddp_trains_and_resumes(tmp_path):
    common = ["--no-progress", "--threads", "1", "--report", "false"]
    res = _torchrun(
        "--model",
        "fastnet",
        "--model_kwargs.width",
        "8",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--name",
        "ddp",
        "--out-dir",
        str(tmp_path),
        *common,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "ddp"
    assert res.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # one run directory, not one per rank
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 1437 // 64

    res = _torchrun("--resume", str(run), "--epochs", "2", *common, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["test_acc"]) > 0.3  # it kept learning from the checkpoint
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["metrics"]["epoch"] == 2 and cfg["train_config"]["epochs"] == 2

    # eval (one process) agrees with the metrics the two ranks reduced
    from tests.conftest import run_cli

    ev = run_cli("eval", "--run", str(run))
    assert ev.returncode == 0, ev.stderr
    assert float(ev.stdout.split()[1]) == pytest.approx(cfg["metrics"]["test_acc"], abs=1e-4)
