"""Issue 'Model zoo' benchmark: cnnlab's CNNs against torchvision's same architectures.

For resnet18, mobilenet_v2, efficientnet_b0, vgg11_bn and convnext_tiny, at 224 px and 32 px:
- training-step throughput: forward + cross-entropy + backward + SGD(momentum) step, batch 32;
- batch-1 inference latency: eval mode, ``torch.inference_mode``.

Variants, all with identical weights (cnnlab's model loads torchvision's state dict):
``tv`` = torchvision (NCHW), ``nchw`` = cnnlab in NCHW, ``nhwc`` = cnnlab converted to channels-last.
``cnnlab`` in the ratio column is cnnlab *as configured*: channels-last where the model's
``default_cfg.extra["channels_last"]`` says so (see ``cnnlab.layers.memory_format.prepare_model``),
NCHW otherwise -- so the table both shows the goal (ratio >= 1) and justifies each flag.

The CPU is shared with other work, so the variants are interleaved (tv, nchw, nhwc, then rotated) in
every repetition and the medians are compared: contention hits all variants alike.

Run:  .venv/bin/python benchmarks/zoo.py [--quick] [--models resnet18 ...] [--sizes 224 32] [--reps 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

from cnnlab.errors import UnknownNameError  # noqa: E402
from cnnlab.layers.memory_format import prefers_channels_last  # noqa: E402
from cnnlab.models import get_model  # noqa: E402

MODELS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "vgg11_bn", "convnext_tiny"]
VARIANTS = ("tv", "nchw", "nhwc")


def build_variants(name: str, num_classes: int) -> dict[str, nn.Module] | None:
    """torchvision's model and cnnlab's in both memory formats, all with the same weights."""
    try:
        ours = get_model(name, num_classes=num_classes)
    except UnknownNameError:
        return None
    tv = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    ours.load_state_dict(tv.state_dict(), strict=True)
    nhwc = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    return {"tv": tv, "nchw": ours, "nhwc": nhwc}


def time_train(model: nn.Module, opt: torch.optim.Optimizer, x, y, iters: int) -> float:
    """Seconds per training step (mean of ``iters`` consecutive steps)."""
    model.train()
    t0 = time.perf_counter()
    for _ in range(iters):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / iters


def time_infer(model: nn.Module, x, iters: int) -> float:
    """Seconds per batch-1 forward pass in eval mode."""
    model.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        return (time.perf_counter() - t0) / iters


def interleaved(fn_by_variant: dict, reps: int) -> dict[str, float]:
    """Median time per variant, the variants run in a rotating order within each repetition."""
    times: dict[str, list[float]] = {v: [] for v in fn_by_variant}
    order = list(fn_by_variant)
    for r in range(reps):
        k = r % len(order)
        for v in order[k:] + order[:k]:
            times[v].append(fn_by_variant[v]())
    return {v: statistics.median(t) for v, t in times.items()}


def bench_one(name: str, size: int, args) -> dict | None:
    variants = build_variants(name, num_classes=10 if size <= 64 else 1000)
    if variants is None:
        return None
    torch.manual_seed(0)
    batch = args.batch
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    x1 = torch.randn(1, 3, size, size)
    opts = {v: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for v, m in variants.items()}
    train_iters = args.train_iters if size > 64 else 3 * args.train_iters
    infer_iters = args.infer_iters if size > 64 else 5 * args.infer_iters
    for v, m in variants.items():  # warm-up: oneDNN primitive creation, allocator
        time_train(m, opts[v], x, y, 1)
        time_infer(m, x1, 2)
    train = interleaved(
        {v: (lambda v=v: time_train(variants[v], opts[v], x, y, train_iters)) for v in variants},
        args.reps,
    )
    infer = interleaved(
        {v: (lambda v=v: time_infer(variants[v], x1, infer_iters)) for v in variants}, args.reps
    )
    default = "nhwc" if prefers_channels_last(variants["nchw"]) else "nchw"
    return {"name": name, "size": size, "train": train, "infer": infer, "default": default}


def render(rows: list[dict], missing: list[str], args, command: str) -> str:
    lines = [
        "## Model zoo: cnnlab vs torchvision (same architectures, same weights)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}",
        "",
        f"Training step = forward + cross-entropy + backward + SGD(momentum 0.9), batch {args.batch}; "
        "inference = batch 1, eval, `torch.inference_mode`. Ratios are cnnlab speed / torchvision "
        "speed (> 1: cnnlab faster). `cnnlab` = as configured (`NHWC` where "
        '`default_cfg.extra["channels_last"]` is set, measured below); `nchw`/`nhwc` = cnnlab '
        "forced to each memory format. Medians of "
        f"{args.reps} interleaved repetitions (tv, nchw, nhwc rotated each time), so any contention "
        "(load average above) hits all variants alike; ratios within ~±5 % are noise.",
        "",
        "| model | px | layout | train img/s tv | train img/s cnnlab | **train ratio** | "
        "train nchw / nhwc ratio | infer ms tv | infer ms cnnlab | **infer ratio** | "
        "infer nchw / nhwc ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tr, inf, d = r["train"], r["infer"], r["default"]
        lines.append(
            f"| {r['name']} | {r['size']} | {'NHWC' if d == 'nhwc' else 'NCHW'} | "
            f"{args.batch / tr['tv']:.1f} | {args.batch / tr[d]:.1f} | **{tr['tv'] / tr[d]:.2f}** | "
            f"{tr['tv'] / tr['nchw']:.2f} / {tr['tv'] / tr['nhwc']:.2f} | "
            f"{inf['tv'] * 1e3:.2f} | {inf[d] * 1e3:.2f} | **{inf['tv'] / inf[d]:.2f}** | "
            f"{inf['tv'] / inf['nchw']:.2f} / {inf['tv'] / inf['nhwc']:.2f} |"
        )
    if missing:
        lines += ["", f"Not measured (not registered in cnnlab yet): {', '.join(missing)}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 32])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--train-iters", type=int, default=1)
    p.add_argument("--infer-iters", type=int, default=5)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (on a loaded, shared CPU 1 thread avoids stalls at OpenMP barriers)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: batch 4, 1 repetition, no report"
    )
    p.add_argument(
        "--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.reps, args.train_iters, args.infer_iters = 4, 1, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows, missing = [], []
    for name in args.models:
        for size in args.sizes:
            t0 = time.perf_counter()
            row = bench_one(name, size, args)
            if row is None:
                missing.append(name)
                break
            rows.append(row)
            print(
                f"{name:16s} {size:4d}px  train ratio {row['train']['tv'] / row['train'][row['default']]:.2f}"
                f"  (nchw {row['train']['tv'] / row['train']['nchw']:.2f}, "
                f"nhwc {row['train']['tv'] / row['train']['nhwc']:.2f})"
                f"  infer ratio {row['infer']['tv'] / row['infer'][row['default']]:.2f}"
                f"  (nchw {row['infer']['tv'] / row['infer']['nchw']:.2f}, "
                f"nhwc {row['infer']['tv'] / row['infer']['nhwc']:.2f})  [{time.perf_counter() - t0:.0f}s]",
                flush=True,
            )
            if not (
                args.quick or args.no_write
            ):  # write as we go: a long run cut short keeps its rows
                write_section("zoo", render(rows, [], args, command.strip()))
    table = render(rows, missing, args, command.strip())
    print(table)
    if not (args.quick or args.no_write):
        write_section("zoo", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
