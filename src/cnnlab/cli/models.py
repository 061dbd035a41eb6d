"""`cnnlab models`: list the model zoo, or show one model in detail."""

from __future__ import annotations

import argparse

NAME = "models"
HELP = "list every model with parameters, MACs and input size, or show one model in detail"
EXAMPLE = "cnnlab models 'resnet*'     # or: cnnlab models resnet18 --detail"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="a model name, or a glob such as 'vgg*'")
    p.add_argument(
        "--no-macs", action="store_true", help="leave out MACs (only matters for unrecorded models)"
    )
    p.add_argument("--format", choices=("text", "markdown"), default="text")


def run(args: argparse.Namespace) -> int:
    from cnnlab.inspect.model_table import describe_model, iter_model_rows
    from cnnlab.models import get_model_builder, list_models

    names = list_models()
    if args.pattern and args.pattern in names:
        print(describe_model(args.pattern))
        return 0
    if args.pattern and not any(ch in args.pattern for ch in "*?["):
        get_model_builder(args.pattern)  # raises the unknown-name error with close matches
    chosen = list_models(args.pattern)
    if not chosen:
        print(f"no model matches '{args.pattern}'")
        return 1
    for line in iter_model_rows(chosen, macs=not args.no_macs, fmt=args.format):
        print(line, flush=True)  # each row as soon as it is known (recorded rows: at once)
    return 0
