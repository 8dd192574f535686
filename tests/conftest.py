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
    """``--built-book=_build``: run the checks of the built book in ``tests/built/``;
    ``--launch`` and ``--launch-chapter``: the launch simulation of ``tests/launch/``
    (``pytest tests/launch --launch`` builds fresh environments, a few minutes, needing PyPI
    or the pip cache; without ``--launch`` only its static checks run; the chapter defaults
    to ``$GMBOOK_LAUNCH_CHAPTER``, else Appendix A, the cheapest)."""
    parser.addoption("--launch", action="store_true", default=False,
                     help="simulate launching a chapter on Colab and Binder (fresh venvs)")
    parser.addoption("--launch-chapter", default=None, metavar="PATH",
                     help="the chapter to launch, e.g. book/diffusion/ddpm.md (default: "
                          "$GMBOOK_LAUNCH_CHAPTER, else book/appendix/probability.md)")
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


# One conftest for the whole suite: with --doctest-modules, a second file named conftest.py
# in tests/built or tests/launch would be collected as a module of the same name and clash.

#: Set (as on CI, ``CI=true``) to make a missing Chromium a failure instead of a skip.
REQUIRE_BROWSER = ("CI", "GMBOOK_REQUIRE_BROWSER")


def browser_required() -> bool:
    return any(os.environ.get(name, "").lower() in {"1", "true", "yes"}
               for name in REQUIRE_BROWSER)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session, for ``tests/built/test_browser*.py``
    (skip, or fail on CI, without one)."""
    from pagecheck import Browser, find_chromium  # tests/built, on sys.path by then

    if find_chromium() is None:
        message = ("the browser checks need Chromium: install it (Debian/Ubuntu: "
                   "apt-get install chromium) or set GMBOOK_CHROMIUM to a Chrome executable")
        if browser_required():
            pytest.fail(f"{message}; CI=true or GMBOOK_REQUIRE_BROWSER=1 makes this an error",
                        pytrace=False)
        pytest.skip(message)
    with Browser() as b:
        yield b
