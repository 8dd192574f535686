"""Sphinx extension that keeps the gmbook build honest.

It does seven things, each on every build (``make book`` or a bare ``jupyter-book build .``):

1. **No stale outputs.** jupyter-cache keys a notebook on its code cells only, so an edit to
   the companion package would be served from old outputs. We fingerprint the files named by
   ``gmbook_watch`` (the package and ``requirements.txt``) and point myst-nb's execution cache
   at a folder named after the fingerprint. A changed package means a new, empty cache and,
   because ``nb_execution_cache_path`` is an ``env`` config value, Sphinx re-reads every page:
   every notebook re-executes. Unchanged sources hit the cache. Old fingerprints are pruned.
2. **Static mode for kernels.** ``GMBOOK_STATIC=1`` is exported before any kernel starts, so
   ``gmbook.display`` renders a JavaScript player plus a still image instead of live widgets,
   and progress bars stay out of the built pages. ``OMP_WAIT_POLICY=PASSIVE`` keeps PyTorch's
   threads from spinning, so that a busy machine slows the build down gracefully.
3. **One set of math macros.** The MathJax macros in ``_config.yml`` become ``\\newcommand``
   lines of the LaTeX preamble; ``\\newcommand`` fails loudly if a name is already taken.
4. **Execution budget.** After the build, each executed page's run time is logged and written
   to ``_build/execution-times.json``. A page over ``gmbook_time_budget`` seconds is reported.
   The budget is the authors' gate, not the reader's: on a reader's slower or busy laptop the
   report is a notice and the build succeeds; in strict mode (``GMBOOK_STRICT_BUDGET=1``, which
   ``.ci/run`` and ``make book STRICT=1`` set) it is a warning, hence an error under ``-W``.
5. **The PDF says what the web page says.** sphinx-jupyterbook-latex raises
   ``numfig_secnum_depth`` to 2 for a book in parts, so sphinx-proof and sphinx-exercise,
   which print their numbers as text, numbered per section in the PDF ("Proposition 9.2.1")
   and per chapter on the web ("Proposition 9.1"). Their numbers are recounted at the depth
   of ``_config.yml`` (LaTeX's own counters, equations and figures, are per chapter either
   way). A proof prints as a plain paragraph ("*Proof.* ... □"), not as an admonition with
   an empty title bar, and ``book/_latex/gmbookpdf.sty`` (loaded last in the preamble)
   fixes what the default LaTeX setup gets wrong (missing glyphs, lines that cannot break).
6. **Math offline.** The HTML pages load MathJax 3 from the book's own ``_static/mathjax``,
   never from a CDN: the files come from the Python package ``django-static-mathjax``
   (installed by ``requirements.txt``; it ships MathJax's ``es5`` tree and needs no Django),
   and the subset that ``tex-chtml.js`` loads is copied into the built site
   (:data:`MATHJAX_FILES`, 6.9 MB on disk; a chapter page loads about 1.3 MB of it:
   ``tex-chtml.js``, 1.2 MB, and the few fonts it uses).
7. **One copy of each script.** Extensions that add their inline scripts again while a page
   is written (sphinx-thebe, sphinx-togglebutton) would declare ``const THEBE_JS_URL``
   twice, a JavaScript error on every page; exact duplicates are dropped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.environment import BuildEnvironment
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.fileutil import copy_asset

logger = logging.getLogger(__name__)

FINGERPRINT_CHARS = 16
_FINGERPRINT_DIR = re.compile(rf"^[0-9a-f]{{{FINGERPRINT_CHARS}}}$")
_IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
_IGNORED_SUFFIXES = {".pyc", ".pyo"}


def fingerprint(paths: list[Path], root: Path) -> str:
    """Hash the names and contents of every file under ``paths``.

    Args:
        paths: files or folders to watch.
        root: paths are hashed relative to this folder, so a clone elsewhere matches.

    Returns:
        The first ``FINGERPRINT_CHARS`` hex digits of a SHA-256 over the sorted files.
    """
    digest = hashlib.sha256()
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"gmbook_watch names {path}, which does not exist")
    for file in sorted(files):
        if _IGNORED_PARTS.intersection(file.parts) or file.suffix in _IGNORED_SUFFIXES:
            continue
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _pin_cache_to_fingerprint(app: Sphinx, config: Config) -> None:
    root = Path(app.confdir)
    watched = [root / p for p in config.gmbook_watch]
    fp = fingerprint(watched, root)
    base = Path(config.nb_execution_cache_path or "_build/.jupyter_cache")
    if not base.is_absolute():
        base = root / base
    if base.name == fp:  # already pinned (config re-initialised)
        return
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        if old.is_dir() and _FINGERPRINT_DIR.match(old.name) and old.name != fp:
            logger.info(f"gmbook: package changed, dropping cached outputs {old.name}")
            shutil.rmtree(old)
    config.nb_execution_cache_path = str(base / fp)
    logger.info(f"gmbook: sources fingerprint {fp}; execution cache {base / fp}")


def latex_macros(macros: dict[str, Any]) -> str:
    r"""Translate MathJax macro definitions into LaTeX ``\newcommand`` lines.

    Args:
        macros: ``name -> body`` or ``name -> [body, n_args]`` as in ``mathjax3_config``.

    Returns:
        The preamble lines, one ``\newcommand`` per macro.
    """
    lines = []
    for name, spec in macros.items():
        body, nargs = (spec, 0) if isinstance(spec, str) else (spec[0], int(spec[1]))
        args = f"[{nargs}]" if nargs else ""
        lines.append(f"\\newcommand{{\\{name}}}{args}{{{body}}}")
    return "\n".join(lines)


def _share_math_macros(app: Sphinx, config: Config) -> None:
    macros = (config.mathjax3_config or {}).get("tex", {}).get("macros", {})
    elements = dict(config.latex_elements or {})
    preamble = elements.get("preamble", "")
    if "gmbook math macros" not in preamble:
        preamble += "\n% gmbook math macros (from mathjax3_config)\n" + latex_macros(macros)
    elements["preamble"] = preamble
    config.latex_elements = elements


LATEX_STYLE = "book/_latex/gmbookpdf.sty"


def _latex_style(app: Sphinx, config: Config) -> None:
    """Ship ``gmbookpdf.sty`` and load it after every other preamble line (the ones
    sphinx-jupyterbook-latex appends in its own ``config-inited`` handler included)."""
    files = list(config.latex_additional_files or [])
    if LATEX_STYLE not in files:
        files.append(LATEX_STYLE)
    config.latex_additional_files = files
    elements = dict(config.latex_elements or {})
    package = Path(LATEX_STYLE).stem
    preamble = elements.get("preamble", "")
    if f"\\usepackage{{{package}}}" not in preamble:
        preamble += f"\n% gmbook's fixes of the PDF (book/_ext/gmbook_sphinx.py)\n" \
                    f"\\usepackage{{{package}}}\n"
    elements["preamble"] = preamble
    config.latex_elements = elements


def _remember_numfig_depth(app: Sphinx, config: Config) -> None:
    # sphinx-jupyterbook-latex overwrites numfig_secnum_depth at builder-inited.
    app.gmbook_numfig_depth = int(config.numfig_secnum_depth)  # type: ignore[attr-defined]


def renumber(fignumbers: dict[str, dict[str, dict[str, tuple[int, ...]]]],
             depth: int) -> dict[str, dict[str, dict[str, tuple[int, ...]]]]:
    """Recount Sphinx's ``env.toc_fignumbers`` as if ``numfig_secnum_depth`` were ``depth``.

    Each number is ``(*section_number[:d], k)``; keeping the first ``depth`` parts of the
    section number and counting again, in document order, gives the numbers Sphinx assigns
    with ``numfig_secnum_depth = depth``. Numbers already at that depth stay as they are.

    Args:
        fignumbers: ``docname -> figtype -> id -> number``, in document order.
        depth: the section depth to number within (``0``: one count for the whole book).

    Returns:
        A new mapping of the same shape.
    """
    counters: dict[tuple[str, tuple[int, ...]], int] = {}
    out: dict[str, dict[str, dict[str, tuple[int, ...]]]] = {}
    for docname, types in fignumbers.items():
        for figtype, numbers in types.items():
            for figure_id, number in numbers.items():
                prefix = tuple(number[:-1])[:depth]
                key = (figtype, prefix)
                counters[key] = counters.get(key, 0) + 1
                out.setdefault(docname, {}).setdefault(figtype, {})[figure_id] = (
                    *prefix, counters[key])
    return out


def _number_like_html(app: Sphinx, env: BuildEnvironment) -> list[str]:
    depth = getattr(app, "gmbook_numfig_depth", None)
    if depth is None or depth == env.config.numfig_secnum_depth:
        return []
    old = env.toc_fignumbers
    env.toc_fignumbers = renumber(old, depth)
    return [doc for doc in env.toc_fignumbers if env.toc_fignumbers[doc] != old.get(doc)]


class LatexProofs(SphinxPostTransform):
    """In LaTeX, a sphinx-proof ``proof`` is an admonition without a title, which the LaTeX
    writer prints as an empty coloured title bar over the proof. Print it as a plain block
    (environment ``sphinxclassgmbookproof`` of ``gmbookpdf.sty``) that starts with an
    italic *Proof.* and ends with a square."""

    default_priority = 200
    formats = ("latex",)

    def run(self, **kwargs: Any) -> None:
        try:
            from sphinx_proof.nodes import proof_node
        except ImportError:  # pragma: no cover - sphinx-proof is a book dependency
            return
        for proof in list(self.document.findall(proof_node)):
            for admonition in [c for c in proof.children if isinstance(c, nodes.admonition)]:
                block = nodes.container(classes=["gmbookproof"])
                block.extend(admonition.children)
                _italic_lead(block, "Proof.")
                admonition.replace_self(block)


class LatexExerciseReferences(SphinxPostTransform):
    """A ``{numref}`` to an exercise of *another* chapter pointed, in LaTeX, at a label
    that sphinx-exercise never writes (it labels an exercise ``exercise:<label>`` and
    rewrites only references within one page), so the PDF printed "Exercise ??" and LaTeX
    reported an undefined reference. Point it at sphinx-exercise's label, with the number
    Sphinx computed (the same as on the web page)."""

    default_priority = 25  # after references are resolved and sphinx-exercise's own pass
    formats = ("latex",)

    def run(self, **kwargs: Any) -> None:
        try:
            from sphinx_exercise.nodes import (exercise_enumerable_node,
                                               exercise_latex_number_reference)
        except ImportError:  # pragma: no cover - sphinx-exercise is a book dependency
            return
        from sphinx.addnodes import number_reference

        registry = getattr(self.env, "sphinx_exercise_registry", {})
        for ref in list(self.document.findall(number_reference)):
            if ref.get("refid") or "#" not in ref.get("refuri", ""):
                continue
            label = ref["refuri"].rsplit("#", 1)[1]
            target = registry.get(label, {}).get("node")
            if not isinstance(target, exercise_enumerable_node):
                continue
            new = exercise_latex_number_reference()
            new.attributes = dict(ref.attributes, refid=label)
            new.extend(ref.children)
            ref.replace_self(new)


def _italic_lead(block: nodes.Element, word: str) -> None:
    """Turn a leading ``"Proof. "`` of the block's first paragraph into emphasis."""
    para = next(iter(block.findall(nodes.paragraph)), None)
    if para is None or not para.children or not isinstance(para[0], nodes.Text):
        return
    text = str(para[0])
    if text.startswith(word):
        rest = text[len(word):].lstrip()
        para.replace(para[0], nodes.Text(" " + rest) if rest else nodes.Text(" "))
        para.insert(0, nodes.emphasis(word, word))
