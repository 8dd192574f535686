"""The chapter contract (DESIGN.md, "The chapter contract"), checked on every chapter.

A chapter is a toc page with a ``kernelspec`` in its front matter. Each test names the
chapter and says what is missing, so an author can fix it without reading this file.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pytest

from bookutils import (
    ROOT,
    book_labels,
    cell_tags,
    chapter,
    chapter_ids,
    defined_labels,
    directives,
    glue_produced,
    glue_referenced,
    guarded_claims,
    normalize_prose,
    main_labels,
    mentions,
    repository,
    role_target,
    roles,
    sections,
    solution_cells,
    claim_docstrings,
    toc_docnames,
)

CHAPTERS = chapter_ids()
chapters = pytest.mark.parametrize("doc", CHAPTERS)

MIN_EXERCISES = 6
MIN_CODING_EXERCISES = 2
MIN_VERIFIED_CLAIMS = 3
MIN_GUARDED_CLAIMS = 2
CHECK_CALL = re.compile(r"""\bcheck\(\s*(["'])(?P<name>[^"']+)\1""")


def test_the_book_has_chapters():
    assert CHAPTERS, "no page of _toc.yml has a kernelspec: the book has no chapters"


# --------------------------------------------------------------------------- structure


def _section(doc: str, title: str) -> str:
    ch = chapter(doc)
    for name, start, end in sections(ch.markdown):
        if name.lower() == title.lower():
            return ch.markdown[start:end]
    pytest.fail(f"{doc}: no '## {title}' section")


@chapters
def test_overview_objectives_and_prerequisites(doc):
    """``## Overview`` with 3-5 numbered learning objectives and ``{doc}`` prerequisites."""
    overview = _section(doc, "Overview")
    obj = re.search(r"learning objectives", overview, re.I)
    pre = re.search(r"prerequisites", overview, re.I)
    assert obj, f"{doc}: the Overview has no 'Learning objectives'"
    assert pre, f"{doc}: the Overview has no 'Prerequisites'"
    end = pre.start() if pre.start() > obj.start() else len(overview)
    items = re.findall(r"^[ ]{0,3}\d+[.)][ \t]+\S", overview[obj.end():end], re.M)
    assert 3 <= len(items) <= 5, (
        f"{doc}: 'Learning objectives' must be a numbered list of 3-5 items, found {len(items)}")
    prereq_end = obj.start() if obj.start() > pre.start() else len(overview)
    prereq = overview[pre.end():prereq_end]
    assert roles(prereq, "doc"), (
        f"{doc}: 'Prerequisites' must link the chapters or pages it builds on with "
        "{doc}`...` roles (at least one)")


@chapters
def test_section_order(doc):
    """Overview first; then Exercises, Summary and Further reading, in that order."""
    titles = [t.lower() for t, _, _ in sections(chapter(doc).markdown)]
    wanted = ["overview", "exercises", "summary", "further reading"]
    missing = [w for w in wanted if w not in titles]
    assert not missing, f"{doc}: missing level-2 sections {missing}"
    positions = [titles.index(w) for w in wanted]
    assert positions == sorted(positions), (
        f"{doc}: sections must come in the order {wanted}; found "
        f"{[titles[p] for p in sorted(positions)]}")
    assert titles[0] == "overview", f"{doc}: '## Overview' must be the first section"


# --------------------------------------------------------------------------- exercises


def _exercises(doc: str) -> tuple[list[str], dict[str, dict]]:
    """Labels of the exercises, and options of the solutions by the label they solve."""
    ds = directives(chapter(doc).markdown)
    labels = [str(d.options.get("label", "")).strip() for d in ds
              if d.name in ("exercise", "exercise-start")]
    solutions = {d.arg.split()[0]: d.options for d in ds
                 if d.name in ("solution", "solution-start") and d.arg}
    return labels, solutions


@chapters
def test_exercises_have_labels_and_dropdown_solutions(doc):
    """At least 6 labelled exercises, each with a ``dropdown`` solution."""
    labels, solutions = _exercises(doc)
    assert len(labels) >= MIN_EXERCISES, (
        f"{doc}: {len(labels)} exercises, the contract asks for at least {MIN_EXERCISES}")
    unlabelled = labels.count("")
    assert not unlabelled, f"{doc}: {unlabelled} exercise(s) without a :label:"
    assert len(set(labels)) == len(labels), f"{doc}: duplicate exercise labels {labels}"
    unsolved = [lab for lab in labels if lab not in solutions]
    assert not unsolved, f"{doc}: exercises without a solution: {unsolved}"
    orphan = [lab for lab in solutions if lab not in labels]
    assert not orphan, f"{doc}: solutions of exercises that do not exist: {orphan}"
    closed = [lab for lab, opts in solutions.items()
              if "dropdown" not in str(opts.get("class", "")).split()]
    assert not closed, f"{doc}: solutions without ':class: dropdown': {closed}"


@chapters
def test_gated_directives_are_balanced(doc):
    """Every ``-start`` directive of sphinx-exercise has its ``-end``, never nested."""
    stack = []
    for d in directives(chapter(doc).markdown):
        kind = d.name.rsplit("-", 1)[0]
        if d.name in ("exercise-start", "solution-start"):
            assert not stack, f"{doc}: {d.name} on line {d.line} nested in {stack[-1]}"
            stack.append(kind)
        elif d.name in ("exercise-end", "solution-end"):
            assert stack == [kind], f"{doc}: {d.name} on line {d.line} closes {stack}"
            stack.pop()
    assert not stack, f"{doc}: {stack[-1]}-start never closed"


@lru_cache(maxsize=None)
def _available_checkers() -> tuple[str, ...]:
    from gmbook.exercises import available

    return tuple(available())


@chapters
def test_coding_exercises_are_checked(doc):
    """At least 2 coding exercises: a ``skip-execution`` reader stub calling ``check("x"``
    and an executed solution cell calling ``check("x"``, ``x`` a registered checker."""
    ch = chapter(doc)
    stubs, solved, not_run, run_stubs = set(), set(), [], []
    for cell, solution in solution_cells(ch):
        names = {m["name"] for m in CHECK_CALL.finditer(cell.source)}
        if not names:
            continue
        if solution is None:
            if "skip-execution" in cell_tags(cell):
                stubs |= names
            else:
                run_stubs.append(sorted(names))
        else:
            solved |= names
            if "skip-execution" in cell_tags(cell):
                not_run.append(solution)
    assert not run_stubs, (
        f"{doc}: reader stubs calling check() outside a solution must be tagged "
        f"skip-execution (else the build runs the empty stub): {run_stubs}")
    assert not not_run, (
        f"{doc}: solution cells tagged skip-execution in {not_run}: solutions must run in "
        "the build, so that a broken reference fails it")
    both = stubs & solved
    assert len(both) >= MIN_CODING_EXERCISES, (
        f"{doc}: {len(both)} auto-checked coding exercises ({sorted(both)}), the contract "
        f"asks for {MIN_CODING_EXERCISES}: each needs a reader stub tagged skip-execution "
        f"and a solution cell, both calling check(\"<name>\", ...); stubs: {sorted(stubs)}, "
        f"solutions: {sorted(solved)}")
    unknown = sorted((stubs | solved) - set(_available_checkers()))
    assert not unknown, (f"{doc}: check() names with no checker in gmbook.exercises: "
                         f"{unknown}; available: {list(_available_checkers())}")


# --------------------------------------------------------------------------- maths


@chapters
def test_theorem_with_proof(doc):
    """At least one labelled ``prf:theorem``/``prf:proposition`` and one ``prf:proof``."""
    ds = directives(chapter(doc).markdown)
    results = [d for d in ds if d.name in ("prf:theorem", "prf:proposition")]
    assert results, f"{doc}: no {{prf:theorem}} or {{prf:proposition}}"
    unlabelled = [d.line for d in results if not d.options.get("label")]
    assert not unlabelled, f"{doc}: theorems/propositions without :label: (markdown lines " \
                           f"{unlabelled} of the joined Markdown cells)"
    assert any(d.name == "prf:proof" for d in ds), f"{doc}: no {{prf:proof}}"


_LIST_MARKER = re.compile(r"^(?:[-+*]|\d+[.)])\s")


def list_markers_in_math(markdown: str) -> list[tuple[int, str]]:
    """Lines that start like a list item (``+ ``, ``- ``, ``* ``, ``1. ``) while an inline
    ``$...$`` opened earlier in the same paragraph is still open.

    Markdown lets a list item interrupt a paragraph, so a formula wrapped before a ``+`` or a
    ``-`` is cut in two: the rest of the paragraph becomes a bullet, the math stays unrendered
    (seen in the HTML of three chapters and as an overfull line in the PDF). Display math
    (``$$``) and code are skipped; the prose of directives (proofs, exercises) is not.
    """
    bad, para, in_code, in_display = [], "", False, False
    for number, line in enumerate(markdown.split("\n"), 1):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            info = stripped.lstrip("`~").strip()
            if in_code:
                in_code = False
            elif info and not (info.startswith("{") and not re.match(
                    r"\{(code-cell|literalinclude|math|code|raw)\}", info)):
                in_code = True
            para = ""
            continue
        if in_code:
            continue
        if stripped.startswith("$$"):
            if stripped.count("$$") == 1:
                in_display = not in_display
            para = ""
            continue
        if in_display:
            continue
        if not stripped:
            para = ""
            continue
        if para and _LIST_MARKER.match(line):
            dollars = para.replace("\\$", "").replace("$$", "").count("$")
            if dollars % 2:
                bad.append((number, line.strip()[:60]))
        para += " " + line
    return bad


def test_list_markers_in_math_are_found():
    """The check below finds a wrapped formula and leaves lists and display math alone."""
    broken = "A sum $a\n+ b$ in a paragraph."
    assert list_markers_in_math(broken) == [(2, "+ b$ in a paragraph.")]
    fine = ("Items:\n\n- one $a$\n- two $b + c$\n\n$$\nx\n+ y\n$$\n\n"
            "```{prf:proof}\nText $u\n- v$.\n```")
    assert list_markers_in_math(fine) == [(13, "- v$.")]


@chapters
def test_no_list_marker_inside_inline_math(doc):
    """No line of prose starts with ``+``/``-`` inside an open inline formula (see above)."""
    bad = list_markers_in_math(chapter(doc).markdown)
    assert not bad, (f"{doc}: a line inside inline math starts like a list item; move the "
                     f"operator to the end of the previous line: {bad}")


def table_width_mismatches(markdown: str) -> list[tuple[int, int, int]]:
    """``(line, header cells, delimiter cells)`` of every pipe table whose delimiter row
    (``| --- | ... |``) has another number of cells than the header above it: markdown-it
    then renders no table at all, only the raw pipes as a paragraph."""
    lines = markdown.split("\n")
    bad = []
    for i, line in enumerate(lines[1:], start=1):
        if re.match(r"^\|\s*:?-{3,}", line):
            head, delim = (len(x.strip().strip("|").split("|")) for x in (lines[i - 1], line))
            if head != delim:
                bad.append((i + 1, head, delim))
    return bad


def test_table_width_checker_finds_a_mismatch():
    """The checker itself: a 2-column header over a 3-cell delimiter row is found."""
    assert table_width_mismatches("| a | b |\n| --- | --- | --- |\n| 1 | 2 |") == [(2, 2, 3)]
    assert table_width_mismatches("| a | b |\n| --- | --- |\n| 1 | 2 |") == []


@chapters
def test_tables_have_as_many_delimiters_as_header_cells(doc):
    """Every pipe table's delimiter row matches its header (otherwise it is not a table)."""
    bad = table_width_mismatches(chapter(doc).markdown)
    assert not bad, (f"{doc}: table delimiter rows of the wrong width "
                     f"(line, header cells, delimiter cells): {bad}")


@chapters
def test_labelled_equation(doc):
    """At least one display equation written ``$$ ... $$ (label)``."""
    assert defined_labels(chapter(doc))["eq"], (
        f"{doc}: no labelled display equation ($$ ... $$ (label))")


@chapters
def test_cross_references_resolve(doc):
    """Every ``{eq}``, ``{prf:ref}``, ``{ref}``, ``{numref}`` and ``{doc}`` target exists."""
    ch = chapter(doc)
    labels = book_labels()
    problems = []
    for role, kind in (("eq", "eq"), ("prf:ref", "prf"), ("ref", "any"), ("numref", "any")):
        for content in roles(ch.prose, re.escape(role)):
            target = role_target(content)
            if target not in labels[kind]:
                problems.append(f"{{{role}}}`{content}`")
    docs = set(toc_docnames())
    base = doc.rsplit("/", 1)[0]
    for content in roles(ch.prose, "doc"):
        target = role_target(content)
        resolved = target.lstrip("/") if target.startswith("/") else _normpath(f"{base}/{target}")
        if resolved not in docs:
            problems.append(f"{{doc}}`{content}` (-> {resolved}, not in _toc.yml)")
    assert not problems, f"{doc}: unresolved references: {problems}"


def _normpath(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


# --------------------------------------------------------------------------- glue


@chapters
def test_glued_numbers(doc):
    """Numbers in the prose come from ``glue``: every referenced key is glued, every
    glued key is referenced."""
    ch = chapter(doc)
    referenced = glue_referenced(ch)
    assert referenced, f"{doc}: no {{glue:text}} (or {{glue}}) reference in the prose"
    runnable = [c for c in ch.code_cells if "skip-execution" not in cell_tags(c)]
    produced = glue_produced(runnable)
    missing = sorted({k for k in referenced if not any(p.fullmatch(k) for p in produced)})
    assert not missing, f"{doc}: glue keys used in the prose but never glued: {missing}"
    unused = sorted({p.pattern.replace("\\", "") for p in produced
                     if not any(p.fullmatch(k) for k in referenced)})
    assert not unused, (f"{doc}: glued but never used in the prose (remove them, or quote "
                        f"them): {unused}")


@chapters
def test_guarded_prose(doc):
    """Run-dependent sentences are guarded: the chapter calls ``gmbook.claims.claim`` at
    least ``MIN_GUARDED_CLAIMS`` times, each with a sentence quoted verbatim from its prose."""
    ch = chapter(doc)
    runnable = [c for c in ch.code_cells if "skip-execution" not in cell_tags(c)]
    claims = guarded_claims(runnable)
    assert len(claims) >= MIN_GUARDED_CLAIMS, (
        f"{doc}: {len(claims)} guarded sentence(s), at least {MIN_GUARDED_CLAIMS} expected: "
        "pair every comparative or qualitative sentence that depends on a run with "
        "claim(\"the sentence\", condition, **numbers) from gmbook.claims")
    prose = normalize_prose(ch.prose)
    computed = [line for sentence, line in claims if sentence is None]
    assert not computed, (f"{doc}: claim() with a computed sentence (line {computed[0]} of "
                          "its cell): quote the prose as a string literal")
    missing = [s for s, _ in claims if normalize_prose(s) not in prose]
    assert not missing, (f"{doc}: guarded sentences that do not stand verbatim in the prose "
                         f"(the text and its guard drifted apart): {missing}")


# --------------------------------------------------------------------------- citations


@lru_cache(maxsize=None)
def _bib_keys() -> frozenset[str]:
    from pybtex.database import parse_file

    return frozenset(parse_file(str(ROOT / "book" / "references.bib")).entries.keys())


@chapters
def test_citations_exist(doc):
    """At least one ``{cite}`` role, and every key is in ``book/references.bib``."""
    ch = chapter(doc)
    cites = roles(ch.prose, r"cite(:\w+)?")
    assert any(roles(ch.prose, r"cite(:p|:t)?")), f"{doc}: no {{cite}}, {{cite:p}} or {{cite:t}}"
    keys = {k.strip() for c in cites for k in c.split(",") if k.strip()}
    bib = {k.lower() for k in _bib_keys()}
    unknown = sorted(k for k in keys if k.lower() not in bib)
    assert not unknown, f"{doc}: cited keys missing from book/references.bib: {unknown}"


# --------------------------------------------------------------------------- code cells


@chapters
def test_setup_cell_installs_the_package(doc):
    """The first code cell is hidden and installs gmbook from the canonical repository."""
    cells = chapter(doc).code_cells
    assert cells, f"{doc}: no code cells"
    first = cells[0]
    url, _ = repository()
    assert "remove-cell" in cell_tags(first), f"{doc}: the setup cell must be tagged remove-cell"
    assert "except ImportError" in first.source, (
        f"{doc}: the setup cell must install gmbook only when 'import gmbook' raises ImportError")
    assert "pip install" in first.source, f"{doc}: the setup cell has no pip install"
    spec = re.compile(rf"git\+{re.escape(url)}(\.git)?(@[\w.\-/]+)?#subdirectory=code\b")
    assert spec.search(first.source), (
        f"{doc}: the setup cell must pip install git+{url}#subdirectory=code (the canonical "
        f"repository.url of _config.yml)")


@chapters
def test_seeded_once_with_device(doc):
    """The second code cell seeds ``torch.manual_seed(`` (once in the chapter) and picks
    the device with ``default_device()``."""
    cells = chapter(doc).code_cells
    assert len(cells) >= 2, f"{doc}: fewer than two code cells"
    seed = re.compile(r"\btorch\.(random\.)?manual_seed\(")
    second = cells[1].source
    assert seed.search(second), f"{doc}: the second code cell must call torch.manual_seed("
    assert "default_device()" in second, f"{doc}: the second code cell must call default_device()"
    count = sum(len(seed.findall(c.source)) for c in cells)
    assert count == 1, (f"{doc}: torch.manual_seed( appears {count} times; seed once, in the "
                        "second cell (use torch.Generator objects for local randomness)")


@chapters
def test_figures_have_caption_name_and_alt(doc):
    """Every code cell with ``mystnb: figure:`` has a caption, a name and alt text."""
    problems = []
    for cell in chapter(doc).code_cells:
        opts = cell.metadata.get("mystnb") or {}
        if "figure" not in opts:
            continue
        fig = opts.get("figure") or {}
        alt = (opts.get("image") or {}).get("alt")
        head = cell.source.strip().splitlines()[0] if cell.source.strip() else "<empty>"
        for what, value in (("figure.caption", fig.get("caption")),
                            ("figure.name", fig.get("name")), ("image.alt", alt)):
            if not str(value or "").strip():
                problems.append(f"cell starting {head!r}: no {what}")
    assert not problems, f"{doc}: " + "; ".join(problems)


# --------------------------------------------------------------------------- verified claims


@chapters
def test_claims_are_verified_by_tests(doc):
    """At least 3 of the chapter's equation/theorem labels are named in the docstrings of
    test functions under ``tests/`` (numerical checks of the claims)."""
    labels = main_labels(chapter(doc))
    verified = {}
    for label in sorted(labels):
        tests = [name for name, docstring in claim_docstrings() if mentions(docstring, label)]
        if tests:
            verified[label] = tests
    assert len(verified) >= MIN_VERIFIED_CLAIMS, (
        f"{doc}: {len(verified)} of its labels are verified by tests ({verified}); the "
        f"contract asks for {MIN_VERIFIED_CLAIMS}. Name an equation or theorem label of the "
        f"chapter in the docstring of the test that checks it. Labels: {sorted(labels)}")
