"""``cnnlab arith``: the course's calculators — output size, parameters, comparisons, a conv by hand."""

from __future__ import annotations

import argparse
import json

NAME = "arith"
HELP = "CNN arithmetic: output size, parameter counts, 3x3-vs-5x5 style comparisons, a convolution by hand."
EXAMPLE = "cnnlab arith size 224 --kernel 7 --stride 2 --padding 3"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="what", metavar="WHAT", required=True, parser_class=type(parser)
    )
    size = sub.add_parser("size", help="output size of a conv/pool/transposed conv along one axis")
    size.add_argument("n", type=int, help="input size")
    size.add_argument("--kernel", "-k", type=int, required=True)
    size.add_argument("--stride", "-s", type=int, default=1)
    size.add_argument("--padding", "-p", default="0", help="pixels per side or valid/same/full")
    size.add_argument("--dilation", "-d", type=int, default=1)
    size.add_argument("--ceil-mode", action="store_true")
    size.add_argument("--transposed", action="store_true")
    params = sub.add_parser(
        "params", help="parameters of a conv / depthwise-separable / linear / BN layer"
    )
    params.add_argument("layer", choices=["conv", "separable", "linear", "bn"])
    params.add_argument(
        "--c-in", type=int, required=True, help="input channels (features for linear)"
    )
    params.add_argument("--c-out", type=int, help="output channels (features for linear)")
    params.add_argument("--kernel", "-k", type=int, default=3)
    params.add_argument("--groups", type=int, default=1)
    params.add_argument("--no-bias", action="store_true")
    comp = sub.add_parser(
        "compare", help="5x5 vs two 3x3, standard vs separable, naive vs reduced Inception"
    )
    comp.add_argument("--channels", type=int, default=64)
    comp.add_argument("--json", action="store_true")
    conv = sub.add_parser(
        "conv", help="the course's 5x5 example convolved by hand, with one value explained"
    )
    conv.add_argument("--at", default="0,0", help="output position I,J to explain")


def run(args: argparse.Namespace) -> int:
    from cnnlab import inspect as ins
    from cnnlab.errors import ConfigError

    if args.what == "size":
        padding: int | str = (
            int(args.padding) if args.padding.lstrip("-").isdigit() else args.padding
        )
        out = ins.output_size(
            args.n,
            args.kernel,
            args.stride,
            padding,
            args.dilation,
            ceil_mode=args.ceil_mode,
            transposed=args.transposed,
        )
        print(f"output size: {out}")
        return 0
    if args.what == "params":
        bias = not args.no_bias
        if args.layer == "bn":
            n = ins.batchnorm_params(args.c_in)
        else:
            if args.c_out is None:
                raise ConfigError(f"`arith params {args.layer}` needs --c-out")
            if args.layer == "conv":
                n = ins.conv_params(args.c_in, args.c_out, args.kernel, args.groups, bias)
            elif args.layer == "separable":
                n = ins.depthwise_separable_params(args.c_in, args.c_out, args.kernel, bias)
            else:
                n = ins.linear_params(args.c_in, args.c_out, bias)
        print(f"parameters: {n:,}")
        return 0
    if args.what == "compare":
        comps = [
            ins.compare_5x5_vs_two_3x3(args.channels),
            ins.compare_standard_vs_separable(args.channels, 2 * args.channels),
            ins.compare_inception_naive_vs_reduced(),
        ]
        if args.json:
            print(json.dumps([c.to_dict() for c in comps], indent=2))
        else:
            print("\n".join(str(c) for c in comps))
        return 0
    try:
        i, j = (int(v) for v in args.at.split(","))
    except ValueError:
        raise ConfigError(f"malformed --at {args.at!r}; expected I,J such as 1,2") from None
    print("output:")
    print(ins.conv2d_numpy(ins.COURSE_IMAGE, ins.COURSE_EDGE_KERNEL))
    print(ins.explain_conv(ins.COURSE_IMAGE, ins.COURSE_EDGE_KERNEL, (i, j)))
    return 0
