"""The service tried as an attacker would, each attack injected for real on 127.0.0.1.

Over-limit chunked uploads, bodies shorter than their Content-Length, connections that stall,
clients that vanish mid-upload, one bad file among good ones, out-of-range top_k, unauthenticated
metrics and docs, label explosion through random paths, a config that contradicts its weights,
16 concurrent huge PNGs against the health probe, and SIGTERM with a request in flight. After each,
the server must still be healthy; normal requests must log no warnings.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import shutil
import signal
import socket
import statistics
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.deploy.conftest import API_KEY, KEY, png_bytes, start_server

BOUNDARY = "attack-boundary"


@pytest.fixture(scope="module")
def srv(shared_server):
    return shared_server


def multipart(files: list[tuple[str, bytes, str]]) -> bytes:
    parts = []
    for name, data, ctype in files:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        parts.append(head + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head.encode() + body)
    return s


def read_all(s: socket.socket, timeout: float = 10) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def healthy(srv) -> bool:
    return httpx.get(f"{srv.base}/health", timeout=5).json()["status"] == "ok"


def test_chunked_multipart_over_the_limit_is_413(srv, digit_pngs):
    head = multipart([("a.png", digit_pngs[0][0], "image/png")])[:-40]

    def body():
        yield head
        for _ in range(24):  # ~1.5 MB more, no Content-Length: only counting can catch it
            yield b"\x00" * 65536

    r = httpx.post(
        f"{srv.base}/predict",
        content=body(),
        headers={**KEY, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert healthy(srv)


def test_body_shorter_than_content_length_gets_408_in_time(srv):
    t0 = time.monotonic()
    s = raw_request(
        srv.port,
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: 5000\r\n\r\n",
        b"\x89PNG" + b"\x00" * 96,
    )
    answer = read_all(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - t0 < 5  # read timeout is 1 s
    assert healthy(srv)


def test_stalled_connections_are_closed(srv):
    silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(8)]
    partial = [raw_request(srv.port, "POST /predict HTTP/1.1\r\nHost: x\r\n") for _ in range(8)]
    dripping = raw_request(srv.port, "GET /health HTTP/1.1\r\n")
    t0 = time.monotonic()
    for _ in range(4):  # one byte every 0.4 s: never idle, yet past the 1 s header deadline
        time.sleep(0.4)
        try:
            dripping.sendall(b"X")
        except OSError:
            break
    answers = [read_all(s) for s in [*silent, *partial, dripping]]
    assert time.monotonic() - t0 < 8
    for a in answers:
        assert a == b"" or a.startswith(b"HTTP/1.1 408"), a[:100]
    for s in [*silent, *partial, dripping]:
        s.close()
    assert healthy(srv)


def test_client_disconnect_mid_upload_logs_one_line(srv, digit_pngs):
    before = srv.log()
    body = multipart([("a.png", digit_pngs[0][0], "image/png")])
    s = raw_request(
        srv.port,
        "POST /predict HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body) + 50000}\r\n\r\n",
        body[:-20],
    )
    time.sleep(0.3)
    s.close()
    for _ in range(30):
        new = srv.log()[len(before) :]
        if "disconnected" in new:
            break
        time.sleep(0.1)
    lines = [ln for ln in new.splitlines() if ln.strip()]
    assert len(lines) == 1 and "disconnected" in lines[0], new
    assert "Traceback" not in new
    assert healthy(srv)


def test_one_bad_file_among_good_ones_is_named(srv, digit_pngs):
    files = [
        ("files", ("good0.png", digit_pngs[0][0], "image/png")),
        ("files", ("broken.png", b"definitely not a png", "image/png")),
        ("files", ("notes.txt", b"hello", "text/plain")),
        ("files", ("good1.png", digit_pngs[1][0], "image/png")),
    ]
    r = httpx.post(f"{srv.base}/predict", files=files, headers=KEY)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["source"] for p in preds] == ["good0.png", "broken.png", "notes.txt", "good1.png"]
    assert "label" in preds[0] and "label" in preds[3]
    assert preds[1]["status"] == 415 and "not an image" in preds[1]["error"]
    assert preds[2]["status"] == 415 and "text/plain" in preds[2]["error"]
    assert r.json()["errors"] == 2


@pytest.mark.parametrize("k", [0, -1, 11, 1000])
def test_top_k_outside_1_to_k_is_422(srv, digit_pngs, k):
    files = {"file": ("a.png", digit_pngs[0][0], "image/png")}
    r = httpx.post(f"{srv.base}/predict?top_k={k}", files=files, headers=KEY)
    assert r.status_code == 422 and "between 1 and 10" in r.json()["detail"]


def test_top_k_at_the_bounds_answers(srv, digit_pngs):
    files = {"file": ("a.png", digit_pngs[0][0], "image/png")}
    for k in (1, 10):
        r = httpx.post(f"{srv.base}/predict?top_k={k}", files=files, headers=KEY)
        assert len(r.json()["predictions"][0]["top_k"]) == k


def test_api_key_guards_everything_but_the_probes(srv):
    for path in (
        "/metrics",
        "/openapi.json",
        "/docs",
        "/",
        "/metadata",
        "/v2",
        "/v2/models/digits",
    ):
        r = httpx.get(f"{srv.base}{path}")
        assert r.status_code == 401, path
        assert "basic" in r.headers["www-authenticate"].lower()
    assert httpx.get(f"{srv.base}/v2/models/digits").json()["error"]  # v2 error shape
    for path in ("/health", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{srv.base}{path}").status_code == 200, path
    assert httpx.get(f"{srv.base}/openapi.json", headers=KEY).status_code == 200
    basic = base64.b64encode(f"me:{API_KEY}".encode()).decode()  # what a browser sends
    assert httpx.get(f"{srv.base}/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(f"{srv.base}/metrics", headers=bearer).status_code == 200


def test_metrics_labels_are_route_templates(srv):
    def metrics() -> str:
        return httpx.get(f"{srv.base}/metrics", headers=KEY).text

    httpx.get(f"{srv.base}/v2/models/digits/ready", headers=KEY)
    size = len(metrics())
    for i in range(100):
        httpx.get(f"{srv.base}/random-{i}-{np.random.randint(1 << 30)}", headers=KEY)
    # the path decodes to: x"} 1 <newline> fake_series{a="
    httpx.get(f"{srv.base}/x%22%7D%201%0Afake_series%7Ba%3D%22", headers=KEY)
    text = metrics()
    assert len(text) < size + 600  # a few new (method, route, status) series at most, not 100
    assert "random-" not in text and "fake_series" not in text
    assert 'route="unmatched",status="404"' in text
    assert 'route="/v2/models/{name}/ready"' in text


def test_config_contradicting_weights_is_refused_at_start(digits_run, tmp_path):
    run = tmp_path / "edited"
    shutil.copytree(digits_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["classes"] = cfg["classes"][:8]  # 8 names for a 10-way head
    (run / "config.json").write_text(json.dumps(cfg))
    res = run_cli("serve", "--run", str(run), "--backend", "torch", "--port", "1", timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "8 classes" in lines[0] and "10" in lines[0], res.stderr


def test_normal_requests_log_no_warnings(srv, digit_pngs):
    before = len(srv.log())
    files = [("files", (f"{i}.png", digit_pngs[i][0], "image/png")) for i in range(3)]
    assert httpx.post(f"{srv.base}/predict", files=files, headers=KEY).status_code == 200
    assert (
        httpx.post(f"{srv.base}/explain", files={"file": files[0][1]}, headers=KEY).status_code
        == 200
    )
    r = httpx.post(
        f"{srv.base}/v2/models/digits/infer",
        json={
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(digit_pngs[0][0]).decode()],
                }
            ]
        },
        headers=KEY,
    )
    assert r.status_code == 200, r.text
    time.sleep(0.3)
    new = srv.log()[before:]
    assert "warn" not in new.lower() and "Traceback" not in new, new


def _huge_png() -> bytes:
    # 6300 x 6300 (39.7 MP, under the 40 MP limit) with some texture: ~0.2 s of decoding each
    tile = (np.arange(6300, dtype=np.uint16)[None] * 7 % 251).astype(np.uint8)
    return png_bytes(np.broadcast_to(tile, (6300, 6300)).copy())


def test_health_stays_fast_while_saturated_by_huge_pngs(srv):
    png = _huge_png()
    assert len(png) < 1024 * 1024

    def upload(i: int) -> int:
        with httpx.Client(timeout=120) as c:
            r = c.post(
                f"{srv.base}/predict", files={"file": (f"{i}.png", png, "image/png")}, headers=KEY
            )
            return r.status_code

    latencies = []
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(upload, i) for i in range(16)]
        time.sleep(0.3)  # let the uploads arrive and fill the decoding pool
        with httpx.Client(timeout=10) as probe:
            while not all(f.done() for f in futures) and len(latencies) < 200:
                t0 = time.perf_counter()
                assert probe.get(f"{srv.base}/health").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.02)
        statuses = [f.result() for f in futures]
    assert set(statuses) == {200}
    assert len(latencies) >= 5  # the uploads took a while: the probe really ran during them
    # the event loop never blocks on decoding; 2 shared cores make the tail noisy, so the
    # median holds the 50 ms goal and the worst case stays far below the old 10 s stall
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 0.5, latencies


def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(digits_run, digit_pngs, tmp_path):
    server = start_server(digits_run, tmp_path / "drain.log", "--backend", "torch", api_key=None)
    body = multipart([("a.png", digit_pngs[0][0], "image/png")])
    s = raw_request(
        server.port,
        "POST /predict HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n",
        body[:100],
    )
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # the listening socket is closed: new clients are refused
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    s.sendall(body[100:])
    answer = read_all(s, timeout=15)
    s.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    payload = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert payload["predictions"][0]["label"] in [str(i) for i in range(10)]
    # uvicorn exits by re-raising the signal once drained: killed by SIGTERM, not crashed
    assert server.proc.wait(20) in (0, -signal.SIGTERM)
    assert "finishing requests in flight" in server.log()
    server.stop()


@pytest.mark.slow
def test_two_workers_share_the_port(digits_run, digit_pngs, tmp_path):
    server = start_server(
        digits_run, tmp_path / "workers.log", "--backend", "torch", "--workers", "2", api_key=None
    )
    try:
        files = {"file": ("a.png", digit_pngs[0][0], "image/png")}
        with httpx.Client() as c:
            statuses = {
                c.post(f"{server.base}/predict", files=files).status_code for _ in range(20)
            }
        assert statuses == {200}
    finally:
        assert server.stop() in (0, -signal.SIGTERM)


def test_server_image_decoding_has_no_pixel_bypass():
    # the same guard code the server runs: a PNG header claiming 49 MP is refused before decoding
    from cnnlab.deploy.uploads import HTTPError, decode_upload

    img = Image.new("L", (7000, 7000))
    with pytest.raises(HTTPError) as exc:
        decode_upload(png_bytes(np.asarray(img)), (1, 28, 28), 40_000_000)
    assert exc.value.status == 400
