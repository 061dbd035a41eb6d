"""``cnnlab kernels``: filter an image with classic kernels and save a before/after grid."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "kernels"
HELP = "Apply classic kernels (sobel_x, blur, sharpen, …) to an image and save a before/after PNG grid."
EXAMPLE = "cnnlab kernels cat.png --kernel sobel_x,sobel_y,blur --out kernels.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", nargs="?", help="image file (PNG, JPEG, …)")
    parser.add_argument(
        "--kernel",
        "-k",
        default="sobel_x,sobel_y,laplacian,box_blur,sharpen,emboss",
        help="comma-separated kernel names",
    )
    parser.add_argument("--out", "-o", type=Path, default=Path("kernels.png"), help="output PNG")
    parser.add_argument("--size", type=int, help="resize the image to SIZExSIZE first")
    parser.add_argument("--list", action="store_true", help="print the kernels and exit")


def run(args: argparse.Namespace) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.inspect import get_kernel, list_kernels

    if args.list:
        for name in list_kernels():
            print(f"{name}:\n{get_kernel(name)}")
        return 0
    if not args.image:
        raise ConfigError("give an image file, e.g. `cnnlab kernels cat.png --kernel sobel_x`")
    names = [k.strip() for k in args.kernel.split(",") if k.strip()]
    for name in names:
        get_kernel(name)  # unknown names fail before any work
    from cnnlab.inspect.viz import load_image, plot_kernels

    image = load_image(args.image, size=args.size)
    print(f"wrote {plot_kernels(image, names, args.out)}")
    return 0
