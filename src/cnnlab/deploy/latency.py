"""Per-call latency that a served model would see: warm up until stable, then median and p90.

The first calls of a process are slow (allocator growth, oneDNN primitive creation, ONNX Runtime's
thread pool spinning up): for SimpleCNN the first ~60 calls took ~48 ms each where a warm process
takes 0.55 ms, and a measuring window of a fixed handful of calls caught only those. So the
warm-up here runs windows of calls until the timing stops improving (see :func:`warm_up`), and
only then measures. Every latency cnnlab prints
(``eval``, ``export``, ``report``) comes from :func:`measure_latency`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

WINDOW = 10  # calls per warm-up window


@dataclass(frozen=True)
class Latency:
    """Seconds per call after warm-up: ``median`` and ``p90`` of ``calls`` timed calls, and how
    many calls the warm-up took (``stable`` false when it hit its limit before settling)."""

    median: float
    p90: float
    calls: int
    warmup_calls: int
    stable: bool

    @property
    def median_ms(self) -> float:
        """The median in milliseconds."""
        return self.median * 1000

    @property
    def p90_ms(self) -> float:
        """The 90th percentile in milliseconds."""
        return self.p90 * 1000

    def to_dict(self) -> dict[str, Any]:
        """Plain data (seconds and milliseconds) for JSON output."""
        return {**asdict(self), "median_ms": self.median_ms, "p90_ms": self.p90_ms}


def _timed(fn: Callable[[], Any], n: int, sync: Callable[[], None] | None) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        out.append(time.perf_counter() - t0)
    return out


def percentile(times: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation, as NumPy's default."""
    xs = sorted(times)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def warm_up(
    fn: Callable[[], Any],
    *,
    min_calls: int = 100,
    settle_windows: int = 3,
    tolerance: float = 0.1,
    max_calls: int = 2000,
    max_s: float = 5.0,
    sync: Callable[[], None] | None = None,
) -> tuple[int, bool]:
    """Call ``fn`` in windows of :data:`WINDOW` calls until at least ``min_calls`` calls were made
    and ``settle_windows`` windows in a row failed to beat the fastest window's median by more
    than ``tolerance``; returns (calls made, whether it settled before ``max_calls`` / ``max_s``).

    Agreement between windows alone is not enough: a slow start is a plateau (two slow windows
    agree), so the warm-up waits for the timing to stop *improving*, past a minimum of calls.
    """
    start = time.perf_counter()
    calls, best, since_best = 0, float("inf"), 0
    while True:
        med = statistics.median(_timed(fn, WINDOW, sync))
        calls += WINDOW
        if med < best * (1 - tolerance):
            since_best = 0
        else:
            since_best += 1
        best = min(best, med)
        if calls >= min_calls and since_best >= settle_windows:
            return calls, True
        if calls >= max_calls or time.perf_counter() - start >= max_s:
            return calls, False


def measure_latency(
    fn: Callable[[], Any],
    *,
    budget_s: float = 1.0,
    min_calls: int = 10,
    max_calls: int = 1000,
    warmup_s: float = 5.0,
    sync: Callable[[], None] | None = None,
) -> Latency:
    """Warm ``fn`` up until its timing is stable, then time it for about ``budget_s`` (at least
    ``min_calls`` calls) and return the median and 90th percentile.

    Example::

        lat = measure_latency(lambda: model(x), budget_s=0.5)
        print(f"{lat.median_ms:.2f} ms (p90 {lat.p90_ms:.2f} ms)")
    """
    warm, stable = warm_up(fn, max_s=warmup_s, sync=sync)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or (
        time.perf_counter() - start < budget_s and len(times) < max_calls
    ):
        times += _timed(fn, 1, sync)
    return Latency(statistics.median(times), percentile(times, 90), len(times), warm, stable)
