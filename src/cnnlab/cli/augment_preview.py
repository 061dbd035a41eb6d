"""`cnnlab augment-preview`: see what an augmentation spec does before training with it."""

from __future__ import annotations

import argparse

NAME = "augment-preview"
HELP = "write a grid PNG of augmented training samples (original in the first column)"
EXAMPLE = 'cnnlab augment-preview --data digits --augment "crop:4,flip" --out preview.png'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="data source (see `cnnlab train --help`)")
    p.add_argument("--data-dir", help="folder (or CSV file) holding the data")
    p.add_argument("--image-size", type=int, help="output size of the augmented images")
    p.add_argument(
        "--augment",
        required=True,
        help='augmentation spec, e.g. "crop:4,flip" or "rrc:0.35,flip,trivialaugment,erase:0.25"',
    )
    p.add_argument("--mixup", type=float, default=0.0, help="Mixup alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha (0: off)")
    p.add_argument("--n", type=int, default=8, help="number of samples (rows)")
    p.add_argument("--variants", type=int, default=6, help="augmented versions per sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="augment-preview.png", help="PNG file to write")


def run(args: argparse.Namespace) -> int:
    import sys

    from cnnlab.data.preview import augment_preview, augment_warnings

    path = augment_preview(
        args.data,
        args.augment,
        args.out,
        data_dir=args.data_dir,
        image_size=args.image_size,
        n=args.n,
        variants=args.variants,
        seed=args.seed,
        mixup_alpha=args.mixup,
        cutmix_alpha=args.cutmix,
    )
    for line in augment_warnings(args.data, args.augment):  # after the spec proved valid
        print(line, file=sys.stderr)
    print(f"wrote {path}")
    return 0
