"""A chapter launched the Colab way or the Binder way runs top to bottom.

The static checks always run: every module a chapter imports comes with ``gmbook[notebook]``
(what the hidden setup cell installs on Colab), and the setup cell notices each one that is
missing. The simulations (``pytest tests/launch --launch``, see ``launchsim.py``) build
fresh virtual environments and execute a chapter's paired ``.ipynb`` in them:

* Colab: only what Colab preinstalls, then the chapter's own setup cell installs the rest
  from this checkout (``GMBOOK_SOURCE``); a setup cell that forgets myst-nb fails.
* Binder: ``.binder/requirements.txt`` alone (torch from the local CPU wheel).
"""

from __future__ import annotations

import ast
import os
import re
import sys
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book"))
import launchsim  # noqa: E402
from bookutils import ROOT, chapter, chapter_ids  # noqa: E402

CHAPTERS = chapter_ids()
EXTRA = "notebook"


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "code" / "pyproject.toml").read_text())["project"]


def _dist_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")


@lru_cache(maxsize=None)
def _provided_modules(extra: bool) -> frozenset[str]:
    """Top-level modules installed with ``gmbook`` (``extra=False``) or ``gmbook[notebook]``:
    gmbook, its dependencies (and the extra's), and theirs, as installed here."""
    project = _pyproject()
    todo = [_dist_name(r) for r in project["dependencies"]]
    if extra:
        todo += [_dist_name(r) for r in project["optional-dependencies"][EXTRA]]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_dist_name(r) for r in requires if "extra ==" not in r]
    modules = {"gmbook"}
    for module, dists in metadata.packages_distributions().items():
        if any(d.lower().replace("_", "-") in seen for d in dists):
            modules.add(module)
    return frozenset(modules)


def _python(source: str) -> str:
    """A code cell as plain Python: IPython magics become ``pass``."""
    return re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.M)


def _imported(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(_python(source))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _setup_try_imports(source: str) -> set[str]:
    """Modules imported in the ``try:`` body whose ``except ImportError`` installs."""
    for node in ast.walk(ast.parse(_python(source))):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id == "ImportError"
                for h in node.handlers):
            body = ast.Module(body=node.body, type_ignores=[])
            if "gmbook" in _imported(ast.unparse(body)):
                return _imported(ast.unparse(body))
    return set()


@pytest.mark.parametrize("doc", CHAPTERS)
def test_chapter_imports_come_with_the_setup_cell(doc):
    """What a chapter imports is the standard library or comes with ``gmbook[notebook]``,
    and its setup cell installs ``gmbook[notebook]`` from ``GMBOOK_SOURCE`` (default: the
    canonical URL) as soon as one of those modules is missing."""
    cells = chapter(doc).code_cells
    setup, rest = cells[0].source, cells[1:]
    imported = set().union(*(_imported(c.source) for c in rest))
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    unprovided = sorted(third_party - _provided_modules(extra=True))
    assert not unprovided, (
        f"{doc} imports {unprovided}, which gmbook[{EXTRA}] does not install: a fresh Colab "
        f"user gets ModuleNotFoundError. Add it to the '{EXTRA}' extra (code/pyproject.toml).")
    from_extra = third_party - _provided_modules(extra=False)
    unchecked = sorted(from_extra - _setup_try_imports(setup))
    assert not unchecked, (
        f"{doc}: the setup cell's try block does not import {unchecked} (from the extra), "
        f"so a kernel that has gmbook but not these skips the install")
    assert f'"gmbook[{EXTRA}] @ {{source}}"' in setup and '"GMBOOK_SOURCE"' in setup, (
        f"{doc}: the setup cell must pip install \"gmbook[{EXTRA}] @ {{source}}\" with "
        f"source from the GMBOOK_SOURCE environment variable")


def test_notebook_extra_provides_glue():
    """The extra exists and brings myst-nb (``from myst_nb import glue``)."""
    extra = _pyproject().get("optional-dependencies", {}).get(EXTRA, [])
    assert "myst-nb" in {_dist_name(r) for r in extra}, f"gmbook[{EXTRA}] lacks myst-nb"


