"""`cnnlab explain`: Grad-CAM / Grad-CAM++ / saliency overlays for image files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "explain"
HELP = "show where a trained run looks: Grad-CAM, Grad-CAM++ and saliency overlays as PNGs"
EXAMPLE = "cnnlab explain --run runs/simplecnn-digits three.png --method all --out explanations/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `cnnlab train`")
    p.add_argument("images", nargs="+", help="image files (folders are searched for images)")
    p.add_argument(
        "--method",
        default="gradcam",
        choices=("gradcam", "gradcam++", "saliency", "all"),
        help="explanation method (all: one PNG per method)",
    )
    p.add_argument(
        "--layer",
        help="module name for Grad-CAM (default: the last convolutional stage, found automatically)",
    )
    p.add_argument("--target", help="class name or index to explain (default: the predicted class)")
    p.add_argument("--out", default="explanations", help="output folder for the PNGs")
    p.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli.predict import expand_inputs
    from cnnlab.errors import DataError
    from cnnlab.evaluate.explain import explain_files

    paths = expand_inputs(args.images)
    if not paths:
        raise DataError(f"no image files found in {' '.join(args.images)}")
    methods = ["gradcam", "gradcam++", "saliency"] if args.method == "all" else [args.method]
    results = explain_files(
        args.run,
        paths,
        Path(args.out),
        methods=methods,
        layer=args.layer,
        target=args.target,
        device=args.device,
    )
    failed = 0
    for r in results:
        if "error" in r:
            failed += 1
            print(f"cnnlab explain: error: {r['error']}", file=sys.stderr)
            continue
        print(
            f"{r['source']}: {r['label']} ({r['probability']:.3f}) -> {', '.join(map(str, r['files']))}"
        )
    return 1 if failed else 0
