"""Options of the launch simulation (``tests/launch``).

``pytest tests/launch --launch`` builds fresh environments (a few minutes, needs PyPI or
the pip cache); without ``--launch`` only the static checks run. ``--launch-chapter``
(default: ``$GMBOOK_LAUNCH_CHAPTER``, else Appendix A, the cheapest chapter) picks the
chapter whose notebook runs.
"""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption("--launch", action="store_true", default=False,
                     help="simulate launching a chapter on Colab and Binder (fresh venvs)")
    parser.addoption("--launch-chapter", default=None, metavar="PATH",
                     help="the chapter to launch, e.g. book/diffusion/ddpm.md (default: "
                          "$GMBOOK_LAUNCH_CHAPTER, else book/appendix/probability.md)")
