"""Shared settings for the model tests.

The tests run small tensors through many models; on a shared 2-core machine torch's intra-op thread
pool costs more in synchronisation than it gains (measured: resnet18 forward+backward at 32 px takes
0.07 s on one thread and 1.6 s on two under load), so these tests use one thread.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
