r"""How many CPU threads a piece of work gets: the book's one thread policy.

Measured on the book's 2-core reference machine (one Adam step of a 3x128
:class:`gmbook.nets.MLP` with a time input; see the execution page of the book):

* small batches (a few hundred rows, the training loops of every chapter) run as fast on
  one thread as on two, and a second thread only costs when the machine is busy: with
  ``OMP_WAIT_POLICY=PASSIVE`` (what the Makefile, the build and the tests set, so that a busy
  machine slows down gracefully instead of tenfold) two threads are *slower* than one;
* large batches (thousands of rows: sampling 10 000 points, density grids, exact W2 solves
  in POT, long Langevin chains) run up to twice as fast on two threads.

So the package leaves PyTorch's setting alone, and chapters wrap work in :func:`threads`:
``with threads(1):`` around training, ``with threads():`` (all cores) around large
evaluations. Both restore the previous setting on exit, also after an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from gmbook._checks import check_int

__all__ = ["threads"]


@contextmanager
def threads(n: int | None = None) -> Iterator[int]:
    """Run the ``with`` block on ``n`` intra-op threads (default: every core), then restore.

    Args:
        n: the number of threads, at least 1; ``None`` for ``os.cpu_count()``.

    Yields:
        The number of threads in effect inside the block.

    Example:
        >>> before = torch.get_num_threads()
        >>> with threads(1) as n:
        ...     torch.get_num_threads() == n == 1
        True
        >>> torch.get_num_threads() == before
        True
    """
    n = (os.cpu_count() or 1) if n is None else check_int("n", n, minimum=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
