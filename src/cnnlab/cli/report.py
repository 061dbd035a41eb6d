"""`cnnlab report`: one self-contained HTML page per run, or a comparison page for several runs."""

from __future__ import annotations

import argparse
import sys

NAME = "report"
HELP = (
    "write report.html for a run (metrics, curves, calibration, top losses, Grad-CAM, model card)"
)
EXAMPLE = "cnnlab report runs/a runs/b --compare comparison.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories written by `cnnlab train`")
    p.add_argument(
        "--compare",
        metavar="OUT.html",
        help="write one page comparing the runs to this file (instead of a report per run)",
    )
    p.add_argument("--quick", action="store_true", help="the fast version written after training")
    p.add_argument("--data", help="data source (default: the one each run was trained on)")
    p.add_argument("--data-dir", help="folder with the data files")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--weights",
        choices=("final", "best"),
        default="final",
        help="final: model.safetensors (what predict, export and serve use); best: the best "
        "epoch's checkpoint, written to report-best.html",
    )


def run(args: argparse.Namespace) -> int:
    from cnnlab.evaluate.report import write_comparison, write_report

    if args.compare:
        path = write_comparison(
            args.runs, args.compare, data=args.data, data_dir=args.data_dir, device=args.device
        )
        print(f"comparison: {path}")
        return 0
    for r in args.runs:
        print(f"writing the report of {r}…", file=sys.stderr, flush=True)
        path = write_report(
            r,
            quick=args.quick,
            data=args.data,
            data_dir=args.data_dir,
            device=args.device,
            weights=args.weights,
        )
        print(f"report: {path}")
    return 0
