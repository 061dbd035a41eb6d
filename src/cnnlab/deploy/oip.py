"""The Open Inference Protocol v2 (KServe / Triton REST), with the binary tensor data extension.

Standard clients (``tritonclient.http``, KServe's SDK, ``curl``) talk to ``cnnlab serve`` through
these routes, beside cnnlab's own ``/predict``:

- ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata),
  ``GET /v2/models/{name}`` (model metadata, with the classes and every limit in ``parameters``),
  ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``, each also under
  ``/v2/models/{name}/versions/1/…``.
- One input per request: ``FP32 [N, C, H, W]``, already preprocessed (``(x/255 - mean) / std``),
  or ``BYTES [N]`` of encoded images (PNG, JPEG…; the OpenVINO Model Server convention), decoded
  and preprocessed by the service exactly like ``cnnlab predict``. In JSON, BYTES elements are
  base64 strings (JSON cannot carry raw bytes).
- Outputs: ``probabilities FP32 [N, K]`` and ``label BYTES [N]``; Triton's classification
  extension (``"parameters": {"classification": k}`` on an output) answers ``"score:index:label"``.
  A detection model answers ``boxes FP32 [N, D, 4]`` (x1 y1 x2 y2 in the pixels of the image sent,
  or of the model input for FP32 inputs), ``scores FP32 [N, D]``, ``labels BYTES [N, D]`` and
  ``num_detections INT32 [N]``: D is the batch's largest count, and image i's boxes are the first
  ``num_detections[i]`` rows (the rest are zero / empty padding). A segmentation model answers
  ``mask INT32 [N, H, W]``, the class index per pixel at the model's input size (H, W), so that
  the tensor stays rectangular whatever the images' sizes. Both use the run's post-processing
  (``DensePredictor.postprocess``: score >= 0.25, NMS at IoU 0.45, at most 100 boxes).
- Binary tensor data: a request body may be a JSON header of ``Inference-Header-Content-Length``
  bytes followed by the raw tensors (each input's ``parameters.binary_data_size``); outputs asked
  with ``binary_data: true`` (or all, with the request parameter ``binary_data_output``) come back
  the same way. ``tritonclient`` uses both by default.
- Errors: ``{"error": "…"}`` with a 4xx status.

The wire format is pure functions (:func:`parse_infer_request`, :func:`encode_infer_response`);
:func:`add_routes` binds them to the service.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

from cnnlab._version import __version__
from cnnlab.deploy.context import ServiceContext
from cnnlab.deploy.dense_predict import DensePredictor, padded_detections
from cnnlab.deploy.guards import GuardError
from cnnlab.deploy.uploads import HTTPError

VERSION = "1"
WIRE_DTYPES = {"FP32": "<f4", "INT32": "<i4"}
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data", "classification"]
OUTPUTS = ("probabilities", "label")
TASK_OUTPUTS = {
    "classification": OUTPUTS,
    "detection": ("boxes", "scores", "labels", "num_detections"),
    "segmentation": ("mask",),
}


class OIPError(HTTPError):
    """A protocol error answered as ``{"error": detail}``."""

    def __init__(self, status: int, detail: str, reason: str = "bad_request"):
        super().__init__(status, detail, reason)


@dataclass
class InputTensor:
    """One decoded input: FP32 as an array of ``shape``, BYTES as a list of byte strings."""

    name: str
    datatype: str
    shape: list[int]
    data: Any


@dataclass
class RequestedOutput:
    """An output the client asked for, whether it wants it binary, and a classification k."""

    name: str
    binary: bool
    classification: int | None = None


@dataclass
class InferRequest:
    """A parsed inference request."""

    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def serialize_bytes(items: list[bytes]) -> bytes:
    """BYTES tensor → the wire format: each element as a 4-byte little-endian length + bytes."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def deserialize_bytes(buf: bytes, count: int) -> list[bytes]:
    """The inverse of :func:`serialize_bytes`, refusing truncated or trailing data."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(buf):
            raise OIPError(400, "BYTES tensor data is truncated (missing a 4-byte length)")
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise OIPError(
                400, "BYTES tensor data is truncated (an element is shorter than its length)"
            )
        out.append(buf[pos : pos + n])
        pos += n
    if pos != len(buf):
        raise OIPError(
            400, f"BYTES tensor data has {len(buf) - pos} bytes after its {count} elements"
        )
    return out


def _split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is None:
        head, rest = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise OIPError(
                400, f"Inference-Header-Content-Length is not a number: {header_length!r}"
            ) from None
        if not 0 < n <= len(body):
            raise OIPError(
                400, f"Inference-Header-Content-Length {n} is outside the body's {len(body)} bytes"
            )
        head, rest = body[:n], body[n:]
    try:
        doc = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OIPError(400, f"the inference request is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise OIPError(400, "the inference request must be a JSON object")
    return doc, rest


def _shape(spec: dict, name: str) -> list[int]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise OIPError(400, f"input '{name}': shape must be a list of non-negative integers")
    return shape


def _input(spec: Any, binary: bytes, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise OIPError(400, "each input must be an object with a 'name'")
    name, dtype = spec["name"], spec.get("datatype")
    shape = _shape(spec, name)
    count = int(np.prod(shape)) if shape else 1
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise OIPError(
                400, f"input '{name}': binary_data_size {size} exceeds the binary data sent"
            )
        raw, offset = binary[offset : offset + size], offset + size
    elif "data" not in spec:
        raise OIPError(400, f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    if dtype == "FP32":
        if size is not None:
            if size != 4 * count:
                raise OIPError(
                    400, f"input '{name}': {size} bytes for shape {shape} (FP32 needs {4 * count})"
                )
            data = np.frombuffer(raw, dtype="<f4").reshape(shape)
        else:
            try:
                data = np.asarray(spec["data"], dtype=np.float32)
            except (TypeError, ValueError):
                raise OIPError(400, f"input '{name}': FP32 data must be numbers") from None
            if data.size != count:
                raise OIPError(400, f"input '{name}': {data.size} values for shape {shape}")
            data = data.reshape(shape)
    elif dtype == "BYTES":
        if size is not None:
            data = deserialize_bytes(raw, count)
        else:
            values = spec["data"]
            values = values if isinstance(values, list) else [values]
            flat = list(np.asarray(values, dtype=object).reshape(-1)) if values else []
            if len(flat) != count:
                raise OIPError(400, f"input '{name}': {len(flat)} elements for shape {shape}")
            data = [_b64(v, name) for v in flat]
    else:
        raise OIPError(
            400,
            f"input '{name}': unsupported datatype {dtype!r}; send FP32 [N, C, H, W] (preprocessed) "
            "or BYTES [N] (encoded images)",
        )
    return InputTensor(name, dtype, shape, data), offset


def _b64(value: Any, name: str) -> bytes:
    if isinstance(value, dict) and "b64" in value:  # TF Serving's spelling
        value = value["b64"]
    if not isinstance(value, str):
        raise OIPError(400, f"input '{name}': JSON BYTES elements must be base64 strings")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise OIPError(400, f"input '{name}': a BYTES element is not valid base64") from None


def parse_infer_request(
    body: bytes, header_length: str | None = None, known_outputs: tuple[str, ...] = OUTPUTS
) -> InferRequest:
    """Parse a v2 inference request body (JSON, or JSON header + binary tensors);
    ``known_outputs`` are the output names the served model has (:data:`TASK_OUTPUTS`)."""
    doc, binary = _split_body(body, header_length)
    inputs_spec = doc.get("inputs")
    if not isinstance(inputs_spec, list) or not inputs_spec:
        raise OIPError(400, "the request needs a non-empty 'inputs' list")
    inputs, offset = [], 0
    for spec in inputs_spec:
        tensor, offset = _input(spec, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise OIPError(400, f"{len(binary) - offset} bytes of binary data belong to no input")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise OIPError(400, "'parameters' must be an object")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise OIPError(400, "'outputs' must be a list")
        outputs = []
        for o in doc["outputs"]:
            if not isinstance(o, dict) or o.get("name") not in known_outputs:
                name = o.get("name") if isinstance(o, dict) else o
                raise OIPError(
                    400, f"unknown output {name!r}; outputs are {', '.join(known_outputs)}"
                )
            op = o.get("parameters") or {}
            k = op.get("classification")
            if k is not None and known_outputs != OUTPUTS:
                raise OIPError(400, "the classification extension is for classification models")
            if k is not None and (not isinstance(k, int) or k < 1):
                raise OIPError(
                    400, f"output '{o['name']}': classification must be a positive integer"
                )
            outputs.append(RequestedOutput(o["name"], bool(op.get("binary_data", False)), k))
    rid = doc.get("id")
    return InferRequest(
        str(rid) if rid is not None else None,
        inputs,
        outputs,
        bool(params.get("binary_data_output", False)),
        params,
    )


def encode_infer_response(
    header: dict[str, Any], outputs: list[tuple[str, str, list[int], Any, bool]]
) -> tuple[bytes, int | None]:
    """Body and JSON-header length (None when all JSON) for outputs ``(name, datatype, shape,
    data, binary)``; FP32 / INT32 data is an array, BYTES data a list of byte strings."""
    blobs, out_specs = [], []
    for name, dtype, shape, data, binary in outputs:
        spec: dict[str, Any] = {"name": name, "datatype": dtype, "shape": shape}
        if binary:
            raw = (
                serialize_bytes(data)
                if dtype == "BYTES"
                else np.ascontiguousarray(data, dtype=WIRE_DTYPES[dtype]).tobytes()
            )
            spec["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            spec["data"] = (
                [b.decode("utf-8") for b in data]
                if dtype == "BYTES"
                else np.asarray(data, dtype=WIRE_DTYPES[dtype]).reshape(-1).tolist()
            )
        out_specs.append(spec)
    head = json.dumps({**header, "outputs": out_specs}).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def output_metadata(task: str, num_classes: int, size: tuple[int, int]) -> list[dict[str, Any]]:
    """The ``outputs`` of the model metadata for ``task`` (see the module docstring)."""
    if task == "detection":
        return [
            {"name": "boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "num_detections", "datatype": "INT32", "shape": [-1]},
        ]
    if task == "segmentation":
        return [{"name": "mask", "datatype": "INT32", "shape": [-1, size[0], size[1]]}]
    return [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, num_classes]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]


def dense_outputs(
    predictor: DensePredictor,
    raw: torch.Tensor,
    sizes: list[tuple[int, int]],
    wanted: list[RequestedOutput],
) -> list[tuple[str, str, list[int], Any, bool]]:
    """The v2 outputs of a detection or segmentation batch (the module docstring's shapes)."""
    n = len(raw)
    if predictor.task == "segmentation":
        _, h, w = predictor.input_size
        masks = np.stack(predictor.postprocess(raw, [(h, w)] * n)).astype(np.int32)  # type: ignore[arg-type]
        return [(o.name, "INT32", [n, h, w], masks, o.binary) for o in wanted]
    boxes, scores, labels, counts = padded_detections(predictor.postprocess(raw, sizes))  # type: ignore[arg-type]
    d = boxes.shape[1]
    table = {
        "boxes": ("FP32", [n, d, 4], boxes),
        "scores": ("FP32", [n, d], scores),
        "labels": ("BYTES", [n, d], [b for row in labels for b in row]),
        "num_detections": ("INT32", [n], counts),
    }
    return [(o.name, *table[o.name], o.binary) for o in wanted]  # type: ignore[misc]


def _image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of encoded image bytes, from the header alone."""
    with Image.open(io.BytesIO(data)) as im:
        return im.height, im.width


def _respond(model_name: str, rid: str | None, outs: list) -> Response:
    header: dict[str, Any] = {"model_name": model_name, "model_version": VERSION}
    if rid is not None:
        header["id"] = rid
    payload, head_len = encode_infer_response(header, outs)
    if head_len is None:
        return Response(payload, media_type="application/json")
    return Response(
        payload,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(head_len)},
    )


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": detail}, status_code=status)


# Long by design: the v2 protocol's route table in one place (each route a few lines), so the
# wire contract can be read against the KServe spec route by route.
def add_routes(app: FastAPI, ctx: ServiceContext) -> None:
    """Bind the v2 routes to ``app`` for the model ``ctx.cfg.model_name``."""
    cfg, predictor = ctx.cfg, ctx.predictor
    task = getattr(predictor, "task", "classification")
    known = TASK_OUTPUTS[task]

    def check_model(name: str, version: str | None) -> None:
        if name != cfg.model_name:
            raise OIPError(
                404,
                f"unknown model '{name}'; this server serves '{cfg.model_name}'",
                "unknown_model",
            )
        if version is not None and version != VERSION:
            raise OIPError(
                404,
                f"unknown version '{version}' of '{name}'; versions: {VERSION}",
                "unknown_model",
            )

    def metadata(name: str, version: str | None) -> dict[str, Any]:
        check_model(name, version)
        c, h, w = predictor.input_size
        return {
            "name": cfg.model_name,
            "versions": [VERSION],
            "platform": f"cnnlab_{predictor.backend_name}",
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [-1, c, h, w]},
                {"name": "image", "datatype": "BYTES", "shape": [-1]},
            ],
            "outputs": output_metadata(task, ctx.num_classes, (h, w)),
            "parameters": ctx.model_card(),
        }

    async def infer(request: Request, name: str, version: str | None) -> Response:
        check_model(name, version)
        try:
            body = await request.body()
        except GuardError:
            raise
        req = parse_infer_request(body, request.headers.get(HEADER_LENGTH), known)
        if len(req.inputs) != 1:
            raise OIPError(
                400,
                f"send exactly one input (FP32 'input' or BYTES 'image'); got {len(req.inputs)}",
            )
        tensor = req.inputs[0]
        n = tensor.shape[0] if tensor.shape else 0
        if tensor.datatype == "FP32":
            want = list(predictor.input_size)
            if len(tensor.shape) != 4 or tensor.shape[1:] != want:
                raise OIPError(
                    400,
                    f"input '{tensor.name}': shape {tensor.shape}; expected [N, {', '.join(map(str, want))}]",
                )
        elif len(tensor.shape) != 1:
            raise OIPError(
                400, f"input '{tensor.name}': BYTES shape must be [N]; got {tensor.shape}"
            )
        if not 1 <= n <= cfg.max_files:
            raise OIPError(
                400,
                f"batch of {n} images; this server takes 1 to {cfg.max_files} per request",
                "too_many_images",
            )
        _, h, w = predictor.input_size
        sizes = [(h, w)] * n
        if tensor.datatype == "FP32":
            images = list(torch.from_numpy(np.array(tensor.data, dtype=np.float32)))
        else:
            decoded = await ctx.preprocessor.run(tensor.data)
            bad = [(i, d) for i, d in enumerate(decoded) if isinstance(d, HTTPError)]
            if bad:
                i, err = bad[0]
                raise OIPError(
                    err.status, f"input '{tensor.name}' element {i}: {err.detail}", err.reason
                )
            images = decoded
            sizes = [_image_size(b) for b in tensor.data]
        raw = await ctx.batcher.submit(images)
        if isinstance(predictor, DensePredictor):
            wanted = req.outputs or [RequestedOutput(o, req.binary_output) for o in known]
            # NMS off the event loop, beside the inference thread
            outs = await asyncio.to_thread(dense_outputs, predictor, raw, sizes, wanted)
            return _respond(cfg.model_name, req.id, outs)
        probs = raw.numpy()
        labels = [predictor.classes[j].encode("utf-8") for j in probs.argmax(1)]
        wanted = req.outputs or [RequestedOutput(o, req.binary_output) for o in OUTPUTS]
        outs = []
        for o in wanted:
            if o.classification is not None:
                k = min(o.classification, ctx.num_classes)
                top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
                data = [
                    f"{probs[r, j]:.6f}:{j}:{predictor.classes[j]}".encode()
                    for r in range(n)
                    for j in top[r]
                ]
                outs.append((o.name, "BYTES", [n, int(k)], data, o.binary))
            elif o.name == "probabilities":
                outs.append((o.name, "FP32", [n, ctx.num_classes], probs, o.binary))
            else:
                outs.append((o.name, "BYTES", [n], labels, o.binary))
        return _respond(cfg.model_name, req.id, outs)

    @app.get("/v2/health/live", tags=["v2"], summary="liveness probe")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready", tags=["v2"], summary="readiness probe (not while draining)")
    async def ready() -> Response:
        return Response(status_code=200 if ctx.ready else 503)

    @app.get("/v2", tags=["v2"], summary="server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "cnnlab", "version": __version__, "extensions": EXTENSIONS}

    @app.get("/v2/models/{name}", tags=["v2"], summary="model metadata, classes and limits")
    async def model_metadata(name: str) -> dict[str, Any]:
        return metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"], summary="model metadata")
    async def model_version_metadata(name: str, version: str) -> dict[str, Any]:
        return metadata(name, version)

    @app.get("/v2/models/{name}/ready", tags=["v2"], summary="model readiness")
    async def model_ready(name: str) -> Response:
        check_model(name, None)
        return Response(status_code=200 if ctx.ready else 503)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], summary="model readiness")
    async def model_version_ready(name: str, version: str) -> Response:
        check_model(name, version)
        return Response(status_code=200 if ctx.ready else 503)

    @app.post("/v2/models/{name}/infer", tags=["v2"], summary="inference (JSON or binary tensors)")
    async def model_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], summary="inference")
    async def model_version_infer(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)
