"""Start-up: wall time of short CLI commands, each in a fresh process (what a user waits for).

The goals of issue 20 on a 2-core AVX2 machine: pure arithmetic (``arith``, ``rf --layers``)
at most 0.5 s and without importing torch, ``--help`` of any command at most 1 s, ``predict`` on one
image at most 2.5 s. Every command runs ``--repeat`` times interleaved (A, B, C, A, B, C…) so a
busy CPU slows them alike; the table shows the best and the median.

    .venv/bin/python benchmarks/startup.py [--run runs/NAME] [--repeat 5] [--before-src DIR]

Without ``--run`` a one-epoch SimpleCNN on the embedded digits is trained first (not timed).
``--before-src`` is the ``src`` folder of an earlier tree (``git archive COMMIT src | tar -x``):
its commands are timed interleaved with this tree's, so both columns see the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
# (label, argv after `cnnlab`, goal in seconds)
COMMANDS = [
    (
        "arith size",
        ["arith", "size", "28", "--kernel", "3", "--stride", "2", "--padding", "1"],
        0.5,
    ),
    ("arith compare", ["arith", "compare"], 0.5),
    ("rf --layers", ["rf", "--layers", "3,3,2/2,3,3,2/2"], 0.5),
    ("--help", ["--help"], 1.0),
    ("train --help", ["train", "--help"], 1.0),
    ("predict --help", ["predict", "--help"], 1.0),
    ("rf vgg11 (builds the model)", ["rf", "vgg11", "--input", "3x224x224"], None),
    ("predict one image", ["predict", "--run", "{run}", "{image}"], 2.5),
]
# the floor under every command that needs PyTorch: `python -c "import torch"`
BASELINE = "import torch (baseline)"
TORCH_PROBE = (
    "import sys\nfrom cnnlab.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n"
    "    pass\nprint('TORCH', 'torch' in sys.modules, file=sys.stderr)"
)


def _time(argv: list[str] | None, src: str | None = None) -> tuple[float, bool]:
    """Seconds for ``python -m cnnlab ARGV`` (None: ``import torch`` alone) and whether the
    process imported torch."""
    code = (
        "import sys, torch; print('TORCH True', file=sys.stderr)"
        if argv is None
        else TORCH_PROBE.format(argv=argv)
    )
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    elapsed = time.perf_counter() - t0
    if done.returncode not in (0,) and "TORCH" not in done.stderr:
        raise SystemExit(f"`cnnlab {' '.join(argv)}` failed:\n{done.stderr[-2000:]}")
    return elapsed, "TORCH True" in done.stderr


def _make_run(tmp: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--model", "simplecnn", "--data", "digits",
         "--epochs", "1", "--out-dir", str(tmp), "--name", "startup", "--no-progress",
         "--report", "false"],
        check=True, capture_output=True,
    )  # fmt: skip
    return tmp / "startup"


def _image(tmp: Path) -> Path:
    from PIL import Image

    path = tmp / "digit.png"
    Image.new("L", (28, 28), 0).save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--run", help="a run directory for `predict` (default: train one)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before-src", help="src/ of the earlier tree, timed interleaved")
    ap.add_argument("--before-label", default="before", help="what the earlier tree is")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run = Path(args.run) if args.run else _make_run(tmp)
        image = _image(tmp)
        cmds = [
            (label, [a.format(run=run, image=image) for a in argv], goal)
            for label, argv, goal in COMMANDS
        ]
        cmds.append((BASELINE, None, None))
        sides = {"after": None, **({"before": args.before_src} if args.before_src else {})}
        times = {side: {label: [] for label, _, _ in cmds} for side in sides}
        loaded: dict[str, dict[str, bool]] = {side: {} for side in sides}
        for _ in range(args.repeat):
            for label, argv, _ in cmds:
                for side, src in sides.items():  # interleaved: the same load for both trees
                    t, torch_in = _time(argv, src)
                    times[side][label].append(t)
                    loaded[side][label] = torch_in
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for side in sides:
        saved[side] = {
            label: {
                "best": min(t),
                "median": statistics.median(t),
                "torch": loaded[side][label],
            }
            for label, t in times[side].items()
        }
        saved[side]["machine"] = machine_line() + (
            f"; {args.before_label}" if side == "before" else ""
        )
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    before, after = saved.get("before", {}), saved.get("after", {})
    rows = [
        "| command | goal | before: best / median (s), torch | after: best / median (s), torch |",
        "|---|---:|---:|---:|",
    ]

    def cell(d: dict, label: str) -> str:
        if label not in d:
            return "–"
        r = d[label]
        return f"{r['best']:.2f} / {r['median']:.2f}, {'torch' if r['torch'] else 'no torch'}"

    for label, _, goal in [*COMMANDS, (BASELINE, None, None)]:
        g = f"≤ {goal:g} s" if goal else "–"
        rows.append(f"| `{label}` | {g} | {cell(before, label)} | {cell(after, label)} |")
    md = "\n".join(
        [
            "## Start-up of short commands (issue 20)",
            "",
            "Reproduce: `git archive e773da1 src | tar -x -C /tmp/before && python "
            "benchmarks/startup.py --before-src /tmp/before/src` (each command a fresh process, "
            f"before and after interleaved, {args.repeat} rounds; best and median wall time).  ",
            f"Before: {before.get('machine', '–')}  ",
            f"After: {after.get('machine', '–')}",
            "",
            *rows,
            "",
            "'torch' says whether the process imported PyTorch. Pure arithmetic imports only the "
            "standard library and cnnlab's torch-free `cnnlab.inspect` modules (the package's "
            "attributes load on first use); `predict` imports the predictor, not the trainer. "
            "The last row is the floor of any command that needs PyTorch: on a loaded machine "
            "`import torch` alone exceeds the 2.5 s goal, so compare `predict` with it.",
        ]
    )
    print(md)
    if not args.no_write:
        write_section("startup", md)


if __name__ == "__main__":
    main()
