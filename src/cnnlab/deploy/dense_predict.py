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

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from cnnlab.data.loader import normalize_batch
from cnnlab.data.mask_folder import voc_colormap
from cnnlab.deploy.images import image_size, image_to_uint8
from cnnlab.errors import ConfigError, DataError, RunError
from cnnlab.run import build_model_from_run_config, load_model_from_run
from cnnlab.tasks.detection import detect_batch

PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET = 0.25, 0.45, 100
DENSE_TASKS = ("detection", "segmentation")


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


DenseResult = list[BoxPrediction] | np.ndarray


class DensePredictor:
    """Boxes or masks from a model and its run config (classes, input size, mean/std, task).

    It answers to what the service and ``cnnlab predict`` ask of a predictor (``classes``,
    ``input_size``, ``mean``/``std``, ``backend_name``, :meth:`check_outputs`,
    :meth:`batch_outputs` on normalised batches), so a dense run is served and predicted through
    the same code as a classifier. ``backend`` (a callable on normalised batches, e.g. ONNX
    Runtime) replaces the eager forward pass; detection still decodes with ``decoder`` (the
    architecture rebuilt from the run config: ``decode`` needs its anchors and stride, not its
    weights).

    Example::

        p = cnnlab.load("runs/yolo_tiny-digits-scenes")      # a DensePredictor
        for box in p.predict(["scene.png"])[0]:
            print(box.line())                                # "7 0.912 10.0 12.5 40.0 44.0"
    """

    def __init__(
        self,
        model: nn.Module | None,
        run_config: dict[str, Any],
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        backend: Callable[[torch.Tensor], torch.Tensor] | None = None,
        decoder: nn.Module | None = None,
    ):
        self.config = run_config
        self.task = run_config.get("task", "classification")
        if self.task not in DENSE_TASKS:
            raise ConfigError(f"a {self.task} run has no boxes or masks to predict")
        if model is None and backend is None:
            raise ValueError("a DensePredictor needs a model or a backend")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device) if model is not None else None
        self.decoder = decoder if decoder is not None else self.model
        if self.task == "detection" and self.decoder is None:
            raise ValueError("a detection predictor needs its architecture to decode boxes")
        self.backend = backend
        self.backend_name = getattr(backend, "name", "torch")
        self.backend_choice: Any = None
        self.batch_size = batch_size
        self.temperature = 1.0  # no calibration for dense outputs; the model card shows it
        self.classes = list(run_config.get("classes", []))
        self.input_size = tuple(int(v) for v in run_config.get("input_size", (3, 128, 128)))
        self.mean = tuple(run_config.get("mean", (0.0,) * self.input_size[0]))
        self.std = tuple(run_config.get("std", (1.0,) * self.input_size[0]))
        post = run_config.get("postprocess", {})
        self.conf_thresh = float(post.get("conf_thresh", PREDICT_CONF))
        self.iou_thresh = float(post.get("iou_thresh", PREDICT_IOU))
        self.max_det = int(post.get("max_det", PREDICT_MAX_DET))

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        backend: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> DensePredictor:
        """The predictor of a detection or segmentation run directory."""
        model, cfg = load_model_from_run(run_dir)
        return cls(model, cfg, device=device, batch_size=batch_size, backend=backend)

    @classmethod
    def from_exported(
        cls,
        metadata: dict[str, Any],
        backend: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int = 64,
    ) -> DensePredictor:
        """The predictor of an exported file: its runner plus the metadata written by
        ``cnnlab export`` (task, classes, preprocessing, post-processing, architecture)."""
        decoder = None
        if metadata.get("task") == "detection":
            if "model" not in metadata:
                raise RunError("the exported detector's metadata lacks its architecture")
            decoder = build_model_from_run_config(metadata, "the exported file's metadata")
        return cls(None, metadata, batch_size=batch_size, backend=backend, decoder=decoder)

    @property
    def channels(self) -> int:
        return self.input_size[0]

    # -- inputs ---------------------------------------------------------------------------------
    def to_uint8(self, image: Any) -> torch.Tensor:
        """One image in any supported form → uint8 (C, H, W) at the model's size."""
        return image_to_uint8(image, self.input_size)

    def load_images(self, images: Sequence[Any]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """uint8 ``(N, C, H, W)`` at the model's size, and each image's own (H, W)."""
        sizes = [image_size(im) for im in images]
        return torch.stack([self.to_uint8(im) for im in images]), sizes

    # -- the forward pass -----------------------------------------------------------------------
    @torch.inference_mode()
    def batch_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs (CPU float) for a normalised float batch: ``(N, A, h, w, 5 + C)`` box
        predictions or ``(N, K, H, W)`` logits — what an exported model returns too."""
        out = []
        for chunk in x.split(self.batch_size):
            if self.backend is not None:
                raw = self.backend(chunk)
            else:
                raw = self.model(chunk.to(self.device))  # type: ignore[misc]
                raw = raw[0] if isinstance(raw, (tuple, list)) else raw
            out.append(raw.float().cpu())
        return torch.cat(out)

    def check_outputs(self) -> None:
        """Refuse, in one line, a model whose outputs contradict the config's classes."""
        try:
            out = self.batch_outputs(torch.zeros(1, *self.input_size))
        except Exception as exc:  # noqa: BLE001 - any failure means config and weights disagree
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunError(
                f"the model does not run on its configured input size {list(self.input_size)}: "
                f"{first}"
            ) from None
        k = len(self.classes)
        ok = (
            out.dim() == 5 and out.shape[-1] == 5 + k
            if self.task == "detection"
            else out.dim() == 4 and out.shape[1] == k
        )
        if not ok:
            raise RunError(
                f"the config lists {k} classes but the {self.task} model outputs "
                f"{tuple(out.shape[1:])} per image; config.json contradicts the weights"
            )

    def postprocess(self, raw: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[DenseResult]:
        """Raw model outputs (from eager, ONNX or TorchScript) → per-image detections or masks."""
        _, h, w = self.input_size
        raw = torch.as_tensor(raw)
        if self.task == "segmentation":
            labels = raw.float().argmax(1, keepdim=True).float()
            return [
                F.interpolate(labels[i : i + 1], size=tuple(s), mode="nearest-exact")[0, 0]
                .to(torch.uint8)
                .numpy()
                for i, s in enumerate(sizes)
            ]
        dets = detect_batch(
            self.decoder, raw, (h, w), self.conf_thresh, self.iou_thresh, self.max_det
        )
        out: list[DenseResult] = []
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

    def predict(self, images: Sequence[Any] | Any) -> list[DenseResult]:
        """Detections (per image, best first) or class-index masks (per image, its own size) for
        ``images``: paths, PIL images, arrays or tensors."""
        if isinstance(images, (str, Path, Image.Image)) or (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim < 4
        ):
            images = [images]
        batch, sizes = self.load_images(list(images))
        x = normalize_batch(batch, self.mean, self.std)
        return self.postprocess(self.batch_outputs(x), sizes)

    def predict_files(self, paths: Sequence[str | Path]) -> list[DenseResult | DataError]:
        """Like :meth:`predict` for files, but an unreadable file yields its :class:`DataError`
        while every other file is still predicted (in batches of ``batch_size``)."""
        results: list[DenseResult | DataError | None] = [None] * len(paths)
        good: list[tuple[int, torch.Tensor, tuple[int, int]]] = []
        for i, p in enumerate(paths):
            try:
                good.append((i, self.to_uint8(p), image_size(p)))
            except DataError as exc:
                results[i] = exc
        for start in range(0, len(good), self.batch_size):
            chunk = good[start : start + self.batch_size]
            x = normalize_batch(torch.stack([t for _, t, _ in chunk]), self.mean, self.std)
            for (i, _, _), r in zip(
                chunk, self.postprocess(self.batch_outputs(x), [s for *_, s in chunk])
            ):
                results[i] = r
        return results  # type: ignore[return-value]

    def result_json(self, result: DenseResult, source: str | None = None) -> dict[str, Any]:
        """One image's answer as plain data: ``detections`` (class, score, box) or the mask's
        ``shape``, ``pixels`` per class and, with ``mask=True`` callers, the mask itself."""
        if self.task == "detection":
            return {"source": source, "detections": [d.to_json() for d in result]}  # type: ignore[union-attr]
        mask = np.asarray(result)
        counts = np.bincount(mask.flatten(), minlength=len(self.classes))
        return {
            "source": source,
            "shape": list(mask.shape),
            "pixels": {self._name(k): int(c) for k, c in enumerate(counts) if c},
        }


# ------------------------------------------------------------------------------------ drawing


def palette(n: int) -> np.ndarray:
    """Colours for class indices (the VOC palette; index 0, background, is black)."""
    return voc_colormap(max(n, 2))


def mask_to_png(mask: np.ndarray, path: str | Path | IO[bytes], num_classes: int = 256) -> None:
    """A class-index mask as a palette PNG: pixel values are the indices, colours the VOC map."""
    im = Image.fromarray(np.asarray(mask, np.uint8), "P")
    im.putpalette(palette(256).flatten().tolist())
    im.save(path, format="PNG")


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


def save_mask(
    predictor: DensePredictor, source: str | Path, mask: np.ndarray, out_dir: str | Path
) -> dict[str, str]:
    """``<stem>_mask.png`` (palette PNG whose pixel values are the class indices) and
    ``<stem>_overlay.png`` (the image tinted by class) in ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem
    paths = {"mask": str(out / f"{stem}_mask.png"), "overlay": str(out / f"{stem}_overlay.png")}
    mask_to_png(mask, paths["mask"])
    with Image.open(source) as im:
        img = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    Image.fromarray(overlay_mask(img, mask)).save(paths["overlay"])
    return paths


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """A class-index mask as palette-PNG bytes (what the HTTP service sends as ``mask_png``)."""
    buf = io.BytesIO()
    mask_to_png(mask, buf)
    return buf.getvalue()


def padded_detections(
    results: Sequence[list[BoxPrediction]],
) -> tuple[np.ndarray, np.ndarray, list[list[bytes]], np.ndarray]:
    """Per-image detections as rectangular arrays, for wire formats with fixed shapes:
    boxes ``(N, D, 4)``, scores ``(N, D)``, labels ``N x D`` (UTF-8), counts ``(N,)``, where D is
    the largest count in the batch; images with fewer boxes are padded with zeros / ``b""``."""
    d = max([len(r) for r in results] + [0])
    n = len(results)
    boxes, scores = np.zeros((n, d, 4), np.float32), np.zeros((n, d), np.float32)
    labels = [[b""] * d for _ in range(n)]
    for i, r in enumerate(results):
        for j, b in enumerate(r):
            boxes[i, j], scores[i, j], labels[i][j] = b.box, b.score, b.label.encode("utf-8")
    return boxes, scores, labels, np.array([len(r) for r in results], np.int32)


def write_predictions(
    predictor: DensePredictor, paths: Sequence[str | Path], out_dir: str | Path
) -> Path:
    """Run ``predictor`` on ``paths`` and write ``predictions.json`` (and, for masks,
    :func:`save_mask`'s PNGs) into ``out_dir``; returns the JSON file's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for p, r in zip(paths, predictor.predict(list(paths))):
        rec = predictor.result_json(r, str(p))
        if predictor.task == "segmentation":
            rec.update(save_mask(predictor, p, np.asarray(r), out))
        records.append(rec)
    path = out / "predictions.json"
    path.write_text(json.dumps(records, indent=1))
    return path
