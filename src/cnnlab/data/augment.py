"""Augmentation pipelines on whole batches, configured by a short spec string.

Grammar: a comma-separated list of transforms, each a name with optional ``:``-separated numeric
arguments, applied in the order given (Mixup/CutMix always last, since they mix labels too)::

    "flip,crop:4,jitter:0.4"            "rrc:0.35,flip,trivialaugment,erase:0.25"

=================  =====================================================================
name[:args]        effect (defaults in brackets)
=================  =====================================================================
flip[:P]           horizontal flip with probability P [0.5]  (alias hflip)
altflip            alternating flip: each image is flipped in every other epoch, which half of
                   the images start is fixed by the seed, so two epochs show every image both
                   ways (random flips leave ~25 % of images one way only; airbench)
vflip[:P]          vertical flip with probability P [0.5]
crop[:PAD]         zero-pad PAD pixels each side, random crop back to size [4]
translate[:PAD]    the same as crop, a random shift of up to PAD pixels each way [2]
rrc[:MIN[:MAX]]    random resized crop, area fraction MIN..MAX [0.08 1.0], ratio 3/4..4/3,
                   to the output size (alias random_resized_crop)
rotate[:DEG]       random rotation in ±DEG degrees, black fill [15]
affine[:D[:T[:S[:SH]]]]  rotation ±D°, translation ±T (fraction of size), scale 1±S,
                   shear ±SH° [10 0.1 0.1 0]
jitter[:B[:C[:S[:H]]]]   colour jitter: brightness, contrast, saturation factors in 1±B/C/S,
                   hue shift ±H turns; one number sets B=C=S [0.4] (alias color_jitter);
                   applied as one colour matrix per image, clamped once
                   (see :func:`~cnnlab.data.batch_ops.color_transform`)
gray[:P]           grayscale with probability P [0.2] (alias grayscale)
erase[:P[:MAX]]    random erasing with probability P of a box of 2%..MAX of the area, noise
                   fill [0.25 0.33]
randaugment[:N[:M]]  RandAugment, N ops at magnitude M of 30 [2 9] (alias ra)
trivialaugment     TrivialAugment (wide), one op at a random magnitude (alias ta)
mixup[:ALPHA]      Mixup, lam ~ Beta(ALPHA, ALPHA) per sample [0.2]
cutmix[:ALPHA]     CutMix, lam ~ Beta(ALPHA, ALPHA) per sample [1.0]
=================  =====================================================================

The pipeline takes a uint8 (N, C, H, W) batch on any device and labels (N,), and returns the batch
(uint8 while only flips/crops ran, else float in 0..255 — normalisation comes after, in
:class:`~cnnlab.data.loader.BatchLoader`) and labels (soft (N, K) float when Mixup/CutMix is on).
The output size (``image_size``) can change between epochs for progressive resizing; the final image
is resized to it when no crop produced it. Random parameters come from one CPU generator (and a
device generator seeded from it), so a pipeline is reproducible given its seed and epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnlab.data import batch_ops as ops
from cnnlab.data.autoaugment import RandAugmentBatch, TrivialAugmentBatch
from cnnlab.data.mix import MixBatch, soft_targets
from cnnlab.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class _Spec:
    defaults: tuple[float, ...]
    usage: str
    min_args: int = 0


SPECS: dict[str, _Spec] = {
    "flip": _Spec((0.5,), "flip[:P]"),
    "vflip": _Spec((0.5,), "vflip[:P]"),
    "altflip": _Spec((), "altflip"),
    "translate": _Spec((2,), "translate[:PAD]"),
    "crop": _Spec((4,), "crop[:PAD]"),
    "rrc": _Spec((0.08, 1.0), "rrc[:MIN_SCALE[:MAX_SCALE]]"),
    "rotate": _Spec((15,), "rotate[:DEGREES]"),
    "affine": _Spec((10, 0.1, 0.1, 0), "affine[:DEG[:TRANSLATE[:SCALE[:SHEAR]]]]"),
    "jitter": _Spec((0.4, 0.4, 0.4, 0.0), "jitter[:BRIGHTNESS[:CONTRAST[:SATURATION[:HUE]]]]"),
    "gray": _Spec((0.2,), "gray[:P]"),
    "erase": _Spec((0.25, 0.33), "erase[:P[:MAX_AREA]]"),
    "randaugment": _Spec((2, 9), "randaugment[:NUM_OPS[:MAGNITUDE]]"),
    "trivialaugment": _Spec((), "trivialaugment"),
    "mixup": _Spec((0.2,), "mixup[:ALPHA]"),
    "cutmix": _Spec((1.0,), "cutmix[:ALPHA]"),
}
ALIASES = {
    "hflip": "flip",
    "random_resized_crop": "rrc",
    "color_jitter": "jitter",
    "colorjitter": "jitter",
    "grayscale": "gray",
    "ra": "randaugment",
    "ta": "trivialaugment",
    "trivial": "trivialaugment",
}


def list_augmentations() -> list[str]:
    """Names accepted in an augmentation spec (aliases excluded)."""
    return sorted(SPECS)


def parse_spec(spec: str) -> list[tuple[str, tuple[float, ...]]]:
    """``"crop:4,flip"`` → ``[("crop", (4.0,)), ("flip", (0.5,))]`` with defaults filled in.

    Unknown names raise :class:`UnknownNameError`; bad arguments a one-line :class:`ConfigError`.
    """
    out = []
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item or item.lower() == "none":
            continue
        name, *args = (p.strip() for p in item.split(":"))
        key = name.lower().replace("-", "_")
        key = ALIASES.get(key, key)
        if key not in SPECS:
            raise UnknownNameError("augmentation", name, list(SPECS))
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
        out.append(("crop" if key == "translate" else key, values))
    return out


def _check(key: str, item: str, v: tuple[float, ...], s: _Spec) -> None:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"augmentation '{item}': {why}; usage: {s.usage}")

    if any(a < 0 for a in v):
        raise bad("arguments must not be negative")
    if key in ("flip", "vflip", "gray", "erase") and v[0] > 1:
        raise bad("the probability must be in 0..1")
    if key == "crop" and not float(v[0]).is_integer():
        raise bad("the padding must be a whole number of pixels")
    if key == "rrc" and not (0 < v[0] <= v[1] <= 1):
        raise bad("need 0 < MIN_SCALE <= MAX_SCALE <= 1")
    if key == "erase" and not (0.02 < v[1] <= 1):
        raise bad("MAX_AREA must be in 0.02..1")
    if key == "jitter" and v[3] > 0.5:
        raise bad("the hue shift must be at most 0.5 turns")
    if key == "randaugment" and (not float(v[0]).is_integer() or not 0 <= v[1] <= 30):
        raise bad("NUM_OPS must be a whole number and MAGNITUDE in 0..30")
    if key in ("mixup", "cutmix") and v[0] <= 0:
        raise bad("ALPHA must be positive")


class _Context:
    """What an op may use: the CPU generator, a device generator, the wanted output size."""

    def __init__(
        self,
        generator: torch.Generator,
        output_size: tuple[int, int] | None,
        indices: torch.Tensor | None = None,
        epoch: int = 0,
        seed: int = 0,
    ):
        self.generator = generator
        self.output_size = output_size
        self.indices, self.epoch, self.seed = indices, epoch, seed
        self._device_gens: dict[torch.device, torch.Generator] = {}

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def device_generator(self, device: torch.device) -> torch.Generator:
        if device.type == "cpu":
            return self.generator
        if device not in self._device_gens:
            seed = int(torch.randint(2**62, (1,), generator=self.generator))
            self._device_gens[device] = torch.Generator(device=device).manual_seed(seed)
        return self._device_gens[device]


Op = Callable[[torch.Tensor, _Context], torch.Tensor]


def alternating_flip_mask(indices: torch.Tensor, epoch: int, seed: int = 0) -> torch.Tensor:
    """Which of the images ``indices`` to flip in ``epoch``: a fixed per-image coin (a hash of
    the index and seed) XOR the epoch's parity, so each image alternates between orientations."""
    h = (indices.long().cpu() * 2_654_435_761 + seed * 97_531 + 12_345) % 2**32
    h = (h ^ (h >> 16)) * 73_244_475 % 2**32
    return ((h >> 15) & 1).bool() ^ bool(epoch % 2)


