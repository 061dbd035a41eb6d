"""Augmentation for detection and segmentation batches: the labels move with the pixels.

Grammar as for classification (:mod:`cnnlab.data.augment`): comma-separated ``name[:args]``::

    "flip,scale:0.75:1.25,translate:0.1,jitter:0.3"        "rrc:0.4,flip"

=====================  ===========================================================================
name[:args]            effect (defaults in brackets)
=====================  ===========================================================================
flip[:P]               horizontal flip with probability P [0.5]  (alias hflip)
vflip[:P]              vertical flip with probability P [0.5]
scale[:MIN[:MAX]]      scale jitter about the centre by a factor in MIN..MAX [0.75 1.25]
translate[:T]          shift by up to ±T of the width / height [0.1]
rrc[:MIN[:MAX]]        random resized crop: a square crop of MIN..MAX of the area, inside the
                       image, zoomed back to the full size [0.3 1.0] (alias random_resized_crop)
jitter[:B[:C[:S[:H]]]] colour jitter of the pixels only, as in :mod:`cnnlab.data.augment` [0.4]
=====================  ===========================================================================

Every geometric step is an axis-aligned affine map, so the steps of a batch compose into one
``(scale, flip, shift)`` per image: the images are resampled once (bilinear, one ``grid_sample``),
the semantic masks with the same grid in nearest-neighbour mode (pixels from outside the image
become :data:`~cnnlab.data.dense.IGNORE_INDEX`, so padding is never scored as background), and the
boxes' corners are mapped exactly, then clipped to the image; a box keeping less than
``min_visible`` of its area (or under 2 px wide or high) is dropped with its label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnlab.data import batch_ops as ops
from cnnlab.data.dense import IGNORE_INDEX, DenseTarget
from cnnlab.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class _Spec:
    defaults: tuple[float, ...]
    usage: str


SPECS: dict[str, _Spec] = {
    "flip": _Spec((0.5,), "flip[:P]"),
    "vflip": _Spec((0.5,), "vflip[:P]"),
    "scale": _Spec((0.75, 1.25), "scale[:MIN[:MAX]]"),
    "translate": _Spec((0.1,), "translate[:FRACTION]"),
    "rrc": _Spec((0.3, 1.0), "rrc[:MIN_AREA[:MAX_AREA]]"),
    "jitter": _Spec((0.4, 0.4, 0.4, 0.0), "jitter[:BRIGHTNESS[:CONTRAST[:SATURATION[:HUE]]]]"),
}
ALIASES = {
    "hflip": "flip",
    "random_resized_crop": "rrc",
    "color_jitter": "jitter",
    "colorjitter": "jitter",
}


def list_dense_augmentations() -> list[str]:
    """Names accepted in a dense augmentation spec (aliases excluded)."""
    return sorted(SPECS)


def parse_dense_spec(spec: str) -> list[tuple[str, tuple[float, ...]]]:
    """``"flip,scale:0.8:1.2"`` → ``[("flip", (0.5,)), ("scale", (0.8, 1.2))]``, defaults filled.

    A classification-only augmentation (``mixup``, ``erase``…) is an :class:`UnknownNameError`
    listing the dense ones, since it would not move the boxes.
    """
    out = []
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item or item.lower() == "none":
            continue
        name, *args = (p.strip() for p in item.split(":"))
        key = ALIASES.get(name.lower().replace("-", "_"), name.lower().replace("-", "_"))
        if key not in SPECS:
            raise UnknownNameError("detection/segmentation augmentation", name, list(SPECS))
        s = SPECS[key]
        if len(args) > len(s.defaults):
            raise ConfigError(
                f"augmentation '{item}' takes at most {len(s.defaults)} argument(s): {s.usage}"
            )
        try:
            values = tuple(float(a) for a in args)
        except ValueError:
            raise ConfigError(
                f"augmentation '{item}' has a non-numeric argument; usage: {s.usage}"
            ) from None
        if key == "jitter" and len(values) == 1:
            values = (values[0], values[0], values[0])
        values = values + s.defaults[len(values) :]
        _check(key, item, values, s)
        out.append((key, values))
    return out


def _check(key: str, item: str, v: tuple[float, ...], s: _Spec) -> None:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"augmentation '{item}': {why}; usage: {s.usage}")

    if any(a < 0 for a in v):
        raise bad("arguments must not be negative")
    if key in ("flip", "vflip") and v[0] > 1:
        raise bad("the probability must be in 0..1")
    if key == "scale" and not (0 < v[0] <= v[1]):
        raise bad("need 0 < MIN <= MAX")
    if key == "translate" and v[0] >= 1:
        raise bad("the shift must be below 1 (a fraction of the size)")
    if key == "rrc" and not (0 < v[0] <= v[1] <= 1):
        raise bad("need 0 < MIN_AREA <= MAX_AREA <= 1")
    if key == "jitter" and v[3] > 0.5:
        raise bad("the hue shift must be at most 0.5 turns")


def transform_boxes(
    boxes: torch.Tensor,
    sx: float | torch.Tensor,
    sy: float | torch.Tensor,
    tx: float | torch.Tensor,
    ty: float | torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """Map xyxy pixel-edge boxes by ``x' = sx (x - W/2) + W/2 + tx`` (same in y), unclipped.

    A negative ``sx``/``sy`` is a flip: the corners are re-ordered so ``x1 <= x2`` still holds.
    """
    h, w = size
    x = (boxes[:, [0, 2]] - w / 2) * sx + w / 2 + tx
    y = (boxes[:, [1, 3]] - h / 2) * sy + h / 2 + ty
    return torch.stack([x.min(1).values, y.min(1).values, x.max(1).values, y.max(1).values], 1)


def clip_boxes(
    boxes: torch.Tensor, size: tuple[int, int], min_visible: float = 0.25, min_side: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes clipped to the image and the mask of those kept (enough of them still visible)."""
    h, w = size
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    c = torch.stack(
        [
            boxes[:, 0].clamp(0, w),
            boxes[:, 1].clamp(0, h),
            boxes[:, 2].clamp(0, w),
            boxes[:, 3].clamp(0, h),
        ],
        1,
    )
    cw, ch = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
    keep = (cw >= min_side) & (ch >= min_side) & (cw * ch >= min_visible * area.clamp_min(1e-6))
    return c, keep


