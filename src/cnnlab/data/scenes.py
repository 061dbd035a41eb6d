"""Scene datasets from real pixels: small canvases holding 1–4 digits or Fashion-MNIST items.

Detection and segmentation need labelled scenes, and cnnlab downloads nothing, so the built-in dense
datasets are composed from the classification images already on the machine: ``digits-scenes``
(scikit-learn's embedded digits, for the demo and the tests) and ``fashion-scenes`` (the Debian
Fashion-MNIST files). Each canvas gets 1–4 items at random sizes and positions whose squares never
overlap, pasted with ``max`` onto a faint noise background, so every label is exact:

* an item's instance mask is its own thresholded pixels (``>= threshold`` after resizing),
* its box is the tight box of that mask (pixel-edge ``x1, y1, x2, y2``),
* the semantic mask is 0 for background and ``class + 1`` on the item's mask.

Train canvases are built only from train images and test canvases only from test images, with a
fixed seed (not the run's), so the test set is the same for every run — as for ``digits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.base import DatasetSplits, ImageDataset, register_dataset
from cnnlab.data.dense import DenseDataset
from cnnlab.data.digits import load_digits_splits
from cnnlab.data.idx import load_fashion_mnist
from cnnlab.errors import ConfigError

DEFAULT_CANVAS = 128


@dataclass(frozen=True)
class SceneConfig:
    """How canvases are composed; sizes are fractions of the canvas side."""

    canvas: int = DEFAULT_CANVAS
    min_items: int = 1
    max_items: int = 4
    min_scale: float = 0.16
    max_scale: float = 0.42
    threshold: int = 48
    noise: int = 24
    tries: int = 30


def compose_scenes(
    items: ImageDataset, count: int, cfg: SceneConfig, seed: int, name: str
) -> DenseDataset:
    """``count`` canvases built from the (1-channel) ``items``; see the module docstring.

    Deterministic in ``seed``. Items are drawn with replacement; sizes are whole pixels in
    ``min_scale..max_scale`` of the canvas, and each size's items are resized in one batched call.
    """
    if items.images.shape[1] != 1:
        raise ConfigError("scene items must be 1-channel images")
    c = cfg.canvas
    lo, hi = max(4, round(cfg.min_scale * c)), max(4, round(cfg.max_scale * c))
    if hi >= c:
        raise ConfigError(f"canvas {c} px is too small for items up to {hi} px")
    rng = np.random.default_rng(seed)
    # 1. Layout: item, size and position of every slot, squares never overlapping.
    layout: list[list[tuple[int, int, int, int]]] = []  # per canvas: (item, size, x, y)
    for _ in range(count):
        k = int(rng.integers(cfg.min_items, cfg.max_items + 1))
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(k):
            for _ in range(cfg.tries):
                s = int(rng.integers(lo, hi + 1))
                x, y = int(rng.integers(0, c - s + 1)), int(rng.integers(0, c - s + 1))
                if all(
                    x + s <= px or px + ps <= x or y + s <= py or py + ps <= y
                    for _, ps, px, py in placed
                ):
                    placed.append((int(rng.integers(len(items))), s, x, y))
                    break
        layout.append(placed)
    # 2. Resize every slot's item, one interpolate call per size.
    slots = [(ci, j, *p) for ci, placed in enumerate(layout) for j, p in enumerate(placed)]
    resized: dict[tuple[int, int], np.ndarray] = {}
    for s in sorted({slot[3] for slot in slots}):
        group = [slot for slot in slots if slot[3] == s]
        idx = torch.tensor([g[2] for g in group])
        big = F.interpolate(items.images[idx].float(), size=(s, s), mode="bilinear", antialias=True)
        arr = big.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
        for g, a in zip(group, arr):
            resized[(g[0], g[1])] = a
    # 3. Paste onto noise; labels from each item's own thresholded pixels.
    images = rng.integers(0, cfg.noise + 1, size=(count, c, c), dtype=np.uint8)
    masks = np.zeros((count, c, c), np.uint8)
    instances = np.zeros((count, c, c), np.uint8)
    labels_all = items.labels.numpy()
    boxes, box_labels = [], []
    for ci, placed in enumerate(layout):
        bx, lb = [], []
        for j, (item, s, x, y) in enumerate(placed):
            a = resized[(ci, j)]
            m = a >= cfg.threshold
            if not m.any():
                continue
            region = images[ci, y : y + s, x : x + s]
            np.maximum(region, a, out=region)
            cls = int(labels_all[item])
            masks[ci, y : y + s, x : x + s][m] = cls + 1
            instances[ci, y : y + s, x : x + s][m] = len(bx) + 1
            rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
            bx.append([x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1])
            lb.append(cls)
        boxes.append(torch.tensor(bx, dtype=torch.float32).reshape(-1, 4))
        box_labels.append(torch.tensor(lb, dtype=torch.int64))
    return DenseDataset(
        images=torch.from_numpy(images).unsqueeze(1),
        boxes=boxes,
        box_labels=box_labels,
        masks=torch.from_numpy(masks),
        instances=torch.from_numpy(instances),
        classes=list(items.classes),
        name=name,
    )


def _scene_splits(
    splits: DatasetSplits,
    name: str,
    image_size: int | None,
    num_train: int,
    num_test: int,
) -> DatasetSplits:
    cfg = SceneConfig(canvas=int(image_size or DEFAULT_CANVAS))
    # Different fixed seeds per split: the test canvases do not repeat the train layouts.
    return DatasetSplits(
        compose_scenes(splits.train, num_train, cfg, seed=1, name=name),  # type: ignore[arg-type]
        compose_scenes(splits.test, num_test, cfg, seed=2, name=name),  # type: ignore[arg-type]
    )


@register_dataset("digits-scenes")
def load_digits_scenes(
    *,
    image_size: int | None = None,
    num_train: int = 1000,
    num_test: int = 250,
    **_: object,
) -> DatasetSplits:
    """Canvases (128 px, or ``image_size``) of 1–4 scikit-learn digits: boxes, semantic and
    instance masks; 1,000 train canvases from the 1,437 train digits, 250 test from the 360 test."""
    # Native 8x8 digits: each slot is upsampled once, straight to its own size.
    digits = load_digits_splits(image_size=8)
    return _scene_splits(digits, "digits-scenes", image_size, num_train, num_test)


@register_dataset("fashion-scenes")
def load_fashion_scenes(
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    num_train: int = 8000,
    num_test: int = 1000,
    **_: object,
) -> DatasetSplits:
    """Canvases (128 px, or ``image_size``) of 1–4 Fashion-MNIST items from the IDX files (the
    Debian ``dataset-fashion-mnist`` package or ``--data-dir``): 8,000 train canvases from the
    60,000 train images, 1,000 test canvases from the 10,000 test images."""
    fmnist = load_fashion_mnist(data_dir=data_dir)
    return _scene_splits(fmnist, "fashion-scenes", image_size, num_train, num_test)