# --------------------------------------------------------------------------- simulations


@pytest.fixture(scope="session")
def launch(request):
    if not request.config.getoption("--launch", default=False):
        pytest.skip("launch simulation: run `pytest tests/launch --launch` (fresh venvs, "
                    "a few minutes)")


@pytest.fixture(scope="session")
def launch_chapter(request, launch) -> str:
    doc = (request.config.getoption("--launch-chapter", default=None)
           or os.environ.get("GMBOOK_LAUNCH_CHAPTER") or launchsim.DEFAULT_CHAPTER)
    path = ROOT / doc
    assert path.with_suffix(".md").is_file(), f"--launch-chapter={doc}: no such chapter"
    return path.relative_to(ROOT).with_suffix(".md").as_posix()


@pytest.fixture(scope="session")
def colab_base(launch, tmp_path_factory) -> launchsim.Env:
    start = time.perf_counter()
    env = launchsim.colab_env(tmp_path_factory.mktemp("colab-base"))
    print(f"\nColab-like environment built in {time.perf_counter() - start:.0f} s")
    return env


@pytest.fixture(scope="session")
def source(launch, tmp_path_factory) -> str:
    return launchsim.local_source(tmp_path_factory.mktemp("source"))


def test_colab_launch_runs_top_to_bottom(colab_base, source, launch_chapter, tmp_path):
    """Colab: the chapter's notebook, in an environment with only what Colab preinstalls,
    installs what it needs in its setup cell and runs every cell without an error."""
    env = colab_base.copy(tmp_path)
    nb = launchsim.read_notebook(launch_chapter)
    seconds = launchsim.run_notebook(nb, env, name=launch_chapter, GMBOOK_SOURCE=source)
    print(f"\nColab simulation: {launch_chapter} ran top to bottom in {seconds:.0f} s")
    assert env.can_import("gmbook.claims") and env.can_import("myst_nb")


def _broken_setup(nb):
    """The notebook's first two code cells, the setup cell installing gmbook alone (as
    before myst-nb was installed with it)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = code[0]
    assert "gmbook[notebook]" in setup.source and "import myst_nb" in setup.source
    setup.source = (setup.source.replace("gmbook[notebook]", "gmbook")
                    .replace("    import myst_nb\n", ""))
    nb.cells = code[:2]
    return nb


def test_colab_launch_catches_a_setup_cell_without_myst_nb(colab_base, source, launch_chapter,
                                                           tmp_path):
    """The simulation fails, at the import of ``glue``, when the setup cell installs
    gmbook without myst-nb: the bug that every chapter had on Colab."""
    env = colab_base.copy(tmp_path)
    nb = _broken_setup(launchsim.read_notebook(launch_chapter))
    with pytest.raises(launchsim.LaunchError, match=r"No module named 'myst_nb'"):
        launchsim.run_notebook(nb, env, name="broken-setup", GMBOOK_SOURCE=source)
    assert env.can_import("gmbook"), "the broken setup cell should still install gmbook"


def test_binder_launch_runs_top_to_bottom(launch_chapter, tmp_path):
    """Binder: an environment built from ``.binder/requirements.txt`` alone runs the
    chapter's notebook; the setup cell installs nothing (GMBOOK_SOURCE unset, no GitHub)."""
    start = time.perf_counter()
    env = launchsim.binder_env(tmp_path)
    built = time.perf_counter() - start
    nb = launchsim.read_notebook(launch_chapter)
    seconds = launchsim.run_notebook(nb, env, name=launch_chapter)
    print(f"\nBinder simulation: environment in {built:.0f} s; {launch_chapter} ran top to "
          f"bottom in {seconds:.0f} s")
    setup = next(c for c in nb.cells if c.cell_type == "code")
    printed = "".join(o.get("text", "") for o in setup.outputs)
    assert "pip" not in printed.lower() and not setup.outputs, (
        f"the setup cell printed something on Binder (did it install?): {printed[:500]}")
