"""Issue 19 benchmark: time to accuracy on Fashion-MNIST from process start, the course vs cnnlab.

Every run is a fresh process, timed from its spawn as a user sees it (interpreter start, imports,
data loading, set-up, training, the per-epoch evaluations):
- course: SimpleCNN, Adam 1e-3, batch 64, constant LR, torchvision per-image transforms
  (PIL -> ToTensor -> Normalize) through a DataLoader, 3 epochs, as the course trains it;
- each recipe: ``python -m cnnlab train --recipe NAME --seed S`` (cnnlab/configs/NAME.yaml).

Variants are interleaved per seed, so contention on a shared CPU hits each alike. For every run
the script records the wall seconds from spawn at which each epoch's test accuracy was printed
(10,000 official test images), the training seconds (from ``metrics.csv``) and the process's
total wall time. T is the course's mean wall time for its 3 epochs; the goals are fractions of T.

``--ablation`` also trains the fast recipe with one technique removed at a time (same epochs)
and reports the accuracy and time each technique was worth.

Run:  .venv/bin/python benchmarks/time_to_accuracy.py --seeds 0 1 2 [--long-seeds 1] [--ablation]
      .venv/bin/python benchmarks/time_to_accuracy.py --quick      # a smoke run, 2 minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _report import cpu_isa, machine_line, write_section  # noqa: E402

TARGETS = (0.905, 0.93, 0.94, 0.945)
GOALS = {0.905: 0.15, 0.93: 0.6, 0.94: 2.0, 0.945: 5.0}  # target -> fraction of T
RECIPES = ("fmnist-fast", "fmnist-medium", "fmnist-long")
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) .*?test loss ([\d.]+) acc ([\d.]+)")
# The fast recipe with one of its techniques taken away, or one it does not use added (the same
# epochs): the label says which; Δ is always "what the technique is worth" (> 0: it helps).
ABLATIONS = {
    "without whitening (learnt 3x3 stem)": {"model_kwargs.whiten": "false"},
    "without 3x3 whitening (2x2 patches)": {"model_kwargs.whiten_kernel": "2"},
    "without pool_first (pool after BN-ReLU)": {"model_kwargs.pool_first": "false"},
    "without Nesterov SGD (AdamW lr 3e-3 wd 0.05)": {
        "optim.name": "adamw", "optim.lr": "0.003", "optim.weight_decay": "0.05",
    },
    "without label smoothing": {"label_smoothing": "0"},
    "without alternating flip (random flip)": {"data.augment": "flip"},
    "without flip TTA": {"tta": ""},
    "without eval_every 2 (every epoch)": {"eval_every": "1"},
    "with dirac init": {"model_kwargs.dirac": "true"},
    "with BatchNorm without scale": {"model_kwargs.bn_scale": "false"},
    "with Lookahead (k 5, alpha 0.5)": {"lookahead_k": "5"},
    "with EMA (decay 0.99)": {"ema_decay": "0.99"},
    "with translate:1": {"data.augment": "altflip,translate:1"},
    "with random erasing": {"data.augment": "altflip,erase"},
    "with flip+translate TTA": {"tta": "flip,translate"},
}  # fmt: skip


# ----------------------------------------------------------------------------- child: the course
def course_child(seed: int, epochs: int, threads: int, data_dir: str | None) -> None:
    """The course's loop: per-image transforms, DataLoader, SimpleCNN, Adam 1e-3, batch 64."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from cnnlab.data import load_dataset
    from cnnlab.models import get_model

    class CourseDataset(Dataset):
        """What torchvision.datasets.FashionMNIST does per item: a PIL image, then transforms."""

        def __init__(self, images, labels, transform):
            self.images, self.labels, self.transform = images.numpy(), labels.tolist(), transform

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):
            return self.transform(Image.fromarray(self.images[i, 0], mode="L")), self.labels[i]

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    splits = load_dataset("fashion-mnist", data_dir=data_dir)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train = DataLoader(
        CourseDataset(splits.train.images, splits.train.labels, tf), batch_size=64, shuffle=True
    )
    test = DataLoader(CourseDataset(splits.test.images, splits.test.labels, tf), batch_size=1000)
    model = get_model("simplecnn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    elapsed = 0.0
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        elapsed += time.perf_counter() - t0
        model.eval()
        correct, loss = 0, 0.0
        with torch.no_grad():
            for x, y in test:
                out = model(x)
                loss += F.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
        n = len(test.dataset)
        print(
            f"epoch {epoch + 1}/{epochs}  test loss {loss / n:.4f} acc {correct / n:.4f}  "
            f"{elapsed:.1f}s train",
            file=sys.stderr,
            flush=True,
        )
        print(json.dumps({"epoch": epoch + 1, "elapsed_s": elapsed}), flush=True)


# ----------------------------------------------------------------------------- parent: timing
def timed_run(cmd: list[str], env: dict[str, str]) -> dict:
    """Spawn ``cmd``; the wall seconds from spawn at which each epoch line appeared on stderr."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, bufsize=1
    )
    epochs = []
    assert proc.stderr is not None
    for line in proc.stderr:
        m = EPOCH_LINE.match(line.strip())
        if m:
            epochs.append(
                {"epoch": int(m[1]), "wall_s": time.perf_counter() - t0, "test_acc": float(m[4])}
            )
    out = proc.stdout.read() if proc.stdout else ""
    rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {rc}")
    return {"epochs": epochs, "wall_s": wall, "stdout": out}


def train_seconds(stdout: str, course: bool) -> list[float]:
    """Training seconds per epoch: the course prints them, a cnnlab run logs them."""
    if course:
        return [json.loads(x)["elapsed_s"] for x in stdout.splitlines() if x.startswith("{")]
    run_dir = next(x.split(":", 1)[1].strip() for x in stdout.splitlines() if "run directory" in x)
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [float(r["elapsed_s"]) for r in csv.DictReader(f)]


def run_variant(name: str, seed: int, args, tmp: str, extra: dict[str, str] | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    course = name == "course"
    if course:
        cmd = [sys.executable, __file__, "--child-course", "--seed", str(seed)]
        cmd += ["--threads", str(args.threads), "--course-epochs", str(args.course_epochs)]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    else:
        cmd = [sys.executable, "-m", "cnnlab", "train", "--recipe", name, "--seed", str(seed)]
        cmd += ["--out_dir", tmp, "--threads", str(args.threads)]
        cmd += ["--data.data_dir", args.data_dir] if args.data_dir else []
        for k, v in (extra or {}).items():
            cmd += [f"--{k}", v]
        if args.quick:
            cmd += ["--epochs", "1"]
    r = timed_run(cmd, env)
    secs = train_seconds(r["stdout"], course)
    for row in r["epochs"]:
        row["train_s"] = secs[row["epoch"] - 1] if row["epoch"] - 1 < len(secs) else None
    print(
        f"{name:16s} seed {seed}: "
        + ", ".join(f"{e['wall_s']:.0f}s→{100 * e['test_acc']:.2f}" for e in r["epochs"])
        + f"  (process {r['wall_s']:.0f}s)",
        flush=True,
    )
    return {"name": name, "seed": seed, "epochs": r["epochs"], "wall_s": r["wall_s"]}


# ----------------------------------------------------------------------------- summary
def first_time(run: dict, target: float, key: str = "wall_s") -> float | None:
    return next((e[key] for e in run["epochs"] if e["test_acc"] >= target), None)


def best_within(run: dict, budget: float) -> float | None:
    accs = [e["test_acc"] for e in run["epochs"] if e["wall_s"] <= budget]
    return max(accs) if accs else None


def mean_spread(values: list[float | None], fmt: str = "{:.0f}") -> str:
    """'mean (min–max)' over the seeds; a dash where any seed missed."""
    if not values or any(v is None for v in values):
        hit = sum(v is not None for v in values)
        return f"— ({hit}/{len(values)})" if hit else "—"
    m = statistics.mean(values)
    if len(values) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def plot(results: list[dict], path: Path, T: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(dict.fromkeys(r["name"] for r in results))
    for i, name in enumerate(names):
        color = f"C{i}"
        for j, r in enumerate(x for x in results if x["name"] == name):
            xs = [e["wall_s"] for e in r["epochs"]]
            ys = [100 * e["test_acc"] for e in r["epochs"]]
            ax.plot(xs, ys, "-o", color=color, ms=3, alpha=0.8, label=name if j == 0 else None)
    for target, frac in GOALS.items():
        ax.plot([frac * T], [100 * target], "k*", ms=9)
        ax.annotate(f"goal {100 * target:.1f} % ≤ {frac:g}T", (frac * T, 100 * target),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_ylim(84, 95.5)
    ax.set_xlabel("wall seconds from process start (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Fashion-MNIST time to accuracy, {cpu_isa()} CPU (T = {T:.0f} s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe(name: str) -> str:
    from cnnlab.train import load_recipe

    r = load_recipe(name)
    return (
        f"**{name}**: `{r.model}` {r.model_kwargs}, {r.epochs} epochs, batch {r.batch_size}, "
        f"{r.optim.name} lr {r.optim.lr:g} wd {r.optim.weight_decay:g}"
        f"{' nesterov' if r.optim.nesterov else ''}, {r.schedule.name}, label smoothing "
        f"{r.label_smoothing:g}, augment `{r.data.augment or 'none'}`, tta `{r.tta or 'none'}`, "
        f"eval every {r.eval_every}, amp {r.amp}"
    )


def summarise(
    results: list[dict],
    ablation: list[dict],
    args,
    command: str,
    ablation_base: list[dict] | None = None,
) -> str:
    """The BENCHMARKS.md section. ``ablation_base``: the recipe's own runs from the run the
    ablation came from, when it was not this one (Δ wall s only compares within one run)."""
    course = [r for r in results if r["name"] == "course"]
    T = statistics.mean(r["wall_s"] for r in course)
    names = list(dict.fromkeys(r["name"] for r in results))
    isa = cpu_isa()
    lines = [
        f"## Time to accuracy on Fashion-MNIST, {isa} CPU (issue 19, `benchmarks/time_to_accuracy.py`)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}; vector extensions: **{isa}**",
        "",
        "Every run is a fresh process, timed from its spawn (interpreter, imports, data, set-up, "
        "training and per-epoch evaluation on the 10,000 official test images) to the moment "
        "the epoch's test accuracy is printed. Seeds "
        f"{sorted({r['seed'] for r in results})}, interleaved; cells are the mean over seeds with "
        "(min–max); a dash with (k/n) means only k of n seeds reached it. "
        f"**T = {T:.0f} s**, the course's mean wall time for its {args.course_epochs} epochs.",
        "",
        "| run | seeds | to 90.5 % | to 93.0 % | to 94.0 % | to 94.5 % | best ≤ 10 min | final acc "
        "| train s | process s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        rs = [r for r in results if r["name"] == name]
        cells = [mean_spread([first_time(r, t) for r in rs]) for t in TARGETS]
        best = mean_spread(
            [best_within(r, 600) and 100 * best_within(r, 600) for r in rs], "{:.2f}"
        )
        final = mean_spread([100 * r["epochs"][-1]["test_acc"] for r in rs], "{:.2f}")
        train = mean_spread([r["epochs"][-1]["train_s"] for r in rs])
        wall = mean_spread([r["wall_s"] for r in rs])
        lines.append(
            f"| {name} | {len(rs)} | {' | '.join(cells)} | {best} % | {final} % | {train} | {wall} |"
        )
    lines += [
        "",
        "**Goals** (the best recipe for each; times from process start, mean over seeds):",
        "",
    ]
    lines += [
        "| goal | limit | best run | its time | ratio to T | holds |",
        "|---|---:|---|---:|---:|---|",
    ]
    for target, frac in GOALS.items():
        best_name, best_t = None, None
        for name in names:
            if name == "course":
                continue
            ts = [first_time(r, target) for r in results if r["name"] == name]
            if ts and all(t is not None for t in ts):
                t = statistics.mean(ts)
                if best_t is None or t < best_t:
                    best_name, best_t = name, t
        if best_t is None:
            top = max(
                ((100 * e["test_acc"], r["name"]) for r in results if r["name"] != "course"
                 for e in r["epochs"] if e["wall_s"] <= frac * T),
                default=(0.0, "nothing"),
            )  # fmt: skip
            lines.append(
                f"| {100 * target:.1f} % within {frac:g}T | {frac * T:.0f} s | — (best by then: "
                f"{top[1]} {top[0]:.2f} %) | — | — | **no** |"
            )
        else:
            lines.append(
                f"| {100 * target:.1f} % within {frac:g}T | {frac * T:.0f} s | {best_name} | "
                f"{best_t:.0f} s | {best_t / T:.2f}T | {'**yes**' if best_t <= frac * T else '**no**'} |"
            )
    best10 = max(
        ((100 * e["test_acc"], r["name"]) for r in results if r["name"] != "course"
         for e in r["epochs"] if e["wall_s"] <= 600), default=(0.0, "—"),
    )  # fmt: skip
    lines += [
        "",
        f"Best accuracy any recipe reached within 10 minutes of wall time: **{best10[0]:.2f} %** ({best10[1]}).",
    ]
    lines += ["", f"![accuracy vs wall seconds](benchmarks/results/{args.plot_name})", ""]
    lines.append("Per-epoch (wall s → accuracy %), first seed of each run:")
    lines.append("")
    for name in names:
        r = next(x for x in results if x["name"] == name)
        pts = ", ".join(f"{e['wall_s']:.0f}→{100 * e['test_acc']:.2f}" for e in r["epochs"])
        lines.append(f"- {name}: {pts}")
    if ablation:
        base = ablation_base or [r for r in results if r["name"] == args.ablation_recipe]
        seeds = {r["seed"] for r in ablation}  # compare like with like: the ablation's own seeds
        base = [r for r in base if r["seed"] in seeds] or base
        b_acc = statistics.mean(100 * r["epochs"][-1]["test_acc"] for r in base)
        b_wall = statistics.mean(r["epochs"][-1]["wall_s"] for r in base)
        where = "in the run the ablation came from" if ablation_base else "above"
        lines += [
            "",
            f"**Ablation** of {args.ablation_recipe}, seeds {sorted(seeds)} (the recipe itself "
            f"{where}, same seeds: {b_acc:.2f} % at {b_wall:.0f} s): the same recipe and epochs "
            "with one technique taken away or added. Δ acc > 0: the technique helps; Δ wall s > 0: "
            "it costs time. One seed's spread is about ±0.2 points.",
            "",
            "| variant | final acc | the technique's Δ acc (points) | wall s to last epoch "
            "| the technique's Δ wall s |",
            "|---|---:|---:|---:|---:|",
        ]
        for label in dict.fromkeys(r["name"] for r in ablation):
            rs = [r for r in ablation if r["name"] == label]
            acc = statistics.mean(100 * r["epochs"][-1]["test_acc"] for r in rs)
            wall = statistics.mean(r["epochs"][-1]["wall_s"] for r in rs)
            sign = 1 if label.startswith("without") else -1  # Δ of having the technique
            lines.append(
                f"| {label} | {acc:.2f} % | {sign * (b_acc - acc):+.2f} | {wall:.0f} "
                f"| {sign * (b_wall - wall):+.0f} |"
            )
    lines += ["", "Recipes: " + "; ".join(describe(n) for n in names if n != "course") + "."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--long-seeds", type=int, default=1, help="seeds for fmnist-long (10 min each)")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--course-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--ablation-recipe", default="fmnist-fast")
    ap.add_argument("--ablation-seeds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1 epoch of each recipe, 1 seed, no write")
    ap.add_argument("--from-json", help="rebuild the section from a saved results JSON")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child-course", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_course:
        course_child(args.seed, args.course_epochs, args.threads, args.data_dir)
        return
    isa_key = cpu_isa().lower().replace("+", "-").replace(" ", "-")
    args.plot_name = f"time_to_accuracy_{isa_key}.png"
    out_json = HERE / "results" / f"time_to_accuracy_{isa_key}.json"
    command = "python benchmarks/time_to_accuracy.py " + " ".join(sys.argv[1:])
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        results, ablation, command = saved["results"], saved["ablation"], saved["command"]
        ablation_base = saved.get("ablation_base")
    else:
        if args.quick:
            args.seeds, args.course_epochs, args.long_seeds = args.seeds[:1], 1, 1
        results, ablation, ablation_base = [], [], None
        with tempfile.TemporaryDirectory() as tmp:
            for i, seed in enumerate(args.seeds):
                for name in ["course", *args.recipes]:
                    if name == "fmnist-long" and i >= args.long_seeds:
                        continue
                    results.append(run_variant(name, seed, args, tmp))
            if args.ablation:
                for seed in args.seeds[: args.ablation_seeds]:
                    for label, over in ABLATIONS.items():
                        r = run_variant(args.ablation_recipe, seed, args, tmp, over)
                        ablation.append({**r, "name": label})
        if args.quick or args.no_write:
            print(summarise(results, ablation, args, command))
            return
        out_json.parent.mkdir(exist_ok=True)
        out_json.write_text(
            json.dumps({"results": results, "ablation": ablation, "command": command})
        )
    T = statistics.mean(r["wall_s"] for r in results if r["name"] == "course")
    plot(results, HERE / "results" / args.plot_name, T)
    md = summarise(results, ablation, args, command, ablation_base)
    print(md)
    write_section(f"time_to_accuracy_{isa_key}", md)


if __name__ == "__main__":
    main()
