"""The gmbook benchmark: every model family on the same 2-D toys, run by ``make bench``.

A benchmark, not a test: it records timings and quality numbers to ``benchmarks/results``
and asserts nothing. See ``README.md`` in this folder, :mod:`benchmarks.registry` for how a
chapter adds its entry, and :mod:`benchmarks.run` for what is measured.
"""

import os

# Before torch starts its threads (as in the Makefile and tests/conftest.py): OpenMP threads
# that spin while waiting make a millisecond of sampling take tens of milliseconds on a busy
# 2-core machine, once scikit-learn's EM has woken a second OpenMP pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
