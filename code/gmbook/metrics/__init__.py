"""Evaluation of generative models (being split into submodules; see the next commit)."""

from gmbook.metrics.distances import *  # noqa: F403
from gmbook.metrics.distances import __all__  # noqa: F401
