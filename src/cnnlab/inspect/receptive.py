"""Receptive fields: how many input pixels one unit of a layer sees, and where.

The recurrence (per axis), starting from the input with ``rf = 1, jump = 1``::

    rf_out   = rf_in + (k - 1) * d * jump_in      # kernel k, dilation d
    jump_out = jump_in * s                         # stride s
    start    = start_in + ((k - 1) * d / 2 - p) * jump_in

The jump term is what the course's ``rf += k - 1`` forgets: after a stride-2 pooling, each step of a
3x3 kernel moves two input pixels. The course's VGG-like stack therefore sees 16x16 pixels, not 11x11.

The same recurrence over a plain list of layers (no model, no torch) is
:mod:`cnnlab.inspect.rf_stack`. For real models, :func:`receptive_field` follows the graph the model actually executes (see
``_trace``): branches (Inception), residual adds and dense concatenations take the union of what
their inputs see, so the largest branch wins; anything fed from a global operation (flatten + linear,
global pooling, attention, an SE gate) sees the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.inspect._trace import Geo, run_trace
from cnnlab.inspect.geometry import check_input_size

# re-exported: the plain-stack recurrence lives in a torch-free module of its own
from cnnlab.inspect.rf_stack import PlainLayerRF, parse_layers, receptive_field_layers

__all__ = [
    "LayerRF",
    "PlainLayerRF",
    "ReceptiveFieldReport",
    "layer_rf_from_geo",
    "parse_layers",
    "receptive_field",
    "receptive_field_layers",
]


@dataclass(frozen=True)
class LayerRF:
    """Receptive field of one layer's output units, per axis (h, w).

    ``rf``: pixels one unit sees (for layers fed by a global op, the whole input). ``jump``: input
    pixels between neighbouring units (the effective stride). ``start``: input coordinate of the
    centre of unit (0, 0)'s field; negative when it reaches into the padding. ``jump`` and
    ``start`` are ``None`` for global layers. ``global_context``: the unit's window is ``rf``, but
    it also depends on every input pixel through a global gate (squeeze-excitation), so its exact
    receptive field — what an input-gradient measurement shows — is the whole input.
    """

    name: str
    kind: str
    rf: tuple[int, int]
    jump: tuple[float, float] | None
    start: tuple[float, float] | None
    is_global: bool = False
    global_context: bool = False

    @property
    def size(self) -> int | tuple[int, int]:
        """``rf`` as one number when square (the usual case), else (h, w)."""
        return self.rf[0] if self.rf[0] == self.rf[1] else self.rf

    def extent(self, i: int = 0, j: int = 0) -> tuple[tuple[float, float], tuple[float, float]]:
        """Input rows and columns ``((top, bottom), (left, right))`` seen by unit (i, j), inclusive
        and unclipped (may lie partly in the padding)."""
        if self.is_global or self.jump is None or self.start is None:
            raise ConfigError(f"layer {self.name!r} sees the whole input; it has no local extent")
        half = ((self.rf[0] - 1) / 2, (self.rf[1] - 1) / 2)
        ch, cw = self.start[0] + i * self.jump[0], self.start[1] + j * self.jump[1]
        return (ch - half[0], ch + half[0]), (cw - half[1], cw + half[1])

    def to_dict(self) -> dict:
        """Plain data for JSON output."""
        return {
            "name": self.name,
            "kind": self.kind,
            "rf": list(self.rf),
            "jump": list(self.jump) if self.jump else None,
            "start": list(self.start) if self.start else None,
            "global": self.is_global,
            "global_context": self.global_context,
        }

    def describe(self) -> str:
        """``16x16 (jump 4, start 6.5)`` or ``global``."""
        if self.is_global:
            return f"global ({self.rf[0]}x{self.rf[1]})"
        ctx = " + global gate" if self.global_context else ""
        return f"{self.rf[0]}x{self.rf[1]}{ctx} (jump {_num(self.jump[0])}, start {_num(self.start[0])})"  # type: ignore[index]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


def layer_rf_from_geo(name: str, kind: str, geo: Geo | None, hw: tuple[int, int]) -> LayerRF | None:
    """Convert tracer geometry to a :class:`LayerRF` (``hw`` is the input's height and width)."""
    if geo is None:
        return None
    if geo.is_global:
        return LayerRF(name, kind, hw, None, None, True)
    rf = tuple(int(math.ceil(geo.hi[i] - geo.lo[i] + 1 - 1e-9)) for i in range(2))
    start = tuple((geo.lo[i] + geo.hi[i]) / 2 for i in range(2))
    return LayerRF(name, kind, rf, tuple(geo.jump), start, False, geo.context)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReceptiveFieldReport:
    """Receptive field of every executed layer of a model, in execution order."""

    input_size: tuple[int, ...]
    layers: tuple[LayerRF, ...]
    output: LayerRF | None

    def __getitem__(self, name: str) -> LayerRF:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise UnknownNameError("layer", name, [layer.name for layer in self.layers])

    def largest_local(self) -> LayerRF | None:
        """The last layer whose units still see a bounded window (before any global op)."""
        local = [layer for layer in self.layers if not layer.is_global]
        return local[-1] if local else None

    def to_dict(self) -> dict:
        """Plain data for JSON output."""
        return {
            "input_size": list(self.input_size),
            "layers": [layer.to_dict() for layer in self.layers],
            "output": self.output.to_dict() if self.output else None,
        }


def receptive_field(model: nn.Module, input_size: Sequence[int]) -> ReceptiveFieldReport:
    """Exact receptive field, jump and centre of every layer of ``model`` at ``input_size`` (C,H,W).

    Works on any ``nn.Module``: it runs one forward pass and follows the executed graph.
    Example::

        >>> from cnnlab.models import get_model
        >>> rep = receptive_field(get_model("simplecnn"), (1, 28, 28))
        >>> rep["pool"].size, rep.largest_local().rf   # first call of `pool`, last local layer
        (4, (10, 10))
    """

    size = check_input_size(input_size)
    trace = run_trace(model, (1, *size))
    hw = (size[-2], size[-1])
    layers = tuple(
        lr for r in trace.rows if (lr := layer_rf_from_geo(r.name, r.kind, r.geo, hw)) is not None
    )
    out = layer_rf_from_geo("output", "output", trace.output_geo, hw)
    return ReceptiveFieldReport(tuple(size), layers, out)
