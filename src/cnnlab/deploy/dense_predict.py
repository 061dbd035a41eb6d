"""Predictions of detection and segmentation runs: boxes, masks, their JSON, PNGs and overlays.

:class:`DensePredictor` is what ``cnnlab predict`` and ``cnnlab.load(run).predict`` use for these
tasks (see the report of issue 15 for the hook). Post-processing is documented because an exported
model stops at the raw heads:

* **detection** (``yolo_tiny``): raw ``(N, A, H/32, W/32, 5 + C)`` → decode (sigmoid offsets plus
  cell, anchor × exp sizes), score = sigmoid(objectness) × sigmoid(class), drop scores below
  ``conf_thresh`` (0.25), per-class NMS at ``iou_thresh`` (0.45), keep ``max_det`` (100), clip to
  the image; boxes are ``x1 y1 x2 y2`` in the input image's pixels (scaled back from the model
  size). :meth:`DensePredictor.postprocess` applies exactly this to raw outputs from any backend.
* **segmentation**: logits ``(N, K, H, W)`` → argmax over classes → resized (nearest) to the image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from cnnlab.data.decode import decode_image
from cnnlab.data.loader import normalize_batch
from cnnlab.data.mask_folder import voc_colormap
from cnnlab.errors import ConfigError
from cnnlab.run import load_model_from_run
from cnnlab.tasks.detection import detect_batch

PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET = 0.25, 0.45, 100


@dataclass
class BoxPrediction:
    """One detected object: class name, score and ``x1, y1, x2, y2`` in image pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    def line(self) -> str:
        """``class score x1 y1 x2 y2`` — what ``cnnlab predict`` prints."""
        x1, y1, x2, y2 = self.box
        return f"{self.label} {self.score:.3f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}"

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.label,
            "score": round(self.score, 5),
            "box": [round(v, 2) for v in self.box],
        }


