"""Explanations for files and pictures: Grad-CAM, Grad-CAM++ and saliency drawn over the image.

The arithmetic (target layer, CAM weights, saliency) lives in :mod:`cnnlab.inspect.cam`, below every
workflow, so the HTTP service draws the same maps; this module adds what evaluation needs on top:
colour overlays (matplotlib), class names as targets, and one PNG per file and method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import UnknownNameError
from cnnlab.inspect.cam import METHODS, Explanation, explain, find_target_layer

__all__ = [
    "METHODS",
    "Explanation",
    "explain",
    "explain_files",
    "find_target_layer",
    "overlay",
    "resolve_target",
]


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB float image (H, W, 3) in [0, 1]: ``image`` (H, W), (H, W, C) or (C, H, W) uint8 or
    float, in grey or colour, with the ``heat`` map (H, W) in [0, 1] blended on top (jet colours)."""
    import matplotlib

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.max() > 1.0:
        img = img / 255.0
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, -1)
    colours = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return np.clip((1 - alpha) * img + alpha * colours, 0, 1)


def resolve_target(target: str | int | None, classes: list[str]) -> int | None:
    """A class name or index (as text or int) → index; None stays None (the predicted class)."""
    if target is None:
        return None
    if str(target) in classes:
        return classes.index(str(target))
    try:
        i = int(target)
    except (TypeError, ValueError):
        raise UnknownNameError("class", str(target), classes) from None
    if not 0 <= i < len(classes):
        raise UnknownNameError("class", str(target), classes)
    return i


def explain_files(
    run_dir: str | Path,
    paths: list[str | Path],
    out_dir: str | Path,
    methods: list[str] | tuple[str, ...] = ("gradcam",),
    layer: str | None = None,
    target: str | int | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Explain image files with a run's model; one PNG (image | overlay) per file and method in
    ``out_dir``. A file that cannot be read yields ``{"source", "error"}``; the others still run.

    Example::

        explain_files("runs/x", ["cat.png"], "explanations", methods=["gradcam", "gradcam++"])
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.deploy.predictor import load
    from cnnlab.errors import DataError

    pred = load(run_dir, device=device)
    t = resolve_target(target, pred.classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    for path in paths:
        try:
            img = pred.to_uint8(path)
        except DataError as exc:
            results.append({"source": str(path), "error": str(exc)})
            continue
        x = pred.preprocess([img])
        stem = Path(path).stem
        base, k = stem, 2
        while base in used:
            base, k = f"{stem}-{k}", k + 1
        used.add(base)
        files, label, prob = [], "", 0.0
        for method in methods:
            e = explain(pred.model, x, target=t, method=method, layer=layer)
            cls = int(e.targets[0])
            label, prob = pred.classes[int(e.probs[0].argmax())], float(e.probs[0].max())
            fig, axes = plt.subplots(1, 2, figsize=(6, 3.3))
            arr = img.numpy()
            axes[0].imshow(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0), cmap="gray")
            axes[0].set_title(f"predicted {label} ({prob:.2f})", fontsize=9)
            axes[1].imshow(overlay(arr, e.maps[0]))
            where = f" @ {e.layer}" if e.layer else ""
            axes[1].set_title(f"{method} for '{pred.classes[cls]}'{where}", fontsize=9)
            for ax in axes:
                ax.axis("off")
            fig.tight_layout()
            f = out_dir / f"{base}_{method.replace('++', 'pp')}.png"
            fig.savefig(f, dpi=100)
            plt.close(fig)
            files.append(f)
        results.append({"source": str(path), "label": label, "probability": prob, "files": files})
    return results
