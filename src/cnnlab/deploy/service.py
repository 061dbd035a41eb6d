"""The HTTP service: FastAPI + uvicorn, dynamic micro-batching, and limits that keep it standing.

``POST /predict`` takes one or more images (multipart fields ``file`` / ``files``, or the raw image
bytes as the body) and answers the top-k classes as JSON. Concurrent requests are grouped into one
forward pass (up to ``max_batch`` images, waiting at most ``max_wait_ms`` for company), because a
batch of 16 costs far less than 16 batches of one. Every bad input is refused before it reaches the
queue, so it can never change the answers other clients get:

- body over ``max_body_bytes`` → 413 (Content-Length checked first, the stream counted as it arrives)
- not an image, or an unsupported content type → 415
- truncated image, or more pixels than ``max_pixels`` (a decompression bomb) → 400
- no file field → 422; queue full → 503; wrong or missing API key (when one is set) → 401

``GET /health``, ``GET /metadata`` (classes, input size, model hash, backend) and ``GET /metrics``
(Prometheus text: requests, latency histogram, errors, batch sizes) complete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import threading
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from PIL import Image, UnidentifiedImageError

from cnnlab.data.decode import pil_to_array
from cnnlab.deploy.predictor import Predictor

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FILE_FIELDS = ("file", "files", "image", "images")
RAW_TYPES = ("application/octet-stream",)


@dataclass(frozen=True)
class ServeConfig:
    """Service limits and batching; every field is a ``cnnlab serve`` option."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 256
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 64
    api_key: str | None = None
    top_k: int = 5