def _sample_boxes(
    n: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], ctx: _Context
) -> torch.Tensor:
    """torchvision's RandomResizedCrop / RandomErasing box sampling, vectorised: 10 tries each.

    Returns (N, 4: top, left, height, width) and, for samples with no valid try, the whole image.
    """
    tries = 10
    area = h * w * (scale[0] + (scale[1] - scale[0]) * ctx.rand(n, tries))
    log_r = torch.log(torch.tensor(ratio))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * ctx.rand(n, tries))
    bw = torch.sqrt(area * aspect).round().long()
    bh = torch.sqrt(area / aspect).round().long()
    ok = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
    first = ok.long().argmax(1)
    found = ok.any(1)
    bh = torch.where(found, bh.gather(1, first[:, None]).squeeze(1), torch.full((n,), h))
    bw = torch.where(found, bw.gather(1, first[:, None]).squeeze(1), torch.full((n,), w))
    u = ctx.rand(n, 2)
    top = (u[:, 0] * (h - bh + 1)).long().clamp_max(h - bh)
    left = (u[:, 1] * (w - bw + 1)).long().clamp_max(w - bw)
    return torch.stack([top, left, bh, bw], 1)


# Long by design: a dispatch table from the augmentation grammar to batch ops, one branch each.
def _build_op(key: str, v: tuple[float, ...]) -> Op:
    if key in ("flip", "vflip"):
        fn = ops.hflip_where if key == "flip" else ops.vflip_where

        def flip(x: torch.Tensor, ctx: _Context) -> torch.Tensor:
            return fn(x, ctx.rand(len(x)) < v[0])

        return flip
    if key == "altflip":

        def altflip(x: torch.Tensor, ctx: _Context) -> torch.Tensor:
            if ctx.indices is None:
                raise ConfigError(
                    "augmentation 'altflip' needs each image's dataset index; use it through "
                    "the training loader (BatchLoader), or call the pipeline with indices="
                )
            return ops.hflip_where(x, alternating_flip_mask(ctx.indices, ctx.epoch, ctx.seed))

        return altflip
    if key in ("crop", "crop+flip"):
        pad, p_flip = int(v[0]), (v[1] if key == "crop+flip" else 0.0)

        def crop(x: torch.Tensor, ctx: _Context) -> torch.Tensor:
            off = (ctx.rand(len(x), 2) * (2 * pad + 1)).long().clamp_max(2 * pad)
            flip = ctx.rand(len(x)) < p_flip if key == "crop+flip" else None
            return ops.pad_crop(x, pad, off[:, 0], off[:, 1], flip=flip)

        return crop
    if key in ("rrc", "rrc+flip"):

        def rrc(x: torch.Tensor, ctx: _Context) -> torch.Tensor:
            n, _, h, w = x.shape
            boxes = _sample_boxes(n, h, w, (v[0], v[1]), (3 / 4, 4 / 3), ctx)
            flip = ctx.rand(n) < v[2] if key == "rrc+flip" else None
            out = ops.resized_crop(x, boxes, ctx.output_size or (h, w), flip=flip)
            return out.clamp_(0, 255)

        return rrc
    if key in ("rotate", "affine"):
        deg, trans, scl, shear = (v[0], 0.0, 0.0, 0.0) if key == "rotate" else v

        def affine(x: torch.Tensor, ctx: _Context) -> torch.Tensor:
            n, _, h, w = x.shape
            u = ctx.rand(n, 5) * 2 - 1  # uniform in -1..1
            t = torch.stack([u[:, 1] * trans * w, u[:, 2] * trans * h], 1)
            m = ops.affine_matrices(
                u[:, 0] * deg, t, 1 + u[:, 3] * scl, torch.stack([u[:, 4] * shear, 0 * u[:, 4]], 1)
            )
            return ops.warp_affine(x, m).clamp_(0, 255)

        return affine
    if key == "jitter":
        b, c, s, hue = v

        def jitter(x: torch.Tensor, ctx: _Context) -> torch.Tensor:
            u = ctx.rand(len(x), 4) * 2 - 1
            return ops.color_transform(
                x,
                (1 + b * u[:, 0]).clamp_min(0),
                (1 + c * u[:, 1]).clamp_min(0),
                (1 + s * u[:, 2]).clamp_min(0),
                hue * u[:, 3],
            )

        return jitter
    if key == "gray":

        def gray(x: torch.Tensor, ctx: _Context) -> torch.Tensor:
            mask = (ctx.rand(len(x)) < v[0]).to(x.device).view(-1, 1, 1, 1)
            g = ops.grayscale(x).expand_as(x)
            return torch.where(mask, g, ops.to_float(x))

        return gray
    if key == "erase":
        p, max_area = v

        def erase(x: torch.Tensor, ctx: _Context) -> torch.Tensor:
            n, _, h, w = x.shape
            boxes = _sample_boxes(n, h, w, (0.02, max_area), (0.3, 3.3), ctx)
            boxes[ctx.rand(n) >= p, 2] = 0  # height 0: no box
            gen = ctx.device_generator(x.device)
            noise = torch.randint(0, 256, x.shape, generator=gen, device=x.device)
            return ops.erase_boxes(x, boxes, noise.to(x.dtype))

        return erase
    if key == "randaugment":
        ra = RandAugmentBatch(int(v[0]), int(v[1]))
        return lambda x, ctx: ra(x, ctx.generator)
    if key == "trivialaugment":
        ta = TrivialAugmentBatch()
        return lambda x, ctx: ta(x, ctx.generator)
    raise AssertionError(key)  # parse_spec only lets known names through


