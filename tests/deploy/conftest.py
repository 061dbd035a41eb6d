"""A real `cnnlab serve` process on 127.0.0.1 for the service tests, with its log kept for checks.

One server (API key set, short timeouts, warnings *not* silenced) is shared by the service, v2
protocol, attack and web-page tests of a session; tests that kill or restart a server start their
own with :func:`start_server`.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

API_KEY = "s3cret-key"
KEY = {"X-API-Key": API_KEY}
SHARED_OPTIONS = (
    "--backend", "onnx", "--max-batch", "16", "--max-wait-ms", "10", "--max-body-mb", "1",
    "--max-pixels", "40000000", "--queue-size", "128", "--max-files", "16",
    "--header-timeout", "1", "--read-timeout", "1", "--body-timeout", "5",
    "--decode-workers", "2", "--model-name", "digits",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `cnnlab serve` subprocess; its stdout and stderr go to ``log_path``."""

    def __init__(self, run_dir: Path, options: tuple[str, ...], log_path: Path, env: dict):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - held open for the process lifetime
        cmd = [sys.executable, "-m", "cnnlab", "serve", "--run", str(run_dir)]
        cmd += ["--port", str(self.port), *options]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout  # bounded: start-up on a busy machine
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        text = self.log()
        self.stop()
        raise RuntimeError(f"server did not start:\n{text}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def start_server(
    run_dir: Path, log_path: Path, *options: str, api_key: str | None = API_KEY
) -> Server:
    """Start `cnnlab serve --run run_dir OPTIONS` and wait until /health answers."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "CNNLAB_API_KEY")}
    if api_key:
        env["CNNLAB_API_KEY"] = api_key
    server = Server(run_dir, options, log_path, env)
    server.wait_ready()
    return server


@pytest.fixture(scope="session")
def shared_server(digits_run, tmp_path_factory):
    """The shared server (onnx backend, API key, 1 s timeouts, 1 MB bodies, 16 files)."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    server = start_server(digits_run, log, *SHARED_OPTIONS)
    yield server
    server.stop()


def png_bytes(array) -> bytes:
    """A PNG of a uint8 (H, W) or (H, W, 3) array."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def digit_pngs():
    """The first 64 test digits as (PNG bytes, label) pairs."""
    from cnnlab.data import load_dataset

    test = load_dataset("digits").test
    return [
        (png_bytes(img[0].numpy()), int(y)) for img, y in zip(test.images[:64], test.labels[:64])
    ]
