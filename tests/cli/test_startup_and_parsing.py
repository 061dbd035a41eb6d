"""Start-up and parsing papercuts (issue 20): arithmetic without torch, no argparse abbreviations,
one-line errors that name what the user typed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cnnlab.cli import build_parser, main

# Each runs in a fresh interpreter so an earlier test's imports cannot hide an eager torch import.
PROBE = """
import sys
from cnnlab.cli import main
try:
    rc = main({argv!r})
except SystemExit as exc:  # --help exits
    rc = exc.code
print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')
sys.exit(rc)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["arith", "size", "28", "--kernel", "3", "--stride", "2", "--padding", "1"],
        ["arith", "params", "conv", "--c-in", "3", "--c-out", "8"],
        ["arith", "compare"],
        ["arith", "conv", "--at", "1,1"],
        ["rf", "--layers", "3,3,2/2,3,3,2/2"],
        ["--help"],
        ["train", "--help"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_arithmetic_and_help_do_not_import_torch(argv):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO-TORCH", done.stdout


def test_inspect_package_names_load_lazily_and_completely():
    import cnnlab.inspect as ins

    for name in ins.__all__:  # every advertised name resolves to its module's object
        assert getattr(ins, name) is not None
    assert "receptive_field_layers" in dir(ins)
    with pytest.raises(AttributeError):
        ins.no_such_name  # noqa: B018


def test_rf_layers_output_unchanged(capsys):
    assert main(["rf", "--layers", "3,3,2/2,3,3,2/2"]) == 0
    assert "receptive field: 16x16" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epoch", "3"],  # used to be taken as --epochs
        ["eval", "--run", "x", "--calib"],  # used to be --calibrate
        ["lr-find", "--step", "3"],  # used to be --steps
    ],
)
def test_abbreviated_options_are_not_accepted(argv, capsys):
    try:  # refused while parsing (SystemExit) or as an unknown config key (train, lr-find)
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    assert "unknown config key" in err or "unrecognized arguments" in err or "required" in err


def test_every_parser_refuses_abbreviations():
    import argparse

    stack, seen = [build_parser()], 0
    while stack:
        p = stack.pop()
        seen += 1
        assert p.allow_abbrev is False, p.prog
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += list(action.choices.values())
    assert seen > 15  # the top level, every subcommand and the arith sub-subcommands


def test_glob_matching_nothing_names_the_pattern(digits_run, tmp_path, capsys):
    pattern = str(tmp_path / "*.jpg")
    rc = main(["predict", "--run", str(digits_run), pattern])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert pattern in err[0] and "no image files match" in err[0]


def test_lr_find_names_the_flag(capsys):
    rc = main(["lr-find", "--steps", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "--steps must be at least 5" in err and "num_steps" not in err
