"""Readers for the book's sources, shared by the book-level tests.

The tests in ``tests/book/`` check the *sources* (toc, chapters, paired notebooks,
configuration) before anything is built; ``tests/built/`` checks the built HTML and PDF.
Both use the helpers below, so that "chapter", "label" or "glue key" mean the same thing
everywhere.

A **chapter** is a page listed in ``_toc.yml`` whose Markdown front matter has a
``kernelspec`` (a MyST notebook). Chapters are read with jupytext, exactly as myst-nb reads
them, so cell boundaries, tags and ``mystnb`` options are the ones the build sees.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


# --------------------------------------------------------------------------- config, toc


@functools.lru_cache(maxsize=None)
def config() -> dict[str, Any]:
    """``_config.yml`` as a dict."""
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def sphinx_config() -> dict[str, Any]:
    """The ``sphinx.config`` block of ``_config.yml``."""
    return (config().get("sphinx") or {}).get("config") or {}


def repository() -> tuple[str, str]:
    """``(url, branch)`` of the canonical repository, without a trailing slash."""
    repo = config()["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def path_to_book() -> str:
    """``repository.path_to_book``, normalised to ``""`` or ``"folder/"``."""
    path = (config()["repository"].get("path_to_book") or "").strip("/")
    return f"{path}/" if path else ""


@functools.lru_cache(maxsize=None)
def toc() -> dict[str, Any]:
    """``_toc.yml`` as a dict."""
    return yaml.safe_load((ROOT / "_toc.yml").read_text())


@dataclass(frozen=True)
class TocEntry:
    """One ``file:`` of the toc, with the part it belongs to (``None`` for the root)."""

    file: str
    part: str | None
    numbered: bool


def _walk_entries(entries: list[dict], part: str | None, numbered: bool) -> list[TocEntry]:
    out = []
    for entry in entries or []:
        if "file" in entry:
            out.append(TocEntry(entry["file"], part, numbered))
        for key in ("sections", "chapters"):
            out.extend(_walk_entries(entry.get(key), part, numbered))
        for sub in entry.get("subtrees") or []:
            out.extend(_walk_entries(sub.get("entries") or sub.get("chapters"), part,
                                     bool(sub.get("numbered", numbered))))
    return out


def toc_entries() -> list[TocEntry]:
    """Every document of the toc, root first, in reading order."""
    data = toc()
    entries = [TocEntry(data["root"], None, False)]
    for part in data.get("parts") or []:
        entries.extend(_walk_entries(part.get("chapters"), part.get("caption"),
                                     bool(part.get("numbered", False))))
    entries.extend(_walk_entries(data.get("chapters"), None, False))
    return entries


def docname_of(file: str) -> str:
    """Toc ``file:`` -> Sphinx docname (no suffix, forward slashes)."""
    return re.sub(r"\.(md|ipynb|rst)$", "", file.strip("/"))


def toc_docnames() -> list[str]:
    return [docname_of(e.file) for e in toc_entries()]


def autoapi_root() -> str | None:
    root = sphinx_config().get("autoapi_root")
    return root.strip("/") if root else None


def is_generated(docname: str) -> bool:
    """True for pages that sphinx-autoapi writes at build time."""
    root = autoapi_root()
    return bool(root) and (docname == root or docname.startswith(root + "/"))


def front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a Markdown file (``{}`` if it has none)."""
    text = path.read_text()
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    return (yaml.safe_load(match.group(1)) or {}) if match else {}


def chapter_paths() -> list[Path]:
    """Every toc page with a kernelspec (a MyST notebook): the book's chapters."""
    paths = []
    for doc in toc_docnames():
        path = ROOT / f"{doc}.md"
        if path.is_file() and "kernelspec" in front_matter(path):
            paths.append(path)
    return paths


def chapter_ids() -> list[str]:
    return [docname_of(p.relative_to(ROOT).as_posix()) for p in chapter_paths()]


# --------------------------------------------------------------------------- parsing MyST


@dataclass
class Directive:
    """A fenced MyST directive: ``name``, argument, options and source line (1-based)."""

    name: str
    arg: str
    options: dict[str, Any]
    line: int


_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,})\{(?P<name>[^}\s]+)\}"
                        r"[ \t]*(?P<arg>.*?)\s*$")
_OPTION = re.compile(r"^[ \t]*:(?P<key>[\w-]+):[ \t]*(?P<value>.*?)\s*$")


