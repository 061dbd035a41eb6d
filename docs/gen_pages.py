"""Generate the documentation pages that must never drift from the code.

Writes into ``docs/generated/`` (rebuilt on every ``make docs``; nothing there is edited by hand):

* ``cli-reference.md`` — every subcommand's help, options and example, from ``cnnlab.cli.build_parser()``;
* ``models.md`` — the model table, from the registry (``cnnlab.inspect.model_table.model_table``);
* ``benchmarks.md`` — a copy of ``BENCHMARKS.md``;
* ``api/<module>.md`` — one mkdocstrings page per public module, found by walking the package, so a
  new module is documented as soon as it exists (``api/index.md`` links them, grouped by package).

Usage: ``python docs/gen_pages.py [--no-macs]`` (``--no-macs`` skips counting MACs, for quick builds).
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
OUT = DOCS / "generated"

# Package summaries for the API index; every public module of each package gets its own page.
PACKAGES: dict[str, str] = {
    "cnnlab": "the top-level API (`get_model`, `list_models`, `load`) and user errors",
    "cnnlab.models": "the model zoo: registry, families, model information, local pretrained weights",
    "cnnlab.layers": "reusable building blocks shared by several model families",
    "cnnlab.inspect": "the arithmetic of CNNs: convolution by hand, sizes, parameters, receptive fields, MACs, pictures",
    "cnnlab.data": "datasets, decoding, splits, batch loading and batch augmentation",
    "cnnlab.run": "the run directory: files, config.json schema, checkpoints, rebuilding a model or its data",
    "cnnlab.runtime": "shared helpers: device, seeds, threads, batch resizing, model outputs",
    "cnnlab.tasks": "what the engine trains: the Task protocol and the classification, detection and segmentation tasks",
    "cnnlab.train": "configs, the engine, optimizers, schedules, transfer learning, run-directory callbacks",
    "cnnlab.evaluate": "metrics, plots, TTA, ensembles, calibration, explanations, the report",
    "cnnlab.deploy": "the predictor, export, quantisation, the HTTP service, benchmarks",
    "cnnlab.cli": "the command line (each subcommand is in the CLI reference)",
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public accessor for sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(sorted(action.choices.items()))
    return {}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every ``cnnlab`` subcommand and its parser, as the CLI itself builds them."""
    from cnnlab.cli import build_parser

    return _subparsers(build_parser())


def cli_reference() -> str:
    """Markdown for every subcommand: its one-line help, full ``--help`` text and nested commands."""
    lines = [
        "# CLI reference",
        "",
        "Generated from `cnnlab.cli.build_parser()` by `docs/gen_pages.py`; every subcommand is here.",
        "See the [CLI tour](../cli.md) for what each one is for.",
        "",
    ]
    for name, sub in subcommands().items():
        lines += [f"## `cnnlab {name}`", "", sub.description or "", "", "```text"]
        lines += [sub.format_help().rstrip(), "```", ""]
        for nested_name, nested in _subparsers(sub).items():
            lines += [f"### `cnnlab {name} {nested_name}`", "", "```text"]
            lines += [nested.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def models_page(macs: bool = True) -> str:
    """The model table, generated from the registry."""
    from cnnlab.models import list_models
    from cnnlab.inspect.model_table import model_table

    return "\n".join(
        [
            "# Model zoo",
            "",
            "Generated from the registry (`cnnlab.inspect.model_table.model_table(list_models(), "
            'fmt="markdown")`). Parameters are for the default number of classes; MACs are '
            "multiply-accumulates of one forward pass at the model's default input size "
            "(`-` where they are not counted). `cnnlab models NAME` shows one model in detail.",
            "",
            model_table(list_models(), macs=macs, fmt="markdown"),
            "",
        ]
    )


def benchmarks_page() -> str:
    """``BENCHMARKS.md`` as a docs page (a note if it does not exist yet)."""
    src = ROOT / "BENCHMARKS.md"
    if not src.exists():
        return (
            "# Benchmarks\n\nNo benchmark has been recorded yet (`benchmarks/*.py` write them).\n"
        )
    text = src.read_text(encoding="utf-8")
    # Links relative to the repository root (benchmarks/x.py) do not exist inside the site, and
    # mkdocs --strict rejects them: show their target as code instead.
    return re.sub(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)", r"\1 (`\2`)", text)


def api_page(module: str) -> str:
    """An mkdocstrings page for one module."""
    return f"# `{module}`\n\n::: {module}\n"


def api_modules() -> list[str]:
    """Every public ``cnnlab`` module (no ``_`` part in its name) that imports, sorted.

    Subcommand modules (``cnnlab.cli.train`` …) are left out: the CLI reference documents them.
    A module that fails to import is reported and left out rather than breaking the build.
    """
    import pkgutil

    import cnnlab

    names = ["cnnlab"] + [
        info.name
        for info in pkgutil.walk_packages(cnnlab.__path__, "cnnlab.")
        if not any(part.startswith("_") for part in info.name.split("."))
        and not (info.name.startswith("cnnlab.cli.") and not info.ispkg)
    ]
    found = []
    for module in sorted(names):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"gen_pages: skipping {module}: {exc}", file=sys.stderr)
            continue
        found.append(module)
    return found


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in PACKAGES else "cnnlab"


def api_index(modules: list[str]) -> str:
    """The API landing page: the modules grouped by package, each linking to its page."""
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings with mkdocstrings; one page per module.",
        "",
    ]
    for package, summary in PACKAGES.items():
        members = [m for m in modules if _package_of(m) == package]
        if not members:
            continue
        lines += [f"## `{package}`", "", summary[0].upper() + summary[1:] + ".", ""]
        lines += [f"- [`{m}`]({m}.md)" for m in members] + [""]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-macs", action="store_true", help="skip MAC counts in the model table")
    parser.add_argument(
        "--out", type=Path, default=OUT, help="output folder (default docs/generated)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if (out / "api").exists():
        shutil.rmtree(out / "api")  # modules removed from the list must not linger
    write(out / "cli-reference.md", cli_reference())
    write(out / "models.md", models_page(macs=not args.no_macs))
    write(out / "benchmarks.md", benchmarks_page())
    modules = api_modules()
    write(out / "api" / "index.md", api_index(modules))
    for module in modules:
        write(out / "api" / f"{module}.md", api_page(module))
    print(f"gen_pages: wrote {out} ({len(modules)} API pages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
