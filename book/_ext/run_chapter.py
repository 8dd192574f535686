"""Execute one chapter top to bottom, as the book build does, and report its time.

Usage: ``python book/_ext/run_chapter.py book/diffusion/ddpm.md [--save out.ipynb]``
(``make chapter CH=book/diffusion/ddpm.md``). The chapter runs in a fresh kernel in its own
folder with ``GMBOOK_STATIC=1``, like the build; a cell error stops it with the traceback.
``--save`` writes the executed notebook (outputs included) so that its figures can be looked
at; ``--cells`` prints the slowest cells.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapter", type=Path, help="the chapter's .md (MyST notebook)")
    parser.add_argument("--save", type=Path, default=None, help="write the executed notebook")
    parser.add_argument("--cells", type=int, default=5, help="how many slowest cells to list")
    args = parser.parse_args(argv)

    import jupytext
    import nbclient

    os.environ["GMBOOK_STATIC"] = "1"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    nb = jupytext.read(args.chapter, fmt="md:myst")
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=False,
        record_timing=True, resources={"metadata": {"path": str(args.chapter.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        total = time.perf_counter() - start
        if args.save:
            import nbformat
            nbformat.write(nb, args.save)
    rows = []
    for k, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in timing:
            from datetime import datetime
            t0 = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            t1 = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            rows.append(((t1 - t0).total_seconds(), k, first[:60]))
    print(f"{args.chapter}: executed in {total:.1f} s")
    for seconds, k, first in sorted(rows, reverse=True)[: args.cells]:
        print(f"  {seconds:6.1f} s  cell {k:3d}  {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
