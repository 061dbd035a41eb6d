"""Shared settings for the model tests.

The tests run small tensors through many models; on a shared 2-core machine torch's intra-op thread
pool costs more in synchronisation than it gains (measured: resnet18 forward+backward at 32 px takes
0.07 s on one thread and 1.6 s on two under load), so these tests use one thread.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


def _overfit(model, batches, opt, epochs: int, eval_mode: bool = True) -> list[float]:
    """Train ``model`` on ``batches`` for ``epochs`` passes; the loss of each batch afterwards.

    ``eval_mode=False`` judges the losses with batch statistics (the loss being minimised), for
    BatchNorm models trained too few steps for their running averages to settle.
    """
    import torch.nn.functional as F

    model.train()
    for _ in range(epochs):
        for x, y in batches:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    if eval_mode:
        model.eval()
    with torch.no_grad():
        return [F.cross_entropy(model(x), y).item() for x, y in batches]


@pytest.fixture
def overfit():
    """The "can it memorise two batches" check the model tests share: ``overfit(model, batches,
    opt, epochs, eval_mode=True)`` → the per-batch losses after training."""
    return _overfit
