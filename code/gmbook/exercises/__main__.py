r"""Print, or write into the package docstring, the table of registered checkers.

``python -m gmbook.exercises`` prints the table that :func:`gmbook.exercises.checker_table`
makes from the registry; ``python -m gmbook.exercises --write`` replaces the table in
``gmbook/exercises/__init__.py`` (between its ``checker-table`` markers), so that the API
docs list exactly the registered checkers. ``tests/test_checkers_registry.py`` fails when
the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gmbook.exercises import checker_table

START = ".. checker-table-start\n"
END = ".. checker-table-end\n"


def write(path: Path) -> bool:
    """Rewrite the table in ``path``; return whether the file changed."""
    text = path.read_text()
    i, j = text.index(START) + len(START), text.index(END)
    new = text[:i] + "\n" + checker_table() + "\n\n" + text[j:]  # reST: blank after a table
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        init = Path(__file__).with_name("__init__.py")
        print(f"{init}: {'updated' if write(init) else 'already up to date'}")
    elif sys.argv[1:]:
        sys.exit("usage: python -m gmbook.exercises [--write]")
    else:
        print(checker_table())
