"""`cnnlab train`: train a model and write a run directory."""

from __future__ import annotations

import argparse
import sys

NAME = "train"
HELP = "train a model on a dataset and write runs/<name>/ (weights, config, metrics, plots)"
EXAMPLE = (
    "cnnlab train --model simplecnn --data digits --epochs 10   # any config key: --optim.lr 3e-4"
)
ACCEPTS_OVERRIDES = True

# Flag → dotted config key. Everything else is reachable as --section.key VALUE.
FLAGS = {
    "model": "model",
    "data": "data.name",
    "data_dir": "data.data_dir",
    "image_size": "data.image_size",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "optim.lr",
    "optimizer": "optim.name",
    "weight_decay": "optim.weight_decay",
    "schedule": "schedule.name",
    "warmup_epochs": "schedule.warmup_epochs",
    "seed": "seed",
    "device": "device",
    "name": "name",
    "out_dir": "out_dir",
    "label_smoothing": "label_smoothing",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", help="YAML config file (a recipe); flags and --key overrides win over it"
    )
    p.add_argument("--model", help="model name (see `cnnlab models`), default simplecnn")
    p.add_argument(
        "--data", help="data source: digits (embedded), fashion-mnist, mnist, imagefolder, …"
    )
    p.add_argument(
        "--data-dir", help="folder with the data files (fashion-mnist: the IDX .gz files)"
    )
    p.add_argument("--image-size", type=int, help="resize images to this size (square)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--optimizer", help="sgd, adam, adamw or rmsprop")
    p.add_argument("--weight-decay", type=float)
    p.add_argument(
        "--schedule",
        help="constant, cosine, step, multistep, exponential, cosine_restarts, onecycle, plateau",
    )
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--name", help="run name (default: <model>-<data>-<time>)")
    p.add_argument("--out-dir", help="parent folder of run directories (default runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")


def build_config(args: argparse.Namespace):
    """The resolved TrainConfig from --config, the flags and --key overrides (in that order)."""
    from cnnlab.train.config import TrainConfig, apply_overrides, load_config

    cfg = load_config(args.config) if args.config else TrainConfig()
    flags = {
        key: getattr(args, attr)
        for attr, key in FLAGS.items()
        if getattr(args, attr, None) is not None
    }
    if args.no_progress:
        flags["progress"] = False
    cfg = apply_overrides(cfg, flags)
    return apply_overrides(cfg, dict(getattr(args, "overrides", {}) or {}))


def run(args: argparse.Namespace) -> int:
    from cnnlab.train import fit

    cfg = build_config(args)
    result = fit(cfg)
    m = result.metrics
    if m:
        print(
            f"test accuracy {m['test_acc']:.4f}  test loss {m['test_loss']:.4f}  after {m['epoch']} epoch(s), {m['elapsed_s']:.1f}s of training"
        )
    else:
        print("training stopped before the first epoch finished", file=sys.stderr)
    print(f"run directory: {result.run_dir}")
    print(f"  weights   {result.run_dir / 'model.safetensors'}")
    print(f"  plots     {result.run_dir / 'curves.png'}  {result.run_dir / 'confusion.png'}")
    return 0 if m else 1
