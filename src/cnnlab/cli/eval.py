"""`cnnlab eval`: evaluate a trained run on its test data."""

from __future__ import annotations

import argparse

NAME = "eval"
HELP = "evaluate a run on test data: accuracy, per-class precision/recall/F1, confusion matrix"
EXAMPLE = "cnnlab eval --run runs/simplecnn-digits"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `cnnlab train`")
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--data-dir", help="folder with the data files")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=512)


def format_report(res) -> str:
    """The evaluation as a text table."""
    lines = [f"{'class':<16} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    pc = res.per_class
    for i, c in enumerate(res.classes):
        lines.append(
            f"{c[:16]:<16} {pc['precision'][i]:>9.4f} {pc['recall'][i]:>9.4f} {pc['f1'][i]:>9.4f} {int(pc['support'][i]):>8d}"
        )
    n = pc["support"].sum()
    w = pc["support"] / max(n, 1)
    lines.append(
        f"{'macro avg':<16} {pc['precision'].mean():>9.4f} {pc['recall'].mean():>9.4f} {pc['f1'].mean():>9.4f} {int(n):>8d}"
    )
    lines.append(
        f"{'weighted avg':<16} {(pc['precision'] * w).sum():>9.4f} {(pc['recall'] * w).sum():>9.4f} {(pc['f1'] * w).sum():>9.4f} {int(n):>8d}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from cnnlab.evaluate.run_eval import evaluate_run

    res = evaluate_run(
        args.run,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device,
        batch_size=args.batch_size,
    )
    s = res.summary()
    print(
        f"accuracy {s['accuracy']:.4f}  top-5 {s['top5_accuracy']:.4f}  log-loss {s['log_loss']:.4f}  ({s['samples']} test images)"
    )
    print(format_report(res))
    for name, path in res.artefacts.items():
        print(f"{name}: {path}")
    return 0
