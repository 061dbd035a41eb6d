"""``cnnlab summary``: a per-layer table (output shape, parameters, MACs, receptive field) with totals."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "summary"
HELP = "Per-layer table of a zoo model or run directory: output shapes, parameters, MACs, receptive field."
EXAMPLE = "cnnlab summary resnet18 --input 3x224x224 --format markdown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="zoo model name (see `cnnlab models`) or a run directory")
    parser.add_argument("--input", help="input size CxHxW (default: the model's own / the run's)")
    parser.add_argument("--format", default="text", choices=["text", "markdown", "json", "csv"])
    parser.add_argument(
        "--num-classes", type=int, help="build the zoo model with this many classes"
    )
    parser.add_argument(
        "--in-chans", type=int, help="build the zoo model with this many input channels"
    )
    parser.add_argument(
        "--output", "-o", type=Path, help="write the table to this file instead of stdout"
    )


def small_input_for(model: str, size: int, kwargs: dict) -> dict:
    """A zoo model's small-input variant when ``--input`` is below its standard minimum (said on
    stderr), as training picks it; ``{}`` otherwise."""
    import sys

    from cnnlab.models import kwargs_for_input

    extra = kwargs_for_input(model, size, **kwargs)
    if extra:
        print(f"{model}: small_input=True for {size}x{size} inputs", file=sys.stderr)
    return extra


def run(args: argparse.Namespace) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.inspect import format_summary, parse_input_size, summarize
    from cnnlab.run import load_model_source

    kwargs = {}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    if args.in_chans is not None:
        kwargs["in_chans"] = args.in_chans
    size = parse_input_size(args.input) if args.input else None
    if size and args.in_chans is None and not Path(args.model).is_dir():
        kwargs["in_chans"] = size[0]  # `--input 1x28x28` builds a grayscale model
    if size and not Path(args.model).is_dir():
        kwargs.update(small_input_for(args.model, min(size[1:]), kwargs))
    model, default_size = load_model_source(args.model, **kwargs)
    size = size or default_size
    if size is None:
        raise ConfigError(
            f"no input size known for {args.model!r}; pass --input CxHxW, e.g. 3x224x224"
        )
    text = format_summary(summarize(model, size, name=Path(args.model).name), args.format)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0
