"""Tests of gmbook._checks, the argument checks shared by the package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmbook._checks import (check_bool, check_generator, check_int, check_nonnegative,
                            check_positive, check_real, check_shape, describe)


def test_valid_values_pass_through_as_plain_python_types():
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_real("x", 2) == 2.0 and check_positive("x", 0.5) == 0.5
    assert check_nonnegative("x", 0) == 0.0 and check_bool("b", False) is False
    g = torch.Generator()
    assert check_generator(g) is g and check_generator(None) is None
    assert check_shape("shape", (1, 8, 8)) == (1, 8, 8)


@pytest.mark.parametrize("call, error, message", [
    (lambda: check_int("n", 0), ValueError, "n must be a positive int, got 0"),
    (lambda: check_int("n", True), TypeError, "n must be a positive int"),
    (lambda: check_int("k", 1, 2), ValueError, "k must be an int >= 2"),
    (lambda: check_int("k", 2.0, 2), TypeError, "k must be an int >= 2, got float"),
    (lambda: check_real("x", "1"), TypeError, "x must be a real number"),
    (lambda: check_real("x", float("inf")), ValueError, "x must be finite"),
    (lambda: check_positive("x", 0.0), ValueError, "x must be > 0"),
    (lambda: check_nonnegative("x", -1), ValueError, "x must be >= 0"),
    (lambda: check_bool("flag", 1), TypeError, "flag must be a bool"),
    (lambda: check_generator(0), TypeError, "torch.Generator or None"),
    (lambda: check_shape("EDM: shape", ()), ValueError, "EDM: shape must be a tuple"),
    (lambda: check_shape("shape", [2]), ValueError, "shape must be a tuple of positive"),
    (lambda: check_shape("shape", (2, 0)), ValueError, r"got \(2, 0\)"),
    (lambda: check_shape("shape", (True,)), ValueError, "positive ints"),
])
def test_bad_values_raise_with_the_argument_name(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_describe_never_prints_a_whole_tensor():
    assert describe(torch.zeros(1000, 2)) == (
        "a Tensor of shape (1000, 2) and dtype torch.float32")
    assert len(describe("x" * 500)) < 80
