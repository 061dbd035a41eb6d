"""`cnnlab export`: write a run's model as ONNX or TorchScript and prove the file right."""

from __future__ import annotations

import argparse
import sys

NAME = "export"
HELP = "export a trained run to ONNX or TorchScript, with a parity check against PyTorch"
EXAMPLE = "cnnlab export --run runs/fastnet-fmnist --format onnx --int8"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `cnnlab train`")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument(
        "--output", "-o", help="output file (default: RUN/model.onnx or .torchscript.pt)"
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write an int8 model (ONNX Runtime static quantisation calibrated on training "
        "images; the fastest recipe within 1 point of fp32 test accuracy)",
    )
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convolutions")
    p.add_argument("--samples", type=int, default=128, help="test images for the parity check")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |logit difference|")
    p.add_argument(
        "--max-int8-drop", type=float, default=1.0, help="allowed int8 accuracy drop (points)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _print_report(report, as_json: bool) -> None:
    import json

    if as_json:
        print(
            json.dumps(
                {"rows": report.rows, "int8": report.int8, "folded_bn": report.folded_bn}, indent=2
            )
        )
        return
    print(
        f"{'format':<28} {'size MB':>8} {'latency ms':>11} {'torch ms':>9} {'max |diff|':>11} "
        f"{'top-1 agree':>11}  check  file"
    )
    for r in report.rows:
        print(
            f"{r['format']:<28} {r['size_mb']:>8.2f} {r['latency_ms']:>11.2f} "
            f"{r['torch_latency_ms']:>9.2f} {r['max_abs_diff']:>11.2e} {r['top1_agreement']:>11.2%}  "
            f"{'ok' if r['passed'] else 'FAIL':<5}  {r['file']}"
        )
    if report.rows:
        print(f"parity samples: {report.rows[0]['samples']}; latency at batch 1")
    if report.folded_bn:
        print(f"folded {report.folded_bn} BatchNorm layers into convolutions")
    q = report.int8
    if q:
        acc = (
            f"test accuracy fp32 {q['fp32_acc']:.2f}% → int8 {q['int8_acc']:.2f}% "
            f"(drop {q['accuracy_drop']:.2f} points, top-1 agreement {q['agreement']:.2f}%, "
            f"{q['test_images']} images)"
        )
        print(f"int8 recipe: {q['config']} (chosen by measuring); {acc}")
        for name, c in q["candidates"].items():
            print(
                f"  {name:<20} {c['latency_ms']:>7.2f} ms  acc {c['int8_acc']:.2f}%  "
                f"drop {c['accuracy_drop']:+.2f}"
            )
        print(f"  {'fp32 (ONNX Runtime)':<20} {q['fp32_ms']:>7.2f} ms  acc {q['fp32_acc']:.2f}%")


def run(args: argparse.Namespace) -> int:
    from cnnlab.deploy.export import ExportCheckError, export_run

    try:
        report = export_run(
            args.run,
            args.format,
            args.output,
            int8=args.int8,
            fold_bn=args.fold_bn,
            samples=args.samples,
            atol=args.atol,
            int8_max_drop=args.max_int8_drop,
        )
    except ExportCheckError as exc:
        _print_report(exc.report, args.json)
        print(f"cnnlab export: error: {exc}", file=sys.stderr)
        return 1
    _print_report(report, args.json)
    return 0
