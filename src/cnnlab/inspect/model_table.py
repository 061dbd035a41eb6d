"""Facts about zoo models without training them: parameters, MACs, input size, description.

Models are built on PyTorch's ``meta`` device (shapes only, no memory, no initialisation), which makes
listing the whole zoo — including ViT-L and EfficientNet-B7 — take seconds instead of minutes.
"""

from __future__ import annotations

import inspect as pyinspect
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.inspect.flops import count_macs
from cnnlab.models._registry import get_model, get_model_builder


@dataclass(frozen=True)
class ModelInfo:
    """One row of the model table."""

    name: str
    params: int
    macs: int | None
    input_size: tuple[int, int, int]
    min_size: int | None
    task: str
    summary: str


def _build_meta(name: str, **kwargs) -> nn.Module:
    try:
        with torch.device("meta"):
            return get_model(name, **kwargs)
    except Exception:  # a builder that cannot run on meta: fall back to a real (slower) build
        return get_model(name, **kwargs)


def _input_size(model: nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, "default_cfg", None)
    if cfg is not None:
        return tuple(cfg.input_size)  # type: ignore[return-value]
    size = getattr(model, "input_size", None)
    return tuple(size) if size else (3, 224, 224)  # type: ignore[return-value]


def count_macs_safe(model: nn.Module, input_size: tuple[int, int, int]) -> int | None:
    """Total multiply-accumulates of one forward pass, or None when it cannot be counted."""
    try:
        return int(count_macs(model, input_size))
    except Exception:
        return None


def model_info(name: str, macs: bool = True) -> ModelInfo:
    """Parameters, MACs (at the model's default input size), input size and a one-line summary."""
    model = _build_meta(name)
    size = _input_size(model)
    cfg = getattr(model, "default_cfg", None)
    doc = (pyinspect.getdoc(get_model_builder(name)) or "").splitlines()
    return ModelInfo(
        name=name,
        params=sum(p.numel() for p in model.parameters()),
        macs=count_macs_safe(model.eval(), size) if macs else None,
        input_size=size,
        min_size=getattr(cfg, "min_size", None),
        task=getattr(model, "task", "classification"),
        summary=doc[0] if doc else "",
    )


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def model_table(names: list[str], macs: bool = True, fmt: str = "text") -> str:
    """A table of ``names`` with parameters, MACs and input size (text or markdown)."""
    infos = [model_info(n, macs) for n in names]
    header = ["model", "params", "MACs", "input", "min", "task"]
    rows = [
        [
            i.name,
            f"{i.params:,}",
            _fmt_count(i.macs),
            "x".join(map(str, i.input_size)),
            str(i.min_size or "-"),
            i.task,
        ]
        for i in infos
    ]
    if fmt == "markdown":
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]

    def line(r):
        return "  ".join(
            c.ljust(w) if k in (0, 3, 5) else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))
        )

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def describe_model(name: str) -> str:
    """A multi-line description of one model: docstring, sizes and its layer tree."""
    info = model_info(name)
    model = _build_meta(name)
    doc = pyinspect.getdoc(get_model_builder(name)) or ""
    lines = [
        f"{name}: {doc}",
        f"parameters      {info.params:,}",
        f"MACs            {_fmt_count(info.macs)} at {'x'.join(map(str, info.input_size))}",
        f"input size      {'x'.join(map(str, info.input_size))} (minimum {info.min_size or '-'} px)",
        f"task            {info.task}",
    ]
    cfg = getattr(model, "default_cfg", None)
    if cfg is not None:
        lines.append(f"normalisation   mean {tuple(cfg.mean)} std {tuple(cfg.std)}")
    lines += ["", "layers:", str(model)]
    return "\n".join(lines)