#: The MathJax component every page loads, relative to ``_static``.
MATHJAX_PATH = "mathjax/tex-chtml.js"
#: What of MathJax's ``es5`` tree goes into the site: the combined TeX-to-CommonHTML
#: component and what it loads on demand (TeX extensions through ``autoload`` and
#: ``require``, the web fonts, the menu and the accessibility tools with their speech maps).
MATHJAX_FILES = ("tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2",
                 "ui", "a11y", "sre")
MATHJAX_MAJOR = "3"


def mathjax_source() -> tuple[Path, str]:
    """The installed MathJax ``es5`` folder and its version.

    Raises:
        ExtensionError: when the package that ships MathJax is absent, or is not MathJax 3.
    """
    spec = importlib.util.find_spec("mathjax")
    root = Path(spec.origin).parent / "static" / "mathjax" if spec and spec.origin else None
    if root is None or not (root / "es5" / "tex-chtml.js").is_file():
        raise ExtensionError(
            "gmbook: MathJax is not installed. The book serves MathJax from its own site, "
            "not from a CDN; install it with `pip install -r requirements.txt` (the "
            "package django-static-mathjax ships MathJax 3).")
    version = json.loads((root / "package.json").read_text()).get("version", "")
    if not version.startswith(MATHJAX_MAJOR + "."):
        raise ExtensionError(f"gmbook: the installed MathJax is {version!r}, the book needs "
                             f"MathJax {MATHJAX_MAJOR} (see requirements.txt)")
    return root / "es5", version


