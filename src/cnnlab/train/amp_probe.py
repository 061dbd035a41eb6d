"""Decide by measurement whether bf16 autocast speeds up training on this CPU.

CPUs differ: with AVX512-BF16/AMX, bf16 autocast made a training step ~2x faster for small CNNs; on
AVX2-only CPUs it is emulated and several times slower. So ``amp: auto`` on a CPU times a few real
training steps of the actual model in float32 and in bf16 and picks bf16 only when it is clearly faster.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from cnnlab.errors import UnknownNameError
from cnnlab.train.config import TrainConfig
from cnnlab.train.sgd import SGD

AMP_CHOICES = ("auto", "fastest", "off", "bf16", "fp16")


def cpu_bf16_supported() -> bool:
    """True when oneDNN reports native bf16 support (otherwise bf16 is emulated and slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _float_tensors(out: Any) -> list[torch.Tensor]:
    """Every floating-point tensor in a model output (a tensor, tuple, list or dict of them)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _float_tensors(o)]
    return []


def _step_time(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None, reps: int) -> float:
    opt = SGD(model.parameters(), lr=1e-6)  # cnnlab's: no torch._dynamo import at start-up
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            # a task-agnostic surrogate loss: logits, detection heads and mask logits alike get a
            # full backward pass, which is all the timing needs
            loss = sum(t.float().pow(2).mean() for t in _float_tensors(model(x)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up oneDNN's kernel caches
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bf16_faster_on_cpu(
    model: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int = 64,
    reps: int = 3,
    margin: float = 1.15,
) -> bool:
    """Time float32 vs bf16 training steps of a copy of ``model``; True if bf16 wins by ``margin``.

    Any task's model works: the timed step backpropagates a surrogate loss over all its float
    outputs (``num_classes`` is kept for callers; the surrogate needs no labels).

    The RNG state is preserved so the probe does not change a seeded run.
    """
    if not cpu_bf16_supported():
        return False
    with torch.random.fork_rng(devices=[]):
        probe = copy.deepcopy(model).train()
        x = torch.randn(batch_size, *input_shape)
        if (
            next(probe.parameters()).is_contiguous(memory_format=torch.channels_last)
            and x.dim() == 4
        ):
            x = x.contiguous(memory_format=torch.channels_last)
        fp32, bf16 = [], []
        for _ in range(2):  # interleaved so a noisy neighbour hits both alike
            fp32.append(_step_time(probe, x, None, reps))
            bf16.append(_step_time(probe, x, torch.bfloat16, reps))
    return min(fp32) / min(bf16) >= margin


def amp_dtype(
    config: TrainConfig,
    device: torch.device,
    model: nn.Module | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int = 10,
) -> torch.dtype | None:
    """The autocast dtype. ``auto`` and ``fastest`` are bf16 (fp16 on GPUs without bf16) on CUDA.
    On a CPU ``auto`` is float32 (deterministic and never slower than expected), while ``fastest``
    times a few training steps of this model in float32 and bf16 and picks bf16 only when it is
    clearly faster (native-bf16 CPUs) — CPUs differ too much to assume either way."""
    choice = config.amp.lower()
    if choice not in AMP_CHOICES:
        raise UnknownNameError("amp mode", config.amp, AMP_CHOICES)
    if choice == "off":
        return None
    if choice in ("auto", "fastest") and device.type != "cuda":
        if choice == "auto" or model is None or input_shape is None:
            return None
        faster = bf16_faster_on_cpu(model, input_shape, num_classes, min(config.batch_size, 128))
        return torch.bfloat16 if faster else None
    if choice in ("auto", "fastest"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if choice == "bf16" else torch.float16
