"""Prometheus counters and histograms for the service, with bounded labels.

Labels are route *templates* (``/v2/models/{name}/infer``) or the fixed word ``unmatched``, never
the raw path a client sent: raw paths let anyone grow the metrics page without bound (one series per
random URL) and inject fake series through a quote in the path. Refusal reasons are fixed words
chosen by the service. No dependency: the text format is a few lines.
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
# requests whose latency the histogram tracks: the ones that run the model
TIMED_ROUTES = frozenset(
    {"/predict", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"}
)


class Metrics:
    """Counters and histograms rendered as Prometheus text (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.batches = 0
        self.batch_images = 0
        self.max_batch_seen = 0
        self.disconnects = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request under its route template (never a raw path)."""
        method = method if method in ("GET", "POST", "HEAD", "OPTIONS") else "OTHER"
        with self.lock:
            self.requests[(method, route, status)] += 1
            if route in TIMED_ROUTES:
                i = next((k for k, b in enumerate(LATENCY_BUCKETS) if seconds <= b), -1)
                self.latency[i] += 1
                self.latency_sum += seconds
                self.latency_count += 1

    def error(self, reason: str) -> None:
        """Count one refusal by its fixed reason word."""
        with self.lock:
            self.errors[reason] += 1

    def disconnect(self) -> None:
        """Count one client that went away before its answer."""
        with self.lock:
            self.disconnects += 1

    def batch(self, n: int) -> None:
        """Count one forward pass of ``n`` images."""
        with self.lock:
            self.batches += 1
            self.batch_images += n
            self.max_batch_seen = max(self.max_batch_seen, n)

    def render(self, queue_depth: int) -> str:
        """The Prometheus text exposition of every counter."""
        with self.lock:
            out = [
                "# HELP cnnlab_requests_total HTTP requests by method, route template and status.",
                "# TYPE cnnlab_requests_total counter",
            ]
            for (method, route, status), n in sorted(self.requests.items()):
                out.append(
                    f'cnnlab_requests_total{{method="{method}",route="{route}",'
                    f'status="{status}"}} {n}'
                )
            out += [
                "# HELP cnnlab_request_latency_seconds Latency of inference requests.",
                "# TYPE cnnlab_request_latency_seconds histogram",
            ]
            cum = 0
            for b, n in zip(LATENCY_BUCKETS, self.latency):
                cum += n
                out.append(f'cnnlab_request_latency_seconds_bucket{{le="{b}"}} {cum}')
            out.append(f'cnnlab_request_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}')
            out.append(f"cnnlab_request_latency_seconds_sum {self.latency_sum:.6f}")
            out.append(f"cnnlab_request_latency_seconds_count {self.latency_count}")
            out += [
                "# HELP cnnlab_errors_total Refused requests by reason.",
                "# TYPE cnnlab_errors_total counter",
            ]
            for reason, n in sorted(self.errors.items()):
                out.append(f'cnnlab_errors_total{{reason="{reason}"}} {n}')
            out += [
                "# HELP cnnlab_client_disconnects_total Clients gone before their answer.",
                "# TYPE cnnlab_client_disconnects_total counter",
                f"cnnlab_client_disconnects_total {self.disconnects}",
                "# HELP cnnlab_batches_total Forward passes run.",
                "# TYPE cnnlab_batches_total counter",
                f"cnnlab_batches_total {self.batches}",
                "# HELP cnnlab_batch_images_total Images classified.",
                "# TYPE cnnlab_batch_images_total counter",
                f"cnnlab_batch_images_total {self.batch_images}",
                "# HELP cnnlab_queue_depth Images waiting for a forward pass.",
                "# TYPE cnnlab_queue_depth gauge",
                f"cnnlab_queue_depth {queue_depth}",
            ]
            return "\n".join(out) + "\n"
