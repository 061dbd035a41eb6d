"""int8 static quantisation with ONNX Runtime, calibrated on training images, chosen by measuring.

Which int8 flavour is fast depends on the CPU: with VNNI, uint8 activations × int8 weights (U8S8)
run the fused integer kernels, while ORT's default S8S8 can leave convolutions unfused and end up
slower than fp32; some models (depthwise-heavy EfficientNets) are slower in int8 either way. So
:func:`cnnlab.deploy.int8.quantize_run` builds each candidate, measures its batch-1 latency and its test-set accuracy,
and keeps the fastest one whose accuracy drop stays within the allowed points — reporting all.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class QuantConfig:
    """One int8 recipe: activation and weight types, per-channel weights or not."""

    name: str
    activations: str  # "uint8" | "int8"
    weights: str
    per_channel: bool


CANDIDATES = (
    QuantConfig("U8S8-per-channel", "uint8", "int8", True),
    QuantConfig("U8S8-per-tensor", "uint8", "int8", False),
    QuantConfig("S8S8-per-channel", "int8", "int8", True),
)


class _Reader:
    """ORT CalibrationDataReader over normalised float32 batches."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int = 32):
        self._it: Iterator[dict[str, np.ndarray]] = (
            {input_name: np.ascontiguousarray(images[i : i + batch], dtype=np.float32)}
            for i in range(0, len(images), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - only some ORT calibrators call it
        pass


def _pre_process(src: Path, dst: Path) -> Path:
    """ORT's quantisation pre-processing (graph optimisation + shape inference), or ``src``.

    The exported graph carries Identity nodes and unfolded constants between Conv and Relu; left
    in, they keep ORT from fusing the QDQ pairs into integer kernels, and the int8 model ran slower
    than fp32 (resnet18 at 224, 2 threads: 20.6 ms int8 vs 17.7 ms fp32; pre-processed: 8.9 ms).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - an optimisation only: quantise the graph as exported
        return src
    return dst


def quantize_onnx(
    model: bytes | str | Path,
    calibration: np.ndarray | torch.Tensor,
    output: str | Path | None = None,
    config: QuantConfig = CANDIDATES[0],
) -> bytes:
    """Statically quantise an fp32 ONNX model to int8 QDQ; returns the bytes (and writes ``output``).

    ``calibration`` is a normalised float batch (N, C, H, W) of training images; a few hundred
    are enough for MinMax ranges on small models.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    calib = np.asarray(
        calibration.numpy() if isinstance(calibration, torch.Tensor) else calibration
    )
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    meta = [(p.key, p.value) for p in proto.metadata_props]
    input_name = proto.graph.input[0].name

    class Reader(_Reader, CalibrationDataReader):
        pass

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs a pre-processing hint on the root logger every call
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        src = _pre_process(src, Path(tmp) / "pre.onnx")
        quantize_static(
            str(src),
            str(dst),
            Reader(calib, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=types[config.activations],
            weight_type=types[config.weights],
        )
        q = onnx.load(str(dst))
    root.setLevel(level)
    del q.metadata_props[:]
    for key, value in meta:
        if key == "cnnlab":
            d = json.loads(value)
            d["int8"] = config.name
            value = json.dumps(d)
        entry = q.metadata_props.add()
        entry.key, entry.value = key, value
    data = q.SerializeToString()
    if output is not None:
        Path(output).write_bytes(data)
    return data
