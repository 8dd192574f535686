r"""Checkers of Appendix B, *Brownian motion and stochastic calculus*."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from gmbook.exercises._framework import (
    DTYPES,
    Case,
    Checker,
    Hint,
    fmt_dtype,
    randint,
    register,
)
from gmbook.stochastic import em_step, ou_transition


class _Field:
    r"""A named coefficient ``fn(x, t)``, so that reports show what it is."""

    def __init__(self, name: str, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.name, self.fn = name, fn

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fn(x, t)

    def __repr__(self) -> str:
        return self.name


# -- em_step ---------------------------------------------------------------------------


def _em_step(f: Callable, g: Callable, x: Tensor, t: float, h: float, dw: Tensor) -> Tensor:
    r"""Reference: one Euler-Maruyama step :math:`x + f(x, t) h + g(x, t) \Delta W`
    (``eq-sc-em``), shape of ``x``."""
    return em_step(f, g, x, t, h, dw)


_FIELDS = [
    (_Field("f = -2 x", lambda x, t: -2 * x), _Field("g = 0.5", lambda x, t: 0.5 + 0 * x)),
    (_Field("f = 0.3 x", lambda x, t: 0.3 * x), _Field("g = 0.8 x", lambda x, t: 0.8 * x)),
    (_Field("f = x - x^3", lambda x, t: x - x**3),
     _Field("g = 1 + t", lambda x, t: (1 + t) + 0 * x)),
    (_Field("f = sin(t) - x", lambda x, t: torch.sin(t) - x),
     _Field("g = sqrt(1 + x^2)", lambda x, t: torch.sqrt(1 + x**2))),
]


def _em_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        f, g = _FIELDS[k % len(_FIELDS)]
        b, d = randint(generator, 2, 7), randint(generator, 1, 3)
        x = torch.randn(b, d, generator=generator, dtype=f64)
        h = round(0.01 + 0.2 * float(torch.rand((), generator=generator, dtype=f64)), 4)
        t = round(float(torch.rand((), generator=generator, dtype=f64)), 3)
        dw = math.sqrt(h) * torch.randn(b, d, generator=generator, dtype=f64)
        cases.append(Case(f"{f!r}, {g!r}, B={b}, D={d}, t={t}, h={h}, {fmt_dtype(dtype)}",
                          (f, g, x.to(dtype), t, h, dw.to(dtype))))
    f, g = _FIELDS[1]
    x = torch.tensor([[1.0], [2.0]], dtype=f64)
    cases += [
        Case("dW = 0: one Euler step of the ODE dx = f dt, f = 0.3 x, float64",
             (f, g, x, 0.0, 0.1, torch.zeros(2, 1, dtype=f64)), edge=True),
        Case("time-dependent g = 1 + t at t = 2, h = 0.5, float64",
             (*_FIELDS[2], torch.tensor([[0.5, -1.0]], dtype=f64), 2.0, 0.5,
              torch.tensor([[0.3, -0.2]], dtype=f64)), edge=True),
    ]
    return cases


def _em_sqrt_h(f, g, x, t, h, dw):
    return x + f(x, torch.as_tensor(t, dtype=x.dtype)) * h \
        + g(x, torch.as_tensor(t, dtype=x.dtype)) * dw * math.sqrt(h)


def _em_h_noise(f, g, x, t, h, dw):
    tt = torch.as_tensor(t, dtype=x.dtype)
    return x + f(x, tt) * h + g(x, tt) * dw * h


def _em_no_h(f, g, x, t, h, dw):
    tt = torch.as_tensor(t, dtype=x.dtype)
    return x + f(x, tt) + g(x, tt) * dw


def _em_time_zero(f, g, x, t, h, dw):
    zero = torch.zeros((), dtype=x.dtype)
    return x + f(x, zero) * h + g(x, zero) * dw


def _em_end_time(f, g, x, t, h, dw):
    tt = torch.as_tensor(t + h, dtype=x.dtype)
    return x + f(x, tt) * h + g(x, tt) * dw


register(
    Checker(
        name="em_step",
        reference=_em_step,
        generate=_em_cases,
        outputs=("x_new",),
        hints=[
            Hint("dw is already the Brownian increment, with variance h: do not multiply "
                 "it by sqrt(h) again.", wrong=_em_sqrt_h),
            Hint("The noise term is g(x, t) * dw, without a factor h (dW is of order "
                 "sqrt(h), not h).", wrong=_em_h_noise),
            Hint("The drift is integrated over the step: f(x, t) * h.", wrong=_em_no_h),
            Hint("Evaluate f and g at the current time t (the left point), not at 0.",
                 wrong=_em_time_zero),
            Hint("Euler-Maruyama evaluates f and g at the left point t, not at t + h (the "
                 "Ito integral is a left-point sum).", wrong=_em_end_time),
        ],
    )
)


# -- ou_transition ---------------------------------------------------------------------


def _ou(x0: Tensor, t: Tensor, theta: float, sigma: float) -> tuple[Tensor, Tensor]:
    r"""Reference: mean and variance of :math:`x_t \mid x_0` for :math:`\mathrm d x =
    -\theta x\, \mathrm d t + \sigma\, \mathrm d W` (``eq-sc-ou-transition``), shapes of
    ``x0``."""
    return ou_transition(x0, t, theta, sigma)


def _ou_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        n = randint(generator, 2, 8)
        x0 = 2 * torch.randn(n, generator=generator, dtype=f64)
        t = 0.05 + 2 * torch.rand(n, generator=generator, dtype=f64)
        theta = round(0.3 + 2 * float(torch.rand((), generator=generator, dtype=f64)), 3)
        sigma = round(0.2 + 1.5 * float(torch.rand((), generator=generator, dtype=f64)), 3)
        cases.append(Case(f"n={n}, theta={theta}, sigma={sigma}, {fmt_dtype(dtype)}",
                          (x0.to(dtype), t.to(dtype), theta, sigma)))
    x0 = torch.tensor([1.0, -2.0, 0.0], dtype=f64)
    cases += [
        Case("t = 0: the point mass at x0 (variance 0), float64",
             (x0, torch.zeros(3, dtype=f64), 1.0, 1.0), edge=True),
        Case("t = 30, theta = 1: the stationary N(0, sigma^2 / (2 theta)), float64",
             (x0, torch.full((3,), 30.0, dtype=f64), 1.0, 2.0), edge=True),
        Case("theta = 2, sigma = 2 (stationary variance 1), t = 0.5, float64",
             (x0, torch.full((3,), 0.5, dtype=f64), 2.0, 2.0), edge=True),
        Case("t = 1e-12: the variance to full relative precision (expm1), float64",
             (x0, torch.full((3,), 1e-12, dtype=f64), 1.0, 2.0), edge=True,
             rtol=1e-10, atol=0.0),
    ]
    return cases


def _ou_no_half(x0, t, theta, sigma):
    return x0 * torch.exp(-theta * t), sigma**2 / theta * (1 - torch.exp(-2 * theta * t))


def _ou_single_rate(x0, t, theta, sigma):
    return x0 * torch.exp(-theta * t), sigma**2 / (2 * theta) * (1 - torch.exp(-theta * t))


def _ou_brownian(x0, t, theta, sigma):
    return x0 * torch.exp(-theta * t), sigma**2 * t


def _ou_sigma_not_squared(x0, t, theta, sigma):
    return x0 * torch.exp(-theta * t), sigma / (2 * theta) * (1 - torch.exp(-2 * theta * t))


def _ou_one_minus_exp(x0, t, theta, sigma):
    return x0 * torch.exp(-theta * t), sigma**2 / (2 * theta) * (1 - torch.exp(-2 * theta * t))


def _ou_no_decay(x0, t, theta, sigma):
    return x0, sigma**2 / (2 * theta) * (1 - torch.exp(-2 * theta * t))


def _ou_std(x0, t, theta, sigma):
    return x0 * torch.exp(-theta * t), \
        torch.sqrt(sigma**2 / (2 * theta) * (1 - torch.exp(-2 * theta * t)))


register(
    Checker(
        name="ou_transition",
        reference=_ou,
        generate=_ou_cases,
        outputs=("mean", "var"),
        hints=[
            Hint("The mean decays: E[x_t | x_0] = x0 * exp(-theta t).", wrong=_ou_no_decay,
                 output="mean"),
            Hint("Return the variance, not the standard deviation.", wrong=_ou_std,
                 output="var"),
            Hint("The variance is sigma^2 (1 - exp(-2 theta t)) / (2 theta): you dropped the "
                 "2 in 2 theta (Ito isometry: int_0^t exp(-2 theta s) ds).",
                 wrong=_ou_no_half, output="var"),
            Hint("The variance involves exp(-2 theta t), the square of the decay factor "
                 "(Ito isometry), not exp(-theta t).", wrong=_ou_single_rate, output="var"),
            Hint("sigma^2 t is the variance of sigma W_t, without the pull back to 0: the "
                 "OU variance saturates at sigma^2 / (2 theta).", wrong=_ou_brownian,
                 output="var"),
            Hint("The variance scales with sigma^2, not sigma.", wrong=_ou_sigma_not_squared,
                 output="var"),
            Hint("At tiny t, 1 - exp(-2 theta t) is the difference of two nearly equal "
                 "numbers and loses most of its digits: use -torch.expm1(-2 * theta * t).",
                 wrong=_ou_one_minus_exp, output="var"),
        ],
    )
)
