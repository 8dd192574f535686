"""Shared pytest fixtures: every test starts from the same random state."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Isolate and fix the global RNG for each test (restored afterwards)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield
