"""Grad-CAM for the web page: a coloured, translucent heat map the browser lays over the upload.

The map is computed at the model's input resolution by :mod:`cnnlab.inspect.cam` (the same maths as
``cnnlab explain``) and sent as an RGBA PNG; the page stretches it over the image, which the model
also saw stretched to its input size, so the two line up. Colours are the jet ramp, computed here
in three lines rather than importing matplotlib into the service.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnlab.deploy.predictor import Predictor
from cnnlab.inspect.cam import explain

CAM_METHODS = ("gradcam", "gradcam++")


def jet_rgba(heat: np.ndarray, max_alpha: int = 160) -> np.ndarray:
    """(H, W) in [0, 1] → uint8 (H, W, 4): jet colours, transparent where the map is cold so
    the image shows through, more opaque where it is hot."""
    x = np.clip(heat, 0.0, 1.0)
    rgb = np.stack([np.clip(1.5 - np.abs(4 * x - k), 0, 1) for k in (3, 2, 1)], -1)
    alpha = (max_alpha * np.clip((x - 0.15) / 0.85, 0, 1))[..., None]
    return np.concatenate([rgb * 255, alpha], -1).round().astype(np.uint8)


def explain_image(
    predictor: Predictor, x: torch.Tensor, target: int | None, method: str
) -> dict[str, Any]:
    """Grad-CAM of one normalised image (C, H, W): label, probability and the heat map as a
    base64 PNG. Runs the PyTorch model with gradients, so call it on the inference thread."""
    e = explain(predictor.model, x[None].to(predictor.device), target=target, method=method)
    probs = torch.as_tensor(e.probs[0])
    if predictor.temperature != 1.0:  # the page shows the same (calibrated) probability as /predict
        probs = torch.softmax(torch.log(probs.clamp_min(1e-30)) / predictor.temperature, 0)
    best = int(probs.argmax())
    buf = io.BytesIO()
    Image.fromarray(jet_rgba(e.maps[0]), "RGBA").save(buf, format="PNG")
    cls = int(e.targets[0])
    return {
        "label": predictor.classes[best],
        "probability": float(probs[best]),
        "explained_class": predictor.classes[cls],
        "method": e.method,
        "layer": e.layer,
        "heatmap_png": base64.b64encode(buf.getvalue()).decode("ascii"),
    }
