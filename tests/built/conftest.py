"""The headless browser shared by the browser checks (``test_browser*.py``)."""

from __future__ import annotations

import os

import pytest

from pagecheck import Browser, find_chromium

#: Set (as on CI, ``CI=true``) to make a missing Chromium a failure instead of a skip.
REQUIRE = ("CI", "GMBOOK_REQUIRE_BROWSER")


def browser_required() -> bool:
    return any(os.environ.get(name, "").lower() in {"1", "true", "yes"} for name in REQUIRE)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (skip, or fail on CI, without one)."""
    if find_chromium() is None:
        message = ("the browser checks need Chromium: install it (Debian/Ubuntu: "
                   "apt-get install chromium) or set GMBOOK_CHROMIUM to a Chrome executable")
        if browser_required():
            pytest.fail(f"{message}; CI=true or GMBOOK_REQUIRE_BROWSER=1 makes this an error",
                        pytrace=False)
        pytest.skip(message)
    with Browser() as b:
        yield b
