"""The ``cnnlab`` command line: a thin layer that parses arguments, calls the library and prints.

Every subcommand is one module in this package exposing ``NAME``, ``HELP``, ``EXAMPLE``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are discovered automatically, so adding a
subcommand means adding one file. User errors (:class:`cnnlab.errors.CnnlabError`) become a one-line
message on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from cnnlab.errors import CnnlabError


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse prints the whole usage otherwise) and
    that takes no abbreviations: with them ``--epoch 3`` silently meant ``--epochs 3``, and adding
    an option could change what an old command line means."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _subcommand_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every discovered subcommand."""
    parser = _Parser(
        prog="cnnlab",
        description="cnnlab: build, inspect, train, evaluate, export and serve CNNs.",
        epilog="Run `cnnlab COMMAND --help` for a command's options and an example.",
    )
    from cnnlab._version import __version__

    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in _subcommand_modules():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=mod.HELP,
            epilog=f"example:\n  {mod.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def parse_overrides(extra: Sequence[str]) -> dict[str, str]:
    """``["--optim.lr", "3e-4", "--epochs=3"]`` → ``{"optim.lr": "3e-4", "epochs": "3"}``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise ValueError(
                f"unexpected argument '{tok}'; config overrides look like --optim.lr 3e-4"
            )
        key, eq, val = tok[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise ValueError(f"config override --{key} needs a value, e.g. --{key} VALUE")
            val = extra[i + 1]
            i += 1
        out[key.replace("-", "_")] = val
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnlab`` console script and of ``python -m cnnlab``."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if extra:
        mod = sys.modules[args._run.__module__]
        if not getattr(mod, "ACCEPTS_OVERRIDES", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        try:
            args.overrides = parse_overrides(extra)
        except ValueError as exc:
            print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
            return 2
    try:
        return int(args._run(args) or 0)
    except CnnlabError as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