def directives(text: str) -> list[Directive]:
    """Every fenced directive in a Markdown text, with its options.

    Options are read in both MyST forms: ``:key: value`` lines, or a YAML block between
    ``---`` lines right after the opening fence.
    """
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        options: dict[str, Any] = {}
        j = i + 1
        if j < len(lines) and lines[j].strip() == "---":
            end = next((k for k in range(j + 1, len(lines)) if lines[k].strip() == "---"), None)
            if end is not None:
                options = yaml.safe_load("\n".join(lines[j + 1:end])) or {}
        else:
            while j < len(lines) and (opt := _OPTION.match(lines[j])):
                options[opt["key"]] = opt["value"]
                j += 1
        found.append(Directive(match["name"], match["arg"], options, i + 1))
    return found


_ROLE = re.compile(r"\{(?P<name>[a-z][\w:.-]*)\}`(?P<content>[^`]+)`")


def roles(text: str, name: str | re.Pattern) -> list[str]:
    """Contents of every inline role whose name matches ``name`` (a regex, whole name)."""
    pattern = re.compile(name) if isinstance(name, str) else name
    return [m["content"] for m in _ROLE.finditer(text) if pattern.fullmatch(m["name"])]


def role_target(content: str) -> str:
    r"""The target of a role: ``text <target>`` -> ``target``; ``target`` -> ``target``."""
    match = re.search(r"<([^<>]+)>\s*$", content)
    return (match.group(1) if match else content).strip()


_EQ_LABEL = re.compile(r"\$\$[ \t]*\((?P<label>[^()\s]+)\)[ \t]*$", re.M)  # $$ ... $$ (label)
_TARGET = re.compile(r"^[ \t]*\((?P<label>[^()\s]+)\)=[ \t]*$", re.M)
_TEX_LABEL = re.compile(r"\\label\{(?P<label>[^}]+)\}")


# --------------------------------------------------------------------------- chapters


def cell_tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


@dataclass
class Chapter:
    """A chapter read the way myst-nb reads it."""

    path: Path
    docname: str
    nb: Any
    markdown: str = ""             # all Markdown cells, joined
    captions: str = ""             # captions of code-cell figures (they hold roles too)
    code_cells: list[Any] = field(default_factory=list)

    @property
    def prose(self) -> str:
        """Markdown cells plus figure captions: everything in which roles can appear."""
        return self.markdown + "\n" + self.captions

    @property
    def title(self) -> str:
        match = re.search(r"^#[ \t]+(.+?)\s*$", self.markdown, re.M)
        return match.group(1) if match else ""


@functools.lru_cache(maxsize=None)
def read_page(path: Path) -> Chapter:
    """Read any toc Markdown page with jupytext (``md:myst``)."""
    import jupytext

    nb = jupytext.read(path, fmt="md:myst")
    markdown = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = [c for c in nb.cells if c.cell_type == "code"]
    captions = []
    for cell in code:
        fig = (cell.metadata.get("mystnb") or {}).get("figure") or {}
        if fig.get("caption"):
            captions.append(str(fig["caption"]))
    doc = docname_of(path.relative_to(ROOT).as_posix())
    return Chapter(path, doc, nb, markdown, "\n\n".join(captions), code)


def chapter(docname: str) -> Chapter:
    return read_page(ROOT / f"{docname}.md")


def sections(markdown: str, level: int = 2) -> list[tuple[str, int, int]]:
    """``(title, start, end)`` character spans of the headings of one level."""
    heads = [(m.group(1).strip(), m.start(), m.end())
             for m in re.finditer(rf"^{'#' * level}[ \t]+(.+?)[ \t]*$", markdown, re.M)]
    out = []
    for k, (title, start, body) in enumerate(heads):
        end = heads[k + 1][1] if k + 1 < len(heads) else len(markdown)
        # a higher-level heading also ends the section
        higher = re.search(rf"^#{{1,{level - 1}}}[ \t]", markdown[body:end], re.M)
        if higher:
            end = body + higher.start()
        out.append((title, start, end))
    return out


def solution_cells(ch: Chapter) -> list[tuple[Any, str | None]]:
    """Every code cell with the label of the gated solution it sits in (``None`` if none)."""
    out = []
    current: str | None = None
    for cell in ch.nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                match = _DIRECTIVE.match(line)
                if match and match["name"] == "solution-start":
                    current = match["arg"].split()[0] if match["arg"] else ""
                elif match and match["name"] == "solution-end":
                    current = None
        else:
            out.append((cell, current))
    return out


# --------------------------------------------------------------------------- labels


def defined_labels(page: Chapter) -> dict[str, set[str]]:
    """Labels a page defines, by kind: ``eq``, ``prf``, ``any`` (every kind together)."""
    text = page.markdown
    eq = set(_EQ_LABEL.findall(text)) | set(_TEX_LABEL.findall(text))
    prf = set()
    anything = set(eq) | set(_TARGET.findall(text))
    for d in directives(text):
        for key in ("label", "name"):
            value = d.options.get(key)
            if value:
                anything.add(str(value).strip())
                if d.name.startswith("prf:"):
                    prf.add(str(value).strip())
    for cell in page.code_cells:
        fig = (cell.metadata.get("mystnb") or {}).get("figure") or {}
        if fig.get("name"):
            anything.add(str(fig["name"]))
    return {"eq": eq, "prf": prf, "any": anything}


