"""The HTTP service through a real uvicorn process on 127.0.0.1: endpoints, bad inputs, concurrency.

The server is the session's shared one (tests/deploy/conftest.py): API key set, 1 MB bodies,
ONNX Runtime backend, warnings not silenced.
"""

from __future__ import annotations

import concurrent.futures
import io

import httpx
import numpy as np
import pytest
from PIL import Image

import cnnlab
from tests.deploy.conftest import KEY

H = KEY


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server.base


@pytest.fixture(scope="module")
def samples(digit_pngs):
    return digit_pngs


def test_health_metadata_metrics(server, digits_run):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    meta = httpx.get(f"{server}/metadata", headers=H).json()
    assert meta["classes"] == [str(i) for i in range(10)] and meta["input_size"] == [1, 28, 28]
    assert len(meta["model_hash"]) == 64 and meta["backend"] == "onnx"
    text = httpx.get(f"{server}/metrics", headers=H).text
    assert "# TYPE cnnlab_request_latency_seconds histogram" in text
    assert "cnnlab_requests_total" in text


def test_api_key_required(server, samples):
    r = httpx.post(f"{server}/predict", files={"file": ("a.png", samples[0][0], "image/png")})
    assert r.status_code == 401
    r = httpx.post(
        f"{server}/predict",
        files={"file": ("a.png", samples[0][0], "image/png")},
        headers={"X-API-Key": "wrong"},
    )
    assert r.status_code == 401


def test_multipart_raw_and_many(server, samples, digits_run):
    ref = cnnlab.load(digits_run)
    expected = ref.predict([np.asarray(Image.open(io.BytesIO(b))) for b, _ in samples[:3]])
    r = httpx.post(
        f"{server}/predict?top_k=3",
        headers=H,
        files={"file": ("a.png", samples[0][0], "image/png")},
    )
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert pred["label"] == expected[0].label and len(pred["top_k"]) == 3
    assert pred["probability"] == pytest.approx(expected[0].probability, abs=1e-4)
    r = httpx.post(
        f"{server}/predict", content=samples[1][0], headers={**H, "Content-Type": "image/png"}
    )
    assert r.json()["predictions"][0]["label"] == expected[1].label
    files = [("files", (f"{i}.png", b, "image/png")) for i, (b, _) in enumerate(samples[:3])]
    r = httpx.post(f"{server}/predict", files=files, headers=H)
    assert [p["label"] for p in r.json()["predictions"]] == [e.label for e in expected]


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (7000, 7000)).save(buf, format="PNG")  # 49 MP > the 40 MP limit, ~50 KB
    return buf.getvalue()


def test_bad_inputs_get_clear_status_codes(server, samples):
    png = samples[0][0]
    cases = [
        ({"files": {"file": ("big.png", b"\x89PNG" + b"0" * (2 << 20), "image/png")}}, 413),
        ({"files": {"file": ("a.txt", b"hello world", "text/plain")}}, 415),
        ({"files": {"file": ("a.png", b"this is not an image at all", "image/png")}}, 415),
        ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, 415),
        ({"files": {"file": ("t.png", png[: len(png) // 2], "image/png")}}, 400),
        ({"files": {"file": ("bomb.png", _bomb(), "image/png")}}, 400),
        ({"files": {"other": ("a.png", png, "image/png")}}, 422),
        ({"data": {"note": "no file"}}, 422),
    ]
    for kwargs, status in cases:
        headers = {**H, **kwargs.pop("headers", {})}
        r = httpx.post(f"{server}/predict", headers=headers, **kwargs)
        assert r.status_code == status, (kwargs.keys(), r.status_code, r.text)
        assert r.json()["detail"]


def test_streamed_body_over_limit_is_refused(server):
    def chunks():
        for _ in range(40):
            yield b"\x00" * 65536  # 2.5 MB without a Content-Length header

    r = httpx.post(
        f"{server}/predict", content=chunks(), headers={**H, "Content-Type": "image/png"}
    )
    assert r.status_code == 413


def test_64_concurrent_requests_all_correct_then_healthy(server, samples, digits_run):
    ref = cnnlab.load(digits_run)
    expected = [
        p.label for p in ref.predict([np.asarray(Image.open(io.BytesIO(b))) for b, _ in samples])
    ]

    def one(i):
        with httpx.Client(timeout=60) as c:
            r = c.post(
                f"{server}/predict",
                headers=H,
                files={"file": (f"{i}.png", samples[i][0], "image/png")},
            )
            return r.status_code, r.json()["predictions"][0]["label"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    assert [s for s, _ in results] == [200] * 64
    assert [lab for _, lab in results] == expected
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    text = httpx.get(f"{server}/metrics", headers=H).text
    batches = float(
        next(ln.split()[1] for ln in text.splitlines() if ln.startswith("cnnlab_batches_total"))
    )
    images = float(
        next(
            ln.split()[1] for ln in text.splitlines() if ln.startswith("cnnlab_batch_images_total")
        )
    )
    assert images > batches  # concurrent requests shared forward passes
