"""The documentation is complete and builds.

- every public function and class of every public ``cnnlab`` module has a docstring;
- every CLI subcommand (from ``build_parser()``) has its section in the hand-written CLI tour and
  appears in the generated CLI reference;
- the API reference has a page for every public module;
- (slow) ``gen_pages.py`` + ``mkdocs build --strict`` succeed, in a copy of ``docs/``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnnlab

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_gen_pages():
    spec = importlib.util.spec_from_file_location("cnnlab_docs_gen_pages", DOCS / "gen_pages.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def public_modules() -> list[str]:
    """Every importable ``cnnlab`` module with no private (``_``) part in its dotted name."""
    names = ["cnnlab"]
    for info in pkgutil.walk_packages(cnnlab.__path__, "cnnlab."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def public_callables(module_name: str) -> list[tuple[str, object]]:
    """The module's public functions and classes: its ``__all__``, or else every name defined in
    it that does not start with ``_``."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    out = []
    for name in names:
        obj = getattr(module, name, None)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        # Re-exports are checked where they are defined (once); __all__ entries always count.
        defined_here = getattr(obj, "__module__", None) == module_name
        if defined_here or getattr(module, "__all__", None) is not None:
            out.append((f"{obj.__module__}.{obj.__qualname__}", obj))
    return out


# The subcommand protocol (``add_arguments(parser)``, ``run(args)``) of ``cnnlab.cli.*`` modules is
# documented by each module's HELP and EXAMPLE, which the generated CLI reference shows.
CLI_HOOKS = ("add_arguments", "run")


def missing_docstrings() -> list[str]:
    missing = set()
    for module_name in public_modules():
        for qualname, obj in public_callables(module_name):
            if module_name.startswith("cnnlab.cli.") and qualname.rsplit(".", 1)[-1] in CLI_HOOKS:
                continue
            if not (obj.__doc__ or "").strip():
                missing.add(qualname)
    return sorted(missing)


def test_public_modules_are_found() -> None:
    modules = public_modules()
    for expected in ("cnnlab.inspect", "cnnlab.models", "cnnlab.train", "cnnlab.cli"):
        assert expected in modules
    assert not any("._" in m for m in modules)


def test_every_public_function_has_a_docstring() -> None:
    missing = missing_docstrings()
    assert not missing, (
        f"{len(missing)} public functions/classes without a docstring:\n" + "\n".join(missing)
    )


def test_docstring_check_can_fail() -> None:
    # The check must see a function without a docstring (guards against a vacuous test).
    def undocumented() -> None:
        pass

    assert not (undocumented.__doc__ or "").strip()
    assert ("cnnlab.inspect.geometry.output_size", True) in [
        (q, bool((o.__doc__ or "").strip())) for q, o in public_callables("cnnlab.inspect.geometry")
    ]


def subcommand_names() -> list[str]:
    return sorted(_load_gen_pages().subcommands())


def test_every_subcommand_has_a_section_in_the_cli_tour() -> None:
    tour = (DOCS / "cli.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ `cnnlab ([a-z0-9-]+)`", tour, flags=re.M))
    names = subcommand_names()
    assert len(names) >= 5
    missing = [n for n in names if n not in headings]
    assert not missing, f"docs/cli.md has no section for: {missing}"


def test_generated_cli_reference_lists_every_subcommand() -> None:
    reference = _load_gen_pages().cli_reference()
    for name in subcommand_names():
        assert f"## `cnnlab {name}`" in reference
        assert "example:" in reference


def test_api_reference_covers_every_public_module() -> None:
    gen = _load_gen_pages()
    modules = gen.api_modules()
    for expected in (
        "cnnlab",
        "cnnlab.inspect",
        "cnnlab.inspect.model_table",
        "cnnlab.train.schedules",
    ):
        assert expected in modules
    assert not any(m.startswith("cnnlab.cli.") for m in modules)  # in the CLI reference instead
    index = gen.api_index(modules)
    missing = [m for m in modules if f"]({m}.md)" not in index]
    assert not missing, f"API index lacks: {missing}"


def test_every_example_has_a_chapter_page() -> None:
    for script in sorted((ROOT / "examples").glob("ch*.py")):
        page = DOCS / "course" / f"{script.name[:5]}.md"
        assert page.exists(), page
        assert script.name in (DOCS / "course" / "index.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("generated", "__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    gen = subprocess.run(
        [sys.executable, str(DOCS / "gen_pages.py"), "--no-macs", "--out", str(docs / "generated")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert gen.returncode == 0, gen.stderr
    mkdocs = Path(sys.executable).with_name("mkdocs")
    build = subprocess.run(
        [
            str(mkdocs),
            "build",
            "--strict",
            "-f",
            str(tmp_path / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-6000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "generated" / "models.html").exists()
    api = (tmp_path / "site" / "generated" / "api" / "cnnlab.inspect.html").read_text(
        encoding="utf-8"
    )
    assert "output_size" in api  # mkdocstrings rendered the docstrings
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in html  # builds and views offline
