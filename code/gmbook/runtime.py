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

Independent one-thread work side by side: :func:`run_parallel`. A chapter that trains several
independent models (two recipes, three variants, a table of runs) leaves one core of a 2-core
machine idle while each trains on one thread. ``run_parallel(jobs)`` runs the jobs (callables
without arguments) in forked worker processes, one thread each, at most :func:`job_slots` at a
time, and returns their results (models, tensors, anything picklable) in the order of
``jobs``; the worker's CPU time is its own, so it counts once the worker is reaped (in the
``cutime`` of ``/proc/<pid>/stat``, which the book's chapter timer adds). Its contract:

* **Results do not depend on the schedule.** Every job, in a worker or in the parent, starts
  from the global random state as it was at the call (the parent's state is left unchanged)
  and runs on one intra-op thread, so the parallel results are bitwise those of the
  sequential run. Jobs that draw random numbers must therefore own them: a seeded
  ``torch.Generator``, ``fit(..., seed=s)``, a model built before the call, or, for the
  initial weights of the networks a job builds, :func:`own_weights` as its first line.
* **Only results come back.** A job's side effects (a model trained in place, a generator
  advanced) stay in its worker: return everything the caller needs, e.g. the trained model,
  and use the returned object (in a worker it is a copy, unpickled in the parent; shared
  references within one result, such as an EMA and its model, stay shared).
* **Where it forks.** Workers are forked only on Linux (the ``fork`` start method, so a
  job need not be picklable: closures and lambdas work). With one usable core, on macOS and
  Windows (whose default is ``spawn``), once this process has initialised CUDA (a forked
  child cannot use it), or with ``GMBOOK_JOBS=1``, the jobs run one after the other in this
  process, with the same results. ``GMBOOK_JOBS=k`` caps the workers at ``k``.
* **Fork safety.** The parent may have run multi-threaded (OpenMP) work before: a worker
  sets one thread before any work, so it never enters an OpenMP parallel region, the recipe
  of PyTorch's ``DataLoader`` workers. Measured with this book's PyTorch build (GNU OpenMP):
  a forked child that goes back to two threads after the parent used two hangs in its
  first parallel operation; on one thread it runs. So inside a worker :func:`threads` keeps
  one thread whatever it is asked; do not call ``torch.set_num_threads`` in a job.
* **Errors.** An exception in a job is raised in the parent (the same type when it pickles,
  else ``RuntimeError``) with the worker's traceback as its cause; the other workers are
  stopped. A worker that dies without an answer (killed, out of memory) raises
  ``RuntimeError`` with its exit code.
