"""Running the service: uvicorn with header timeouts, graceful SIGTERM and several worker processes.

uvicorn times out idle keep-alive connections but not a connection that never finishes its
headers: 64 clients that connect and stall hold 64 sockets forever. :class:`HeaderTimeoutProtocol`
adds that timer below ASGI (408 and close after ``header_timeout_s``, 431 past 64 KiB of headers);
body stalls are caught above it by :class:`cnnlab.deploy.guards.RequestGuard`.

On SIGTERM (or Ctrl-C) uvicorn stops listening, so new connections are refused, lets requests in
flight finish (up to ``graceful_shutdown_s``), and only then stops the batcher; readiness answers
503 meanwhile. ``workers > 1`` runs that many processes on one socket, each loading the model
(they need the model's source, not a loaded predictor, hence :class:`ModelSource`; readiness
turns 503 on SIGTERM in a single process only, as workers run uvicorn's own server).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cnnlab.deploy.context import DRAINING
from cnnlab.deploy.export import file_sha256
from cnnlab.deploy.limits import ServeConfig
from cnnlab.deploy.predictor import AnyPredictor, load
from cnnlab.deploy.service import create_app
from cnnlab.errors import RunError

SPEC_ENV = "CNNLAB_SERVE_SPEC"  # how worker processes receive what to serve
MAX_HEADER_BYTES = 64 * 1024
WORKER_START_S = 300
log = logging.getLogger("cnnlab.serve")


@dataclass(frozen=True)
class ModelSource:
    """What to load: a run directory or an exported ``.onnx`` file, with backend and threads."""

    path: str
    backend: str = "auto"
    threads: int | None = None

    def load(self) -> tuple[AnyPredictor, str]:
        """The predictor and the SHA-256 of its weights file."""
        p = Path(self.path)
        if p.is_file():
            if p.suffix.lower() != ".onnx":
                raise RunError(
                    f"{p}: serve loads .onnx files or run directories only "
                    "(TorchScript files hold code and are not loaded by the service)"
                )
            return load(p, threads=self.threads), file_sha256(p)
        predictor = load(p, backend=self.backend, threads=self.threads)
        return predictor, file_sha256(p / "model.safetensors")

    def default_name(self) -> str:
        """The model's name in ``/v2/models/{name}``: the run directory's or the file's stem."""
        p = Path(self.path)
        name = (p.stem if p.is_file() else p.resolve().name) or "model"
        return name.replace("/", "_")


def check_predictor(predictor: AnyPredictor) -> None:
    """Refuse at start-up, in one line, a model whose outputs contradict its class list."""
    predictor.check_outputs()


def _raw_response(status: bytes, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request line and headers: 408 and
    close after ``header_timeout_s`` (counted from the connection or the request's first byte,
    never extended by dripping bytes), 431 past 64 KiB of headers.

    ``header_timeout_s`` is a class attribute because uvicorn builds one protocol per connection
    from the class alone; :func:`serve` (or each worker, in :func:`worker_app`) sets it.
    """

    header_timeout_s: float = ServeConfig.header_timeout_s
    _timer: Any = None
    _header_bytes = 0
    _in_headers = True

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._in_headers = True
        if self._timer is None:
            self._timer = self.loop.call_later(self.header_timeout_s, self._late)

    def _disarm(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            detail = f"request headers not received within {self.header_timeout_s:g} s"
            self.transport.write(_raw_response(b"408 Request Timeout", detail))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():  # still no complete headers
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._disarm()
                detail = f"request headers over {MAX_HEADER_BYTES // 1024} KiB"
                self.transport.write(_raw_response(b"431 Request Header Fields Too Large", detail))
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # keep-alive: uvicorn's idle timer runs until the next request's first byte re-arms ours
        self._in_headers = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which also turns readiness off (and says so) when told to stop."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not DRAINING.is_set():
            DRAINING.set()
            log.info("signal %s: finishing requests in flight, refusing new ones", sig)
        super().handle_exit(sig, frame)


def _uvicorn_config(
    app: Any, host: str, port: int, cfg: ServeConfig, log_level: str, **kw: Any
) -> uvicorn.Config:
    HeaderTimeoutProtocol.header_timeout_s = cfg.header_timeout_s
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # cnnlab's own access log (--access-log) knows route templates
        http=HeaderTimeoutProtocol,
        timeout_keep_alive=cfg.keep_alive_s,
        timeout_graceful_shutdown=cfg.graceful_shutdown_s,
        server_header=False,
        **kw,
    )


def worker_app():
    """The app of one worker process (``--workers N``), from the spec in ``CNNLAB_SERVE_SPEC``."""
    spec = json.loads(os.environ[SPEC_ENV])
    source = ModelSource(**spec["source"])
    cfg = ServeConfig(**{**spec["cfg"], "cors_origins": tuple(spec["cfg"]["cors_origins"])})
    HeaderTimeoutProtocol.header_timeout_s = cfg.header_timeout_s
    predictor, model_hash = source.load()
    return create_app(predictor, cfg, model_hash)


def serve(
    predictor: AnyPredictor | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    cfg: ServeConfig = ServeConfig(),
    model_hash: str = "",
    log_level: str = "warning",
    workers: int = 1,
    source: ModelSource | None = None,
) -> None:
    """Run the service until SIGTERM / Ctrl-C (blocking), finishing requests in flight.

    One process serves ``predictor``; ``workers > 1`` starts that many processes, each loading
    ``source`` itself (a loaded model cannot be shared across processes).
    """
    if workers > 1:
        if source is None:
            raise RunError("several workers need the model's source (a run directory or .onnx)")
        spec = {
            "source": asdict(source),
            "cfg": {**asdict(cfg), "cors_origins": list(cfg.cors_origins)},
        }
        os.environ[SPEC_ENV] = json.dumps(spec)
        config = _uvicorn_config(
            "cnnlab.deploy.http_server:worker_app",
            host,
            port,
            cfg,
            log_level,
            factory=True,
            workers=workers,
            # a worker imports torch and loads the model before it answers the supervisor's
            # pings; uvicorn's 5 s default killed and restarted workers forever on a busy CPU
            timeout_worker_healthcheck=WORKER_START_S,
        )
        from uvicorn.supervisors import Multiprocess

        # each worker runs uvicorn's own server: SIGTERM still drains it, readiness stays on
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    if predictor is None:
        if source is None:
            raise RunError("serve needs a predictor or a model source")
        predictor, model_hash = source.load()
    app = create_app(predictor, cfg, model_hash)
    DrainingServer(config=_uvicorn_config(app, host, port, cfg, log_level)).run()
