"""Shared pytest fixtures: every test starts from the same random state."""

from __future__ import annotations

import os

# Before torch starts its threads: let them wait passively, not spin (see book/_ext).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Isolate and fix the global RNG for each test (restored afterwards)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def pytest_addoption(parser):
    """``--built-book=_build``: run the checks of the built book in ``tests/built/``."""
    parser.addoption(
        "--built-book", action="store", default=None, metavar="DIR",
        help="the build folder of the book (with html/ and latex/ inside, e.g. _build); "
             "tests/built/ is skipped without it")


@pytest.fixture(scope="session")
def built(request):
    """The build folder given by ``--built-book`` (a ``pathlib.Path``).

    Every test of ``tests/built/`` uses it (``pytestmark``), so all of them are skipped
    when the option is absent, as in ``make test``, which runs before any build.
    """
    from pathlib import Path

    option = request.config.getoption("--built-book", default=None)
    if not option:
        pytest.skip("checks of the built book: build it (make book; make pdf), then run "
                    "`pytest tests/built --built-book=_build`")
    path = Path(option)
    if not path.is_absolute() and not path.exists():
        path = request.config.rootpath / option
    path = path.resolve()
    assert path.is_dir(), f"--built-book={option}: {path} is not a folder"
    return path
