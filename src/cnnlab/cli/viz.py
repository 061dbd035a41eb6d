"""``cnnlab viz``: activation curves, first-layer filters, feature maps and receptive fields as PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "viz"
HELP = (
    "Draw activations, first-layer filters, a layer's feature maps or a receptive field to a PNG."
)
EXAMPLE = "cnnlab viz features simplecnn --layer conv1 --image digit.png --out maps.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="what", metavar="WHAT", required=True, parser_class=type(parser)
    )
    act = sub.add_parser("activations", help="activation functions and their derivatives")
    act.add_argument("--names", default="relu,leaky_relu,elu,gelu,silu,sigmoid,tanh")
    filt = sub.add_parser("filters", help="the first convolution's filters as a grid")
    filt.add_argument("model", help="zoo model name or run directory")
    feat = sub.add_parser("features", help="feature maps of a named layer for an image")
    feat.add_argument("model", help="zoo model name or run directory")
    feat.add_argument(
        "--layer", required=True, help="module name, e.g. conv1 or layer2.0 (see `cnnlab summary`)"
    )
    feat.add_argument("--image", required=True)
    rf = sub.add_parser("rf", help="the receptive field of one unit of a layer, drawn on an image")
    rf.add_argument("model", help="zoo model name or run directory")
    rf.add_argument("--layer", required=True)
    rf.add_argument("--image", required=True)
    rf.add_argument("--unit", help="unit I,J of the layer's output (default: the centre)")
    for p in (act, filt, feat, rf):
        p.add_argument("--out", "-o", type=Path, default=Path("viz.png"), help="output PNG")
    for p in (feat, rf):
        p.add_argument(
            "--size", type=int, help="resize the image to SIZExSIZE (default: model's input size)"
        )


def run(args: argparse.Namespace) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.inspect import viz
    from cnnlab.run import load_model_source

    if args.what == "activations":
        out = viz.plot_activations(
            args.out, [n.strip() for n in args.names.split(",") if n.strip()]
        )
        print(f"wrote {out}")
        return 0
    model, size = load_model_source(args.model)
    if args.what == "filters":
        print(f"wrote {viz.plot_filters(model, args.out)}")
        return 0
    chans = getattr(model, "in_chans", None) or viz.first_conv(model)[1].in_channels
    side = args.size or (size[-1] if size else None)
    image = viz.load_image(args.image, channels=1 if chans == 1 else 3, size=side)
    if args.what == "features":
        print(f"wrote {viz.plot_feature_maps(model, args.layer, image, args.out)}")
        return 0
    unit = None
    if args.unit:
        try:
            i, j = (int(v) for v in args.unit.split(","))
        except ValueError:
            raise ConfigError(f"malformed --unit {args.unit!r}; expected I,J such as 3,4") from None
        unit = (i, j)
    print(f"wrote {viz.plot_receptive_field(model, args.layer, image, args.out, unit)}")
    return 0
