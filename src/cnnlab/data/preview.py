"""A grid of augmented samples, to check an augmentation spec by eye before training with it.

The picture says what it shows: a title with the data and the spec, a label over every column
(``original``, then ``aug 1``…) and a green frame around the original column. Augmentations that
change what some images mean are named by :func:`augment_warnings` (a mirrored 2 is not a 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cnnlab.data.augment import build_batch_transform, parse_spec
from cnnlab.data.base import load_dataset
from cnnlab.data.batch_ops import resize
from cnnlab.errors import ConfigError

# Sources whose classes change under a mirror: digits and handwriting read differently flipped.
ORIENTATION_SENSITIVE = ("digits", "mnist", "digits-scenes")
_FLIPS = ("flip", "hflip", "vflip")


def augment_warnings(data: str, spec: str) -> list[str]:
    """Lines warning about augmentations that change the meaning of ``data``'s images."""
    ops = [part.split(":", 1)[0].strip().lower() for part in spec.split(",") if part.strip()]
    flips = [op for op in ops if op in _FLIPS]
    if flips and data in ORIENTATION_SENSITIVE:
        return [
            f"warning: '{flips[0]}' mirrors the images of {data}, and a mirrored digit is not the "
            "same digit (a flipped 2, 3, 7 reads as no digit); leave it out for digits and text"
        ]
    return []


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def annotate_grid(im: Image.Image, title: str, columns: int, cell_w: int, pad: int) -> Image.Image:
    """``im`` (a grid of ``columns`` cells ``cell_w`` wide, ``pad`` apart) under a title and a
    label per column, with the first (original) column framed in green."""
    band = 46
    out = Image.new("RGB", (max(im.width, 8 * len(title)), im.height + band), "white")
    out.paste(im.convert("RGB"), (0, band))
    draw = ImageDraw.Draw(out)
    draw.text((pad, 4), title, fill="black", font=_font(15))
    small = _font(12)
    for j in range(columns):
        x0 = pad + j * (cell_w + pad)
        label = "original" if j == 0 else f"aug {j}"
        draw.text((x0, band - 16), label, fill="darkgreen" if j == 0 else "black", font=small)
    x0 = pad - 2
    draw.rectangle(
        (x0, band + pad - 2, x0 + cell_w + 3, band + im.height - pad + 1), outline="green", width=2
    )
    return out


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
    for k in range(variants):
        if t is not None:
            t.set_epoch(k)  # each column an epoch, so altflip shows its alternation
        x = images if t is None else t(images, labels, indices=torch.arange(n))[0]
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
    cell = image_size or train.images.shape[-1]
    scale = max(1, 96 // max(1, cell))
    pad = 2
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    extras = [f"mixup {mixup_alpha:g}"] * (mixup_alpha > 0) + [f"cutmix {cutmix_alpha:g}"] * (
        cutmix_alpha > 0
    )
    title = f'{data}: augment "{spec}"' + "".join(f", {e}" for e in extras)
    im = annotate_grid(im, title, variants + 1, cell * scale, pad * scale)
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out)
    return out