def _fuse(steps: list[tuple[str, tuple[float, ...]]]) -> list[tuple[str, tuple[float, ...]]]:
    """Cheaper but equivalent step orders: ``crop`` or ``rrc`` and an adjacent ``flip`` become one
    pass (a gather for crop, a mirrored sampling grid for rrc) — the most common recipes.

    A flip after a crop at offset ``left`` equals a crop at the mirrored offset after a flip, and
    offsets are uniform, so the results have the same distribution in either order.
    """
    out: list[tuple[str, tuple[float, ...]]] = []
    for key, v in steps:
        if out and {out[-1][0], key} == {"rrc", "flip"}:
            prev_key, prev_v = out.pop()
            rrc_v, flip_v = (prev_v, v) if prev_key == "rrc" else (v, prev_v)
            out.append(("rrc+flip", (rrc_v[0], rrc_v[1], flip_v[0])))
        elif out and {out[-1][0], key} == {"crop", "flip"}:
            prev_key, prev_v = out.pop()
            crop_v, flip_v = (prev_v, v) if prev_key == "crop" else (v, prev_v)
            out.append(("crop+flip", (crop_v[0], flip_v[0])))
        else:
            out.append((key, v))
    return out


class BatchTransform:
    """A parsed augmentation pipeline: call it on ``(x_uint8, y)``; see the module docstring.

    Example::

        t = build_batch_transform("crop:4,flip", image_size=None, num_classes=10)
        x_aug, y_aug = t(x_uint8, y)
    """

    def __init__(
        self,
        steps: list[tuple[str, tuple[float, ...]]],
        *,
        num_classes: int,
        image_size: int | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        self.steps = [s for s in steps if s[0] not in ("mixup", "cutmix")]
        for key, v in steps:
            if key == "mixup":
                mixup_alpha = v[0]
            elif key == "cutmix":
                cutmix_alpha = v[0]
        self.num_classes = num_classes
        self.mix = (
            MixBatch(num_classes, mixup_alpha, cutmix_alpha)
            if mixup_alpha > 0 or cutmix_alpha > 0
            else None
        )
        self._ops = [_build_op(k, v) for k, v in _fuse(self.steps)]
        # the loader passes each batch's dataset indices only to a pipeline that needs them
        self.uses_indices = any(k == "altflip" for k, _ in self.steps)
        self.epoch = 0
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self.generator = generator
        self.seed = generator.initial_seed() if seed is None else seed
        self.output_size: int | None = None
        self.set_output_size(image_size)

    def set_output_size(self, size: int | None) -> None:
        """Output images of ``size`` x ``size`` from now on (None: the input size)."""
        if size is not None and int(size) < 1:
            raise ConfigError(f"output size must be positive; got {size}")
        self.output_size = None if size is None else int(size)

    def set_epoch(self, epoch: int) -> None:
        """Reseed from (seed, epoch) so that an epoch's augmentations do not depend on the past."""
        self.epoch = epoch
        self.generator.manual_seed((self.seed * 1_000_003 + epoch * 7_919 + 12_345) % 2**63)

    @property
    def soft_labels(self) -> bool:
        """True when the labels come out as (N, K) probabilities (Mixup/CutMix)."""
        return self.mix is not None

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch; ``indices`` (the images' dataset indices) are needed by ``altflip``."""
        size = (self.output_size, self.output_size) if self.output_size else None
        ctx = _Context(self.generator, size, indices, self.epoch, self.seed)
        for op in self._ops:
            x = op(x, ctx)
        if size is not None:
            x = ops.resize(x, size)
        if self.mix is not None:
            x, y = self.mix(x, y, self.generator)
        return x, y

    def __repr__(self) -> str:
        parts = [f"{k}:{':'.join(f'{a:g}' for a in v)}" if v else k for k, v in self.steps]
        if self.mix is not None:
            parts += [f"mixup:{self.mix.mixup_alpha:g}"] if self.mix.mixup_alpha else []
            parts += [f"cutmix:{self.mix.cutmix_alpha:g}"] if self.mix.cutmix_alpha else []
        return f"BatchTransform({','.join(parts)!r}, output_size={self.output_size})"


def build_batch_transform(
    spec: str,
    *,
    image_size: int | None,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> BatchTransform | None:
    """Parse ``spec`` (see the module docstring) into a :class:`BatchTransform`, or None if empty.

    ``mixup_alpha``/``cutmix_alpha`` > 0 add Mixup/CutMix (as ``mixup:A``/``cutmix:A`` in the spec
    would). ``image_size`` is the output size (None: the input size).
    """
    steps = parse_spec(spec)
    if not steps and mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    return BatchTransform(
        steps,
        num_classes=num_classes,
        image_size=image_size,
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        generator=generator,
        seed=seed,
    )


__all__ = [
    "BatchTransform",
    "alternating_flip_mask",
    "build_batch_transform",
    "list_augmentations",
    "parse_spec",
    "soft_targets",
]
