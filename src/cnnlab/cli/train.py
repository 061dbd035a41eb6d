"""`cnnlab train`: train a model and write a run directory."""

from __future__ import annotations

import argparse
import os
import sys

NAME = "train"
HELP = "train a model on a dataset and write runs/<name>/ (weights, config, metrics, plots)"
EXAMPLE = (
    "cnnlab train --model simplecnn --data digits --epochs 10   # any config key: --optim.lr 3e-4; "
    "--recipe fmnist-fast; --resume runs/NAME"
)
ACCEPTS_OVERRIDES = True

# Flag → dotted config key. Everything else is reachable as --section.key VALUE.
FLAGS = {
    "model": "model",
    "task": "task",
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
    "pretrained": "transfer.pretrained",
    "freeze": "transfer.freeze",
    "unfreeze_at": "transfer.unfreeze_at",
    "layer_decay": "transfer.layer_decay",
    "sizes": "data.sizes",
    "size_epochs": "data.size_epochs",
    "augment": "data.augment",
    "mixup": "data.mixup_alpha",
    "cutmix": "data.cutmix_alpha",
    "patience": "patience",
    "ema": "ema_decay",
    "accum_steps": "accum_steps",
    "grad_clip": "grad_clip",
    "amp": "amp",
    "threads": "threads",
}
LIST_FLAGS = ("sizes", "size_epochs")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", help="YAML config file (a recipe); flags and --key overrides win over it"
    )
    p.add_argument(
        "--recipe", help="a shipped recipe, e.g. fmnist-fast (see cnnlab/configs/); flags win"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a killed/stopped run from its checkpoints/last (only --epochs and logging "
        "options may change)",
    )
    p.add_argument("--model", help="model name (see `cnnlab models`), default simplecnn")
    p.add_argument(
        "--task",
        help="what to learn: classification, detect(ion), segment(ation); default: the data's own",
    )
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
    t = p.add_argument_group("transfer learning")
    t.add_argument("--pretrained", help="weights to start from: .safetensors, .pth or a run dir")
    t.add_argument(
        "--freeze",
        help="none, early (stem + first stage), most (all but the last stage and head), "
        "all-but-head (feature extraction)",
    )
    t.add_argument(
        "--unfreeze-at",
        type=int,
        metavar="N",
        help="train N epochs with --freeze, then everything from epoch N+1 (0: never unfreeze)",
    )
    t.add_argument("--layer-decay", type=float, help="layer-wise LR decay per depth unit, e.g. 0.7")
    r = p.add_argument_group("regularisation and speed")
    r.add_argument("--augment", help="batch augmentation spec, e.g. flip,crop:4")
    r.add_argument("--mixup", type=float, help="Mixup alpha (0 = off)")
    r.add_argument("--cutmix", type=float, help="CutMix alpha (0 = off)")
    r.add_argument(
        "--sizes", help="progressive resizing: training sizes, e.g. 16,22,28 (eval at full size)"
    )
    r.add_argument("--size-epochs", help="epochs at each of --sizes, e.g. 2,2,1")
    r.add_argument("--ema", type=float, help="weight EMA decay, e.g. 0.999 (0 = off)")
    r.add_argument("--accum-steps", type=int, help="gradient accumulation micro-batches")
    r.add_argument("--grad-clip", type=float, help="max gradient norm (0 = off)")
    r.add_argument("--amp", help="mixed precision: auto, off, bf16, fp16")
    r.add_argument("--patience", type=int, help="early stopping patience in epochs (0 = off)")
    r.add_argument("--threads", type=int, help="CPU threads for torch")
    r.add_argument(
        "--tensorboard", action="store_true", help="write TensorBoard event files in the run dir"
    )


def build_config(args: argparse.Namespace):
    """The resolved TrainConfig from --config, the flags and --key overrides (in that order)."""
    from cnnlab.errors import ConfigError
    from cnnlab.train.config import TrainConfig, apply_overrides, load_config, load_recipe
    from cnnlab.train.resume import resume_config

    chosen = [f"--{n}" for n in ("config", "recipe", "resume") if getattr(args, n, None)]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} cannot be combined; choose one starting config")
    flags = {
        key: getattr(args, attr)
        for attr, key in FLAGS.items()
        if getattr(args, attr, None) is not None
    }
    for attr in LIST_FLAGS:
        key = FLAGS[attr]
        if key in flags:
            flags[key] = [v for v in str(flags[key]).replace(" ", "").split(",") if v]
    if args.no_progress:
        flags["progress"] = False
    if getattr(args, "tensorboard", False):
        flags["tensorboard"] = True
    overrides = {**flags, **dict(getattr(args, "overrides", {}) or {})}
    if getattr(args, "resume", None):
        return resume_config(args.resume, overrides)
    if getattr(args, "recipe", None):
        cfg = load_recipe(args.recipe)
    else:
        cfg = load_config(args.config) if args.config else TrainConfig()
    return apply_overrides(cfg, overrides)


