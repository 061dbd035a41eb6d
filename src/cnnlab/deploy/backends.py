"""Inference backends: one callable interface over PyTorch and ONNX Runtime, chosen by measuring.

A backend maps a normalised float32 batch (N, C, H, W) to logits (N, K) on the CPU. Which one is
fastest depends on the CPU (AVX2 vs AVX-512/VNNI), the model and the thread count, so
:func:`pick_fastest` times the candidates briefly on the machine it runs on instead of assuming.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.deploy.formats import export_onnx
from cnnlab.deploy.quantize import quantize_onnx
from cnnlab.errors import RunError, UnknownNameError

#: Names accepted by ``--backend`` (``auto`` measures the run-directory candidates and picks one).
BACKENDS = ("torch", "channels_last", "jit", "onnx", "int8", "auto")
#: What ``auto`` compares for a PyTorch model (int8 changes the numbers, so it is opt-in).
AUTO_CANDIDATES = ("torch", "channels_last", "jit", "onnx")


class Backend:
    """Base class: ``backend(x)`` → logits; ``name`` says which engine answers."""

    name = "backend"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchBackend(Backend):
    """PyTorch eager, optionally channels_last or traced-and-frozen (``mode='jit'``)."""

    def __init__(self, model: nn.Module, mode: str = "torch", example: torch.Tensor | None = None):
        self.name = mode
        model = model.eval()
        if mode == "channels_last":
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        elif mode == "jit":
            if example is None:
                raise ValueError("the jit backend needs an example input to trace")
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(copy.deepcopy(model), example, check_trace=False)
                model = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        elif mode != "torch":
            raise UnknownNameError("torch backend mode", mode, ("torch", "channels_last", "jit"))
        self.model = model
        self.channels_last = mode == "channels_last"

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        return (out[0] if isinstance(out, (tuple, list)) else out).float()


def ort_session(
    model: str | Path | bytes,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
):
    """An ONNX Runtime session with full graph optimisation (CUDA first when it is available).

    Idle intra-op threads keep ONNX Runtime's default of busy-waiting briefly for the next operator
    (``session.intra_op.allow_spinning``). Measured at batch 1, 224x224, 2 threads on an idle CPU,
    turning spinning off made resnet18 43 % slower (15.9 vs 11.1 ms), mobilenet_v2 41 % and
    efficientnet_b0 83 %: every one of their hundreds of operators then waits for threads to wake.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    n = threads if threads is not None else torch.get_num_threads()
    opts.intra_op_num_threads = max(1, n)
    opts.inter_op_num_threads = 1
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    src = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
        where = model if isinstance(model, (str, Path)) else "the ONNX model"
        raise RunError(f"{where} cannot be loaded by ONNX Runtime ({str(exc)[:160]})") from None


class OnnxBackend(Backend):
    """ONNX Runtime on an ``.onnx`` file or serialised bytes."""

    def __init__(self, model: str | Path | bytes, name: str = "onnx", threads: int | None = None):
        self.name = name
        self.session = ort_session(model, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


def onnx_bytes(model: nn.Module, input_size: Sequence[int], opset: int = 17) -> bytes:
    """The model exported to ONNX in memory (dynamic batch axis), for an ONNX Runtime backend."""
    buf = io.BytesIO()
    export_onnx(model, buf, input_size=input_size, opset=opset)
    return buf.getvalue()


def make_backend(
    name: str,
    model: nn.Module,
    input_size: Sequence[int],
    *,
    calibration: np.ndarray | None = None,
    threads: int | None = None,
) -> Backend:
    """Build backend ``name`` for a PyTorch model (ONNX ones are exported in memory)."""
    if name in ("torch", "channels_last", "jit"):
        return TorchBackend(model, name, example=torch.zeros(1, *input_size))
    if name == "onnx":
        return OnnxBackend(onnx_bytes(model, input_size), "onnx", threads)
    if name == "int8":
        if calibration is None:
            raise RunError("the int8 backend needs calibration images (the run's training data)")
        q = quantize_onnx(onnx_bytes(model, input_size), calibration)
        return OnnxBackend(q, "int8", threads)
    raise UnknownNameError("backend", name, BACKENDS)


def time_backend(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    warmup: int = 2,
    iters: int = 20,
    min_time: float = 0.0,
    max_time: float = 10.0,
) -> list[float]:
    """Wall-clock seconds of ``iters`` calls (more while under ``min_time``; fewer past ``max_time``)."""
    for _ in range(warmup):
        fn(x)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= iters and elapsed >= min_time) or (elapsed > max_time and times):
            return times


@dataclass(frozen=True)
class Choice:
    """The outcome of :func:`pick_fastest`: the winner and every candidate's median seconds."""

    backend: Backend
    medians: dict[str, float]

    @property
    def name(self) -> str:
        return self.backend.name


def pick_fastest(
    backends: Sequence[Backend], x: torch.Tensor, rounds: int = 5, per_round: int = 3
) -> Choice:
    """Time candidates interleaved (A, B, A, B…) so CPU contention hits each alike; fastest median."""
    for b in backends:  # warm-up: first calls allocate, JIT-compile and plan
        b(x)
        b(x)
    samples: dict[str, list[float]] = {b.name: [] for b in backends}
    for _ in range(rounds):
        for b in backends:
            samples[b.name] += time_backend(b, x, warmup=0, iters=per_round)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    best = min(backends, key=lambda b: medians[b.name])
    return Choice(best, medians)
