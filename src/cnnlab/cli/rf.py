"""``cnnlab rf``: receptive field, jump and start of every layer of a model or of a plain layer list."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "rf"
HELP = "Receptive field of every layer of a zoo model / run directory, or of a list of (kernel, stride, dilation)."
EXAMPLE = "cnnlab rf --layers 3,3,2/2,3,3,2/2   (or: cnnlab rf resnet18 --input 3x224x224)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="zoo model name or run directory")
    parser.add_argument("--input", help="input size CxHxW (default: the model's own)")
    parser.add_argument(
        "--layers",
        help="a plain stack instead of a model: KERNEL[/STRIDE][dDILATION],… e.g. 3,3,2/2,3d2",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from cnnlab.errors import ConfigError

    if args.layers:  # pure arithmetic: the torch-free module only (start-up well under a second)
        from cnnlab.inspect.rf_stack import parse_layers
        from cnnlab.inspect.rf_stack import receptive_field_layers as rf_layers

        steps = rf_layers(parse_layers(args.layers))
        if args.json:
            print(json.dumps([s.__dict__ for s in steps], indent=2))
            return 0
        print(f"{'layer':<6} {'k':>3} {'s':>3} {'d':>3} {'rf':>5} {'jump':>5} {'start':>6}")
        print(f"{'input':<6} {'':>3} {'':>3} {'':>3} {1:>5} {1:>5} {0:>6}")
        for i, s in enumerate(steps, 1):
            print(
                f"{i:<6} {s.kernel:>3} {s.stride:>3} {s.dilation:>3} {s.rf:>5} {s.jump:>5} {s.start:>6g}"
            )
        print(f"receptive field: {steps[-1].rf}x{steps[-1].rf}")
        return 0
    if not args.model:
        raise ConfigError("give a model (e.g. `cnnlab rf resnet18`) or --layers 3,3,2/2,…")
    from cnnlab.cli.summary import small_input_for
    from cnnlab.inspect import parse_input_size, receptive_field
    from cnnlab.run import load_model_source

    given = parse_input_size(args.input) if args.input else None
    kwargs = {"in_chans": given[0]} if given and not Path(args.model).is_dir() else {}
    if given and not Path(args.model).is_dir():
        kwargs.update(small_input_for(args.model, min(given[1:]), kwargs))
    model, size = load_model_source(args.model, **kwargs)
    size = given or size
    if size is None:
        raise ConfigError(f"no input size known for {args.model!r}; pass --input CxHxW")
    rep = receptive_field(model, size)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
        return 0
    width = max([len(layer.name) for layer in rep.layers] + [5])
    print(f"{'layer':<{width}}  {'type':<20} {'rf':>9} {'jump':>6} {'start':>7}")
    for layer in rep.layers:
        if layer.is_global:
            print(f"{layer.name:<{width}}  {layer.kind:<20} {'global':>9}")
            continue
        rf = f"{layer.rf[0]}x{layer.rf[1]}" + ("*" if layer.global_context else "")
        print(
            f"{layer.name:<{width}}  {layer.kind:<20} {rf:>9} {layer.jump[0]:>6g} {layer.start[0]:>7g}"
        )
    last = rep.largest_local()
    if last:
        print(f"largest local receptive field: {last.rf[0]}x{last.rf[1]} at {last.name}")
    return 0
