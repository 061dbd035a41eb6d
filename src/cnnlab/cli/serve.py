"""`cnnlab serve`: an HTTP inference service (FastAPI + uvicorn) for a run or an ONNX file."""

from __future__ import annotations

import argparse
import os
import sys

NAME = "serve"
HELP = "serve a run directory or an exported .onnx model over HTTP with micro-batching"
EXAMPLE = "cnnlab serve --run runs/fastnet-fmnist --port 8000 --max-batch 16 --max-wait-ms 5"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory written by `cnnlab train`")
    src.add_argument("--model", help="an exported .onnx file (made by `cnnlab export`)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--backend",
        default="auto",
        help="torch, channels_last, jit, onnx, int8 or auto (measure and pick; run directories)",
    )
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: torch's)")
    p.add_argument("--max-batch", type=int, default=32, help="largest micro-batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait to fill a batch")
    p.add_argument("--queue-size", type=int, default=256, help="waiting images before 503")
    p.add_argument("--max-body-mb", type=float, default=10.0, help="request body limit (413)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="decompression-bomb guard")
    p.add_argument("--top-k", type=int, default=5, help="default number of classes answered")
    p.add_argument(
        "--api-key-env",
        default="CNNLAB_API_KEY",
        help="environment variable holding the API key clients must send as X-API-Key "
        "(no key is required when it is unset)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from cnnlab.deploy.export import file_sha256
    from cnnlab.deploy.predictor import load
    from cnnlab.deploy.service import ServeConfig, serve
    from cnnlab.errors import ConfigError, RunError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_batch < 1 or args.queue_size < 1 or args.max_wait_ms < 0 or args.max_body_mb <= 0:
        raise ConfigError("--max-batch, --queue-size and --max-body-mb must be positive")
    if args.model:
        if not args.model.lower().endswith(".onnx"):
            raise RunError(
                f"{args.model}: serve loads .onnx files or run directories only "
                "(TorchScript files hold code and are not loaded by the service)"
            )
        predictor = load(args.model, threads=args.threads)
        model_hash = file_sha256(args.model)
    else:
        predictor = load(args.run, backend=args.backend, threads=args.threads)
        weights = os.path.join(args.run, "model.safetensors")
        model_hash = file_sha256(weights)
    if predictor.backend_choice is not None:
        timings = ", ".join(
            f"{k} {v * 1000:.2f} ms" for k, v in predictor.backend_choice.medians.items()
        )
        print(f"backend: {predictor.backend_name} (measured at batch 1: {timings})", flush=True)
    else:
        print(f"backend: {predictor.backend_name}", flush=True)
    cfg = ServeConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        api_key=os.environ.get(args.api_key_env) or None,
        top_k=args.top_k,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"serving on http://{args.host}:{args.port} (POST /predict, GET /health)", flush=True)
    serve(predictor, host=args.host, port=args.port, cfg=cfg, model_hash=model_hash)
    return 0
