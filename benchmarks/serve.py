"""Service benchmark: `cnnlab serve` on 127.0.0.1 against offline batches and a naive FastAPI server.

For each model it starts the real service (uvicorn, micro-batching, decoding on a thread pool) and
sends a bounded number of single-image PNG requests from 16 and then 64 client threads, through
cnnlab's ``/predict`` (multipart) and through the Open Inference Protocol v2 with binary tensors
(``BYTES`` input, what ``tritonclient`` sends). While the 64 clients saturate ``/predict``, one
more client probes ``/health`` every 20 ms (p99 latency). Then it starts the server a user would
write first — FastAPI, one ``model(x)`` per request, no batching, decoding inside the handler —
and drives it with the same 16 clients. Offline = the same backend on already-decoded batches of
``--max-batch`` images, measured before and after the HTTP runs (median), so a change in load
hits both alike.

    .venv/bin/python benchmarks/serve.py [--run runs/x] [--requests 640]

``--naive-server RUN --port P`` runs only the naive baseline (the benchmark starts it that way).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import io
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from fastapi import (
    FastAPI,
    UploadFile,
)  # module level: FastAPI resolves the handler's annotations here
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import load_average, machine_line, write_section  # noqa: E402

import cnnlab  # noqa: E402
from cnnlab.data import load_dataset, normalize_batch  # noqa: E402

BOUNDARY = "cnnlab-bench-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
MODEL_NAME = "bench"


def multipart(png: bytes) -> bytes:
    """A multipart/form-data body with one ``file`` field, as browsers and httpx send it."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + png + f"\r\n--{BOUNDARY}--\r\n".encode()


def v2_binary(png: bytes) -> tuple[bytes, dict[str, str]]:
    """A v2 infer request as tritonclient sends it: JSON header, then the BYTES tensor."""
    raw = struct.pack("<I", len(png)) + png
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + raw, headers


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


def train_run(model: str, image_size: int | None, epochs: int) -> str:
    """A short digits run of ``model`` (throughput does not depend on how well it is trained)."""
    from cnnlab.train import TrainConfig, fit
    from cnnlab.train.config import DataConfig

    cfg = TrainConfig(
        model=model,
        data=DataConfig(name="digits", image_size=image_size),
        epochs=epochs,
        out_dir=tempfile.mkdtemp(),
        name=f"serve-bench-{model}",
        progress=False,
        report=False,
        checkpoint=False,
    )
    return str(fit(cfg).run_dir)


# -- the naive baseline ---------------------------------------------------------------------------
def naive_app(run: str, backend: str):
    """What a user writes first: decode in the handler, one forward pass per request."""
    pred = cnnlab.load(run, backend=backend)
    c, h, w = pred.input_size
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(file: UploadFile):
        data = await file.read()
        im = Image.open(io.BytesIO(data)).convert("L" if c == 1 else "RGB").resize((w, h))
        arr = np.array(im, dtype=np.uint8).reshape(h, w, c).transpose(2, 0, 1)
        x = normalize_batch(torch.from_numpy(arr)[None], pred.mean, pred.std)
        probs = torch.softmax(pred.logits(x), 1)[0]
        k = int(probs.argmax())
        return {"label": pred.classes[k], "probability": float(probs[k])}

    return app


def run_naive_server(run: str, port: int, backend: str) -> None:
    import uvicorn

    torch.set_num_threads(2)
    uvicorn.run(naive_app(run, backend), host="127.0.0.1", port=port, log_level="warning")


