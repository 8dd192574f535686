"""No stale outputs: a change to the package re-executes notebooks; no change, no execution.

jupyter-cache keys a notebook on its code cells only, so by itself it would keep serving
outputs computed with an old version of ``gmbook``. ``book/_ext/gmbook_sphinx.py`` pins the
execution cache to a fingerprint of the watched files. The end-to-end test below builds a
throwaway book three times with the real ``jupyter-book`` and the real extension:

1. first build: the page executes and shows ``VALUE 1``;
2. rebuild with nothing changed: nothing executes, and it is quick;
3. ``pkg/value.py`` edited (the page untouched): the page re-executes and shows ``VALUE 2``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

EXT_DIR = Path(__file__).resolve().parents[2] / "book" / "_ext"
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"
EXECUTED = re.compile(r"Executing notebook", re.I)


@pytest.fixture(scope="module")
def gmbook_sphinx():
    """The extension module, imported from ``book/_ext`` (it is not an installed package)."""
    spec = importlib.util.spec_from_file_location("gmbook_sphinx", EXT_DIR / "gmbook_sphinx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- unit tests


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


FILES = {"pkg/__init__.py": "", "pkg/value.py": "VALUE = 1\n", "pkg/sub/deep.py": "X = 0\n",
         "requirements.txt": "torch>=2,<3\n"}


def test_fingerprint_is_stable_and_sees_content(gmbook_sphinx, tmp_path):
    root = _package(tmp_path, FILES)
    watch = [root / "pkg", root / "requirements.txt"]
    first = gmbook_sphinx.fingerprint(watch, root)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert gmbook_sphinx.fingerprint(watch, root) == first, "not stable across calls"
    (root / "pkg/sub/deep.py").write_text("X = 1\n")
    changed = gmbook_sphinx.fingerprint(watch, root)
    assert changed != first, "a change of content deep in the package was not seen"
    (root / "requirements.txt").write_text("torch>=2,<4\n")
    assert gmbook_sphinx.fingerprint(watch, root) != changed, "requirements.txt not watched"


def test_fingerprint_sees_renames_and_new_files(gmbook_sphinx, tmp_path):
    root = _package(tmp_path, FILES)
    watch = [root / "pkg"]
    first = gmbook_sphinx.fingerprint(watch, root)
    (root / "pkg/new.py").write_text("")
    second = gmbook_sphinx.fingerprint(watch, root)
    assert second != first, "a new (even empty) module was not seen"
    (root / "pkg/new.py").rename(root / "pkg/renamed.py")
    assert gmbook_sphinx.fingerprint(watch, root) != second, "a renamed module was not seen"


def test_fingerprint_ignores_bytecode_and_caches(gmbook_sphinx, tmp_path):
    root = _package(tmp_path, FILES)
    watch = [root / "pkg"]
    first = gmbook_sphinx.fingerprint(watch, root)
    (root / "pkg/__pycache__").mkdir()
    (root / "pkg/__pycache__/value.cpython-311.pyc").write_bytes(b"\x00\x01")
    (root / "pkg/stray.pyc").write_bytes(b"\x02")
    (root / "pkg/.ipynb_checkpoints").mkdir()
    (root / "pkg/.ipynb_checkpoints/value-checkpoint.py").write_text("VALUE = 0\n")
    assert gmbook_sphinx.fingerprint(watch, root) == first


def test_fingerprint_is_independent_of_location(gmbook_sphinx, tmp_path):
    """A clone elsewhere (another user, CI) gets the same fingerprint, hence the cache."""
    a = _package(tmp_path / "clone-a", FILES)
    b = tmp_path / "somewhere" / "else" / "clone-b"
    shutil.copytree(a, b)
    fp_a = gmbook_sphinx.fingerprint([a / "pkg", a / "requirements.txt"], a)
    fp_b = gmbook_sphinx.fingerprint([b / "pkg", b / "requirements.txt"], b)
    assert fp_a == fp_b


def test_fingerprint_rejects_missing_paths(gmbook_sphinx, tmp_path):
    with pytest.raises(FileNotFoundError, match="gmbook_watch"):
        gmbook_sphinx.fingerprint([tmp_path / "nope"], tmp_path)


def test_latex_macros(gmbook_sphinx):
    out = gmbook_sphinx.latex_macros({
        "R": "\\mathbb{R}",
        "norm": ["\\left\\lVert #1 \\right\\rVert", 1],
        "pair": ["(#1, #2)", "2"],
    })
    assert out.splitlines() == [
        r"\newcommand{\R}{\mathbb{R}}",
        r"\newcommand{\norm}[1]{\left\lVert #1 \right\rVert}",
        r"\newcommand{\pair}[2]{(#1, #2)}",
    ]
    assert gmbook_sphinx.latex_macros({}) == ""


def test_latex_macros_of_the_book(gmbook_sphinx):
    """Every macro of ``_config.yml`` becomes exactly one ``\\newcommand``."""
    from bookutils import sphinx_config

    macros = sphinx_config()["mathjax3_config"]["tex"]["macros"]
    lines = gmbook_sphinx.latex_macros(macros).splitlines()
    assert len(lines) == len(macros)
    for name, line in zip(macros, lines):
        assert line.startswith(f"\\newcommand{{\\{name}}}")
        assert line.count("{") == line.count("}"), f"unbalanced braces in {line}"


# --------------------------------------------------------------------------- end to end


def _write_book(root: Path) -> None:
    pkg = root / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "value.py").write_text("VALUE = 1\n")
    (root / "_config.yml").write_text(textwrap.dedent(f"""\
        title: Stale-output test
        author: gmbook tests
        only_build_toc_files: true
        exclude_patterns: [_build, pkg, ".*", "**/.*"]
        execute:
          execute_notebooks: cache
          timeout: 120
        html:
          use_repository_button: false
        sphinx:
          local_extensions:
            gmbook_sphinx: {EXT_DIR.as_posix()}
          config:
            gmbook_watch: [pkg]
            nb_execution_raise_on_error: true
        """))
    (root / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    (root / "page.md").write_text(textwrap.dedent(f"""\
        ---
        jupytext:
          text_representation:
            extension: .md
            format_name: myst
        kernelspec:
          display_name: Python 3
          language: python
          name: python3
        ---

        # A page that imports a watched package

        ```{{code-cell}} ipython3
        import sys; sys.path.insert(0, "{pkg.as_posix()}"); import value; print("VALUE", value.VALUE)
        ```
        """))


def _build(root: Path) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([str(JUPYTER_BOOK), "build", str(root)], capture_output=True,
                          text=True, timeout=300, cwd=root)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"jupyter-book build failed:\n{log[-4000:]}"
    return log, seconds


def _page(root: Path) -> str:
    return (root / "_build" / "html" / "page.html").read_text()


def test_package_change_reexecutes_and_cache_serves_the_rest(tmp_path):
    """The guarantee behind ``make book``: outputs are never stale, and never recomputed
    needlessly."""
    assert JUPYTER_BOOK.is_file(), f"{JUPYTER_BOOK} not found"
    root = tmp_path / "book"
    _write_book(root)

    log1, t1 = _build(root)
    assert EXECUTED.search(log1), f"first build did not execute the page:\n{log1[-3000:]}"
    assert "VALUE 1" in _page(root)

    log2, t2 = _build(root)
    executed = [line for line in log2.splitlines() if EXECUTED.search(line)]
    assert not executed, f"nothing changed, yet the rebuild executed: {executed}"
    assert "VALUE 1" in _page(root)
    assert t2 < t1, f"the cached rebuild took {t2:.1f} s, the first build {t1:.1f} s"

    (root / "pkg" / "value.py").write_text("VALUE = 2\n")
    log3, _ = _build(root)
    assert EXECUTED.search(log3), (
        f"pkg/value.py changed but the page was not re-executed (stale outputs):\n"
        f"{log3[-3000:]}")
    html = _page(root)
    assert "VALUE 2" in html and "VALUE 1" not in html, "the page still shows the old output"
    caches = [p.name for p in (root / "_build" / ".jupyter_cache").iterdir() if p.is_dir()]
    assert len(caches) == 1, f"old fingerprinted caches were not pruned: {caches}"
    assert (root / "_build" / "execution-times.json").is_file()
