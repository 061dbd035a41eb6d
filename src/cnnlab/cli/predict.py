"""`cnnlab predict`: classify image files with a trained run, or find their boxes / masks with a
detection / segmentation run."""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from pathlib import Path

NAME = "predict"
HELP = (
    "predict the class of image files, folders or globs with a trained run (boxes for a "
    "detection run, mask PNGs and overlays for a segmentation run)"
)
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
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument(
        "--out-dir",
        default="predictions",
        help="segmentation runs: folder for <image>_mask.png (class indices as pixel values) and "
        "<image>_overlay.png (default: predictions/)",
    )
    p.add_argument(
        "--conf-thresh",
        type=float,
        default=None,
        help="detection runs: the lowest score kept (default: the run's, 0.25)",
    )
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


def _run_dense(predictor, paths: list[str], args: argparse.Namespace) -> int:
    """Boxes (one line per box: source, class, score, x1 y1 x2 y2) or masks written as PNGs."""
    from cnnlab.deploy.dense_predict import save_mask
    from cnnlab.errors import DataError

    if args.conf_thresh is not None:
        predictor.conf_thresh = args.conf_thresh
    results = predictor.predict_files(paths)
    records = []
    for p, r in zip(paths, results):
        if isinstance(r, DataError):
            print(f"cnnlab predict: error: {r}", file=sys.stderr)
            records.append({"source": p, "error": str(r)})
            continue
        rec = predictor.result_json(r, p)
        if predictor.task == "segmentation":
            rec.update(save_mask(predictor, p, r, args.out_dir))
        records.append(rec)
    good = [r for r in records if "error" not in r]
    if args.format == "json":
        print(json.dumps(records, indent=2))
    elif predictor.task == "detection":
        w = csv.writer(sys.stdout) if args.format == "csv" else None
        if w:
            w.writerow(["source", "class", "score", "x1", "y1", "x2", "y2"])
        width = max([len(r["source"]) for r in good] + [4])
        for r in good:
            if not r["detections"] and not w:
                print(f"{r['source']:<{width}}  no object scored {predictor.conf_thresh:g} or more")
            for d in r["detections"]:
                x1, y1, x2, y2 = d["box"]
                if w:
                    w.writerow([r["source"], d["class"], f"{d['score']:.5f}", x1, y1, x2, y2])
                else:
                    print(
                        f"{r['source']:<{width}}  {d['class']} {d['score']:.3f} "
                        f"{x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}"
                    )
    else:
        w = csv.writer(sys.stdout) if args.format == "csv" else None
        if w:
            w.writerow(["source", "mask", "overlay", "pixels"])
        for r in good:
            px = ";".join(f"{k}:{v}" for k, v in r["pixels"].items())
            if w:
                w.writerow([r["source"], r["mask"], r["overlay"], px])
            else:
                print(f"{r['source']}  mask {r['mask']}  overlay {r['overlay']}  pixels {px}")
    return 1 if len(good) < len(records) else 0


def run(args: argparse.Namespace) -> int:
    from cnnlab.deploy.dense_predict import DensePredictor
    from cnnlab.deploy.predictor import PredictionError, load

    if args.json:
        args.format = "json"
    predictor = load(args.run, device=args.device, batch_size=args.batch_size, backend=args.backend)
    paths = expand_inputs(args.images)
    if isinstance(predictor, DensePredictor):
        return _run_dense(predictor, paths, args)
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
