"""RandAugment and TrivialAugment on whole batches: each sample draws its own op and magnitude.

The op set and magnitude tables follow torchvision (``RandAugment``: 2 ops at magnitude 9 of 31 bins;
``TrivialAugmentWide``: one op at a random magnitude of the wide table). Instead of a Python loop over
images, the batch is grouped by op: every op runs once on the samples that drew it, with their
magnitudes as a per-sample tensor. Geometric ops use nearest sampling and a black fill, as in
torchvision.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cnnlab.data import batch_ops as ops

OPS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
    "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)  # fmt: skip
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
          "contrast", "sharpness"}  # fmt: skip


def magnitude_table(bins: int, size: tuple[int, int], wide: bool) -> dict[str, torch.Tensor]:
    """Magnitude of every op for each of ``bins`` levels (torchvision's augmentation spaces)."""
    h, w = size
    lin = torch.linspace
    if wide:
        shear, tx, ty, rot, col = lin(0, 0.99, bins), lin(0, 32, bins), lin(0, 32, bins), lin(0, 135, bins), lin(0, 0.99, bins)  # fmt: skip
        post = 8 - (torch.arange(bins) / ((bins - 1) / 6)).round()
    else:
        shear, tx, ty, rot, col = lin(0, 0.3, bins), lin(0, 150 / 331 * w, bins), lin(0, 150 / 331 * h, bins), lin(0, 30, bins), lin(0, 0.9, bins)  # fmt: skip
        post = 8 - (torch.arange(bins) / ((bins - 1) / 4)).round()
    zero = torch.zeros(bins)
    return {
        "identity": zero, "shear_x": shear, "shear_y": shear, "translate_x": tx,
        "translate_y": ty, "rotate": rot, "brightness": col, "color": col, "contrast": col,
        "sharpness": col, "posterize": post, "solarize": lin(255, 0, bins),
        "autocontrast": zero, "equalize": zero,
    }  # fmt: skip


def _geometric(name: str, m: torch.Tensor) -> torch.Tensor:
    n = len(m)
    angle, trans = torch.zeros(n), torch.zeros(n, 2)
    scale, shear = torch.ones(n), torch.zeros(n, 2)
    if name == "rotate":
        angle = m
    elif name == "translate_x":
        trans[:, 0] = m
    elif name == "translate_y":
        trans[:, 1] = m
    elif name == "shear_x":
        shear[:, 0] = torch.rad2deg(torch.atan(m))
    else:
        shear[:, 1] = torch.rad2deg(torch.atan(m))
    return ops.affine_matrices(angle, trans, scale, shear)


def apply_op(name: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply op ``name`` with per-sample magnitudes ``m`` (N,) to float batch ``x``."""
    if name == "identity":
        return x
    if name in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        return ops.warp_affine(x, _geometric(name, m), mode="nearest")
    table: dict[str, Callable[[], torch.Tensor]] = {
        "brightness": lambda: ops.adjust_brightness(x, 1 + m),
        "color": lambda: ops.adjust_saturation(x, 1 + m),
        "contrast": lambda: ops.adjust_contrast(x, 1 + m),
        "sharpness": lambda: ops.sharpness(x, 1 + m),
        "posterize": lambda: ops.posterize(x, m),
        "solarize": lambda: ops.solarize(x, m),
        "autocontrast": lambda: ops.autocontrast(x),
        "equalize": lambda: ops.equalize(x),
    }
    return table[name]()


def augment_batch(
    x: torch.Tensor,
    op_index: torch.Tensor,
    magnitude: torch.Tensor,
    names: tuple[str, ...] = OPS,
) -> torch.Tensor:
    """Apply ``names[op_index[i]]`` with ``magnitude[i]`` to sample ``i``, grouped by op. Float out."""
    out = ops.to_float(x).clone() if x.dtype != torch.uint8 else ops.to_float(x)
    dev = x.device
    for k, name in enumerate(names):
        sel = (op_index == k).nonzero().flatten()
        if len(sel) == 0 or name == "identity":
            continue
        sel_d = sel.to(dev)
        out[sel_d] = apply_op(name, out[sel_d], magnitude[sel].to(dev))
    return out


class RandAugmentBatch:
    """RandAugment (Cubuk et al. 2020): ``num_ops`` random ops, each at a fixed ``magnitude``."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, bins: int = 31, wide: bool = False):
        if not 0 <= magnitude < bins:
            raise ValueError(f"magnitude must be in 0..{bins - 1}; got {magnitude}")
        self.num_ops, self.magnitude, self.bins, self.wide = num_ops, magnitude, bins, wide

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = len(x)
        table = magnitude_table(self.bins, tuple(x.shape[-2:]), self.wide)
        for _ in range(self.num_ops):
            op = torch.randint(len(OPS), (n,), generator=g)
            mags = torch.stack([table[name][self.magnitude] for name in OPS])[op]
            x = augment_batch(x, op, _signed(mags, op, g))
        return ops.to_float(x)


class TrivialAugmentBatch:
    """TrivialAugment (Müller & Hutter 2021): one random op at a random magnitude per sample."""

    def __init__(self, bins: int = 31):
        self.bins = bins

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = len(x)
        table = torch.stack(list(magnitude_table(self.bins, tuple(x.shape[-2:]), True).values()))
        op = torch.randint(len(OPS), (n,), generator=g)
        level = torch.randint(self.bins, (n,), generator=g)
        return augment_batch(x, op, _signed(table[op, level], op, g))


def _signed(mags: torch.Tensor, op: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    signed = torch.tensor([name in SIGNED for name in OPS])[op]
    flip = (torch.rand(len(op), generator=g) < 0.5) & signed
    return torch.where(flip, -mags, mags)