class DensePredictor:
    """Boxes or masks from a model and its run config (classes, input size, mean/std, task)."""

    def __init__(self, model: nn.Module, run_config: dict[str, Any]):
        self.model = model.eval()
        self.config = run_config
        self.task = run_config.get("task", "classification")
        if self.task not in ("detection", "segmentation"):
            raise ConfigError(f"a {self.task} run has no boxes or masks to predict")
        self.classes = list(run_config.get("classes", []))
        self.input_size = tuple(run_config.get("input_size", (3, 128, 128)))
        self.mean = tuple(run_config.get("mean", (0.0,) * self.input_size[0]))
        self.std = tuple(run_config.get("std", (1.0,) * self.input_size[0]))
        post = run_config.get("postprocess", {})
        self.conf_thresh = float(post.get("conf_thresh", PREDICT_CONF))
        self.iou_thresh = float(post.get("iou_thresh", PREDICT_IOU))
        self.max_det = int(post.get("max_det", PREDICT_MAX_DET))

    @classmethod
    def from_run(cls, run_dir: str | Path) -> DensePredictor:
        """The predictor of a detection or segmentation run directory."""
        model, cfg = load_model_from_run(run_dir)
        return cls(model, cfg)

    def load_images(
        self, paths: Sequence[str | Path]
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """uint8 ``(N, C, H, W)`` at the model's size, and each image's own (H, W)."""
        c, h, w = self.input_size
        sizes, arrays = [], []
        for p in paths:
            with Image.open(p) as im:
                sizes.append((im.height, im.width))
            arrays.append(decode_image(p, (h, w), c))
        return torch.from_numpy(np.stack(arrays)), sizes

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize_batch(images, self.mean, self.std)
        with torch.no_grad():
            return self.model(x)

    def postprocess(
        self, raw: torch.Tensor, sizes: Sequence[tuple[int, int]]
    ) -> list[list[BoxPrediction]] | list[np.ndarray]:
        """Raw model outputs (from eager, ONNX or TorchScript) → per-image detections or masks."""
        _, h, w = self.input_size
        if self.task == "segmentation":
            labels = raw.float().argmax(1, keepdim=True).float()
            return [
                F.interpolate(labels[i : i + 1], size=s, mode="nearest-exact")[0, 0]
                .to(torch.uint8)
                .numpy()
                for i, s in enumerate(sizes)
            ]
        dets = detect_batch(
            self.model, raw, (h, w), self.conf_thresh, self.iou_thresh, self.max_det
        )
        out = []
        for d, (ih, iw) in zip(dets, sizes):
            scale = torch.tensor([iw / w, ih / h, iw / w, ih / h])
            boxes = (d["boxes"].cpu() * scale).tolist()
            out.append(
                [
                    BoxPrediction(self._name(int(lb)), float(s), tuple(b))  # type: ignore[arg-type]
                    for b, s, lb in zip(boxes, d["scores"].tolist(), d["labels"].tolist())
                ]
            )
        return out

    def _name(self, k: int) -> str:
        return self.classes[k] if 0 <= k < len(self.classes) else str(k)

    def predict(self, paths: Sequence[str | Path]) -> list[list[BoxPrediction]] | list[np.ndarray]:
        """Detections (per image, best first) or class-index masks (per image, its own size)."""
        images, sizes = self.load_images(paths)
        return self.postprocess(self._forward(images), sizes)


# ------------------------------------------------------------------------------------ drawing


def palette(n: int) -> np.ndarray:
    """Colours for class indices (the VOC palette; index 0, background, is black)."""
    return voc_colormap(max(n, 2))


def mask_to_png(mask: np.ndarray, path: str | Path, num_classes: int = 256) -> None:
    """A class-index mask as a palette PNG: pixel values are the indices, colours the VOC map."""
    im = Image.fromarray(np.asarray(mask, np.uint8), "P")
    im.putpalette(palette(256).flatten().tolist())
    im.save(path)


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) uint8 → (H, W, 3) uint8."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with each non-background class tinted by its palette colour (H, W, 3) uint8."""
    rgb = _rgb(image).astype(np.float32)
    m = np.asarray(mask)
    colours = palette(256)[m].astype(np.float32)
    tint = (m > 0) & (m != 255)
    rgb[tint] = (1 - alpha) * rgb[tint] + alpha * colours[tint]
    return rgb.round().clip(0, 255).astype(np.uint8)


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    colour: tuple[int, int, int] = (255, 64, 64),
    scale: int = 1,
) -> np.ndarray:
    """The image (upscaled ``scale`` times) with labelled rectangles (H, W, 3) uint8."""
    im = Image.fromarray(_rgb(image))
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    for b, text in zip(boxes, labels):
        x1, y1, x2, y2 = (v * scale for v in b)
        d.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour)
        d.text((x1 + 2, y1 + 1), text, fill=colour)
    return np.asarray(im)


def write_predictions(
    predictor: DensePredictor, paths: Sequence[str | Path], out_dir: str | Path
) -> Path:
    """Run ``predictor`` on ``paths`` and write ``predictions.json`` (and mask / overlay PNGs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = predictor.predict(paths)
    records = []
    for p, r in zip(paths, results):
        stem = Path(p).stem
        if predictor.task == "segmentation":
            mask = np.asarray(r)
            mask_to_png(mask, out / f"{stem}_mask.png")
            img = np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1)
            Image.fromarray(overlay_mask(img, mask)).save(out / f"{stem}_overlay.png")
            counts = np.bincount(mask.flatten(), minlength=len(predictor.classes))
            records.append(
                {
                    "image": str(p),
                    "mask": str(out / f"{stem}_mask.png"),
                    "pixels": {predictor._name(k): int(c) for k, c in enumerate(counts) if c},
                }
            )
        else:
            records.append({"image": str(p), "detections": [d.to_json() for d in r]})
    path = out / "predictions.json"
    path.write_text(json.dumps(records, indent=1))
    return path