# -- load generation ------------------------------------------------------------------------------
def wait_healthy(base: str, proc: subprocess.Popen) -> None:
    for _ in range(600):  # bounded: at most ~2 min of start-up (backend measurement included)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def drive(port: int, path: str, bodies: list[tuple[bytes, dict]], clients: int, requests: int):
    """``requests`` POSTs from ``clients`` keep-alive threads; (img/s, latencies, errors)."""
    per_client = max(1, requests // clients)
    errors = 0
    lock = threading.Lock()

    def client(i: int) -> list[float]:
        # A lean load generator (like wrk): keep-alive, bodies encoded once. A full HTTP client
        # library costs more CPU per request than the server does, and the clients share the
        # server's cores, so a heavy client would measure itself.
        nonlocal errors
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            for j in range(per_client):
                body, headers = bodies[(i + j) % len(bodies)]
                t0 = time.perf_counter()
                conn.request("POST", path, body, headers)
                r = conn.getresponse()
                r.read()
                out.append(time.perf_counter() - t0)
                if r.status != 200:
                    with lock:
                        errors += 1
        finally:
            conn.close()
        return out

    lat: list[float] = []
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for r in pool.map(client, range(clients)):
            lat += r
    wall = time.perf_counter() - t0
    return len(lat) / wall, lat, errors


class HealthProbe(threading.Thread):
    """GET /health every 20 ms until stopped; its latencies show whether the loop ever blocks."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.latencies, self.stop = port, [], threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set() and len(self.latencies) < 5000:
            t0 = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            self.latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)
        conn.close()


def phase(port, path, bodies, clients, requests) -> dict:
    drive(port, path, bodies, clients, max(clients, requests // 4))  # warm-up
    ips, lat, errors = drive(port, path, bodies, clients, requests)
    return {
        "ips": ips,
        "p50": float(np.percentile(lat, 50) * 1000),
        "p99": float(np.percentile(lat, 99) * 1000),
        "requests": len(lat),
        "errors": errors,
    }


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_run(run: str, args) -> dict:
    """Serve ``run``; /predict and v2 at 16 and 64 clients, /health under load, naive baseline."""
    pred = cnnlab.load(run, backend=args.backend)
    cfg_name = pred.config.get("train_config", {}).get("data", {}).get("name", "digits")
    data_dir = pred.config.get("train_config", {}).get("data", {}).get("data_dir")
    test = load_dataset(cfg_name, data_dir=data_dir).test
    pngs = []
    for img in test.images[:64]:
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    images = torch.nn.functional.interpolate(
        test.images[: args.max_batch].float(), size=tuple(pred.input_size[1:]), mode="bilinear"
    ).to(torch.uint8)
    offline = [offline_ips(pred, images, args.max_batch)]
    predict_bodies = [(multipart(p), {"Content-Type": CONTENT_TYPE}) for p in pngs]
    v2_bodies = [v2_binary(p) for p in pngs]
    v2_path = f"/v2/models/{MODEL_NAME}/infer"
    out: dict = {"model": pred.config["model"]["name"], "data": cfg_name}
    out["input"], out["backend"] = tuple(pred.input_size), pred.backend_name

    port = _port()
    proc = start(
        [
            sys.executable, "-m", "cnnlab", "serve", "--run", run, "--port", str(port),
            "--backend", args.backend, "--max-batch", str(args.max_batch),
            "--max-wait-ms", str(args.max_wait_ms), "--threads", "2",
            "--model-name", MODEL_NAME, "--queue-size", "512",
        ]
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        out["predict16"] = phase(port, "/predict", predict_bodies, 16, args.requests)
        out["v2_16"] = phase(port, v2_path, v2_bodies, 16, args.requests)
        out["v2_64"] = phase(port, v2_path, v2_bodies, 64, args.requests)
        probe = HealthProbe(port)
        probe.start()
        out["predict64"] = phase(port, "/predict", predict_bodies, 64, args.requests)
        probe.stop.set()
        probe.join()
        lat = np.array(probe.latencies) * 1000
        out["health"] = {
            "n": len(lat),
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        }
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        stop(proc)

    def counter(name: str) -> float:
        return next(float(ln.split()[1]) for ln in metrics.splitlines() if ln.startswith(name))

    out["per_batch"] = counter("cnnlab_batch_images_total") / max(
        counter("cnnlab_batches_total"), 1
    )
    port = _port()
    naive = start(
        [
            sys.executable,
            __file__,
            "--naive-server",
            run,
            "--port",
            str(port),
            "--backend",
            args.backend,
        ]
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", naive)
        out["naive16"] = phase(port, "/predict", predict_bodies, 16, args.requests)
    finally:
        stop(naive)
    offline.append(offline_ips(pred, images, args.max_batch))
    out["offline"] = statistics.median(offline)
    return out


def report(rows: list[dict], args, load_before: str) -> str:
    cmd = "python benchmarks/serve.py " + " ".join(a for a in sys.argv[1:])
    lines = [
        "## Service (`benchmarks/serve.py`)",
        "",
        f"Reproduce: `{cmd.strip()}` · {machine_line()} (load average {load_before} when started)",
        "",
        f"`cnnlab serve` (uvicorn, micro-batching: max batch {args.max_batch}, max wait "
        f"{args.max_wait_ms} ms, backend {args.backend}, 2 inference threads, 2 decoding threads) "
        "on 127.0.0.1. Clients send single-image PNG requests (a bounded number per phase, after a "
        "warm-up pass) through `/predict` (multipart) or the Open Inference Protocol v2 with "
        "binary tensors (a `BYTES` input, as `tritonclient` sends it). The clients run on the "
        "same CPU as the server. Offline = the same backend on already-decoded batches of max-batch "
        "images, measured before and after the HTTP runs (median). Naive = FastAPI as a user "
        "writes it first: decoding in the handler, one forward pass per request (same backend).",
        "",
        "| model | input | offline img/s | /predict 16 clients | /predict 64 | v2 binary 16 | "
        "v2 binary 64 | naive 16 | **served / offline** | **vs naive** | images per pass |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for key in ("predict16", "predict64", "v2_16", "v2_64", "naive16"):
            p = r[key]
            err = f", {p['errors']} errors" if p["errors"] else ""
            cells.append(f"{p['ips']:.0f} (p99 {p['p99']:.0f} ms{err})")
        lines.append(
            f"| {r['model']} ({r['data']}) | {'×'.join(map(str, r['input']))} | "
            f"{r['offline']:.0f} | {' | '.join(cells)} | "
            f"**{r['predict16']['ips'] / r['offline']:.2f}×** | "
            f"**{r['predict16']['ips'] / r['naive16']['ips']:.1f}×** | {r['per_batch']:.1f} |"
        )
    lines += [
        "",
        "`/health` while 64 clients saturate `/predict` (one probe every 20 ms): "
        + "; ".join(
            f"{r['model']} {r['input'][1]} px: p50 {r['health']['p50']:.1f} ms, "
            f"**p99 {r['health']['p99']:.1f} ms**, max {r['health']['max']:.1f} ms "
            f"({r['health']['n']} probes)"
            for r in rows
        )
        + ".",
        "",
    ]
    goals = []
    for r in rows:
        px = r["input"][1]
        ratio = r["predict16"]["ips"] / r["offline"]
        need = 0.8 if px >= 224 else 0.5 if px >= 128 else None
        if need is not None:
            goals.append(
                f"served/offline ≥ {need} for {r['model']} {px} px: {ratio:.2f} "
                f"({'met' if ratio >= need else 'NOT met'})"
            )
        vs = r["predict16"]["ips"] / r["naive16"]["ips"]
        goals.append(
            f"≥ 2× naive at 16 clients for {r['model']} {px} px: {vs:.1f}× "
            f"({'met' if vs >= 2 else 'NOT met'})"
        )
        goals.append(
            f"/health p99 < 50 ms for {r['model']} {px} px: {r['health']['p99']:.1f} ms "
            f"({'met' if r['health']['p99'] < 50 else 'NOT met'})"
        )
    lines.append("Goals: " + "; ".join(goals) + ".")
    lines += [
        "",
        "Each served request costs a roughly fixed amount of CPU outside the model (HTTP, "
        "multipart or v2 parsing, PNG decode, resize, JSON), shared with the client threads on the "
        "same cores, so the ratio to offline depends on how much the model itself costs per image "
        "(simplecnn: almost nothing, so it measures the HTTP stack). The naive server runs one "
        "forward pass per request on the event loop, so it never batches and a slow decode "
        "blocks every other client.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--run",
        action="append",
        help="run directory (repeatable; default: train --models on digits here)",
    )
    ap.add_argument(
        "--models",
        nargs="+",
        default=["simplecnn", "resnet18:128", "resnet18:224"],
        help="MODEL[:IMAGE_SIZE] trained 1 epoch on digits when no --run is given",
    )
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--requests", type=int, default=640, help="requests per phase (bounded)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    ap.add_argument("--naive-server", metavar="RUN", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_server:
        run_naive_server(args.naive_server, args.port, args.backend)
        return
    torch.set_num_threads(2)
    load_before = load_average()
    runs = args.run or []
    if not runs:
        for spec in args.models:
            name, _, size = spec.partition(":")
            runs.append(train_run(name, int(size) if size else None, epochs=1))
    rows = [bench_run(run, args) for run in runs]
    text = report(rows, args, load_before)
    print(text)
    if not args.no_write:
        write_section("serve", text)


if __name__ == "__main__":
    main()
