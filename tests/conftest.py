"""Shared fixtures: a tiny trained run on the embedded digits, built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# pytest runs with 2 xdist workers on 2 cores: one intra-op thread each avoids oversubscription, which
# made small-tensor tests 10-20x slower (measured by the models tests on a loaded machine).
torch.set_num_threads(1)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real ``cnnlab`` entry point (``python -m cnnlab``) and capture its output."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A SimpleCNN trained for 2 short epochs on digits (through the Python API)."""
    from cnnlab.train import TrainConfig, fit

    out = tmp_path_factory.mktemp("runs")
    res = fit(
        TrainConfig(
            model="simplecnn",
            epochs=2,
            batch_size=64,
            out_dir=str(out),
            name="digits-simplecnn",
            progress=False,
        )
    )
    return res.run_dir
