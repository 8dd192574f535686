"""Every registered exercise checker, tested by the same generic code (``gmbook.exercises``).

A chapter that registers a checker gets these tests for free: its reference answer passes
with a well-formed report, and every hint given as a wrong implementation (``Hint.wrong``)
fails the check and shows its own advice. The checker table in the package docstring is
generated from the registry, so it lists exactly the registered checkers.
"""

from __future__ import annotations

import warnings

import pytest

import gmbook.exercises as exercises
from gmbook.exercises import available, check, get_checker

NAMES = available()
WRONG_HINTS = [(name, k) for name in NAMES
               for k, hint in enumerate(get_checker(name).hints) if hint.wrong is not None]


def test_every_chapter_module_registers_a_checker():
    modules = {get_checker(name).reference.__module__ for name in NAMES}
    assert len(NAMES) >= 2 * len(modules) - 2, "most chapters have at least two checkers"
    assert all(m.startswith("gmbook.exercises.") for m in modules), modules


@pytest.mark.parametrize("name", NAMES)
def test_reference_answer_passes_every_case(name):
    checker = get_checker(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = check(name, checker.reference)
    assert result.passed and result.failures == [], result.message
    assert result.n_cases == len(checker.cases()) > 0
    assert result.message.startswith(f"PASSED {name}:")


@pytest.mark.parametrize(("name", "k"), WRONG_HINTS,
                         ids=[f"{n}-hint{k}" for n, k in WRONG_HINTS])
def test_each_wrong_answer_hint_fires_on_its_mistake(name, k):
    hint = get_checker(name).hints[k]
    result = check(name, hint.wrong)
    assert not result.passed, f"{name}: the wrong answer of hint {k} passes the checker"
    flat = " ".join(result.message.split())
    assert " ".join(hint.text.split()) in flat, (
        f"{name}: hint {k} ({hint.text[:50]}...) did not fire on its own wrong answer:\n"
        f"{result.message}")


def test_the_docs_table_is_the_one_generated_from_the_registry():
    """The package docstring's table is ``checker_table()`` (refresh: ``python -m
    gmbook.exercises --write``), and it names every registered checker."""
    table = exercises.checker_table()
    for name in NAMES:
        assert f"``{name}``" in table
    doc = exercises.__doc__
    start, end = ".. checker-table-start", ".. checker-table-end"
    stored = doc[doc.index(start) + len(start):doc.index(end)].strip()
    assert stored == table.strip(), (
        "the checker table in gmbook/exercises/__init__.py is out of date: run "
        "`python -m gmbook.exercises --write`")
