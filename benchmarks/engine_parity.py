"""Behaviour and speed of the training engine against an earlier source tree, in one run.

Used to show that a refactor of the engine changed neither accuracy nor speed: the same recipe is
trained alternately with this tree and with ``--baseline-src`` (e.g. a ``git worktree`` of the
commit before the refactor), so machine load hits both alike. Prints one row per run and the
median training throughput ratio.

    git worktree add /tmp/before <commit> && \\
    python benchmarks/engine_parity.py --baseline-src /tmp/before/src --recipe fmnist-fast --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def run_once(src: Path, recipe: str, epochs: int, out: Path, name: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "cnnlab", "train", "--recipe", recipe, "--epochs", str(epochs)]
    cmd += ["--out-dir", str(out), "--name", name, "--no-progress", "--report", "false"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"{src}: {res.stderr[-2000:]}")
    with open(out / name / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n = json.loads((out / name / "config.json").read_text())["dataset"]["train_size"]
    ips = statistics.median(n / float(r["epoch_s"]) for r in rows)
    return {
        "acc": float(rows[-1]["test_acc"]),
        "train_s": float(rows[-1]["elapsed_s"]),
        "wall_s": wall,
        "img_s": ips,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-src", required=True, type=Path)
    ap.add_argument("--recipe", default="fmnist-fast")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="parity-"))
    results: dict[str, list[dict]] = {"baseline": [], "this tree": []}
    for i in range(args.repeats):
        order = [("baseline", args.baseline_src), ("this tree", HERE)]
        for label, src in order if i % 2 == 0 else order[::-1]:
            r = run_once(src, args.recipe, args.epochs, out, f"{label.replace(' ', '-')}-{i}")
            results[label].append(r)
            print(
                f"{label:10s} run {i}: test acc {r['acc']:.4f}  train {r['train_s']:.1f}s  "
                f"wall {r['wall_s']:.1f}s  {r['img_s']:.0f} train img/s",
                flush=True,
            )
    med = {k: statistics.median(r["img_s"] for r in v) for k, v in results.items()}
    print(
        f"median train img/s: baseline {med['baseline']:.0f}, this tree {med['this tree']:.0f} "
        f"(ratio {med['this tree'] / med['baseline']:.3f}); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
