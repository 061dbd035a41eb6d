"""Receptive field of a plain stack of layers given as (kernel, stride[, dilation]).

The course's recurrence with the jump term (see :mod:`cnnlab.inspect.receptive` for the derivation
and for real models). It needs neither a model nor torch, so ``cnnlab rf --layers`` starts in a
fraction of a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class PlainLayerRF:
    """One step of :func:`receptive_field_layers`."""

    kernel: int
    stride: int
    dilation: int
    rf: int
    jump: int
    start: float


def receptive_field_layers(
    layers: Sequence[tuple[int, ...]], padding: Sequence[int] | None = None
) -> list[PlainLayerRF]:
    """Receptive field after each layer of a plain stack given as ``(k, s)`` or ``(k, s, d)``.

    ``padding`` (per layer, default ``d(k-1)//2``, i.e. 'same'-style) only moves ``start``.
    Example (the course's VGG-like stack: conv3, conv3, pool2/2, conv3, conv3, pool2/2)::

        >>> [r.rf for r in receptive_field_layers([(3, 1), (3, 1), (2, 2), (3, 1), (3, 1), (2, 2)])]
        [3, 5, 6, 10, 14, 16]
    """
    out: list[PlainLayerRF] = []
    rf, jump, start = 1, 1, 0.0
    for i, spec in enumerate(layers):
        if not 2 <= len(spec) <= 3 or any(int(v) != v or v < 1 for v in spec):
            raise ConfigError(
                f"layer {i} is {tuple(spec)!r}; each layer must be (kernel, stride) or "
                "(kernel, stride, dilation) with positive integers"
            )
        k, s, d = (int(spec[0]), int(spec[1]), int(spec[2]) if len(spec) == 3 else 1)
        p = padding[i] if padding is not None else (d * (k - 1)) // 2
        start += ((k - 1) * d / 2 - p) * jump
        rf += (k - 1) * d * jump
        jump *= s
        out.append(PlainLayerRF(k, s, d, rf, jump, start))
    return out


def parse_layers(text: str) -> list[tuple[int, ...]]:
    """Parse ``"3,3,2/2,3,3,2/2"`` or ``"3:1,3:1:2,2:2"`` (kernel[/stride] or kernel:stride[:dil]).

    Example::

        >>> parse_layers("3,3,2/2,3d2")
        [(3, 1, 1), (3, 1, 1), (2, 2, 1), (3, 1, 2)]
    """
    layers = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        try:
            kd = part.split("d")
            dil = int(kd[1]) if len(kd) > 1 else 1
            ks = kd[0].replace(":", "/").split("/")
            k, s = int(ks[0]), int(ks[1]) if len(ks) > 1 else 1
            if len(ks) > 2:
                dil = int(ks[2])
            if min(k, s, dil) < 1 or len(kd) > 2:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"cannot read layer {part!r}; write layers as KERNEL[/STRIDE][dDILATION] separated by "
                "commas, e.g. '3,3,2/2,3d2'"
            ) from None
        layers.append((k, s, dil))
    if not layers:
        raise ConfigError("no layers given; e.g. '3,3,2/2,3,3,2/2'")
    return layers
