"""Every limit of the HTTP service in one frozen dataclass, shown as-is to clients.

The same :class:`ServeConfig` decides what the service refuses (bytes, pixels, files and images per
request, queue depth, read timeouts), what ``GET /v2/models/{name}`` reports and what the web page
tells a person before they upload, so the three can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from cnnlab.errors import ConfigError

# The probes an orchestrator calls without credentials: every other path needs the API key.
HEALTH_PATHS = frozenset({"/health", "/v2/health/live", "/v2/health/ready"})


@dataclass(frozen=True)
class ServeConfig:
    """Service limits, batching and security; every field is a ``cnnlab serve`` option.

    Example::

        ServeConfig(max_batch=16, read_timeout_s=5, api_key="s3cret")
    """

    # micro-batching
    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 256
    # what one request may carry
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 64  # images per request: multipart files, or N of a v2 tensor
    top_k: int = 5
    # decoding runs on a pool of threads, never on the event loop; beyond this many waiting
    # images the request gets 503 instead of holding memory
    decode_workers: int = 2
    decode_queue: int = 256
    # slow or stalled clients: headers must arrive within header_timeout_s of connecting, each
    # body chunk within read_timeout_s of the previous one, the whole body within body_timeout_s
    header_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: float = 5.0
    graceful_shutdown_s: float = 30.0
    # security and observability
    api_key: str | None = None
    public_metrics: bool = False
    cors_origins: tuple[str, ...] = ()
    access_log: bool = False
    model_name: str = "model"

    def __post_init__(self) -> None:
        positive = (
            "max_batch",
            "queue_size",
            "max_body_bytes",
            "max_pixels",
            "max_files",
            "top_k",
            "decode_workers",
            "decode_queue",
            "header_timeout_s",
            "read_timeout_s",
            "body_timeout_s",
            "keep_alive_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"serve option {name} must be a positive number; got {value!r}")
        if self.max_wait_ms < 0 or self.graceful_shutdown_s < 0:
            raise ConfigError("max_wait_ms and graceful_shutdown_s must not be negative")
        if not self.model_name or "/" in self.model_name:
            raise ConfigError(
                f"model name must be non-empty and without '/'; got {self.model_name!r}"
            )

    def public_limits(self) -> dict[str, Any]:
        """The limits a client may see (never the API key): for metadata and the web page."""
        hidden = {"api_key", "cors_origins", "access_log", "model_name", "public_metrics"}
        return {k: v for k, v in asdict(self).items() if k not in hidden}

    @classmethod
    def field_names(cls) -> list[str]:
        """Every option name, in declaration order."""
        return [f.name for f in fields(cls)]
