"""Benchmark mode: latency percentiles, throughput, parameters, MACs and file size per backend.

Like timm's benchmark script and Ultralytics' benchmark mode, but every figure is measured here and
now: the backends are timed interleaved (A, B, A, B…) so a busy, shared CPU slows them alike, and
the percentiles come from individual call times, not from an average.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from cnnlab.data import normalize_batch
from cnnlab.deploy.backends import (
    BACKENDS,
    OnnxBackend,
    TorchBackend,
    make_backend,
    onnx_bytes,
    time_backend,
)
from cnnlab.deploy.latency import warm_up
from cnnlab.deploy.quantize import quantize_onnx
from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.inspect import count_macs
from cnnlab.run import load_run_splits, resolve_model_source


@dataclass(frozen=True)
class BenchRow:
    """One backend at one batch size."""

    backend: str
    batch: int
    size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    images_per_s: float
    params: int
    macs: int | None
    file_mb: float
    calls: int

    def to_dict(self) -> dict:
        return asdict(self)


def _percentile(times: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(times), q))


def _resolve(source: str, size: int | None) -> tuple[nn.Module, tuple[int, int, int], dict]:
    """A model (eval), its input size and its run config (``{}`` for a zoo name)."""
    found = resolve_model_source(source)
    c, h, w = found.input_size
    if size is not None:
        h = w = int(size)
    return found.model.eval(), (int(c), int(h), int(w)), found.run_config or {}


def _weights_mb(model: nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6


def _macs(model: nn.Module, input_size: tuple[int, int, int]) -> int | None:
    try:
        return int(count_macs(model, input_size))
    except Exception:  # noqa: BLE001 - a model the tracer cannot follow still gets timed
        return None


# Long by design: builds each backend, then times them interleaved per batch size, streaming rows.
def benchmark(
    source: str,
    backends: Sequence[str] = ("torch", "onnx"),
    batches: Sequence[int] = (1, 32),
    size: int | None = None,
    *,
    rounds: int = 5,
    per_round: int = 4,
    threads: int | None = None,
    on_row: Callable[[BenchRow], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Time ``backends`` on ``source`` (a zoo model name or a run directory) at each batch size.

    A big model at 224 px takes minutes, so the caller can follow along: ``on_step(text)`` is told
    each phase (exporting, quantising, warming up, timing) and ``on_row(row)`` gets every row as
    soon as it is measured. Each backend is warmed up until its timing is stable before timing.

    Example::

        for row in benchmark("resnet18", ("torch", "onnx"), (1, 32), 224):
            print(row.backend, row.batch, row.p50_ms)
    """
    if any(b <= 0 for b in batches):
        raise ConfigError(f"batch sizes must be positive; got {list(batches)}")
    for b in backends:
        if b not in BACKENDS or b == "auto":
            raise UnknownNameError("backend", b, [x for x in BACKENDS if x != "auto"])
    if threads:
        torch.set_num_threads(threads)
    model, input_size, cfg = _resolve(source, size)
    params = sum(p.numel() for p in model.parameters())
    macs = _macs(model, input_size)
    step = on_step or (lambda _text: None)
    built: dict[str, tuple[object, float]] = {}
    for name in backends:
        step(f"building the {name} backend")
        if name == "onnx":
            data = onnx_bytes(model, input_size)
            built[name] = (OnnxBackend(data, "onnx", threads), len(data) / 1e6)
        elif name == "int8":
            calib = _calibration(cfg, input_size)
            data = quantize_onnx(onnx_bytes(model, input_size), calib)
            built[name] = (OnnxBackend(data, "int8", threads), len(data) / 1e6)
        elif name in ("torch", "channels_last", "jit"):
            built[name] = (
                TorchBackend(model, name, example=torch.zeros(1, *input_size)),
                _weights_mb(model),
            )
        else:  # pragma: no cover - guarded above
            built[name] = (make_backend(name, model, input_size), _weights_mb(model))
    rows = []
    g = torch.Generator().manual_seed(0)
    for batch in batches:
        x = torch.randn(batch, *input_size, generator=g)
        times: dict[str, list[float]] = {k: [] for k in built}
        for name, (fn, _) in built.items():
            step(f"batch {batch}: warming up {name}")
            warm_up(lambda fn=fn, x=x: fn(x), min_calls=20, max_s=3.0)  # first calls are slower
        for r in range(rounds):
            step(f"batch {batch}: timing round {r + 1}/{rounds}")
            for name, (fn, _) in built.items():
                times[name] += time_backend(fn, x, warmup=0, iters=per_round, max_time=30.0)
        for name, (_, mb) in built.items():
            t = times[name]
            row = BenchRow(
                name,
                batch,
                input_size[1],
                _percentile(t, 50) * 1000,
                _percentile(t, 90) * 1000,
                _percentile(t, 99) * 1000,
                batch / statistics.median(t),
                params,
                macs,
                mb,
                len(t),
            )
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def _calibration(cfg: dict, input_size: tuple[int, int, int]) -> torch.Tensor:
    """The run's training images when there are some, else random (then int8 accuracy means little)."""
    if cfg.get("classes"):
        splits = load_run_splits(cfg)
        if splits is not None:
            idx = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
            return normalize_batch(splits.train.images[idx[:256]], cfg["mean"], cfg["std"])
    return torch.randn(64, *input_size, generator=torch.Generator().manual_seed(0))


TABLE_HEADER = (
    f"{'backend':<14} {'batch':>5} {'size':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
    f"{'img/s':>9} {'params':>11} {'MACs':>14} {'file MB':>8}"
)


def format_row(r: BenchRow) -> str:
    """One line of the benchmark table (see :data:`TABLE_HEADER`)."""
    macs = f"{r.macs:,}" if r.macs is not None else "n/a"
    return (
        f"{r.backend:<14} {r.batch:>5} {r.size:>5} {r.p50_ms:>9.2f} {r.p90_ms:>9.2f} "
        f"{r.p99_ms:>9.2f} {r.images_per_s:>9.1f} {r.params:>11,} {macs:>14} {r.file_mb:>8.2f}"
    )


def format_table(rows: Sequence[BenchRow]) -> str:
    """A fixed-width table of benchmark rows."""
    return "\n".join([TABLE_HEADER, "-" * len(TABLE_HEADER), *(format_row(r) for r in rows)])
