"""Facts about zoo models without training them: parameters, MACs, input size, description.

Models are built on PyTorch's ``meta`` device (shapes only, no memory, no initialisation), which makes
listing the whole zoo — including ViT-L and EfficientNet-B7 — take seconds instead of minutes. Even
so, counting the MACs of 54 models took 26 s before ``cnnlab models`` printed a line, so the
figures of the shipped zoo are recorded in :mod:`cnnlab.inspect._model_facts` (written by
``python -m cnnlab.inspect.model_table --write``; a test checks them against a fresh count). A
model missing from that table (one a user registered, or one added since) is counted live, and
:func:`iter_model_rows` yields each row as soon as it is known.
"""

from __future__ import annotations

import inspect as pyinspect
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

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


def _recorded(name: str) -> ModelInfo | None:
    """The recorded facts of a shipped model, or None (unknown to the table, or its builder
    is not the shipped one: a user may register a model under a new name only)."""
    from cnnlab.inspect._model_facts import FACTS

    row = FACTS.get(name)
    if row is None:
        return None
    builder = get_model_builder(name)
    if not builder.__module__.startswith("cnnlab.models"):
        return None
    return ModelInfo(name=name, **{**row, "input_size": tuple(row["input_size"])})


def model_info(name: str, macs: bool = True, recorded: bool = True) -> ModelInfo:
    """Parameters, MACs (at the model's default input size), input size and a one-line summary.

    ``recorded`` takes the shipped zoo's figures from the table instead of counting them.
    """
    if recorded:
        info = _recorded(name)
        if info is not None:
            return info if macs else ModelInfo(**{**asdict(info), "macs": None})
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


HEADER = ["model", "params", "MACs", "input", "min", "task"]
# fixed widths so rows can be printed as they are computed (the widest shipped values fit)
WIDTHS = [22, 12, 8, 11, 4, 14]


def _cells(i: ModelInfo) -> list[str]:
    return [
        i.name,
        f"{i.params:,}",
        _fmt_count(i.macs),
        "x".join(map(str, i.input_size)),
        str(i.min_size or "-"),
        i.task,
    ]


def _line(cells: list[str], fmt: str) -> str:
    if fmt == "markdown":
        return "| " + " | ".join(cells) + " |"
    return "  ".join(
        c.ljust(w) if k in (0, 3, 5) else c.rjust(w) for k, (c, w) in enumerate(zip(cells, WIDTHS))
    ).rstrip()


def iter_model_rows(names: list[str], macs: bool = True, fmt: str = "text") -> Iterator[str]:
    """The table's lines one at a time: the header at once, then each model's row as soon as its
    figures are known (recorded ones instantly, others after counting)."""
    yield _line(HEADER, fmt)
    yield (
        _line(["-" * w for w in WIDTHS], fmt)
        if fmt != "markdown"
        else "|" + "|".join(["---"] * len(HEADER)) + "|"
    )
    for n in names:
        yield _line(_cells(model_info(n, macs)), fmt)


def model_table(names: list[str], macs: bool = True, fmt: str = "text") -> str:
    """A table of ``names`` with parameters, MACs and input size (text or markdown)."""
    return "\n".join(iter_model_rows(names, macs, fmt))


def write_facts(path: str | Path | None = None) -> Path:
    """Count every shipped model afresh and write :mod:`cnnlab.inspect._model_facts`."""
    from cnnlab.models import list_models

    path = Path(path) if path else Path(__file__).with_name("_model_facts.py")
    lines = [
        '"""Recorded figures of the shipped zoo, so ``cnnlab models`` prints at once.',
        "",
        "Generated by ``python -m cnnlab.inspect.model_table --write``; do not edit by hand.",
        "``tests/inspect`` recounts them (MACs at each model's default input size).",
        '"""',
        "",
        "# fmt: off",
        "FACTS: dict[str, dict] = {",
    ]
    for name in list_models():
        i = model_info(name, recorded=False)
        row = {k: v for k, v in asdict(i).items() if k != "name"}
        row["input_size"] = list(row["input_size"])
        lines.append(f"    {name!r}: {row!r},")
    lines += ["}", "# fmt: on"]
    path.write_text("\n".join(lines) + "\n")
    return path


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


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m cnnlab.inspect.model_table --write")
    print(f"wrote {write_facts()}")