def _serve_mathjax_locally(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    es5, version = mathjax_source()
    app.config.mathjax_path = MATHJAX_PATH
    logger.info(f"gmbook: MathJax {version} served from _static/mathjax ({es5})")


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if app.builder.format != "html":
        return
    es5, _ = mathjax_source()
    target = Path(app.outdir) / "_static" / "mathjax"
    for name in MATHJAX_FILES:
        source = es5 / name
        if source.is_dir():
            copy_asset(str(source), str(target / name))
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name)
    license_file = es5.parent / "LICENSE"
    if license_file.is_file():
        shutil.copyfile(license_file, target / "LICENSE")


def _drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str,
                            context: dict[str, Any], doctree: Any) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for js in scripts:
        key = (str(getattr(js, "filename", js) or ""),  # None and "" both mean inline
               json.dumps(getattr(js, "attributes", {}), sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def _report_execution(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None:
        return
    try:
        from myst_nb.sphinx_ import NbMetadataCollector
    except ImportError:  # pragma: no cover - myst-nb is a hard dependency of the book
        return
    times = {}
    for docname in sorted(app.env.found_docs):
        data = NbMetadataCollector.get_doc_data(app.env).get(docname, {}).get("exec_data")
        if data and data.get("runtime") is not None:
            times[docname] = {"seconds": round(float(data["runtime"]), 2),
                              "method": data["method"], "succeeded": data["succeeded"]}
    if not times:
        return
    budget = float(app.config.gmbook_time_budget)
    strict = strict_budget()
    logger.info("gmbook: execution time per page (budget %.0f s):", budget)
    slow = []
    for docname, row in times.items():
        logger.info(f"  {row['seconds']:7.1f} s  {docname}  ({row['method']})")
        if row["seconds"] > budget:
            slow.append(docname)
            message = (f"{docname} executes in {row['seconds']:.1f} s, over the "
                       f"{budget:.0f} s budget of a chapter")
            if strict:
                logger.warning(message, type="gmbook", subtype="budget")
            else:
                logger.info(f"gmbook: note: {message}. The book is built all the same (a "
                            "slower or busy machine takes longer); the authors' CI, which "
                            "sets GMBOOK_STRICT_BUDGET=1, fails on it.")
    out = Path(app.outdir).parent / "execution-times.json"
    out.write_text(json.dumps(times, indent=2) + "\n")


def strict_budget() -> bool:
    """Whether a page over the time budget fails the build (``GMBOOK_STRICT_BUDGET``)."""
    value = os.environ.get("GMBOOK_STRICT_BUDGET", "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"GMBOOK_STRICT_BUDGET must be 0 or 1, got {value!r}")


def setup(app: Sphinx) -> dict[str, Any]:
    os.environ["GMBOOK_STATIC"] = "1"  # inherited by every kernel myst-nb starts
    # PyTorch's OpenMP threads spin while they wait. On a 2-core machine that also runs
    # anything else, spinning threads slow a chapter down tenfold or more; passive
    # waiting costs about a third when the machine is idle and keeps the build robust.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app.add_config_value("gmbook_watch", [], "env", list)
    app.add_config_value("gmbook_time_budget", 90.0, "", float)
    app.connect("config-inited", _pin_cache_to_fingerprint, priority=900)
    app.connect("config-inited", _share_math_macros)
    # After sphinx-jupyterbook-latex's config-inited (priority 500) appends its preamble.
    app.connect("config-inited", _latex_style, priority=950)
    app.connect("config-inited", _remember_numfig_depth)
    # After Sphinx's toctree collector numbers figures and theorems (priority 500).
    app.connect("env-get-updated", _number_like_html, priority=900)
    app.add_post_transform(LatexProofs)
    app.add_post_transform(LatexExerciseReferences)
    app.connect("builder-inited", _serve_mathjax_locally)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=999)
    app.connect("build-finished", _report_execution)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
