"""Shared plumbing of the course-companion examples (not part of cnnlab's API).

Every example prints three kinds of lines:

* ``CHECK <key> = <json value>``: a figure cnnlab computes; ``tests/examples`` parses these lines and
  compares them with the expected values, so a regression in cnnlab fails a test.
* ``COURSE <key>: course says X, cnnlab gives Y [OK|WRONG IN COURSE|DIFFERS]``: the course's figure
  next to cnnlab's, with a plain verdict.
* ``NOTE ...``: a step that could not run here (no CIFAR-10, no pretrained weights, a cnnlab feature
  still missing) and why — never a silent skip.

Only the standard library is imported here, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options every example shares: ``--fast``, ``--out`` and ``--cifar-dir``."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument(
        "--fast",
        action="store_true",
        help="tiny epochs and inputs (seconds, for the tests); default is the full course run",
    )
    parser.add_argument(
        "--out",
        default="examples_out",
        help="folder for pictures and run directories (default examples_out/)",
    )
    parser.add_argument(
        "--cifar-dir",
        default=None,
        help="the extracted CIFAR-10 files (binary or python version), if you have them",
    )
    args = parser.parse_args(argv)
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def section(title: str) -> None:
    """A visible heading in the output, named after the course's section."""
    print(f"\n=== {title} ===", flush=True)


def _jsonable(value: object) -> object:
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        value = value.tolist()
    if isinstance(value, tuple):
        value = list(value)
    return value


def check(key: str, value: object) -> object:
    """Print ``CHECK key = value`` (value as JSON) and return ``value`` unchanged."""
    print(f"CHECK {key} = {json.dumps(_jsonable(value))}", flush=True)
    return value


def course(key: str, course_value: object, ours: object, verdict: str | None = None) -> None:
    """Print the course's figure next to cnnlab's with a verdict.

    ``verdict`` defaults to ``OK`` when both are equal and ``DIFFERS`` otherwise; pass
    ``"WRONG IN COURSE"`` (and say why on a NOTE line) where the course is simply wrong.
    """
    a, b = _jsonable(course_value), _jsonable(ours)
    verdict = verdict or ("OK" if a == b else "DIFFERS")
    print(f"COURSE {key}: course says {a}, cnnlab gives {b} [{verdict}]", flush=True)


def note(text: str) -> None:
    """A plain-language remark: where the course is wrong, or a step that cannot run here."""
    print(f"NOTE {text}", flush=True)


def cli(*args: str, check_rc: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run ``python -m cnnlab ARGS`` (the same CLI a user types) and echo its output."""
    cmd = [sys.executable, "-m", "cnnlab", *map(str, args)]
    print("$ cnnlab " + " ".join(map(str, args)), flush=True)
    env = dict(os.environ)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print("\n".join("    " + line for line in out.splitlines()[-25:]), flush=True)
    if check_rc and proc.returncode != 0:
        raise SystemExit(
            f"cnnlab {' '.join(map(str, args))} failed with exit code {proc.returncode}"
        )
    return proc


@cache
def _help_text(*command: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab", *command, "--help"], capture_output=True, text=True
    )
    return proc.stdout if proc.returncode == 0 else ""


def has_subcommand(name: str) -> bool:
    """Whether ``cnnlab NAME`` exists (cnnlab grows while the course is followed)."""
    from cnnlab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    return name in sub.choices


def has_option(command: str, option: str) -> bool:
    """Whether ``cnnlab COMMAND`` accepts ``option`` (e.g. ``train --sizes``)."""
    return option in _help_text(command)


def missing(feature: str, needed: str) -> None:
    """Say plainly that a course step is skipped because cnnlab does not offer it yet."""
    note(f"SKIPPED {feature}: cnnlab does not provide {needed} yet")


def fashion_mnist_available() -> bool:
    """Whether the offline Fashion-MNIST files (Debian package dataset-fashion-mnist) are here."""
    return Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists()


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def read_metrics(run_dir: Path) -> dict:
    """The final metrics a run wrote into its ``config.json``."""
    return json.loads((Path(run_dir) / "config.json").read_text())["metrics"]
