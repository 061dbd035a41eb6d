"""Small, fast fixtures for the engine tests: a digits subset and a tiny-model config."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import DatasetSplits, load_dataset
from cnnlab.train import TrainConfig
from cnnlab.train.config import from_dict


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine is shared: one thread avoids oversubscription stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def digits_small() -> DatasetSplits:
    """400 training and 120 test digits (stratified by construction of the digits split)."""
    s = load_dataset("digits")
    return DatasetSplits(s.train.subset(torch.arange(400)), s.test.subset(torch.arange(120)))


def tiny_cfg(tmp_path, **kw) -> TrainConfig:
    """fastnet at width 8 (~6 k parameters), no progress output, no report; nested sections
    may be given as dicts (``optim={"name": "sgd"}``)."""
    base = dict(
        model="fastnet",
        model_kwargs={"width": 8},
        epochs=2,
        batch_size=32,
        out_dir=str(tmp_path),
        name="t",
        progress=False,
        report=False,
        threads=1,
    )
    base.update(kw)
    return from_dict(TrainConfig, base)