class DenseBatchTransform:
    """A parsed dense pipeline: call it on ``(x_uint8, DenseTarget)``; see the module docstring.

    Random draws come from one CPU generator reseeded per epoch (:meth:`set_epoch`), so a resumed
    run sees the same augmentations as an unbroken one.
    """

    def __init__(
        self,
        steps: list[tuple[str, tuple[float, ...]]],
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        min_visible: float = 0.25,
    ):
        self.steps = steps
        self.min_visible = min_visible
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self.generator = generator
        self.seed = generator.initial_seed() if seed is None else seed

    def set_epoch(self, epoch: int) -> None:
        """Reseed from (seed, epoch) so that an epoch's augmentations do not depend on the past."""
        self.generator.manual_seed((self.seed * 1_000_003 + epoch * 7_919 + 54_321) % 2**63)

    def _rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator)

    def draw_geometry(self, n: int, size: tuple[int, int]) -> torch.Tensor:
        """Per-image ``(sx, sy, tx, ty)`` (N, 4) of the composed geometric steps (pixels)."""
        h, w = size
        g = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).repeat(n, 1)

        def then(sx: torch.Tensor, sy: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> None:
            # p'' = s p' + t applied after p' = g_s p + g_t (both about the centre)
            g[:, 2] = sx * g[:, 2] + tx
            g[:, 3] = sy * g[:, 3] + ty
            g[:, 0] *= sx
            g[:, 1] *= sy

        one, zero = torch.ones(n), torch.zeros(n)
        for key, v in self.steps:
            if key == "flip":
                f = torch.where(self._rand(n) < v[0], -one, one)
                then(f, one, zero, zero)
            elif key == "vflip":
                f = torch.where(self._rand(n) < v[0], -one, one)
                then(one, f, zero, zero)
            elif key == "scale":
                s = v[0] + (v[1] - v[0]) * self._rand(n)
                then(s, s, zero, zero)
            elif key == "translate":
                tx = (2 * self._rand(n) - 1) * v[0] * w
                ty = (2 * self._rand(n) - 1) * v[0] * h
                then(one, one, tx, ty)
            elif key == "rrc":
                frac = (v[0] + (v[1] - v[0]) * self._rand(n)).sqrt()  # crop side / image side
                s = 1 / frac
                # crop centre offset (from the image centre) keeping the crop inside the image
                ux = (2 * self._rand(n) - 1) * (1 - frac) * w / 2
                uy = (2 * self._rand(n) - 1) * (1 - frac) * h / 2
                then(s, s, -s * ux, -s * uy)
        return g

    def _jitter(self, x: torch.Tensor, v: tuple[float, ...]) -> torch.Tensor:
        n = len(x)

        def factor(a: float) -> torch.Tensor:
            return 1 + (2 * self._rand(n) - 1) * a

        hue = (2 * self._rand(n) - 1) * v[3]
        return ops.color_transform(x, factor(v[0]), factor(v[1]), factor(v[2]), hue)

    def __call__(self, x: torch.Tensor, target: DenseTarget) -> tuple[torch.Tensor, DenseTarget]:
        n, _, h, w = x.shape
        geometric = any(k != "jitter" for k, _ in self.steps)
        if geometric:
            g = self.draw_geometry(n, (h, w))
            mats = torch.zeros(n, 2, 3)
            mats[:, 0, 0], mats[:, 1, 1] = g[:, 0], g[:, 1]
            mats[:, 0, 2], mats[:, 1, 2] = g[:, 2], g[:, 3]
            x = ops.warp_affine(x, mats.to(x.device))
            masks = target.masks
            if masks is not None:
                warped = ops.warp_affine(
                    masks[:, None].float(), mats.to(x.device), mode="nearest", fill=IGNORE_INDEX
                )
                masks = warped[:, 0].round().long()
            boxes, labels = target.boxes, target.labels
            if boxes is not None and labels is not None:
                new_boxes, new_labels = [], []
                for i, (b, lb) in enumerate(zip(boxes, labels)):
                    sx, sy, tx, ty = g[i].tolist()
                    moved = transform_boxes(b, sx, sy, tx, ty, (h, w))
                    clipped, keep = clip_boxes(moved, (h, w), self.min_visible)
                    new_boxes.append(clipped[keep])
                    new_labels.append(lb[keep])
                boxes, labels = new_boxes, new_labels
            target = DenseTarget(boxes, labels, masks, target.index)
        for key, v in self.steps:
            if key == "jitter":
                x = self._jitter(x, v)
        return x, target

    def __repr__(self) -> str:
        parts = [f"{k}:{':'.join(f'{a:g}' for a in v)}" for k, v in self.steps]
        return f"DenseBatchTransform({','.join(parts)!r})"


def build_dense_transform(
    spec: str,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    min_visible: float = 0.25,
) -> DenseBatchTransform | None:
    """Parse ``spec`` (see the module docstring) into a :class:`DenseBatchTransform`, or None."""
    steps = parse_dense_spec(spec)
    if not steps:
        return None
    return DenseBatchTransform(steps, generator=generator, seed=seed, min_visible=min_visible)
