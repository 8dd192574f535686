r"""The one way the package draws random tensors with a generator.

A :class:`torch.Generator` belongs to one device, and ``torch.randn(..., generator=g,
device=d)`` fails when they differ (a CPU generator and a GPU model, the usual case in a
notebook that seeds once on the CPU). :func:`randn` and :func:`rand` draw on the
generator's device and move the result to the target device, so a given generator state
gives the same numbers on every device. Without a generator they draw from the global RNG
of the target device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["rand", "randn"]


def _draw(fn, shape: Sequence[int], like: Tensor | None, device, dtype,
          generator: torch.Generator | None) -> Tensor:
    if like is not None:
        device = like.device if device is None else device
        dtype = like.dtype if dtype is None else dtype
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device("cpu") if device is None else torch.device(device)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    if generator is None or generator.device == device:
        return fn(*shape, generator=generator, device=device, dtype=dtype)
    return fn(*shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def randn(shape: Sequence[int], *, like: Tensor | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype | None = None,
          generator: torch.Generator | None = None) -> Tensor:
    r"""Standard normal noise of ``shape``, on the device and dtype of ``like`` (or given).

    Args:
        shape: the shape, e.g. ``x.shape`` or ``(n, D)``.
        like: a tensor whose device and dtype the noise takes (overridden by ``device`` and
            ``dtype`` when given).
        device, dtype: where and in which dtype (default: CPU, the default dtype).
        generator: the source; drawn on its own device, then moved.

    Example:
        >>> x = torch.zeros(2, 3, dtype=torch.float64)
        >>> randn(x.shape, like=x, generator=torch.Generator().manual_seed(0)).dtype
        torch.float64
    """
    return _draw(torch.randn, tuple(shape), like, device, dtype, generator)


def rand(shape: Sequence[int], *, like: Tensor | None = None,
         device: torch.device | str | None = None, dtype: torch.dtype | None = None,
         generator: torch.Generator | None = None) -> Tensor:
    r"""Uniform noise on :math:`[0, 1)` of ``shape``; the arguments are those of :func:`randn`."""
    return _draw(torch.rand, tuple(shape), like, device, dtype, generator)
