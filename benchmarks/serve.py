"""Service benchmark: 16 concurrent clients on 127.0.0.1 against `cnnlab serve`, vs offline batches.

Starts the real service (uvicorn, micro-batching) in a subprocess, sends a bounded number of
single-image PNG requests from 16 client threads, and compares the served images/s with the same
backend's offline batched throughput (batches of ``--max-batch`` already-decoded images), measured
before and after the HTTP run (median) so contention hits both alike.

    .venv/bin/python benchmarks/serve.py [--run runs/x] [--requests 640]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

import cnnlab  # noqa: E402
from cnnlab.data import load_dataset, normalize_batch  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_ips(pred, images: torch.Tensor, batch: int, seconds: float = 3.0) -> float:
    x = normalize_batch(images[:batch], pred.mean, pred.std)
    pred.logits(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pred.logits(x)
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", help="run directory (default: train simplecnn on digits here)")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    run = args.run
    if run is None:
        from cnnlab.train import TrainConfig, fit

        run = str(
            fit(
                TrainConfig(
                    model="simplecnn",
                    epochs=1,
                    out_dir=tempfile.mkdtemp(),
                    name="serve-bench",
                    progress=False,
                    report=False,
                )
            ).run_dir
        )
    pred = cnnlab.load(run, backend=args.backend)
    cfg_name = pred.config.get("train_config", {}).get("data", {}).get("name", "digits")
    data_dir = pred.config.get("train_config", {}).get("data", {}).get("data_dir")
    test = load_dataset(cfg_name, data_dir=data_dir).test
    pngs = []
    for img in test.images[:64]:
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    offline = [offline_ips(pred, test.images, args.max_batch)]

    port = _port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cnnlab",
            "serve",
            "--run",
            run,
            "--port",
            str(port),
            "--backend",
            args.backend,
            "--max-batch",
            str(args.max_batch),
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--threads",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        per_client = args.requests // args.clients
        lat: list[float] = []
        errors = 0

        def client(i: int) -> list[float]:
            nonlocal errors
            out = []
            with httpx.Client(timeout=60) as c:
                for j in range(per_client):
                    t0 = time.perf_counter()
                    r = c.post(
                        f"{base}/predict",
                        files={"file": ("x.png", pngs[(i + j) % 64], "image/png")},
                    )
                    out.append(time.perf_counter() - t0)
                    errors += r.status_code != 200
            return out

        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:  # warm-up
            list(pool.map(client, range(args.clients)))
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            for r in pool.map(client, range(args.clients)):
                lat += r
        wall = time.perf_counter() - t0
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        proc.terminate()
        proc.wait(10)
    offline.append(offline_ips(pred, test.images, args.max_batch))
    served = len(lat) / wall
    off = statistics.median(offline)
    batches = next(
        float(ln.split()[1]) for ln in metrics.splitlines() if ln.startswith("cnnlab_batches_total")
    )
    imgs = next(
        float(ln.split()[1])
        for ln in metrics.splitlines()
        if ln.startswith("cnnlab_batch_images_total")
    )
    cmd = "python benchmarks/serve.py " + " ".join(sys.argv[1:])
    text = "\n".join(
        [
            "## Service (`benchmarks/serve.py`)",
            "",
            f"Reproduce: `{cmd.strip()}` · {machine_line()}",
            "",
            f"Model: {pred.config['model']['name']} on {cfg_name} ({tuple(pred.input_size)}), backend "
            f"{pred.backend_name}, max batch {args.max_batch}, max wait {args.max_wait_ms} ms. "
            f"{args.clients} concurrent clients on 127.0.0.1, {len(lat)} single-image PNG requests "
            f"(plus a warm-up pass), {errors} errors. The clients run on the same 2-core, shared CPU "
            "as the server (PNG encode/HTTP parse/decode included), and other engineers' jobs were "
            "running: offline throughput is the median of measurements before and after the HTTP run.",
            "",
            "| served img/s | offline batched img/s | ratio | p50 ms | p99 ms | mean images per forward pass |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {served:.0f} | {off:.0f} | {served / off:.2f}× | {np.percentile(lat, 50) * 1000:.1f} | "
            f"{np.percentile(lat, 99) * 1000:.1f} | {imgs / max(batches, 1):.1f} |",
        ]
    )
    print(text)
    write_section("serve", text)


if __name__ == "__main__":
    main()