* **Output.** Workers run in static mode (``GMBOOK_STATIC=1``: no progress bars, whose
  widgets would write to the parent kernel's sockets); a job should return what it has to
  show instead of printing it.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from gmbook._checks import check_int, describe

__all__ = ["job_slots", "measure", "own_weights", "run_parallel", "threads"]


_IN_WORKER = False  # True in a worker forked by run_parallel


@contextmanager
def threads(n: int | None = None) -> Iterator[int]:
    """Run the ``with`` block on ``n`` intra-op threads (default: every core), then restore.

    Args:
        n: the number of threads, at least 1; ``None`` for ``os.cpu_count()``. Inside a
            worker of :func:`run_parallel` it is always 1 (a forked worker on more threads
            can hang).

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
    if _IN_WORKER:
        n = 1  # a forked worker must not go back to several threads (see run_parallel)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------ independent jobs

def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _can_fork() -> bool:
    import multiprocessing

    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def job_slots() -> int:
    """How many jobs :func:`run_parallel` runs at once by default.

    The number of cores this process may use (``os.sched_getaffinity``), capped by the
    environment variable ``GMBOOK_JOBS`` if set; 1 where the platform cannot fork (macOS,
    Windows), so that the jobs run in the parent.

    Raises:
        ValueError: if ``GMBOOK_JOBS`` is set to anything but a positive integer.
    """
    slots = _usable_cores() if _can_fork() else 1
    cap = os.environ.get("GMBOOK_JOBS", "").strip()
    if cap:
        if not cap.isdigit() or int(cap) < 1:
            raise ValueError(f"GMBOOK_JOBS must be a positive integer, got {cap!r}")
        slots = min(slots, int(cap))
    return slots


class _RemoteTraceback(Exception):
    """The traceback of a job that failed in a worker process (the cause of the error)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text


def _run_job(job: Callable[[], Any]) -> Any:
    with torch.random.fork_rng(), threads(1):  # the same start for every job, one thread
        return job()


def _worker(job: Callable[[], Any], conn: Any) -> None:  # pragma: no cover - in a child
    global _IN_WORKER
    torch.set_num_threads(1)  # before any work: the child never enters an OpenMP region
    _IN_WORKER = True  # and threads() keeps it there
    os.environ["GMBOOK_STATIC"] = "1"  # no progress bars: a widget would write to the
    try:  # parent's kernel sockets, which a forked child must leave alone
        payload = pickle.dumps((True, job()), protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        text = traceback.format_exc()
        try:
            payload = pickle.dumps((False, (error, text)))
            pickle.loads(payload)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            payload = pickle.dumps((False, (None, text)))
    conn.send_bytes(payload)
    conn.close()


def _raise_remote(index: int, error: BaseException | None, text: str) -> None:
    cause = _RemoteTraceback(text)
    if error is None:
        last = text.strip().splitlines()[-1] if text.strip() else "an error"
        raise RuntimeError(f"job {index} failed in its worker: {last}") from cause
    raise error from cause


def _preload() -> None:
    """Import, in the parent, what jobs would otherwise import lazily in every worker.

    The first ``torch.optim`` optimizer a process builds imports ``torch._dynamo`` (about 1.2
    CPU s on this book's machine, measured in a fresh interpreter); a forked worker that has
    not inherited the module pays it again for every job that trains. Importing it before the
    fork costs that once. It starts no thread, so forking after it stays safe. A module that
    only some jobs need (POT, for the exact W2 of a scorecard: about a second) is the
    caller's to import before the pool, as the chapters that score in their jobs do.
    """
    import torch._dynamo  # noqa: F401


def run_parallel(jobs: Sequence[Callable[[], Any]], *, workers: int | None = None) -> list:
    """Run independent jobs side by side in forked workers, one thread each; return results.

    See the module's docstring for the contract: the results are bitwise those of running the
    jobs one after the other, because every job starts from the caller's global random state
    (left unchanged) on one intra-op thread, so each job must own its randomness (a seeded
    generator, ``fit(..., seed=s)``). Before it forks it imports ``torch._dynamo``, which
    every optimizer would otherwise import anew in each worker (about a second of CPU per job).

    Args:
        jobs: callables without arguments; each result must pickle (tensors, modules,
            dataclasses of them) when the jobs run in workers.
        workers: at most this many jobs at once; ``None`` for :func:`job_slots`. With 1 (or
            one job, or a platform that cannot fork) the jobs run in this process.

    Returns:
        list: the results, in the order of ``jobs``.

    Raises:
        TypeError: if ``jobs`` is not a sequence of callables.
        ValueError: if ``workers`` is not a positive int.
        Exception: a job's own exception, with the worker's traceback as its ``__cause__``.

    Example:
        >>> def draw(seed):
        ...     return torch.randn(3, generator=torch.Generator().manual_seed(seed))
        >>> a, b = run_parallel([lambda: draw(0), lambda: draw(1)])
        >>> torch.equal(a, draw(0)) and torch.equal(b, draw(1))
        True
    """
    if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Sequence):
        raise TypeError(f"jobs must be a sequence of callables, got {describe(jobs)}")
    for k, job in enumerate(jobs):
        if not callable(job):
            raise TypeError(f"jobs[{k}] must be callable, got {describe(job)}")
    workers = job_slots() if workers is None else check_int("workers", workers)
    workers = min(workers, len(jobs))
    if workers <= 1 or not _can_fork() or torch.cuda.is_initialized():
        return [_run_job(job) for job in jobs]  # (a forked child cannot use CUDA)

    import multiprocessing
    from multiprocessing.connection import wait

    _preload()  # once here, not once per forked worker
    context = multiprocessing.get_context("fork")
    results: list = [None] * len(jobs)
    waiting = list(enumerate(jobs))
    running: dict = {}  # receiving end -> (index, process)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what the child inherits, before it sets it again
        while waiting or running:
            while waiting and len(running) < workers:
                index, job = waiting.pop(0)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(job, send), daemon=True)
                process.start()
                send.close()
                running[receive] = (index, process)
            for receive in wait(list(running)):
                index, process = running.pop(receive)
                try:
                    ok, value = pickle.loads(receive.recv_bytes())
                except EOFError:
                    ok, value = None, None
                finally:
                    receive.close()
                process.join()
                if ok is None:
                    raise RuntimeError(f"job {index}'s worker died without an answer "
                                       f"(exit code {process.exitcode})")
                if not ok:
                    _raise_remote(index, *value)
                results[index] = value
    finally:
        for receive, (_, process) in running.items():  # after an error: stop the rest
            process.terminate()
            process.join()
            receive.close()
        torch.set_num_threads(previous)
    return results


def own_weights(seed: int) -> None:
    """Give the job that calls it its own initial weights: seed the global RNG from ``seed``.

    Networks draw their initial weights from PyTorch's global random state, and every job of
    :func:`run_parallel` starts from the caller's state at the call. Networks built in two jobs
    (or in one job after a cell that drew random numbers) would then share, or silently
    change, their initial weights. Call ``own_weights(seed)`` as the first line of a job that
    builds networks: the global (CPU) state becomes that of
    ``torch.Generator().manual_seed(seed)``, so the weights depend on ``seed`` only, whether
    the job runs in a worker or in the caller's process, and in any order. ``run_parallel``
    gives the caller its own state back after the jobs.

    This is the one place where the package sets the global random state, on purpose and only
    when a chapter asks: outside a job of :func:`run_parallel` it changes the caller's state
    for good (like ``torch.manual_seed``, of which it is the CPU part).

    Args:
        seed: a non-negative int.

    Raises:
        TypeError: if ``seed`` is not an int (a bool is refused).
        ValueError: if ``seed`` is negative.

    Example:
        >>> from gmbook.nets import MLP
        >>> def job():
        ...     own_weights(7)
        ...     return MLP(2, hidden=8, depth=1)
        >>> a, b = run_parallel([job, job])
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
    """
    seed = check_int("seed", seed, minimum=0)
    torch.set_rng_state(torch.Generator().manual_seed(seed).get_state())


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
