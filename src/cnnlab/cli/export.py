"""`cnnlab export`: write a run's model as ONNX, TorchScript, a timm folder or a Hugging Face
folder, and prove the result right."""

from __future__ import annotations

import argparse
import sys

NAME = "export"
HELP = (
    "export a trained run to ONNX, TorchScript, a timm folder or a Hugging Face folder, "
    "with a parity check against PyTorch"
)
EXAMPLE = "cnnlab export --run runs/fastnet-fmnist --format onnx --int8"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `cnnlab train`")
    p.add_argument("--format", choices=("onnx", "torchscript", "timm", "hf"), default="onnx")
    p.add_argument(
        "--output",
        "-o",
        help="output file (default: RUN/model.onnx or .torchscript.pt); for timm / hf an empty "
        "folder (default: RUN/export-timm or RUN/export-hf)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write an int8 model (ONNX Runtime static quantisation calibrated on training "
        "images; of the recipes within --max-int8-drop of fp32 test accuracy and within timing "
        "noise of the fastest, the most accurate)",
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
        f"{'format':<28} {'size MB':>8} {'ms p50':>8} {'ms p90':>8} {'torch ms':>9} "
        f"{'max |diff|':>11} {'top-1 agree':>11}  check  file"
    )
    for r in report.rows:
        print(
            f"{r['format']:<28} {r['size_mb']:>8.2f} {r['latency_ms']:>8.2f} "
            f"{r.get('latency_p90_ms', float('nan')):>8.2f} {r['torch_latency_ms']:>9.2f} "
            f"{r['max_abs_diff']:>11.2e} {r['top1_agreement']:>11.2%}  "
            f"{'ok' if r['passed'] else 'FAIL':<5}  {r['file']}"
        )
    for r in report.rows:
        print(f"{r['format']}: compared on {r['samples']}")
        if r.get("decoded"):
            print(f"  check on the decoded outputs: {r['check']}; 'top-1 agree' is its agreement")
    print("latency: batch 1, after a warm-up until the timing is stable (median and p90)")
    if report.folded_bn:
        print(f"folded {report.folded_bn} BatchNorm layers into convolutions")
    q = report.int8
    if q:
        change = q["int8_acc"] - q["fp32_acc"]
        print(
            f"int8 recipe: {q['config']}; test accuracy fp32 {q['fp32_acc']:.2f}% -> int8 "
            f"{q['int8_acc']:.2f}% ({change:+.2f} points), top-1 agreement {q['agreement']:.2f}% "
            f"({q['test_images']} test images)"
        )
        print(f"  rule: {q['rule']}")
        for name, c in q["candidates"].items():
            mark = "*" if name == q["config"] else " "
            print(
                f" {mark}{name:<20} {c['latency_ms']:>7.2f} ms  acc {c['int8_acc']:.2f}% "
                f"({c['int8_acc'] - q['fp32_acc']:+.2f} points)  agreement {c['agreement']:.2f}%"
            )
        print(f"  {'fp32 (ONNX Runtime)':<20} {q['fp32_ms']:>7.2f} ms  acc {q['fp32_acc']:.2f}%")


def _run_interop(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.deploy.interop import export_hf, export_timm

    fn = export_timm if args.format == "timm" else export_hf
    out = args.output or str(Path(args.run) / f"export-{args.format}")
    res = fn(args.run, out, atol=args.atol)
    if args.json:
        import json

        print(json.dumps({"folder": str(res.folder), "library": res.library,
                          "architecture": res.architecture, "max_abs_diff": res.max_abs_diff,
                          "files": res.files}, indent=2))  # fmt: skip
        return 0
    print(
        f"{res.library} {res.architecture}: wrote {res.folder} ({', '.join(res.files)}); "
        f"reloaded through {res.library}, max |logit diff| {res.max_abs_diff:.2e}"
    )
    print(f"load it with: {res.load_snippet}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.format in ("timm", "hf"):
        return _run_interop(args)
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