def book_labels() -> dict[str, set[str]]:
    """The union of :func:`defined_labels` over every Markdown page of the toc."""
    total: dict[str, set[str]] = {"eq": set(), "prf": set(), "any": set()}
    for doc in toc_docnames():
        path = ROOT / f"{doc}.md"
        if path.is_file():
            for kind, labels in defined_labels(read_page(path)).items():
                total[kind] |= labels
    return total


def main_labels(page: Chapter) -> set[str]:
    """The chapter's claim labels: labelled equations and labelled ``prf`` directives."""
    labels = defined_labels(page)
    return labels["eq"] | labels["prf"]


# --------------------------------------------------------------------------- glue


def _parse_code(source: str) -> ast.Module:
    """Parse a notebook cell, with IPython magics and shell escapes blanked out."""
    def blank(predicate):
        lines = []
        for line in source.splitlines():
            stripped = line.lstrip()
            indent = line[: len(line) - len(stripped)]
            lines.append(indent + "pass" if predicate(stripped) else line)
        return "\n".join(lines)

    magic = blank(lambda s: s.startswith(("%", "!", "?")))
    try:
        return ast.parse(magic)
    except SyntaxError:  # perhaps ``obj?`` help lines
        return ast.parse(blank(lambda s: s.startswith(("%", "!", "?")) or s.endswith("?")))


def calls_named(cells: list[Any], name: str) -> list[ast.Call]:
    """Every call ``name(arg, ...)`` or ``obj.name(arg, ...)`` with at least one positional
    argument in the given code cells."""
    out = []
    for cell in cells:
        for node in ast.walk(_parse_code(cell.source)):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                out.append(node)
    return out


def glue_produced(cells: list[Any]) -> list[re.Pattern]:
    """Patterns of the keys glued by ``glue(key, ...)`` calls in the given code cells.

    A literal key becomes an exact pattern; an f-string key such as ``f"prob_{name}_fkl"``
    becomes a pattern with ``.+`` for every ``{...}``.
    """
    patterns = []
    for node in calls_named(cells, "glue"):
        key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            patterns.append(re.compile(re.escape(key.value)))
        elif isinstance(key, ast.JoinedStr):
            parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+"
                     for v in key.values]
            patterns.append(re.compile("".join(parts)))
        else:
            patterns.append(re.compile(".+"))  # a computed key: matches anything
    return patterns


def glue_referenced(page: Chapter) -> list[str]:
    """Keys referenced by ``{glue...}`` roles and directives in the chapter's prose."""
    keys = []
    for content in roles(page.prose, r"glue(:\w*)?"):
        if "::" in content:  # a key glued in another notebook
            continue
        keys.append(content.split(":", 1)[0].strip())
    for d in directives(page.prose):
        if re.fullmatch(r"glue(:\w*)?", d.name) and d.arg and "::" not in d.arg:
            keys.append(d.arg.split()[0])
    return keys


def guarded_claims(cells: list[Any]) -> list[tuple[str | None, int]]:
    """The sentences of ``claim(sentence, ...)`` calls in the given code cells.

    Returns ``(sentence, line)`` pairs; ``sentence`` is ``None`` when the first argument is
    not a string literal (a guard must quote the prose literally, so that the contract test
    can find it there).
    """
    out = []
    for node in calls_named(cells, "claim"):
        arg = node.args[0]
        literal = arg.value if isinstance(arg, ast.Constant) and \
            isinstance(arg.value, str) else None
        out.append((literal, node.lineno))
    return out


def normalize_prose(text: str) -> str:
    """Prose with Markdown emphasis marks dropped and white space folded, for quoting."""
    text = re.sub(r"[*_]{1,2}(?=\w)|(?<=\w)[*_]{1,2}", "", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------- tests' docstrings


@functools.lru_cache(maxsize=None)
def claim_docstrings() -> list[tuple[str, str]]:
    """``(test id, docstring)`` of every test function under ``tests/``.

    The book-level checks themselves (``tests/book``, ``tests/built``) are left out: their
    docstrings must not count as numerical verification of a claim.
    """
    out = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS)
        if rel.parts[0] in ("book", "built") or "__pycache__" in rel.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.name.startswith("test"):
                doc = ast.get_docstring(node)
                if doc:
                    out.append((f"{rel.as_posix()}::{node.name}", doc))
    return out


def mentions(text: str, label: str) -> bool:
    """True if ``label`` appears in ``text`` as a whole label (not inside a longer one)."""
    return re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", text) is not None
