"""The table of contents: every entry exists, no page is orphaned, numbering is stable."""

from __future__ import annotations

from bookutils import ROOT, autoapi_root, docname_of, is_generated, toc, toc_entries

IGNORED = ("book/_ext", "book/_latex")


def test_every_toc_file_exists():
    """Each ``file:`` of ``_toc.yml`` is a Markdown file, or an autoapi page.

    Pages under ``autoapi_root`` are written by sphinx-autoapi during the build, so they
    need not exist in the repository; they are accepted only below that folder.
    """
    missing = []
    for entry in toc_entries():
        doc = docname_of(entry.file)
        if is_generated(doc):
            continue
        if not (ROOT / f"{doc}.md").is_file():
            missing.append(f"{entry.file} (expected {doc}.md)")
    assert not missing, "files listed in _toc.yml that do not exist: " + ", ".join(missing)


def test_generated_entries_match_autoapi_root():
    """A toc entry under ``book/api`` is only allowed if autoapi writes there."""
    api_like = [e.file for e in toc_entries() if docname_of(e.file).startswith("book/api")]
    if api_like:
        assert autoapi_root() == "book/api", (
            f"_toc.yml lists {api_like}, but sphinx.config.autoapi_root in _config.yml is "
            f"{autoapi_root()!r}: the pages would never be generated")
        assert all(is_generated(docname_of(f)) for f in api_like)


def test_no_orphan_pages():
    """Every Markdown file under ``book/`` is in the toc (Sphinx would silently skip it)."""
    listed = {docname_of(e.file) for e in toc_entries()}
    orphans = []
    for path in sorted((ROOT / "book").rglob("*.md")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(IGNORED) or any(p.startswith(".") for p in path.parts):
            continue
        doc = docname_of(rel)
        if is_generated(doc):
            continue
        if doc not in listed:
            orphans.append(rel)
    assert not orphans, f"Markdown files under book/ missing from _toc.yml: {orphans}"


def test_no_duplicate_entries():
    docs = [docname_of(e.file) for e in toc_entries()]
    dupes = sorted({d for d in docs if docs.count(d) > 1})
    assert not dupes, f"listed more than once in _toc.yml: {dupes}"


def test_numbered_parts_come_first():
    """Numbered parts precede unnumbered ones, so HTML and PDF chapter numbers agree.

    The PDF numbers chapters in reading order; the HTML numbers only numbered parts. An
    unnumbered part before a numbered one would shift every PDF chapter number.
    """
    data = toc()
    assert data.get("format") == "jb-book", "_toc.yml must use the jb-book format"
    parts = data.get("parts") or []
    assert parts, "_toc.yml has no parts"
    flags = [bool(p.get("numbered", False)) for p in parts]
    assert any(flags), "no part of _toc.yml is numbered"
    first_unnumbered = flags.index(False) if False in flags else len(flags)
    late = [p.get("caption") for p, f in zip(parts[first_unnumbered:],
                                               flags[first_unnumbered:]) if f]
    assert not late, (f"numbered parts {late} come after an unnumbered part; move the "
                      "unnumbered parts (reference pages) to the end of _toc.yml")


def test_parts_have_captions():
    missing = [i for i, p in enumerate(toc().get("parts") or []) if not p.get("caption")]
    assert not missing, f"parts without a caption in _toc.yml: {missing}"
