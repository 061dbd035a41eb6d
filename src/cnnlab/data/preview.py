"""A grid of augmented samples, to check an augmentation spec by eye before training with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnlab.data.augment import build_batch_transform, parse_spec
from cnnlab.data.base import load_dataset
from cnnlab.data.batch_ops import resize
from cnnlab.errors import ConfigError


def augment_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: str,
    *,
    num_classes: int,
    variants: int = 6,
    image_size: int | None = None,
    seed: int = 0,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    pad: int = 2,
) -> np.ndarray:
    """uint8 (rows*H, cols*W, C) grid: each row one sample, first column the original.

    Each column is one call of the pipeline on the whole batch, exactly as in training.
    """
    t = build_batch_transform(
        spec,
        image_size=image_size,
        num_classes=num_classes,
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        seed=seed,
    )
    n, c, h, w = images.shape
    size = (image_size, image_size) if image_size else (h, w)

    cols = [resize(images, size).round().clamp(0, 255).to(torch.uint8)]
    for _ in range(variants):
        x = images if t is None else t(images, labels)[0]
        cols.append(resize(x, size).round().clamp(0, 255).to(torch.uint8))
    oh, ow = size
    grid = np.full((n * (oh + pad) + pad, len(cols) * (ow + pad) + pad, c), 255, np.uint8)
    for j, col in enumerate(cols):
        arr = col.permute(0, 2, 3, 1).cpu().numpy()
        for i in range(n):
            y0, x0 = pad + i * (oh + pad), pad + j * (ow + pad)
            grid[y0 : y0 + oh, x0 : x0 + ow] = arr[i]
    return grid


def augment_preview(
    data: str,
    spec: str,
    out: str | Path,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    n: int = 8,
    variants: int = 6,
    seed: int = 0,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
) -> Path:
    """Write a PNG grid of ``n`` training samples of ``data`` under ``spec``; returns its path.

    Small images are scaled up (nearest) so that a 28x28 digit is still visible.
    """
    if n < 1 or variants < 1:
        raise ConfigError(f"--n and --variants must be at least 1; got {n} and {variants}")
    parse_spec(spec)  # a typo in the spec should fail before the data is loaded
    train = load_dataset(data, data_dir=data_dir, image_size=image_size, seed=seed).train
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=g)[: min(n, len(train))]
    grid = augment_grid(
        train.images[idx],
        train.labels[idx],
        spec,
        num_classes=train.num_classes,
        variants=variants,
        image_size=image_size,
        seed=seed,
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
    )
    im = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    scale = max(1, 96 // max(1, train.images.shape[-1]))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out)
    return out
