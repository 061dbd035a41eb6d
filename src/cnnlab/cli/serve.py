"""`cnnlab serve`: an HTTP inference service (FastAPI + uvicorn) for a run or an ONNX file.

cnnlab's ``/predict``, the Open Inference Protocol v2 (``/v2/...``, for tritonclient and KServe
clients), a web page at ``/`` and API docs at ``/docs``; limits, timeouts and the API key are the
options below (:class:`cnnlab.deploy.limits.ServeConfig`).
"""

from __future__ import annotations

import argparse
import os
import sys

NAME = "serve"
HELP = "serve a run or an .onnx model over HTTP: /predict, Open Inference Protocol v2, a web page"
EXAMPLE = "cnnlab serve --run runs/fastnet-fmnist --port 8000 --max-batch 16 --max-wait-ms 5"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory written by `cnnlab train`")
    src.add_argument("--model", help="an exported .onnx file (made by `cnnlab export`)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--model-name",
        default=None,
        help="name in /v2/models/{name} (default: the run directory's or file's name)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        help="torch, channels_last, jit, onnx, int8 or auto (measure and pick; run directories)",
    )
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: torch's)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own model copy",
    )
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch", type=int, default=32, help="largest micro-batch")
    g.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait to fill a batch")
    g.add_argument("--queue-size", type=int, default=256, help="waiting images before 503")
    g.add_argument("--max-body-mb", type=float, default=10.0, help="request body limit (413)")
    g.add_argument("--max-pixels", type=int, default=40_000_000, help="decompression-bomb guard")
    g.add_argument(
        "--max-files", type=int, default=64, help="images per request (files or v2 batch size)"
    )
    g.add_argument("--top-k", type=int, default=5, help="default number of classes answered")
    g.add_argument(
        "--decode-workers", type=int, default=2, help="threads decoding uploads off the event loop"
    )
    t = p.add_argument_group("timeouts (seconds)")
    t.add_argument(
        "--header-timeout", type=float, default=10.0, help="request line and headers (408)"
    )
    t.add_argument(
        "--read-timeout", type=float, default=10.0, help="longest pause inside a body (408)"
    )
    t.add_argument("--body-timeout", type=float, default=60.0, help="a whole request body (408)")
    t.add_argument("--keep-alive", type=float, default=5.0, help="idle keep-alive connections")
    t.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, how long requests in flight may take to finish",
    )
    s = p.add_argument_group("security and logs")
    s.add_argument(
        "--api-key-env",
        default="CNNLAB_API_KEY",
        help="environment variable holding the API key clients must send as X-API-Key "
        "(no key is required when it is unset); with a key every path but the health probes "
        "needs it",
    )
    s.add_argument(
        "--public-metrics",
        action="store_true",
        help="let /metrics answer without the API key (for a Prometheus scraper)",
    )
    s.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN (repeatable; CORS is off by default)",
    )
    s.add_argument("--access-log", action="store_true", help="one line per request on stderr")


def run(args: argparse.Namespace) -> int:
    import torch

    from cnnlab.deploy.http_server import ModelSource, check_predictor, serve
    from cnnlab.deploy.limits import ServeConfig
    from cnnlab.errors import ConfigError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {args.workers}")
    source = ModelSource(args.model or args.run, args.backend, args.threads)
    cfg = ServeConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_files=args.max_files,
        top_k=args.top_k,
        decode_workers=args.decode_workers,
        header_timeout_s=args.header_timeout,
        read_timeout_s=args.read_timeout,
        body_timeout_s=args.body_timeout,
        keep_alive_s=args.keep_alive,
        graceful_shutdown_s=args.graceful_timeout,
        api_key=os.environ.get(args.api_key_env) or None,
        public_metrics=args.public_metrics,
        cors_origins=tuple(args.cors_origin),
        access_log=args.access_log,
        model_name=args.model_name or source.default_name(),
    )
    # loaded and checked here even with several workers: a bad run fails once, in one line
    predictor, model_hash = source.load()
    check_predictor(predictor)
    if predictor.backend_choice is not None:
        timings = ", ".join(
            f"{k} {v * 1000:.2f} ms" for k, v in predictor.backend_choice.medians.items()
        )
        print(f"backend: {predictor.backend_name} (measured at batch 1: {timings})", flush=True)
    else:
        print(f"backend: {predictor.backend_name}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
    where = f"http://{args.host}:{args.port}"
    print(
        f"serving '{cfg.model_name}' on {where}: web page {where}/, API docs {where}/docs, "
        f"POST /predict, Open Inference Protocol at /v2"
        + (f", {args.workers} workers" if args.workers > 1 else ""),
        flush=True,
    )
    if args.workers > 1:
        del predictor  # each worker loads its own copy
        serve(host=args.host, port=args.port, cfg=cfg, workers=args.workers, source=source)
    else:
        serve(predictor, host=args.host, port=args.port, cfg=cfg, model_hash=model_hash)
    return 0
