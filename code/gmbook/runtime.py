r"""How many CPU threads a piece of work gets: the book's one thread policy.

What :func:`measure` (``python -m gmbook.runtime``) shows on the book's 2-core machines, for
one Adam step of a 3x128 :class:`gmbook.nets.MLP` with a time input:

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

__all__ = ["measure", "threads"]


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


# ------------------------------------------------------------------ the measurement

_STEP = """
import os, sys, time, torch
from gmbook.nets import MLP
torch.manual_seed(0)
torch.set_num_threads({threads})
net = MLP(2, hidden=128, depth=3, time_dim=32)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
x, t = torch.randn({batch}, 2), torch.rand({batch})
def step():
    opt.zero_grad(set_to_none=True)
    net(x, t).pow(2).mean().backward()
    opt.step()
for _ in range(20):
    step()
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    for _ in range({steps}):
        step()
    best = min(best, (time.perf_counter() - start) / {steps})
print(best * 1e3)
"""


def measure(batches: tuple[int, ...] = (256, 2048), steps: int = 50) -> list[dict]:
    """Time one Adam step of a 3x128 time-conditioned MLP per thread setting and batch.

    Each setting runs in a fresh interpreter (``OMP_WAIT_POLICY`` is read once, at start),
    and the best of five rounds of ``steps`` steps is kept. Run it on an idle machine:
    ``python -m gmbook.runtime``.

    Returns:
        list[dict]: a row per setting, with keys ``threads``, ``policy``, ``batch`` and
        ``ms`` (milliseconds per step).
    """
    import subprocess
    import sys

    rows = []
    cores = os.cpu_count() or 1
    settings = [(1, "PASSIVE")] + [(cores, p) for p in ("PASSIVE", "ACTIVE")] * (cores > 1)
    for batch in batches:
        for n, policy in settings:
            code = _STEP.format(threads=n, batch=batch, steps=steps)
            env = dict(os.environ, OMP_WAIT_POLICY=policy)
            out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True).stdout
            rows.append({"threads": n, "policy": policy, "batch": batch,
                         "ms": float(out.strip().splitlines()[-1])})
    return rows


if __name__ == "__main__":  # pragma: no cover - a measurement, not a test
    print(f"{'batch':>6} {'threads':>7} {'OMP_WAIT_POLICY':>16} {'ms per Adam step':>17}")
    for row in measure():
        print(f"{row['batch']:>6} {row['threads']:>7} {row['policy']:>16} {row['ms']:>17.2f}")
