"""Runtime helpers every workflow shares: device, seeds, threads, batch resizing, model outputs.

They sit below the workflows (train, evaluate, deploy, inspect) so that none of them reaches into
another for a helper: ``evaluate`` resolves a device the same way ``train`` does by importing this
module, not the training loop.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; asking for CUDA without one is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was requested but no CUDA GPU is available; use --device cpu or auto"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device '{name}'; valid devices: {', '.join(DEVICES)} (or cuda:N)")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch's intra-op work (``None``/0: torch's default)."""
    if threads:
        torch.set_num_threads(threads)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A float batch resized to ``size`` x ``size`` (bilinear, antialiased when shrinking)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def main_logits(output: Any) -> torch.Tensor:
    """The main logits of a model output (first element of an auxiliary-head tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def predict_logits(model: nn.Module, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every ``(x, y)`` batch of ``loader`` (model in eval mode), on the CPU."""
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(main_logits(model(x)).float().cpu())
        labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over the processes of a torchrun job (unchanged in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()
