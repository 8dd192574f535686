r"""Checkers of the chapter *Flow matching and rectified flow*."""

from __future__ import annotations

import torch
from torch import Tensor

from gmbook import flow_matching as fm
from gmbook.exercises._framework import (
    DTYPES,
    Case,
    Checker,
    Hint,
    fmt_dtype,
    randint,
    register,
)

# -- vp_path ---------------------------------------------------------------------------


def _vp_path(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: the variance-preserving path and its conditional velocity
    (:func:`gmbook.flow_matching.gaussian_path` with ``path="vp"``)."""
    s = fm.gaussian_path(x0, x1, t, "vp")
    return s.x_t, s.u_t


def _path_cases(generator: torch.Generator, low: float = 0.0, high: float = 1.0
                ) -> list[Case]:
    cases = []
    for i, shape in enumerate(((2,), (3,), (1, 4, 4), (2,), (5,), (2, 3))):
        dtype = DTYPES[i % 2]
        b = randint(generator, 2, 20)
        x0 = torch.randn(b, *shape, generator=generator, dtype=torch.float64).to(dtype)
        x1 = torch.randn(b, *shape, generator=generator, dtype=torch.float64).to(dtype)
        t = low + (high - low) * torch.rand(b, generator=generator, dtype=torch.float64)
        cases.append(Case(f"B={b}, D={shape}, {fmt_dtype(dtype)}", (x0, x1, t.to(dtype))))
    f64 = torch.float64
    x0, x1 = torch.randn(2, 3, 2, generator=generator, dtype=f64)
    if low == 0.0:
        cases.append(Case("t = 0, 1/2, 1 (the ends are noise and data), float64",
                          (x0, x1, torch.tensor([0.0, 0.5, 1.0], dtype=f64)), edge=True))
    else:
        cases.append(Case("t = 0.05, 1/2, 0.95, float64",
                          (x0, x1, torch.tensor([0.05, 0.5, 0.95], dtype=f64)), edge=True))
    return cases


def _vp_swapped(x0, x1, t):
    s = fm.gaussian_path(x1, x0, t, "vp")
    return s.x_t, s.u_t


def _vp_no_chain_rule(x0, x1, t):
    s = fm.gaussian_path(x0, x1, t, "vp")
    return s.x_t, s.u_t / (0.5 * torch.pi)


register(
    Checker(
        name="vp_path",
        reference=_vp_path,
        generate=_path_cases,
        outputs=("x_t", "u_t"),
        hints=[
            Hint("x0 is the noise (weight cos(pi t / 2)) and x1 the data (weight "
                 "sin(pi t / 2)): at t = 0 the path starts at x0.",
                 wrong=_vp_swapped, output="x_t"),
            Hint("d/dt sin(pi t / 2) = (pi / 2) cos(pi t / 2): keep the factor pi / 2 of "
                 "the chain rule.", wrong=_vp_no_chain_rule, output="u_t"),
        ],
    )
)

# -- velocity_from_eps -----------------------------------------------------------------


def _velocity_from_eps(x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    r"""Reference: the linear path's velocity from a noise prediction
    (:func:`gmbook.flow_matching.velocity_from_eps`)."""
    return fm.velocity_from_eps(x_t, eps, t, "linear")


def _eps_cases(generator: torch.Generator) -> list[Case]:
    return _path_cases(generator, 0.05, 1.0)


def _eps_sign(x_t, eps, t):
    return fm.velocity_from_eps(x_t, -eps, t, "linear")


def _eps_as_x1(x_t, eps, t):
    return x_t - eps


register(
    Checker(
        name="velocity_from_eps",
        reference=_velocity_from_eps,
        generate=_eps_cases,
        outputs=("v",),
        hints=[
            Hint("First recover x1 = (x_t - (1 - t) eps) / t, then v = x1 - eps.",
                 wrong=_eps_as_x1, output="v"),
            Hint("The noise enters the velocity with a minus sign: v = x1 - x0.",
                 wrong=_eps_sign, output="v"),
        ],
    )
)
