"""`cnnlab bench`: latency, throughput, parameters, MACs and file size for each backend."""

from __future__ import annotations

import argparse
import json

NAME = "bench"
HELP = "benchmark a zoo model or a run on several backends and batch sizes"
EXAMPLE = "cnnlab bench resnet18 --backend torch,onnx --batch 1,32 --size 224"


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got '{text}'"
        ) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a zoo model name (see `cnnlab models`) or a run directory")
    p.add_argument(
        "--backend",
        default="torch,onnx",
        help="comma list of torch, channels_last, jit, onnx, int8",
    )
    p.add_argument("--batch", type=_ints, default=[1, 32], help="comma list of batch sizes")
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--json", action="store_true", help="print rows as JSON")


def run(args: argparse.Namespace) -> int:
    import sys

    from cnnlab.deploy.bench import TABLE_HEADER, benchmark, format_row

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if args.json:
        rows = benchmark(
            args.model, backends, args.batch, args.size, rounds=args.rounds, threads=args.threads
        )
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    # a big model takes minutes: the phase on stderr (when it is a terminal), rows as measured
    tty = sys.stderr.isatty()

    def step(text: str) -> None:
        if tty:
            print(f"\r\033[K{text}…", end="", file=sys.stderr, flush=True)

    header = [False]

    def row(r) -> None:
        step("")
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        if not header[0]:
            print(TABLE_HEADER)
            print("-" * len(TABLE_HEADER))
            header[0] = True
        print(format_row(r), flush=True)

    benchmark(
        args.model,
        backends,
        args.batch,
        args.size,
        rounds=args.rounds,
        threads=args.threads,
        on_row=row,
        on_step=step,
    )
    return 0