def fit_model_to_data(cfg, resume: str | None = None):
    """``(cfg, splits)``: for a model with a small-input variant (ResNet) and images below its
    standard minimum, the config with that variant chosen and a line saying so; the splits that
    were loaded to find out are passed on, so the data is read once. Otherwise ``(cfg, None)``.

    The course trains ResNets on 28-pixel digits; the 7x7/2 stem refused them, and the error
    did not name the option. ``--model_kwargs.small_input false`` keeps the standard stem.
    """
    from dataclasses import replace

    from cnnlab.models import kwargs_for_input, small_input_sizes
    from cnnlab.train.setup import prepare_data

    if resume or small_input_sizes(cfg.model, **cfg.model_kwargs) is None:
        return cfg, None  # no variant to choose: the data is loaded by fit as usual
    splits = prepare_data(cfg)
    size = min([*splits.train.image_shape[1:], *cfg.data.sizes])
    extra = kwargs_for_input(cfg.model, size, **cfg.model_kwargs)
    if extra:
        cfg = replace(cfg, model_kwargs={**cfg.model_kwargs, **extra})
        if os.environ.get("RANK", "0") == "0":
            print(
                f"{cfg.model}: small_input=True for {size}x{size} images (a 3x3 stride-1 stem "
                "without the max-pool; --model_kwargs.small_input false keeps the standard stem)",
                file=sys.stderr,
            )
    return cfg, splits


def run(args: argparse.Namespace) -> int:
    from cnnlab.train import fit
    from cnnlab.train.distributed import cleanup_distributed

    cfg = build_config(args)
    resume = getattr(args, "resume", None)
    try:
        cfg, splits = fit_model_to_data(cfg, resume)
        result = fit(cfg, splits=splits, resume=resume, defer_pictures=True)
    finally:
        cleanup_distributed()
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    m = result.metrics
    if m:
        scores = (
            f"test accuracy {m['test_acc']:.4f}  test loss {m['test_loss']:.4f}"
            if "test_acc" in m
            else "  ".join(
                f"{k.replace('_', ' ')} {v:.4f}" for k, v in m.items() if k.startswith("test_")
            )
        )
        print(f"{scores}  after {m['epoch']} epoch(s), {m['elapsed_s']:.1f}s of training")
    else:
        print("training stopped before the first epoch finished", file=sys.stderr)
    sys.stdout.flush()  # the metrics show now; the plots and the report take a few seconds
    result.finish()
    print(f"run directory: {result.run_dir}")
    print(f"  weights   {result.run_dir / 'model.safetensors'}")
    plots = [p for p in ("curves.png", "confusion.png") if (result.run_dir / p).exists()]
    print(f"  plots     {'  '.join(str(result.run_dir / p) for p in plots)}")
    print(f"  resume    cnnlab train --resume {result.run_dir} [--epochs N]")
    return 0 if m else 1
