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


def check_shape(name: str, value: object) -> tuple[int, ...]:
    """A non-empty tuple of positive ints (bools refused), e.g. a model's sample shape."""
    if (not isinstance(value, tuple) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                       for s in value)):
        raise ValueError(f"{name} must be a tuple of positive ints, got {value!r}")
    return value


def check_generator(generator: object) -> torch.Generator | None:
    """A ``torch.Generator`` or ``None``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")
    return generator


def check_float_tensor(name: str, x: object) -> Tensor:
    """A floating-point ``torch.Tensor`` of any shape."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {describe(x)}")
    return x


def check_points(name: str, x: object, dim: int | None = None, *, min_rows: int = 0,
                 batch_dims: bool = False, rows: str = "B") -> Tensor:
    """A floating-point batch of points: shape ``(B, D)``, or ``(*B, D)`` with ``batch_dims``.

    The one point check of the package's data, density, flow and VAE modules.

    Args:
        name: the argument's name, for the message.
        x: the value to check.
        dim: the required number of coordinates :math:`D` (``None``: any).
        min_rows: the least number of rows (checked for ``(B, D)`` only).
        batch_dims: accept any number of leading batch dimensions (at least one dimension).
        rows: the letter the message gives the rows (``"B"``, or ``"n"`` for a data set).

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: its shape is not the one asked for.

    Example:
        >>> check_points("x", torch.zeros(3, 2), 2).shape
        torch.Size([3, 2])
    """
    x = check_float_tensor(name, x)
    d = "D" if dim is None else str(dim)
    if batch_dims:
        if x.ndim < 1 or (dim is not None and x.shape[-1] != dim):
            raise ValueError(f"{name} must have shape (*{rows}, {d}), got {tuple(x.shape)}")
        return x
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim) or x.shape[0] < min_rows:
        least = f" with {rows} >= {min_rows}" if min_rows > 0 else ""
        raise ValueError(f"{name} must have shape ({rows}, {d}){least}, got {tuple(x.shape)}")
    return x
