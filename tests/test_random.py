"""gmbook._random: the one way to draw noise with a generator (device policy)."""

from __future__ import annotations

import pytest
import torch

from gmbook._random import rand, randn


def test_same_generator_state_same_numbers_and_like_sets_dtype():
    x = torch.zeros(3, 2, dtype=torch.float64)
    a = randn(x.shape, like=x, generator=torch.Generator().manual_seed(1))
    b = randn((3, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert a.dtype == torch.float64 and a.shape == (3, 2)
    assert torch.equal(a, b)
    ref = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(a, ref)


def test_a_generator_on_another_device_draws_there_and_moves():
    """A CPU generator with a target on the meta device (stands in for a GPU here)."""
    out = randn((4,), device="meta", generator=torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (4,)
    u = rand((5,), generator=torch.Generator().manual_seed(0))
    assert bool(((u >= 0) & (u < 1)).all())


def test_global_rng_without_generator_and_bad_generator():
    torch.manual_seed(7)
    a = randn((3,))
    torch.manual_seed(7)
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(TypeError, match="generator"):
        randn((3,), generator=3)
