"""Argument checks shared by the package: one message style for every public function.

Each check returns the value it validated (converted to a plain Python type) and raises
``TypeError`` for a value of the wrong kind and ``ValueError`` for one out of range, with a
message that names the argument and says what was expected. Shape checks of tensors stay in
the modules that know what the shapes mean.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor


def describe(value: object) -> str:
    """A short description of ``value`` for error messages (never a whole tensor)."""
    if isinstance(value, (Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """An integer (not a bool) that is at least ``minimum``."""
    wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {wanted}, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return int(value)


def check_real(name: str, value: object) -> float:
    """A finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(name: str, value: object) -> float:
    """A finite real number > 0."""
    value = check_real(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_nonnegative(name: str, value: object) -> float:
    """A finite real number >= 0."""
    value = check_real(name, value)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """A bool (not merely a truthy value)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {describe(value)}")
    return value


def check_generator(generator: object) -> torch.Generator | None:
    """A ``torch.Generator`` or ``None``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")
    return generator
