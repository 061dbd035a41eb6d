"""Issue 'The arithmetic of CNNs' benchmark: cnnlab's MAC counter against the alternatives.

For torchvision models (random weights, eval, batch 1, 224 px):
- agreement: ``cnnlab.inspect.count_macs`` vs torchvision's published GMACs (weights ``meta["_ops"]``,
  which torchvision labels GFLOPS but counts multiply-adds) vs ``torch.utils.flop_counter.
  FlopCounterMode`` (FLOPs / 2);
- cost: wall time of ``count_macs`` (one instrumented forward that also records shapes, parameters
  and receptive-field geometry) vs one ``FlopCounterMode`` forward vs one plain forward.

The CPU is shared with other work, so the three timed variants are interleaved (A, B, C, rotated each
repetition) and medians are compared: contention hits all variants alike.

Run:  .venv/bin/python benchmarks/inspect_macs.py [--models resnet18 ...] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

from cnnlab.inspect import count_macs  # noqa: E402

MODELS = ["resnet18", "mobilenet_v2", "googlenet", "densenet121", "convnext_tiny", "vit_b_16"]


def _flop_counter_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return fc.get_total_flops() // 2


def _plain(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name in args.models:
        kw = {"init_weights": False} if name == "googlenet" else {}
        model = torchvision.models.get_model(name, weights=None, **kw).eval()
        published = torchvision.models.get_model_weights(name).DEFAULT.meta.get("_ops")
        x = torch.randn(1, 3, 224, 224)
        ours = count_macs(model, (3, 224, 224))
        fcm = _flop_counter_macs(model, x)
        variants = {
            "cnnlab": lambda m=model: count_macs(m, (3, 224, 224)),
            "flopcounter": lambda m=model, x=x: _flop_counter_macs(m, x),
            "plain": lambda m=model, x=x: _plain(m, x),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        order = list(variants)
        for rep in range(args.reps):
            for key in order[rep % 3 :] + order[: rep % 3]:
                t = time.perf_counter()
                variants[key]()
                times[key].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((name, published, ours / 1e9, fcm / 1e9, med))
        print(
            name,
            published,
            ours,
            fcm,
            {k: f"{v * 1000:.0f} ms" for k, v in med.items()},
            flush=True,
        )
    lines = [
        "## The arithmetic of CNNs: MAC counting",
        "",
        f"Command: `.venv/bin/python benchmarks/inspect_macs.py --reps {args.reps}`  ",
        f"Machine: {machine_line()}",
        "",
        "torchvision models, random weights, batch 1, 3x224x224. GMACs: torchvision's published",
        "`meta['_ops']`, `cnnlab.inspect.count_macs`, `FlopCounterMode` FLOPs / 2. Times are medians of",
        f"{args.reps} interleaved repetitions (cnnlab, FlopCounterMode, plain forward, rotated) on a",
        "possibly shared CPU (load average above); compare the ratios, not the absolute times.",
        "",
        "| model | published | cnnlab | FlopCounterMode | cnnlab / plain forward | cnnlab / FlopCounterMode |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, pub, ours, fcm, med in rows:
        pub_s = f"{pub:.3f}" if pub is not None else "n/a"
        lines.append(
            f"| {name} | {pub_s} | {ours:.3f} | {fcm:.3f} | {med['cnnlab'] / med['plain']:.2f}x | "
            f"{med['cnnlab'] / med['flopcounter']:.2f}x |"
        )
    lines += [
        "",
        "FlopCounterMode undercounts the ViT: in eval under `no_grad` torchvision's attention takes the",
        "fused `_native_multi_head_attention` fast path, which has no FLOP formula. cnnlab's trace runs",
        "the regular path (its function mode disables the fast path) and also counts the CPU attention",
        "kernel `_scaled_dot_product_flash_attention_for_cpu`, which PyTorch's registry lacks.",
        "",
        "Timing caveat: on a loaded CPU with few repetitions the timing ratios are noisy;",
        "ratios below 1x (trace faster than a plain forward) mean noise dominated that run.",
    ]
    write_section("inspect_macs", "\n".join(lines))


if __name__ == "__main__":
    main()
