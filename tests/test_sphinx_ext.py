"""Unit tests of the book's Sphinx extension (``book/_ext/gmbook_sphinx.py``) that need no
build: how theorem and exercise numbers are recounted for the PDF."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
from gmbook_sphinx import renumber  # noqa: E402


def test_renumber_counts_per_chapter_in_document_order():
    """Numbers given per section (depth 2, as in the LaTeX build) become per chapter
    (depth 1, as on the web): one count per chapter and kind, in document order, including
    an item that sits before the chapter's first section."""
    by_section = {
        "ddpm": {"proposition": {"p-intro": (9, 1), "p-a": (9, 2, 1), "p-b": (9, 3, 1),
                                 "p-c": (9, 3, 2)},
                 "theorem": {"t-a": (9, 3, 1)}},
        "sde": {"proposition": {"q-a": (10, 1, 1), "q-b": (10, 2, 1)}},
    }
    assert renumber(by_section, 1) == {
        "ddpm": {"proposition": {"p-intro": (9, 1), "p-a": (9, 2), "p-b": (9, 3),
                                 "p-c": (9, 4)},
                 "theorem": {"t-a": (9, 1)}},
        "sde": {"proposition": {"q-a": (10, 1), "q-b": (10, 2)}},
    }


def test_renumber_keeps_numbers_already_at_depth():
    """Recounting numbers that are per chapter already changes nothing (it runs on every
    build, incremental ones included), and depth 0 numbers through the whole book."""
    per_chapter = {"a": {"exercise": {"e1": (1, 1), "e2": (1, 2)}},
                   "b": {"exercise": {"e3": (2, 1)}}}
    assert renumber(per_chapter, 1) == per_chapter
    assert renumber(per_chapter, 0) == {"a": {"exercise": {"e1": (1,), "e2": (2,)}},
                                        "b": {"exercise": {"e3": (3,)}}}
