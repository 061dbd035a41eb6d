"""`cnnlab predict`: classify image files with a trained run."""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from pathlib import Path

NAME = "predict"
HELP = "predict the class of image files, folders or globs with a trained run"
EXAMPLE = "cnnlab predict --run runs/simplecnn-digits img1.png img2.png --top-k 3 --backend auto"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        "--model",
        dest="run",
        required=True,
        help="run directory written by `cnnlab train`, or an exported .onnx / TorchScript file",
    )
    p.add_argument(
        "images", nargs="+", help="image files, folders (searched recursively) or glob patterns"
    )
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--backend",
        default="torch",
        help="torch, channels_last, jit, onnx, int8, or auto (measure here, keep the fastest)",
    )


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given, folders expanded to their image files, globs expanded (sorted).

    A glob that matches nothing, or a folder with no image file, is a user error naming it (a
    silent empty list made "no image files matched" impossible to act on).
    """
    from cnnlab.data.imagefolder import is_image_file
    from cnnlab.errors import DataError

    out: list[str] = []
    empty: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = [str(f) for f in sorted(p.rglob("*")) if f.is_file() and is_image_file(f)]
        elif any(ch in item for ch in "*?[") and not p.exists():
            found = sorted(f for f in glob.glob(item, recursive=True) if Path(f).is_file())
        else:
            found = [item]
        if not found:
            empty.append(f"'{item}'" + (" (a folder with no image files)" if p.is_dir() else ""))
        out += found
    if empty:
        raise DataError(
            f"no image files match {', '.join(empty)}; give image files, folders or quoted globs "
            "such as 'photos/*.jpg' (recursive: 'photos/**/*.png')"
        )
    return out


def run(args: argparse.Namespace) -> int:
    from cnnlab.deploy.predictor import PredictionError, load

    predictor = load(args.run, device=args.device, batch_size=args.batch_size, backend=args.backend)
    paths = expand_inputs(args.images)
    results = predictor.predict_files(paths, top_k=args.top_k)
    errors = [r for r in results if isinstance(r, PredictionError)]
    for e in errors:
        print(f"cnnlab predict: error: {e.error}", file=sys.stderr)
    good = [r for r in results if not isinstance(r, PredictionError)]
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["source", "label", "probability", "top_k"])
        for r in good:
            w.writerow(
                [
                    r.source,
                    r.label,
                    f"{r.probability:.6f}",
                    ";".join(f"{k}:{p:.4f}" for k, p in r.top_k),
                ]
            )
    else:
        width = max([len(str(r.source)) for r in good] + [4])
        for r in good:
            extra = "  ".join(f"{k} {p:.3f}" for k, p in r.top_k[1:])
            print(f"{r.source:<{width}}  {r.label:<12} {r.probability:.3f}  {extra}".rstrip())
    return 1 if errors else 0
