r"""Checkers of the chapter *Denoising diffusion probabilistic models*."""

from __future__ import annotations

import torch
from torch import Tensor

from gmbook.ddpm import eps_from_v, posterior_mean_var, x0_from_v
from gmbook.exercises._framework import DTYPES, Case, Checker, Hint, fmt_dtype, randint, register

__all__: list[str] = []

# -- ddpm_posterior --------------------------------------------------------------------


def _posterior(x0: Tensor, x_t: Tensor, alpha_bar_t: Tensor, alpha_bar_prev: Tensor):
    r"""Reference: mean ``(B, D)`` and variance ``(B, 1)`` of
    :math:`q(x_s \mid x_t, x_0)` (eq. ``eq-ddpm-posterior``), alpha bars of shape
    ``(B, 1)``."""
    return posterior_mean_var(x0, x_t, alpha_bar_t, alpha_bar_prev)


def _alpha_pair(generator: torch.Generator, b: int) -> tuple[Tensor, Tensor]:
    f64 = torch.float64
    ab_prev = 0.05 + 0.9 * torch.rand(b, 1, generator=generator, dtype=f64)
    ab_t = ab_prev * (0.3 + 0.69 * torch.rand(b, 1, generator=generator, dtype=f64))
    return ab_t, ab_prev


def _posterior_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d = randint(generator, 1, 8), randint(generator, 1, 5)
        x0 = torch.randn(b, d, generator=generator, dtype=f64)
        xt = torch.randn(b, d, generator=generator, dtype=f64)
        ab_t, ab_prev = _alpha_pair(generator, b)
        cases.append(Case(f"B={b}, D={d}, random alpha bars, {fmt_dtype(dtype)}",
                          tuple(a.to(dtype) for a in (x0, xt, ab_t, ab_prev))))
    x0 = torch.tensor([[1.0, -2.0]], dtype=f64)
    xt = torch.tensor([[0.5, 0.5]], dtype=f64)
    cases += [
        Case("one step with beta = 1e-4 (alpha_bar_t = 0.9999 alpha_bar_prev), float64",
             (x0, xt, torch.tensor([[0.5 * 0.9999]], dtype=f64),
              torch.tensor([[0.5]], dtype=f64)), edge=True),
        Case("s = 0 (alpha_bar_prev = 1): the posterior is the point x0, float64",
             (x0, xt, torch.tensor([[0.3]], dtype=f64), torch.tensor([[1.0]], dtype=f64)),
             edge=True),
    ]
    return cases


def _post_swapped(x0, x_t, alpha_bar_t, alpha_bar_prev):
    beta = 1 - alpha_bar_t / alpha_bar_prev
    mean = ((1 - beta).sqrt() * (1 - alpha_bar_prev) * x0
            + alpha_bar_prev.sqrt() * beta * x_t) / (1 - alpha_bar_t)
    return mean, (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta


def _post_beta_var(x0, x_t, alpha_bar_t, alpha_bar_prev):
    mean, _ = posterior_mean_var(x0, x_t, alpha_bar_t, alpha_bar_prev)
    return mean, 1 - alpha_bar_t / alpha_bar_prev


def _post_no_sqrt(x0, x_t, alpha_bar_t, alpha_bar_prev):
    beta = 1 - alpha_bar_t / alpha_bar_prev
    mean = (alpha_bar_prev * beta * x0 + (1 - beta) * (1 - alpha_bar_prev) * x_t) / (
        1 - alpha_bar_t)
    return mean, (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta


register(
    Checker(
        name="ddpm_posterior",
        reference=_posterior,
        generate=_posterior_cases,
        outputs=("mean", "var"),
        hints=[
            Hint("The coefficients of x0 and x_t are swapped: x0 is weighted by "
                 "sqrt(alpha_bar_prev) beta / (1 - alpha_bar_t).", wrong=_post_swapped,
                 output="mean"),
            Hint("The posterior variance is beta times (1 - alpha_bar_prev) / "
                 "(1 - alpha_bar_t), smaller than the forward step's beta.",
                 wrong=_post_beta_var, output="var"),
            Hint("The means of the Gaussians scale with square roots: sqrt(alpha_bar_prev) "
                 "and sqrt(1 - beta), not the alphas themselves.", wrong=_post_no_sqrt,
                 output="mean"),
        ],
    )
)


# -- ddpm_v_conversions ----------------------------------------------------------------


def _from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor):
    r"""Reference: ``(eps, x0)`` from a velocity prediction (eq. ``eq-ddpm-conversions``),
    ``alpha_bar`` of shape ``(B, 1)``."""
    return eps_from_v(x_t, v, alpha_bar), x0_from_v(x_t, v, alpha_bar)


def _v_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d = randint(generator, 1, 8), randint(generator, 1, 5)
        xt = torch.randn(b, d, generator=generator, dtype=f64)
        v = torch.randn(b, d, generator=generator, dtype=f64)
        ab = 0.01 + 0.98 * torch.rand(b, 1, generator=generator, dtype=f64)
        cases.append(Case(f"B={b}, D={d}, random alpha_bar, {fmt_dtype(dtype)}",
                          (xt.to(dtype), v.to(dtype), ab.to(dtype))))
    xt = torch.tensor([[0.7, -1.2, 2.0]], dtype=f64)
    v = torch.tensor([[0.1, 0.3, -0.5]], dtype=f64)
    cases += [
        Case("alpha_bar = 1 (no noise): x0 = x_t, eps = v, float64",
             (xt, v, torch.tensor([[1.0]], dtype=f64)), edge=True),
        Case("alpha_bar = 1/2 (equal signal and noise), float64",
             (xt, v, torch.tensor([[0.5]], dtype=f64)), edge=True),
    ]
    return cases


def _v_sign(x_t, v, alpha_bar):
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return -a * v + s * x_t, a * x_t + s * v


register(
    Checker(
        name="ddpm_v_conversions",
        reference=_from_v,
        generate=_v_cases,
        outputs=("eps", "x0"),
        # Swapped outputs need no hint: the framework reports "(x0, eps); return (eps, x0)".
        hints=[
            Hint("v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 has a minus sign in front "
                 "of x0; invert the 2x2 rotation with care.", wrong=_v_sign),
        ],
    )
)

# Wrong implementations, for the tests.
REFERENCES = {"ddpm_posterior": _posterior, "ddpm_v_conversions": _from_v}
WRONG = {"ddpm_posterior": _post_swapped, "ddpm_v_conversions": _v_sign}
