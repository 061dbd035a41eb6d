"""The HTTP service: FastAPI routes over micro-batching, with limits that keep it standing.

``POST /predict`` takes one or more images (multipart fields ``file`` / ``files``, or the raw image
bytes as the body) and answers the top-k classes per file as JSON — or, for a detection run, the
boxes (``detections``: class, score, ``box`` x1 y1 x2 y2 in the uploaded image's pixels) and, for a
segmentation run, the mask (``mask_png``: a base64 palette PNG of class indices at the uploaded
image's size, with ``pixels`` per class). Images are decoded on a thread
pool (:mod:`cnnlab.deploy.uploads`), concurrent requests share forward passes
(:mod:`cnnlab.deploy.batcher`), and every bad input is refused before it reaches the queue, so it
can never change the answers other clients get:

- body over ``max_body_bytes`` → 413 (declared or streamed); body stalled → 408
- a file that is not an image, or has a non-image content type → 415 for that file
- a truncated image, or more pixels than ``max_pixels`` (a decompression bomb) → 400 for that file
- several files: the good ones are answered, each bad one named with its error (the request fails
  only when every file does); no file field → 422; ``top_k`` outside 1..K → 422
- queue full → 503; without the API key (when one is set) → 401 on every path but the health probes

Beside it: ``GET /`` (a web page to try the model, every asset served from here, so it works
offline), ``GET /docs`` (interactive API docs), ``POST /explain`` (Grad-CAM for the page),
``GET /health``, ``GET /metadata`` (the model card and limits), ``GET /metrics`` (Prometheus, labels
bounded to route templates) and the Open Inference Protocol v2 (:mod:`cnnlab.deploy.oip`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from PIL import Image
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.staticfiles import StaticFiles

from cnnlab.deploy import oip
from cnnlab.deploy.batcher import MicroBatcher
from cnnlab.deploy.context import ServiceContext
from cnnlab.deploy.dense_predict import DensePredictor, mask_png_bytes
from cnnlab.deploy.gradcam import CAM_METHODS, explain_image
from cnnlab.deploy.guards import ApiKeyGuard, GuardError, ObserveMiddleware, RequestGuard
from cnnlab.deploy.limits import HEALTH_PATHS, ServeConfig
from cnnlab.deploy.metrics import Metrics
from cnnlab.deploy.predictor import AnyPredictor
from cnnlab.deploy.uploads import HTTPError, Preprocessor, QueueFullError, decode_upload

__all__ = ["HTTPError", "QueueFullError", "ServeConfig", "create_app", "decode_upload"]

FILE_FIELDS = ("file", "files", "image", "images")
RAW_TYPES = ("application/octet-stream",)
STATIC = resources.files("cnnlab.deploy") / "static"
log = logging.getLogger("cnnlab.serve")


def configure_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr for ``cnnlab.serve`` and ``cnnlab.access`` (idempotent)."""
    logger = logging.getLogger("cnnlab")
    if not any(getattr(h, "_cnnlab", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        handler._cnnlab = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _file_error(name: str | None, err: HTTPError) -> dict[str, Any]:
    return {"source": name, "error": err.detail, "status": err.status}


async def _read_uploads(request: Request, cfg: ServeConfig) -> list[tuple[str | None, Any]]:
    """(filename, bytes or HTTPError) per uploaded file; request-level problems raise."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=cfg.max_files, max_fields=cfg.max_files)
        except (GuardError, ClientDisconnect):
            raise
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies
            detail = getattr(exc, "detail", None) or str(exc)
            raise HTTPError(400, f"malformed multipart body ({detail})", "bad_multipart") from None
        payloads: list[tuple[str | None, Any]] = []
        for name in FILE_FIELDS:
            for item in form.getlist(name):
                if isinstance(item, str):
                    raise HTTPError(
                        422, f"field '{name}' must be a file upload, not text", "missing_file"
                    )
                part_type = (item.content_type or "").split(";")[0].strip().lower()
                if part_type and not (part_type.startswith("image/") or part_type in RAW_TYPES):
                    err = HTTPError(
                        415,
                        f"unsupported content type '{part_type}'; send image/* files",
                        "unsupported_type",
                    )
                    payloads.append((item.filename, err))
                    continue
                payloads.append((item.filename, await item.read()))
        if not payloads:
            raise HTTPError(
                422,
                f"missing file field: send the image as multipart field "
                f"'{FILE_FIELDS[0]}' (or {', '.join(FILE_FIELDS[1:])})",
                "missing_file",
            )
        return payloads
    if ctype.startswith("image/") or ctype in RAW_TYPES:
        body = await request.body()
        if not body:
            raise HTTPError(
                422, "empty body: send image bytes or a multipart 'file' field", "missing_file"
            )
        return [(None, body)]
    if not ctype:
        raise HTTPError(
            422,
            "no image: send multipart field 'file' or raw bytes with an image/* Content-Type",
            "missing_file",
        )
    raise HTTPError(
        415,
        f"unsupported content type '{ctype}'; send multipart/form-data or image/*",
        "unsupported_type",
    )


async def _decode(ctx: ServiceContext, payloads: list[tuple[str | None, Any]]) -> list[Any]:
    """A normalised tensor or an HTTPError per payload, decoding only the ones that are bytes."""
    todo = [i for i, (_, p) in enumerate(payloads) if isinstance(p, bytes)]
    decoded = await ctx.preprocessor.run([payloads[i][1] for i in todo])
    out = [p for _, p in payloads]
    for i, d in zip(todo, decoded):
        out[i] = d
    return out


def _upload_size(data: bytes) -> tuple[int, int]:
    """(height, width) from an already-decoded upload's header (cheap: no pixels are read)."""
    with Image.open(io.BytesIO(data)) as im:
        return im.height, im.width


def dense_answers(
    predictor: DensePredictor, raw: Any, sizes: list[tuple[int, int]], names: list[str | None]
) -> list[dict[str, Any]]:
    """The JSON of each image of a dense prediction: boxes, or the mask as a base64 PNG."""
    out = []
    for r, name in zip(predictor.postprocess(raw, sizes), names):
        rec = predictor.result_json(r, name)
        if predictor.task == "segmentation":
            rec["mask_png"] = base64.b64encode(mask_png_bytes(r)).decode("ascii")  # type: ignore[arg-type]
        out.append(rec)
    return out


# Long by design: one closure over the service's state holding every route, read top to bottom;
# each route is a few lines and splitting them apart would scatter that shared state.
def create_app(
    predictor: AnyPredictor, cfg: ServeConfig = ServeConfig(), model_hash: str = ""
) -> FastAPI:
    """The ASGI application serving ``predictor`` with the limits in ``cfg``.

    Example::

        app = create_app(cnnlab.load("runs/x"), ServeConfig(max_batch=16, api_key="k"))
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    predictor.check_outputs()  # a config that contradicts the weights fails here, in one line
    metrics = Metrics()
    ctx = ServiceContext(predictor, cfg, metrics, model_hash)
    configure_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.batcher = MicroBatcher(
            predictor, metrics, cfg.max_batch, cfg.max_wait_ms, cfg.queue_size
        )
        ctx.preprocessor = Preprocessor(
            predictor.input_size,
            predictor.mean,
            predictor.std,
            cfg.max_pixels,
            cfg.decode_workers,
            cfg.decode_queue,
        )
        ctx.batcher.start()
        ctx.started = time.time()
        yield
        await ctx.batcher.stop()
        ctx.preprocessor.shutdown()

    app = FastAPI(
        title="cnnlab",
        summary="Image classification: cnnlab's /predict and the Open Inference Protocol v2",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, exc: HTTPError):
        metrics.error(exc.reason)
        key = "error" if request.url.path.startswith("/v2") else "detail"
        return JSONResponse({key: exc.detail}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", headers={"cache-control": "no-cache"})

    @app.get("/health", tags=["service"], summary="liveness and queue depth (no API key)")
    async def health() -> Any:
        if ctx.batcher is None or not ctx.batcher.alive:
            return JSONResponse({"status": "unhealthy"}, status_code=503)
        return {
            "status": "ok",
            "queue_depth": ctx.batcher.queue.qsize(),
            "decoding": ctx.preprocessor.pending if ctx.preprocessor else 0,
            "uptime_s": round(time.time() - ctx.started, 3),
        }

    @app.get("/metadata", tags=["service"], summary="the model card and the service's limits")
    async def metadata() -> dict[str, Any]:
        card = ctx.model_card()
        return {
            **card,
            "model": card["architecture"],
            "max_batch": cfg.max_batch,
            "max_wait_ms": cfg.max_wait_ms,
            "max_body_bytes": cfg.max_body_bytes,
        }

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        q = ctx.batcher.queue.qsize() if ctx.batcher else 0
        return PlainTextResponse(
            metrics.render(q), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.post("/predict", tags=["service"], summary="top-k classes for one or more images")
    async def predict(
        request: Request,
        top_k: int | None = Query(None, description="classes per image, 1..K"),
    ) -> Any:
        dense = isinstance(predictor, DensePredictor)
        k = cfg.top_k if top_k is None else top_k
        if dense:
            k = 1  # boxes and masks have no top-k
        elif not 1 <= k <= ctx.num_classes:
            raise HTTPError(
                422, f"top_k must be between 1 and {ctx.num_classes}; got {k}", "bad_top_k"
            )
        k = min(k, ctx.num_classes)
        payloads = await _read_uploads(request, cfg)
        if len(payloads) > cfg.max_files:
            raise HTTPError(
                413, f"{len(payloads)} files; at most {cfg.max_files} per request", "too_many_files"
            )
        decoded = await _decode(ctx, payloads)
        good = [i for i, d in enumerate(decoded) if not isinstance(d, HTTPError)]
        results: list[dict[str, Any] | None] = [None] * len(payloads)
        for i, d in enumerate(decoded):
            if isinstance(d, HTTPError):
                metrics.error(d.reason)
                results[i] = _file_error(payloads[i][0], d)
        if not good:
            first = next(d for d in decoded if isinstance(d, HTTPError))
            name = payloads[0][0] if len(payloads) == 1 else None
            detail = f"{name}: {first.detail}" if name else first.detail
            if len(payloads) > 1:
                detail = f"none of the {len(payloads)} files could be read; first: {detail}"
            return JSONResponse(
                {"detail": detail, "predictions": results}, status_code=first.status
            )
        probs = await ctx.batcher.submit([decoded[i] for i in good])
        if isinstance(predictor, DensePredictor):
            sizes = [_upload_size(payloads[i][1]) for i in good]
            names = [payloads[i][0] for i in good]
            # NMS and PNG encoding off the event loop, beside the inference thread
            answers = await asyncio.to_thread(dense_answers, predictor, probs, sizes, names)
            for i, rec in zip(good, answers):
                results[i] = rec
        else:
            for i, p in zip(good, probs):
                results[i] = predictor._to_prediction(p, payloads[i][0], k).to_dict()
        errors = len(payloads) - len(good)
        return {"predictions": results, "errors": errors, "backend": predictor.backend_name}

    @app.post("/explain", tags=["service"], summary="Grad-CAM heat map for one image")
    async def explain(
        request: Request,
        method: str = Query("gradcam", description="gradcam or gradcam++"),
        target: str | None = Query(None, description="class name or index (default: predicted)"),
    ) -> Any:
        if isinstance(predictor, DensePredictor):
            raise HTTPError(
                409,
                f"Grad-CAM explains classifiers; this is a {predictor.task} model",
                "no_gradcam",
            )
        if predictor.model is None:
            raise HTTPError(
                409,
                "Grad-CAM needs the PyTorch weights: serve a run directory, not an exported file",
                "no_gradcam",
            )
        if method not in CAM_METHODS:
            raise HTTPError(
                422, f"unknown method '{method}'; choose {', '.join(CAM_METHODS)}", "bad_method"
            )
        t = None
        if target is not None:
            if target in predictor.classes:
                t = predictor.classes.index(target)
            elif target.isdigit() and int(target) < ctx.num_classes:
                t = int(target)
            else:
                raise HTTPError(422, f"unknown class '{target}'", "bad_target")
        payloads = await _read_uploads(request, cfg)
        if len(payloads) != 1:
            raise HTTPError(422, f"send one image to explain; got {len(payloads)}", "bad_count")
        (decoded,) = await _decode(ctx, payloads)
        if isinstance(decoded, HTTPError):
            raise decoded
        result = await ctx.batcher.exclusive(explain_image, predictor, decoded, t, method)
        return {"source": payloads[0][0], **result}

    oip.add_routes(app, ctx)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # add_middleware wraps: the last added runs first. Order, outermost first: observe (metrics,
    # access log) → CORS (answers pre-flights itself) → API key → body limits and timeouts.
    app.add_middleware(
        RequestGuard,
        metrics=metrics,
        max_body_bytes=cfg.max_body_bytes,
        read_timeout_s=cfg.read_timeout_s,
        body_timeout_s=cfg.body_timeout_s,
    )
    if cfg.api_key:
        public = HEALTH_PATHS | ({"/metrics"} if cfg.public_metrics else set())
        app.add_middleware(
            ApiKeyGuard, api_key=cfg.api_key, public_paths=frozenset(public), metrics=metrics
        )
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=[
                "content-type",
                "x-api-key",
                "authorization",
                "inference-header-content-length",
            ],
            expose_headers=["inference-header-content-length"],
        )
    app.add_middleware(ObserveMiddleware, metrics=metrics, router=app.router, access=cfg.access_log)
    app.state.cnnlab = ctx
    return app
