"""README's "Contributing a chapter" table matches the code: every chapter of the toc has a
row, and its module, tests, checkers and benchmark entries exist and belong to it."""

from __future__ import annotations

import re
import sys

import pytest

from bookutils import ROOT, chapter_ids

ROW = re.compile(r"^\| `(book/[^`]+\.md)` \|(.*)\|\s*$", re.M)


def _rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    rows = {}
    for m in ROW.finditer(text):
        cells = [c.strip() for c in m.group(2).split("|")]
        assert len(cells) == 4, f"README.md: the row of {m.group(1)} needs 5 cells"
        rows[m.group(1)] = cells
    return rows


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_every_chapter_has_a_row():
    rows = _rows()
    missing = [doc for doc in chapter_ids() if f"{doc}.md" not in rows]
    assert not missing, f"README.md's chapter table has no row for {missing}"
    extra = [path for path in rows if path[:-3] not in chapter_ids()]
    assert not extra, f"README.md's chapter table lists pages that are not chapters: {extra}"


@pytest.mark.parametrize("path", sorted(_rows()))
def test_row_matches_the_code(path):
    module, tests, checkers, entries = _rows()[path]
    for name in _names(module):
        assert (ROOT / "code" / "gmbook" / name).is_file(), f"{path}: no code/gmbook/{name}"
    for name in _names(tests):
        assert (ROOT / "tests" / name).is_file(), f"{path}: no tests/{name}"
    from gmbook.exercises import available, get_checker

    stem = None
    for name in _names(checkers):
        assert name in available(), f"{path}: checker {name} is not registered"
        stem = get_checker(name).reference.__module__
    if stem:
        registered = sorted(n for n in available() if get_checker(n).reference.__module__ == stem)
        assert registered == sorted(_names(checkers)), (
            f"{path}: the README lists checkers {sorted(_names(checkers))}, {stem} registers "
            f"{registered}")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.registry import load_entries

    entries_of = sorted(e.name for e in load_entries().values() if e.chapter == path)
    assert entries_of == sorted(_names(entries)), (
        f"{path}: the README lists benchmark entries {sorted(_names(entries))}, benchmarks/ "
        f"registers {entries_of}")
