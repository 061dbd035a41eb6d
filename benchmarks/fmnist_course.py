"""Issue 'Foundation' benchmark: SimpleCNN on Fashion-MNIST, cnnlab vs the course's own recipe.

Both train the same SimpleCNN (421,642 parameters) with Adam 1e-3, batch 64, for 3 epochs, in one run:
- course: torchvision per-image transforms (PIL → ToTensor → Normalize) through a DataLoader
  (num_workers=0, as in the course), constant LR;
- cnnlab: ``cnnlab.train.fit`` with preloaded uint8 tensors and whole-batch normalisation, cosine LR.

Run:  .venv/bin/python benchmarks/fmnist_course.py [--epochs 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402
from time_to_accuracy import course_recipe  # noqa: E402  (the course loop, shared)

from cnnlab.data import load_dataset  # noqa: E402
from cnnlab.train import DataConfig, TrainConfig, fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-write", action="store_true", help="print only; do not update BENCHMARKS.md"
    )
    args = ap.parse_args()

    splits = load_dataset("fashion-mnist", data_dir=args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            model="simplecnn",
            data=DataConfig(name="fashion-mnist", data_dir=args.data_dir),
            epochs=args.epochs,
            batch_size=64,
            seed=args.seed,
            out_dir=tmp,
            name="bench",
            progress=False,
            report=False,
        )
        res = fit(
            cfg,
            splits=splits,
        )
        ours = res.history
    for r in ours:
        print(
            f"cnnlab  epoch {r['epoch']}: {r['epoch_s']:.1f}s  acc {r['test_acc']:.4f}", flush=True
        )
    course = course_recipe(splits, args.epochs, args.seed)
    for prev, row in zip([{"elapsed_s": 0.0}, *course], course):
        row["epoch_s"] = row["elapsed_s"] - prev["elapsed_s"]

    def spe(rows):
        return sum(r["epoch_s"] for r in rows) / len(rows)

    md = [
        "## SimpleCNN on Fashion-MNIST: cnnlab vs the course's recipe (issue: Foundation)",
        "",
        f"Command: `.venv/bin/python benchmarks/fmnist_course.py --epochs {args.epochs}`  ",
        f"Machine: {machine_line()}",
        "",
        "| recipe | s/epoch (train) | test acc after each epoch | total train s |",
        "|---|---|---|---|",
        f"| course (per-image torchvision transforms, DataLoader, Adam 1e-3, batch 64) | {spe(course):.1f} | "
        + ", ".join(f"{r['test_acc']:.4f}" for r in course)
        + f" | {course[-1]['elapsed_s']:.1f} |",
        f"| cnnlab `train --data fashion-mnist --model simplecnn --epochs {args.epochs}` | {spe(ours):.1f} | "
        + ", ".join(f"{r['test_acc']:.4f}" for r in ours)
        + f" | {ours[-1]['elapsed_s']:.1f} |",
        "",
        f"Speed-up per epoch: **{spe(course) / spe(ours):.2f}x**. Same model, optimizer, batch size and epochs; cnnlab "
        "keeps the decoded images as one uint8 tensor and normalises whole batches, and anneals the LR with a cosine schedule.",
    ]
    print("\n".join(md))
    if not args.no_write:
        write_section("fmnist_course", "\n".join(md))


if __name__ == "__main__":
    main()
