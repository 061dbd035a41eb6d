"""A torchinfo-style summary as data: one row per executed layer, plus totals.

``summarize(model, input_size)`` returns a :class:`ModelSummary`; ``format_summary`` renders it as
text, markdown, JSON or CSV. Parameter totals come from ``model.parameters()`` (shared weights
counted once), so they always equal ``sum(p.numel())``; rows list each layer's own parameters the
first time it runs (a module called twice shows them once).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect._trace import run_trace
from cnnlab.inspect.geometry import check_input_size
from cnnlab.inspect.receptive import LayerRF, layer_rf_from_geo

FORMATS = ("text", "markdown", "json", "csv")


@dataclass(frozen=True)
class SummaryRow:
    """One executed layer."""

    name: str
    kind: str
    output_shape: tuple[int, ...] | list[tuple[int, ...]]
    params: int
    macs: int
    rf: LayerRF | None

    @property
    def rf_text(self) -> str:
        """Receptive field as ``16`` (square), ``7x16``, ``global`` or empty; a ``*`` marks a window
        that also sees the whole input through a global gate (squeeze-excitation)."""
        if self.rf is None:
            return ""
        if self.rf.is_global:
            return "global"
        h, w = self.rf.rf
        return (str(h) if h == w else f"{h}x{w}") + ("*" if self.rf.global_context else "")


@dataclass(frozen=True)
class ModelSummary:
    """Rows and totals of one model at one input size (batch of 1)."""

    model_name: str
    input_size: tuple[int, ...]
    rows: tuple[SummaryRow, ...]
    total_params: int
    trainable_params: int
    unused_params: int
    total_macs: int
    param_bytes: int
    buffer_bytes: int
    activation_bytes: int
    input_bytes: int
    output_shape: tuple[int, ...] | None

    @property
    def non_trainable_params(self) -> int:
        """Frozen parameters (``requires_grad=False``)."""
        return self.total_params - self.trainable_params

    def to_dict(self) -> dict:
        """Plain data (JSON-ready)."""
        d = {k: v for k, v in asdict(self).items() if k != "rows"}
        d["non_trainable_params"] = self.non_trainable_params
        d["rows"] = [
            {
                "name": r.name,
                "kind": r.kind,
                "output_shape": _shape_list(r.output_shape),
                "params": r.params,
                "macs": r.macs,
                "rf": r.rf.to_dict() if r.rf else None,
            }
            for r in self.rows
        ]
        return d


def _shape_list(shape):
    if isinstance(shape, list):
        return [list(s) for s in shape]
    return list(shape)


def summarize(model: nn.Module, input_size: Sequence[int], name: str | None = None) -> ModelSummary:
    """Run ``model`` once on a (1, C, H, W) input and tabulate every layer.

    Example::

        >>> from cnnlab.models import get_model
        >>> s = summarize(get_model("simplecnn"), (1, 28, 28))
        >>> s.total_params, s.total_macs
        (421642, 4241152)
    """
    size = check_input_size(input_size)
    trace = run_trace(model, (1, *size))
    hw = (size[-2], size[-1])
    rows = []
    for r in trace.rows:
        shape = r.output_shapes[0] if len(r.output_shapes) == 1 else list(r.output_shapes)
        rows.append(
            SummaryRow(
                r.name,
                r.kind,
                shape,
                r.params,
                r.macs,
                layer_rf_from_geo(r.name, r.kind, r.geo, hw),
            )
        )
    params = {id(p): p for p in model.parameters()}.values()
    buffers = {id(b): b for b in model.buffers()}.values()
    elem = next(iter(params)).element_size() if params else 4
    return ModelSummary(
        model_name=name or getattr(model, "cnnlab_arch", {}).get("name") or type(model).__name__,
        input_size=tuple(size),
        rows=tuple(rows),
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        unused_params=trace.unused_params,
        total_macs=trace.total_macs,
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        buffer_bytes=sum(b.numel() * b.element_size() for b in buffers),
        activation_bytes=sum(r.output_bytes for r in trace.rows if r.is_module),
        input_bytes=elem * size[0] * size[1] * size[2],
        output_shape=trace.output_shapes[0] if trace.output_shapes else None,
    )


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}" if suffix else f"{n:g}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def _table(s: ModelSummary) -> tuple[list[str], list[list[str]]]:
    header = ["Layer", "Type", "Output shape", "Params", "MACs", "RF"]
    body = []
    for r in s.rows:
        shape = (
            r.output_shape
            if isinstance(r.output_shape, tuple)
            else "; ".join(map(str, r.output_shape))
        )
        body.append(
            [
                r.name,
                r.kind,
                str(list(shape)) if isinstance(shape, tuple) else shape,
                f"{r.params:,}",
                f"{r.macs:,}",
                r.rf_text,
            ]
        )
    return header, body


def _totals(s: ModelSummary) -> list[tuple[str, str]]:
    t = [
        ("Input size", "x".join(map(str, s.input_size))),
        ("Total params", f"{s.total_params:,}"),
        ("Trainable params", f"{s.trainable_params:,}"),
        ("Non-trainable params", f"{s.non_trainable_params:,}"),
    ]
    if s.unused_params:
        t.append(("Params not used in this forward", f"{s.unused_params:,}"))
    t += [
        ("Total MACs", f"{s.total_macs:,} ({_human(s.total_macs)})"),
        ("Input size (MB)", _mb(s.input_bytes)),
        ("Forward activations (MB)", _mb(s.activation_bytes)),
        ("Params size (MB)", _mb(s.param_bytes)),
        ("Buffers size (MB)", _mb(s.buffer_bytes)),
        (
            "Estimated total (MB)",
            _mb(s.input_bytes + s.activation_bytes + s.param_bytes + s.buffer_bytes),
        ),
    ]
    return t


GATE_NOTE = "RF*: window size; the unit also sees the whole input through a global gate (e.g. SE)"


def format_summary(summary: ModelSummary, fmt: str = "text") -> str:
    """Render a summary as ``text`` (aligned table), ``markdown``, ``json`` or ``csv`` (rows only,
    then a blank line and the totals as ``key,value``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown summary format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(summary.to_dict(), indent=2)
    header, body = _table(summary)
    totals = _totals(summary)
    gated = any(r.rf is not None and r.rf.global_context for r in summary.rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["layer", "type", "output_shape", "params", "macs", "rf"])
        for r in summary.rows:
            w.writerow(
                [
                    r.name,
                    r.kind,
                    "x".join(map(str, r.output_shape))
                    if isinstance(r.output_shape, tuple)
                    else ";".join("x".join(map(str, s)) for s in r.output_shape),
                    r.params,
                    r.macs,
                    r.rf_text,
                ]
            )
        w.writerow([])
        for k, v in totals:
            w.writerow([k, v.replace(",", "")])
        return buf.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = [f"**{summary.model_name}** at input {'x'.join(map(str, summary.input_size))}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * 2 + ["---"] + ["---:"] * 2 + ["---:"]) + "|")
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        lines += ["", GATE_NOTE] if gated else []
        lines += ["", "| Total | |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in totals]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(row[i]) for row in body)) if body else len(h)
        for i, h in enumerate(header)
    ]
    aligns = ["<", "<", "<", ">", ">", ">"]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths)).rstrip()

    rule = "=" * len(line(header))
    out = [
        f"{summary.model_name} — input {'x'.join(map(str, summary.input_size))}",
        rule,
        line(header),
        "-" * len(rule),
    ]
    out += [line(row) for row in body]
    out.append(rule)
    if gated:
        out.append(GATE_NOTE)
    kw = max(len(k) for k, _ in totals)
    out += [f"{k + ':':<{kw + 1}} {v}" for k, v in totals]
    return "\n".join(out)
