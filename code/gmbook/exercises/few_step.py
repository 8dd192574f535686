r"""Checkers of the chapter *Generation in one or two steps*."""

from __future__ import annotations

import torch
from torch import Tensor

from gmbook import few_step, samplers
from gmbook.exercises._framework import (
    DTYPES,
    Case,
    Checker,
    Hint,
    fmt_dtype,
    randint,
    register,
)

# -- gaussian_flow_map -----------------------------------------------------------------


def _gaussian_flow_map(x: Tensor, t: float, s: float, mean: Tensor, var: Tensor) -> Tensor:
    r"""Reference: the flow map from level ``t`` to level ``s`` of the probability-flow ODE
    on the VE path for Gaussian data with mean ``mean`` and variances ``var``, shape
    ``(B, D)`` (eq. ``eq-fs-gaussian-flow-map``; :func:`gmbook.few_step.gaussian_flow_map`).

    Per coordinate it is :math:`\mu + \sqrt{(v + s^2)/(v + t^2)}\,(x - \mu)`."""
    path = samplers.VEPath(max(t, s, 1.0))
    return few_step.gaussian_flow_map(x, t, s, mean, var, path)


def _flow_map_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for i in range(6):
        dtype = DTYPES[i % 2]
        d, b = randint(generator, 1, 5), randint(generator, 2, 20)
        t = 0.5 + 4.5 * float(torch.rand((), generator=generator, dtype=f64))
        s = t * float(torch.rand((), generator=generator, dtype=f64))
        mean = torch.randn(d, generator=generator, dtype=f64)
        var = 0.1 + 2 * torch.rand(d, generator=generator, dtype=f64)
        x = mean + (var + t**2).sqrt() * torch.randn(b, d, generator=generator, dtype=f64)
        cases.append(Case(f"B={b} points in D={d}, t={t:.3f} -> s={s:.3f}, "
                          f"{fmt_dtype(dtype)}",
                          (x.to(dtype), t, s, mean.to(dtype), var.to(dtype))))
    mean = torch.tensor([1.0, -2.0], dtype=f64)
    var = torch.tensor([0.5, 2.0], dtype=f64)
    x = torch.randn(5, 2, generator=generator, dtype=f64)
    cases += [
        Case("s = t: the map is the identity, float64", (x, 1.5, 1.5, mean, var), edge=True),
        Case("s > t: the map runs backwards, towards the noise (its inverse), float64",
             (x, 0.3, 2.0, mean, var), edge=True),
        Case("the point at the mean stays there, float64",
             (mean.expand(3, 2).clone(), 3.0, 0.01, mean, var), edge=True),
    ]
    return cases


def _flow_map_euler(x, t, s, mean, var):
    return mean + (var + s**2) / (var + t**2) * (x - mean)


def _flow_map_about_zero(x, t, s, mean, var):
    return ((var + s**2) / (var + t**2)).sqrt() * x


register(
    Checker(
        name="gaussian_flow_map",
        reference=_gaussian_flow_map,
        generate=_flow_map_cases,
        outputs=("x_s",),
        hints=[
            Hint("The factor is the ratio of the standard deviations of the two marginals, "
                 "sqrt((v + s^2) / (v + t^2)), not the ratio of their variances: the map "
                 "must send N(mu, v + t^2) to N(mu, v + s^2).",
                 wrong=_flow_map_euler),
            Hint("The map scales the distance to the mean, x - mu, and adds mu back; "
                 "scaling x itself only works for data of mean zero.",
                 wrong=_flow_map_about_zero),
        ],
    )
)


# -- consistency_coefficients ----------------------------------------------------------


def _consistency_coefficients(sigma: Tensor, sigma_data: float,
                              sigma_min: float) -> tuple[Tensor, Tensor]:
    r"""Reference: the skip and output scalings ``(c_skip, c_out)`` of a consistency model,
    each of the shape of ``sigma`` ``(B,)`` (eq. ``eq-fs-cm-param``;
    :func:`gmbook.few_step.consistency_coefficients`)."""
    c_skip, c_out, _, _ = few_step.consistency_coefficients(sigma, sigma_data, sigma_min)
    return c_skip, c_out


def _coefficient_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for i in range(6):
        dtype = DTYPES[i % 2]
        b = randint(generator, 1, 12)
        sd = 0.2 + 1.5 * float(torch.rand((), generator=generator, dtype=f64))
        smin = 0.001 + 0.05 * float(torch.rand((), generator=generator, dtype=f64))
        sigma = smin + 10 * torch.rand(b, generator=generator, dtype=f64)
        cases.append(Case(f"B={b} levels in [{smin:.3f}, {smin + 10:.1f}], sigma_data="
                          f"{sd:.3f}, {fmt_dtype(dtype)}", (sigma.to(dtype), sd, smin)))
    cases += [
        Case("sigma = sigma_min: c_skip = 1 and c_out = 0 exactly (the boundary condition), "
             "float64", (torch.full((3,), 0.002, dtype=f64), 0.5, 0.002), edge=True),
        Case("very large sigma = 1e4, float64",
             (torch.tensor([1e4], dtype=f64), 1.0, 0.002), edge=True),
    ]
    return cases


def _coef_edm(sigma, sigma_data, sigma_min):
    s2 = sigma**2 + sigma_data**2
    return sigma_data**2 / s2, sigma * sigma_data / s2.sqrt()


def _coef_shift_everywhere(sigma, sigma_data, sigma_min):
    d = sigma - sigma_min
    s2 = d**2 + sigma_data**2
    return sigma_data**2 / s2, d * sigma_data / s2.sqrt()


register(
    Checker(
        name="consistency_coefficients",
        reference=_consistency_coefficients,
        generate=_coefficient_cases,
        outputs=("c_skip", "c_out"),
        hints=[
            Hint("These are EDM's coefficients: at sigma = sigma_min they give c_out > 0, "
                 "so f(x, sigma_min) is not x. Measure the distance to the boundary, "
                 "sigma - sigma_min, in c_skip's denominator and c_out's numerator.",
                 wrong=_coef_edm),
            Hint("Only c_skip's denominator and c_out's numerator use sigma - sigma_min; "
                 "c_out's denominator is EDM's sqrt(sigma^2 + sigma_data^2).",
                 wrong=_coef_shift_everywhere, output="c_out"),
        ],
    )
)
