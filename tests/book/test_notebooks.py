"""Each chapter's paired ``.ipynb`` is committed, in sync with its ``.md``, and clean.

The launch buttons (Binder, Colab) open the ``.ipynb`` that sits next to the ``.md`` when
the book is built; a missing or stale notebook gives the reader another chapter than the
one they read. Regenerate them all with ``make notebooks``.
"""

from __future__ import annotations

import nbformat
import pytest

from bookutils import ROOT, cell_tags, chapter, chapter_ids

FIX = "run `make notebooks` to regenerate the paired .ipynb files from the .md sources"

chapters = pytest.mark.parametrize("doc", chapter_ids())


def _ipynb(doc: str) -> nbformat.NotebookNode:
    path = ROOT / f"{doc}.ipynb"
    if not path.is_file():
        pytest.fail(f"{doc}.md has no paired {path.name} next to it: {FIX}")
    return nbformat.read(path, as_version=4)


def _norm(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.splitlines()).strip()


@chapters
def test_paired_notebook_matches_markdown(doc):
    """Same cells, in the same order: type, source and tags."""
    md = chapter(doc).nb
    nb = _ipynb(doc)
    assert len(md.cells) == len(nb.cells), (
        f"{doc}: the .md has {len(md.cells)} cells, the .ipynb {len(nb.cells)}: {FIX}")
    for i, (a, b) in enumerate(zip(md.cells, nb.cells)):
        where = f"{doc}: cell {i + 1} ({a.cell_type}, starting {_norm(a.source)[:50]!r})"
        assert a.cell_type == b.cell_type, f"{where} is a {b.cell_type} cell in the .ipynb: {FIX}"
        assert _norm(a.source) == _norm(b.source), f"{where} differs in the .ipynb: {FIX}"
        assert sorted(cell_tags(a)) == sorted(cell_tags(b)), (
            f"{where} has tags {cell_tags(a)} in the .md, {cell_tags(b)} in the .ipynb: {FIX}")


@chapters
def test_paired_notebook_has_no_outputs(doc):
    """The committed notebook is unexecuted: no outputs, no execution counts."""
    dirty = [i + 1 for i, c in enumerate(_ipynb(doc).cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{doc}.ipynb has outputs or execution counts in cells {dirty}: "
                       f"commit it without outputs ({FIX})")


@chapters
def test_paired_notebook_kernel(doc):
    spec = _ipynb(doc).metadata.get("kernelspec") or {}
    assert spec.get("name") == "python3", (
        f"{doc}.ipynb has kernelspec {spec.get('name')!r}, expected 'python3': {FIX}")
