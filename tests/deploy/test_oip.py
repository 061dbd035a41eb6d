"""Open Inference Protocol v2 through a client written by no one here: ``tritonclient.http``.

Health, metadata and inference, in the binary tensor mode tritonclient uses by default and in
plain JSON, on single images and batches, as encoded images (BYTES) and as preprocessed tensors
(FP32); the answers must equal ``cnnlab predict`` and the Predictor API.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

import cnnlab
from tests.conftest import run_cli
from tests.deploy.conftest import KEY

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "digits"


def key() -> dict[str, str]:
    """A fresh headers dict per call: tritonclient adds Inference-Header-Content-Length to the
    dict it is given, which would leak into the next request."""
    return dict(KEY)


@pytest.fixture(scope="module")
def client(shared_server):
    c = httpclient.InferenceServerClient(url=shared_server.base.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def reference(digits_run, digit_pngs, tmp_path_factory):
    """Offline answers for 5 digits: `cnnlab predict` (CLI) and the Predictor's probabilities."""
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i, (png, _) in enumerate(digit_pngs[:5]):
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes(png)
    res = run_cli("predict", "--run", str(digits_run), *map(str, paths), "--format", "json")
    assert res.returncode == 0, res.stderr
    labels = [r["label"] for r in json.loads(res.stdout)]
    pred = cnnlab.load(digits_run)
    x = pred.preprocess(paths)
    probs = pred.predict_proba(x).numpy()
    return {
        "pngs": [p.read_bytes() for p in paths],
        "labels": labels,
        "x": x.numpy(),
        "probs": probs,
    }


def test_health_and_metadata(client):
    assert client.is_server_live()  # the probes need no key
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL, headers=key())
    meta = client.get_server_metadata(headers=key())
    assert meta["name"] == "cnnlab" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(MODEL, headers=key())
    assert model["name"] == MODEL and model["versions"] == ["1"]
    inputs = {i["name"]: i for i in model["inputs"]}
    assert inputs["input"]["shape"] == [-1, 1, 28, 28] and inputs["image"]["datatype"] == "BYTES"
    outputs = {o["name"]: o for o in model["outputs"]}
    assert outputs["probabilities"]["shape"] == [-1, 10]
    limits = model["parameters"]["limits"]
    assert limits["max_files"] == 16 and limits["max_body_bytes"] == 1024 * 1024
    assert "api_key" not in limits
    assert client.get_model_metadata(MODEL, "1", headers=key())["name"] == MODEL


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("n", [1, 5], ids=["single", "batch"])
def test_encoded_images_match_cnnlab_predict(client, reference, binary, n):
    pngs = reference["pngs"][:n]
    if binary:
        data = np.array(pngs, dtype=np.object_)
    else:  # JSON cannot carry raw bytes: BYTES elements are base64 text
        data = np.array([base64.b64encode(p) for p in pngs], dtype=np.object_)
    inp = httpclient.InferInput("image", [n], "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        httpclient.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer(MODEL, [inp], outputs=outputs, headers=key())
    probs = result.as_numpy("probabilities")
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy("label")]
    assert probs.shape == (n, 10)
    assert labels == reference["labels"][:n]
    np.testing.assert_allclose(probs, reference["probs"][:n], atol=1e-4)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_preprocessed_tensor_batch_and_default_outputs(client, reference, binary):
    x = reference["x"].astype(np.float32)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    # no outputs named: tritonclient asks for every output in binary (binary_data_output)
    outputs = None if binary else [httpclient.InferRequestedOutput("probabilities", False)]
    result = client.infer(MODEL, [inp], outputs=outputs, headers=key(), request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference["probs"], atol=1e-4)
    if binary:
        labels = [v.decode() for v in result.as_numpy("label")]
        assert labels == reference["labels"]


def test_classification_extension(client, reference):
    inp = httpclient.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(np.array(reference["pngs"][:2], dtype=np.object_))
    out = httpclient.InferRequestedOutput("probabilities", class_count=3)
    result = client.infer(MODEL, [inp], outputs=[out], headers=key())
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 3)
    score, index, label = top[0][0].decode().split(":")
    assert label == reference["labels"][0] and int(index) == int(label)
    assert float(score) == pytest.approx(reference["probs"][0].max(), abs=1e-4)


def test_errors_are_4xx_with_a_message(client, reference):
    inp = httpclient.InferInput("input", [1, 1, 8, 8], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(InferenceServerException) as exc:
        client.infer(MODEL, [inp], headers=key())
    assert exc.value.status() == "400" and "expected [N, 1, 28, 28]" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        client.infer("no-such-model", [inp], headers=key())
    assert exc.value.status() == "404" and "digits" in exc.value.message()
    bad = httpclient.InferInput("image", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as exc:
        client.infer(MODEL, [bad], headers=key())
    assert exc.value.status() == "415" and "element 0" in exc.value.message()
    big = httpclient.InferInput("image", [17], "BYTES")
    big.set_data_from_numpy(np.array(reference["pngs"][:1] * 17, dtype=np.object_))
    with pytest.raises(InferenceServerException) as exc:
        client.infer(MODEL, [big], headers=key())
    assert exc.value.status() == "400" and "1 to 16" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_metadata(MODEL)  # no key
    assert exc.value.status() == "401"


def test_wire_format_round_trip_and_refusals():
    from cnnlab.deploy.oip import (
        OIPError,
        deserialize_bytes,
        encode_infer_response,
        parse_infer_request,
        serialize_bytes,
    )

    items = [b"", b"abc", bytes(range(256))]
    assert deserialize_bytes(serialize_bytes(items), 3) == items
    for broken in (serialize_bytes(items)[:-1], serialize_bytes(items) + b"x"):
        with pytest.raises(OIPError):
            deserialize_bytes(broken, 3)
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 1, 2, 3],
                    "parameters": {"binary_data_size": 24},
                }
            ]
        }
    ).encode()
    req = parse_infer_request(head + x.tobytes(), str(len(head)))
    np.testing.assert_array_equal(req.inputs[0].data, x)
    refusals = [
        (head + x.tobytes()[:-4], str(len(head))),  # fewer bytes than binary_data_size
        (head + x.tobytes() + b"\0", str(len(head))),  # bytes that belong to no input
        (head + x.tobytes(), "99999"),  # header length past the body
        (b'{"inputs": []}', None),
        (b"not json", None),
        (b'{"inputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [1]}]}', None),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1]}]}', None),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "outputs": [{"name": "logits"}]}',
            None,
        ),
    ]
    for body, length in refusals:
        with pytest.raises(OIPError) as exc:
            parse_infer_request(body, length)
        assert exc.value.status == 400 and exc.value.detail
    body, n = encode_infer_response(
        {"model_name": "m"}, [("label", "BYTES", [2], [b"cat", b"dog"], True)]
    )
    assert json.loads(body[:n])["outputs"][0]["parameters"]["binary_data_size"] == 14
    assert deserialize_bytes(body[n:], 2) == [b"cat", b"dog"]