class HTTPError(Exception):
    """An input problem answered with ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str, reason: str):
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason


class QueueFullError(HTTPError):
    """503: the micro-batching queue is full; clients should retry later."""

    def __init__(self) -> None:
        super().__init__(503, "server busy: the request queue is full, retry later", "queue_full")


def decode_upload(data: bytes, predictor: Predictor, max_pixels: int) -> torch.Tensor:
    """Image bytes → uint8 (C, H, W) at the model's size, or an :class:`HTTPError` (415 / 400)."""
    if not data:
        raise HTTPError(400, "empty image", "empty")
    c, h, w = predictor.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise HTTPError(
                415, "not an image (or an unsupported image format)", "not_image"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise HTTPError(400, f"image too large: {exc}", "bomb") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt headers
            raise HTTPError(400, f"corrupt image header ({exc})", "corrupt") from None
        if im.width * im.height > max_pixels:
            raise HTTPError(
                400,
                f"image of {im.width}x{im.height} exceeds the {max_pixels:,}-pixel limit "
                "(decompression bomb guard)",
                "bomb",
            )
        try:
            arr = pil_to_array(im, (h, w), c)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise HTTPError(400, f"image too large: {exc}", "bomb") from None
        except Exception as exc:  # noqa: BLE001 - truncated data surfaces as OSError/SyntaxError/...
            raise HTTPError(400, f"truncated or corrupt image ({exc})", "truncated") from None
    return torch.from_numpy(np.ascontiguousarray(arr))


class Metrics:
    """Counters and histograms rendered as Prometheus text (thread-safe, no dependency)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.batches = 0
        self.batch_images = 0
        self.max_batch_seen = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(path, status)] += 1
            if path == "/predict":
                i = next((k for k, b in enumerate(LATENCY_BUCKETS) if seconds <= b), -1)
                self.latency[i] += 1
                self.latency_sum += seconds
                self.latency_count += 1

    def error(self, reason: str) -> None:
        with self.lock:
            self.errors[reason] += 1

    def batch(self, n: int) -> None:
        with self.lock:
            self.batches += 1
            self.batch_images += n
            self.max_batch_seen = max(self.max_batch_seen, n)

    def render(self, queue_depth: int) -> str:
        with self.lock:
            out = [
                "# HELP cnnlab_requests_total HTTP requests by path and status.",
                "# TYPE cnnlab_requests_total counter",
            ]
            for (path, status), n in sorted(self.requests.items()):
                out.append(f'cnnlab_requests_total{{path="{path}",status="{status}"}} {n}')
            out += [
                "# HELP cnnlab_request_latency_seconds Latency of /predict requests.",
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


class MicroBatcher:
    """Groups single images from concurrent requests into batches for one forward pass each.

    One worker task takes the first waiting image, then gathers more until ``max_batch`` or until
    ``max_wait_ms`` has passed, and runs the batch on a dedicated thread so the event loop keeps
    accepting (and refusing) requests meanwhile.
    """

    def __init__(self, predictor: Predictor, cfg: ServeConfig, metrics: Metrics):
        self.predictor, self.cfg, self.metrics = predictor, cfg, metrics
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=cfg.queue_size)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnlab-infer")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Probabilities (len(images), K); all of a request's images are queued or none is."""
        if self.queue.maxsize - self.queue.qsize() < len(images):
            raise QueueFullError()
        loop = asyncio.get_running_loop()
        futures = []
        for im in images:
            fut = loop.create_future()
            self.queue.put_nowait((im, fut))
            futures.append(fut)
        return torch.stack(await asyncio.gather(*futures))

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        from cnnlab.data.loader import normalize_batch

        x = normalize_batch(batch, self.predictor.mean, self.predictor.std)
        return self.predictor.predict_proba(x)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.cfg.max_wait_ms / 1000
            while len(items) < self.cfg.max_batch:
                try:
                    items.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                # not wait_for(queue.get()): a get completing as the timeout fires would lose an image
                getter = asyncio.ensure_future(self.queue.get())
                done, _ = await asyncio.wait({getter}, timeout=left)
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        items.append(await getter)
                    break
                items.append(getter.result())
            live = [(im, f) for im, f in items if not f.done()]
            if not live:
                continue
            try:
                probs = await loop.run_in_executor(
                    self.executor, self._forward, torch.stack([im for im, _ in live])
                )
            except Exception as exc:  # noqa: BLE001 - a failed batch must not kill the worker
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            self.metrics.batch(len(live))
            for (_, f), p in zip(live, probs):
                if not f.done():
                    f.set_result(p)


class BodyLimitMiddleware:
    """413 for bodies over the limit: Content-Length first, then counting the stream as it arrives
    (chunked uploads have no Content-Length, and a client may lie about it)."""

    def __init__(self, app: Any, max_bytes: int, metrics: Metrics):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, send)
                return
        seen = 0
        started = False

        class _TooBig(Exception):
            pass

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooBig()
            return msg

        async def tracking_send(msg: dict) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        refused = False
        try:
            await self.app(scope, limited_receive, tracking_send)
        except* _TooBig:  # may arrive wrapped in an ExceptionGroup by a middleware's task group
            refused = True
        if refused and not started:
            await self._refuse(scope, send)

    async def _refuse(self, scope: dict, send: Any) -> None:
        import json

        self.metrics.error("too_large")
        self.metrics.observe(scope.get("path", ""), 413, 0.0)
        body = json.dumps(
            {"detail": f"request body exceeds the {self.max_bytes:,}-byte limit"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(predictor: Predictor, cfg: ServeConfig = ServeConfig(), model_hash: str = ""):
    """The ASGI application (FastAPI) serving ``predictor`` with the limits in ``cfg``."""
    from contextlib import asynccontextmanager

    metrics = Metrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(predictor, cfg, metrics)
        batcher.start()
        state["batcher"] = batcher
        state["started"] = time.time()
        yield
        await batcher.stop()

    app = FastAPI(title="cnnlab", lifespan=lifespan, docs_url=None, redoc_url=None)

    def check_key(request: Request) -> None:
        if cfg.api_key is None:
            return
        given = request.headers.get("x-api-key", "")
        if not secrets.compare_digest(given.encode(), cfg.api_key.encode()):
            raise HTTPError(401, "missing or wrong API key (header X-API-Key)", "unauthorized")

    @app.middleware("http")
    async def timing(request: Request, call_next):
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except HTTPError as exc:
            response = JSONResponse({"detail": exc.detail}, status_code=exc.status)
        metrics.observe(request.url.path, response.status_code, time.perf_counter() - t0)
        return response

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, exc: HTTPError):
        metrics.error(exc.reason)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = state.get("batcher")
        alive = batcher is not None and batcher.task is not None and not batcher.task.done()
        if not alive:
            return JSONResponse({"status": "unhealthy"}, status_code=503)
        return {
            "status": "ok",
            "queue_depth": batcher.queue.qsize(),
            "uptime_s": round(time.time() - state["started"], 3),
        }

    @app.get("/metadata")
    async def metadata(request: Request) -> dict[str, Any]:
        check_key(request)
        model = predictor.config.get("model", {})
        return {
            "classes": predictor.classes,
            "input_size": list(predictor.input_size),
            "mean": list(predictor.mean),
            "std": list(predictor.std),
            "model": model.get("name") if isinstance(model, dict) else model,
            "model_hash": model_hash,
            "backend": predictor.backend_name,
            "temperature": predictor.temperature,
            "max_batch": cfg.max_batch,
            "max_wait_ms": cfg.max_wait_ms,
            "max_body_bytes": cfg.max_body_bytes,
        }

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        q = state["batcher"].queue.qsize() if "batcher" in state else 0
        return PlainTextResponse(
            metrics.render(q), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.post("/predict")
    async def predict(request: Request, top_k: int | None = None) -> dict[str, Any]:
        check_key(request)
        k = max(1, min(top_k or cfg.top_k, len(predictor.classes)))
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        payloads: list[tuple[str | None, bytes]] = []
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            try:
                form = await request.form(max_files=cfg.max_files, max_fields=cfg.max_files)
            except HTTPError:
                raise
            except Exception as exc:  # noqa: BLE001 - malformed multipart bodies
                if type(exc).__name__ == "_TooBig":
                    raise
                raise HTTPError(400, f"malformed multipart body ({exc})", "bad_multipart") from None
            for name in FILE_FIELDS:
                for item in form.getlist(name):
                    if isinstance(item, str):
                        raise HTTPError(
                            422, f"field '{name}' must be a file upload, not text", "missing_file"
                        )
                    part_type = (item.content_type or "").split(";")[0].strip().lower()
                    if part_type and not (part_type.startswith("image/") or part_type in RAW_TYPES):
                        raise HTTPError(
                            415,
                            f"unsupported content type '{part_type}' for {item.filename}; "
                            "send image/* files",
                            "unsupported_type",
                        )
                    payloads.append((item.filename, await item.read()))
            if not payloads:
                raise HTTPError(
                    422,
                    f"missing file field: send the image as multipart field "
                    f"'{FILE_FIELDS[0]}' (or {', '.join(FILE_FIELDS[1:])})",
                    "missing_file",
                )
        elif ctype.startswith("image/") or ctype in RAW_TYPES:
            body = await request.body()
            if not body:
                raise HTTPError(
                    422, "empty body: send image bytes or a multipart 'file' field", "missing_file"
                )
            payloads.append((None, body))
        elif not ctype:
            raise HTTPError(
                422,
                "no image: send multipart field 'file' or raw bytes with an image/* Content-Type",
                "missing_file",
            )
        else:
            raise HTTPError(
                415,
                f"unsupported content type '{ctype}'; send multipart/form-data or image/*",
                "unsupported_type",
            )
        images = [decode_upload(data, predictor, cfg.max_pixels) for _, data in payloads]
        probs = await state["batcher"].submit(images)
        preds = []
        for (name, _), p in zip(payloads, probs):
            pr = predictor._to_prediction(p, name, k)
            preds.append(pr.to_dict())
        return {"predictions": preds, "backend": predictor.backend_name}

    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes, metrics=metrics)
    return app


def serve(
    predictor: Predictor,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    cfg: ServeConfig = ServeConfig(),
    model_hash: str = "",
    log_level: str = "warning",
) -> None:
    """Run the service with uvicorn until interrupted (blocking)."""
    import uvicorn

    app = create_app(predictor, cfg, model_hash)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
