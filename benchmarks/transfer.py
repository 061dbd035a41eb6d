"""Issue 'Training engine' benchmark: transfer learning on Fashion-MNIST, classes 0-4 → 5-9.

A source ``fastnet`` is trained on classes 0-4 (T-shirt, trouser, pullover, dress, coat). Each
method then learns classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) from 10, 100 or all
training images per class, and is tested on the 5,000 official test images of those classes:

- scratch: a fresh network;
- feature extraction: the source network, ``--freeze all-but-head`` (only the new head trains);
- fine-tuning: the source network, everything trains at one LR;
- layer-wise LR: the source network, everything trains, LR × ``decay`` per depth unit from the head.

Every method gets the same optimizer (AdamW, one-cycle) and number of steps for a given data size.
The methods of one data size run back to back, so CPU contention hits all of them alike.

Run:  .venv/bin/python benchmarks/transfer.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

from cnnlab.data import DatasetSplits, ImageDataset, load_dataset  # noqa: E402
from cnnlab.train import TrainConfig, fit  # noqa: E402
from cnnlab.train.config import from_dict  # noqa: E402

PLOT = Path(__file__).resolve().parent / "results" / "transfer.png"
METHODS = {
    "scratch": {},
    "feature extraction": {"freeze": "all-but-head"},
    "fine-tuning": {},
    "layer-wise LR (0.5)": {"layer_decay": 0.5},
}


def classes(ds: ImageDataset, lo: int, per_class: int | None, seed: int) -> ImageDataset:
    """Classes lo..lo+4 relabelled 0..4, at most ``per_class`` random images of each."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(lo, lo + 5):
        idx = torch.nonzero(ds.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        keep.append(idx if per_class is None else idx[:per_class])
    out = ds.subset(torch.cat(keep).sort().values)
    out.labels = out.labels - lo
    out.classes = out.classes[lo : lo + 5]
    return out


def base_cfg(tmp: str, name: str, epochs: int, batch: int) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "model": "fastnet",
            "model_kwargs": {"width": 32},
            "epochs": epochs,
            "batch_size": batch,
            "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.05},
            "schedule": {"name": "onecycle"},
            "label_smoothing": 0.1,
            "data": {"augment": "flip"},
            "channels_last": True,
            "out_dir": tmp,
            "name": name,
            "progress": False,
            "report": False,
            "checkpoint": False,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="smaller source run and 'all' = 1000/class"
    )
    ap.add_argument("--source-epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150, help="minimum optimizer steps per target run")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    full = load_dataset("fashion-mnist", data_dir=args.data_dir)
    all_n = 1000 if args.quick else None
    src_epochs = 1 if args.quick else args.source_epochs
    source = DatasetSplits(
        classes(full.train, 0, 2000 if args.quick else None, args.seed),
        classes(full.test, 0, None, 0),
    )
    test = classes(full.test, 5, None, 0)
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        src = fit(base_cfg(tmp, "source", src_epochs, 128), splits=source)
        src_s = time.perf_counter() - t0
        print(
            f"source: {src.metrics['test_acc']:.4f} on classes 0-4 after {src_s:.0f}s", flush=True
        )
        for per_class in (10, 100, all_n):
            label = "all" if per_class is None else str(per_class)
            train = classes(full.train, 5, per_class, args.seed)
            batch = 32 if len(train) < 1000 else 128
            n_images = len(train)
            # Small sets are repeated so that 2 "epochs" hold at least --steps steps: the same
            # optimisation as many short epochs, without evaluating 5,000 images after each.
            reps = max(1, math.ceil(args.steps * batch / 2 / n_images))
            if reps > 1:
                train = train.subset(torch.arange(n_images).repeat(reps))
            epochs = 2
            results[label] = {}
            for method, transfer in METHODS.items():
                run_name = re.sub(r"[^\w.+=-]", "_", f"{method}-{label}")
                cfg = base_cfg(tmp, run_name, epochs, batch)
                if method != "scratch":
                    cfg = replace(
                        cfg, transfer=replace(cfg.transfer, pretrained=str(src.run_dir), **transfer)
                    )
                t0 = time.perf_counter()
                res = fit(cfg, splits=DatasetSplits(train, test))
                results[label][method] = {
                    "acc": res.metrics["test_acc"],
                    "s": time.perf_counter() - t0,
                }
                print(
                    f"{label:>4}/class {method:22s} acc {res.metrics['test_acc']:.4f}", flush=True
                )
            results[label]["_meta"] = {
                "n": n_images,
                "steps": epochs * (len(train) // batch),
                "batch": batch,
            }

    sizes = list(results)
    md = [
        "## Transfer learning: Fashion-MNIST classes 0-4 → 5-9 (issue: Training engine)",
        "",
        f"Command: `.venv/bin/python benchmarks/transfer.py{' --quick' if args.quick else ''}"
        f"{f' --threads {args.threads}' if args.threads else ''}`  ",
        f"Machine: {machine_line()}",
        "",
        f"Source: fastnet (width 32) trained {src_epochs} epoch(s) on classes 0-4 "
        f"({len(source.train)} images): {100 * src.metrics['test_acc']:.1f} % on their test images. "
        "Targets: classes 5-9, tested on their 5,000 official test images. Every method: AdamW "
        "3e-3, one-cycle, label smoothing 0.1, flips, the same steps per data size; the new head is "
        "freshly initialised.",
        "",
        "| images per class | train images | steps (batch) | " + " | ".join(METHODS) + " |",
        "|---|---:|---:|" + "---:|" * len(METHODS),
    ]
    for label in sizes:
        meta = results[label]["_meta"]
        md.append(
            f"| {label} | {meta['n']} | {meta['steps']} ({meta['batch']}) | "
            + " | ".join(f"{100 * results[label][m]['acc']:.1f} %" for m in METHODS)
            + " |"
        )
    md += [
        "",
        f"![transfer](benchmarks/results/{PLOT.name})",
        "",
        "Test accuracy on classes 5-9 (accuracies do not depend on CPU load; run times, not shown, do).",
    ]
    _plot(results, sizes)
    print("\n".join(md))
    if not args.no_write:
        write_section("transfer", "\n".join(md))


def _plot(results: dict, sizes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [results[s]["_meta"]["n"] / 5 for s in sizes]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in METHODS:
        ax.plot(xs, [100 * results[s][m]["acc"] for s in sizes], marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("training images per class (classes 5-9)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Transfer from classes 0-4 to 5-9 (Fashion-MNIST)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
