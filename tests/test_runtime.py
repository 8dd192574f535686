"""gmbook.runtime.threads: the thread policy's one switch."""

import pytest
import torch

from gmbook.runtime import threads


def test_threads_sets_and_restores():
    before = torch.get_num_threads()
    with threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        with threads() as m:
            assert m >= 1 and torch.get_num_threads() == m
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_threads_restores_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad, error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_threads_rejects_bad_counts(bad, error):
    with pytest.raises(error, match="n must be"):
        with threads(bad):
            pass

