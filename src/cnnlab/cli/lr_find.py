"""`cnnlab lr-find`: the LR range test, with a plot and a suggested learning rate."""

from __future__ import annotations

import argparse

from cnnlab.cli import train as train_cli

NAME = "lr-find"
HELP = "LR range test: train briefly with a rising LR, plot loss vs LR and suggest a learning rate"
EXAMPLE = "cnnlab lr-find --model fastnet --data digits --optimizer adamw --out lr_find.png"
ACCEPTS_OVERRIDES = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    train_cli.add_arguments(p)
    g = p.add_argument_group("range test")
    g.add_argument("--start-lr", type=float, default=1e-7)
    g.add_argument("--end-lr", type=float, default=10.0)
    g.add_argument("--steps", type=int, default=100, help="number of steps (default 100)")
    g.add_argument("--out", default="lr_find.png", help="plot file (default lr_find.png)")


def run(args: argparse.Namespace) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.train.lr_find import lr_find, plot_lr_find

    if getattr(args, "resume", None):
        raise ConfigError("lr-find does not take --resume; give the model and data instead")
    cfg = train_cli.build_config(args)
    cfg, splits = train_cli.fit_model_to_data(cfg)
    res = lr_find(
        cfg, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps, splits=splits
    )
    path = plot_lr_find(res, args.out)
    stop = "stopped when the loss diverged" if res.diverged else "reached the end LR"
    print(f"suggested lr {res.suggestion:.2e}  (lowest loss at {res.min_loss_lr:.2e}; {stop})")
    print(f"plot: {path}")
    return 0
