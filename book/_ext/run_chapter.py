"""Execute one chapter top to bottom, as the book build does, and report its time.

Usage: ``python book/_ext/run_chapter.py book/diffusion/ddpm.md [--save out.ipynb]``
(``make chapter CH=book/diffusion/ddpm.md``). The chapter runs in a fresh kernel in its own
folder with ``GMBOOK_STATIC=1``, like the build; a cell error stops it with the traceback.
``--save`` writes the executed notebook (outputs included) so that its figures can be looked
at; ``--cells`` prints the slowest cells.

Besides wall-clock seconds it reports the kernel's CPU seconds (user + system, all threads,
read from ``/proc`` on Linux, the forked workers of ``gmbook.runtime.run_parallel``
included), per cell and in total: on a machine shared with other work the
wall clock inflates with the load while the CPU time of a one-thread cell barely moves, so
CPU seconds are the measure to compare two versions of a chapter on a busy machine (a cell on
two threads counts both).
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
    # the kernel starts in the chapter's folder: a relative PYTHONPATH entry (e.g. `code`
    # from a git worktree) would resolve there, to nothing, and the installed package
    # would be used silently; make every entry absolute first
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(e).resolve()) for e in entries if e)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    nb = jupytext.read(args.chapter, fmt="md:myst")
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=False,
        record_timing=True, resources={"metadata": {"path": str(args.chapter.parent)}})
    cpu: dict[int, float] = {}
    marks: dict[int, float] = {}

    def kernel_cpu() -> float:
        try:
            pid = client.km.provisioner.process.pid
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime + stime, plus cutime + cstime: the workers gmbook.runtime.run_parallel
            # forks count once they are reaped (within the cell that ran them)
            ticks = sum(int(fields[k]) for k in (11, 12, 13, 14))
            return ticks / os.sysconf("SC_CLK_TCK")
        except (AttributeError, OSError, ValueError, IndexError):
            return float("nan")

    def before(cell, cell_index, **_):
        marks[cell_index] = kernel_cpu()

    def after(cell, cell_index, **_):
        cpu[cell_index] = kernel_cpu() - marks.get(cell_index, float("nan"))

    client.on_cell_execute = before
    client.on_cell_executed = after
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
            rows.append(((t1 - t0).total_seconds(), cpu.get(k, float("nan")), k, first[:56]))
    cpu_total = sum(r[1] for r in rows)
    print(f"{args.chapter}: executed in {total:.1f} s (cells: {cpu_total:.1f} CPU s)")
    for seconds, cpu_s, k, first in sorted(rows, reverse=True)[: args.cells]:
        print(f"  {seconds:6.1f} s {cpu_s:6.1f} CPU s  cell {k:3d}  {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
