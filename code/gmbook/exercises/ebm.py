r"""Checkers of the chapter *Energy-based models*."""

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
from gmbook.exercises.sampling import _gaussian_score, _quartic_score, _Score

# -- grid_log_normalizer ---------------------------------------------------------------


def _grid_log_normalizer(energies: Tensor, cell_area: float) -> Tensor:
    r"""Reference: :math:`\log \sum_g e^{-E(g)} \Delta A` over all entries of ``energies``
    (eq. ``eq-ebm-grid``), a 0-dim tensor in the dtype of ``energies``."""
    return torch.logsumexp(-energies.reshape(-1), dim=0) + math.log(cell_area)


def _grid_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        n = randint(generator, 4, 24)
        shape = (n, n) if k % 3 else (n * n,)
        e = 3 * torch.randn(shape, generator=generator, dtype=torch.float64)
        area = float(torch.rand((), generator=generator, dtype=torch.float64)) * 0.1 + 1e-3
        cases.append(Case(f"energies of shape {shape}, cell area {area:.4f}, {fmt_dtype(dtype)}",
                          (e.to(dtype), area)))
    f64 = torch.float64
    cases += [
        Case("large positive energies (exp(-E) underflows), shape (3, 3), float64",
             (torch.full((3, 3), 1000.0, dtype=f64) + torch.arange(9, dtype=f64).reshape(3, 3),
              0.25), edge=True),
        Case("large negative energies (exp(-E) overflows), shape (4,), float32",
             (torch.tensor([-900.0, -905.0, -910.0, -899.0]), 0.01), edge=True),
        Case("a single cell, shape (1, 1), float64",
             (torch.tensor([[2.0]], dtype=f64), 0.5), edge=True),
    ]
    return cases


def _grid_no_area(energies: Tensor, cell_area: float) -> Tensor:
    return torch.logsumexp(-energies.reshape(-1), dim=0)


def _grid_wrong_sign(energies: Tensor, cell_area: float) -> Tensor:
    return torch.logsumexp(energies.reshape(-1), dim=0) + math.log(cell_area)


def _grid_naive(energies: Tensor, cell_area: float) -> Tensor:
    return torch.log(torch.exp(-energies).sum() * cell_area)


def _grid_mean(energies: Tensor, cell_area: float) -> Tensor:
    e = -energies.reshape(-1)
    return torch.logsumexp(e, dim=0) - math.log(e.numel()) + math.log(cell_area)


register(
    Checker(
        name="grid_log_normalizer",
        reference=_grid_log_normalizer,
        generate=_grid_cases,
        outputs=("log_z",),
        hints=[
            Hint("The Riemann sum multiplies every term by the cell area: add log(cell_area) "
                 "to the log-sum-exp.", wrong=_grid_no_area),
            Hint("The density is exp(-E): sum exp(-energies), not exp(energies).",
                 wrong=_grid_wrong_sign),
            Hint("exp(-E) under- or overflows for energies of size 1000: use a log-sum-exp "
                 "(torch.logsumexp) of -energies instead of log(sum(exp(-energies))).",
                 wrong=_grid_naive),
            Hint("The integral is a sum over cells times the cell area, not a mean over "
                 "cells: do not divide by the number of cells.", wrong=_grid_mean),
        ],
    )
)


# -- langevin_step ---------------------------------------------------------------------


def _grad_energy(score: _Score) -> _Score:
    """:math:`\\nabla E = -\\nabla \\log p` of a score, named for reports."""
    return _Score(score.name.replace("score", "energy gradient"), score.params,
                  lambda x: -score.fn(x))


def _langevin_step(
    grad_energy: Callable[[Tensor], Tensor], x: Tensor, step_size: float, noise: float,
    xi: Tensor,
) -> Tensor:
    r"""Reference: one step of eq. ``eq-ebm-langevin``,
    :math:`x - h \nabla E(x) + \sigma \sqrt{2h}\, \xi`, shape ``(B, D)``."""
    return x - step_size * grad_energy(x) + noise * math.sqrt(2 * step_size) * xi


def _langevin_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d = randint(generator, 2, 9), randint(generator, 1, 4)
        if k % 2:
            grad = _grad_energy(_quartic_score(d))
        else:
            a = torch.randn(d, d, generator=generator, dtype=f64)
            precision = a @ a.T + 0.5 * torch.eye(d, dtype=f64)
            mean = torch.randn(d, generator=generator, dtype=f64)
            grad = _grad_energy(_gaussian_score(mean, precision))
        x = torch.randn(b, d, generator=generator, dtype=f64)
        xi = torch.randn(b, d, generator=generator, dtype=f64)
        h = round(0.01 + 0.2 * float(torch.rand((), generator=generator, dtype=f64)), 4)
        sigma = [1.0, 0.5, 2.0][k % 3]
        cases.append(Case(f"{grad!r}, B={b}, D={d}, h={h}, noise={sigma}, {fmt_dtype(dtype)}",
                          (grad, x.to(dtype), h, sigma, xi.to(dtype))))
    grad = _grad_energy(_gaussian_score(torch.zeros(2, dtype=f64), torch.eye(2, dtype=f64)))
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=f64)
    xi = torch.tensor([[0.3, -0.1], [1.0, 2.0]], dtype=f64)
    cases += [
        Case("noise = 0: gradient descent on E(x) = |x|^2 / 2, B=2, D=2, float64",
             (grad, x, 0.1, 0.0, xi), edge=True),
        Case("a single point, B=1, D=1, h=1 (E = |x|^2 / 2), float64",
             (_grad_energy(_gaussian_score(torch.zeros(1, dtype=f64),
                                           torch.eye(1, dtype=f64))),
              torch.tensor([[3.0]], dtype=f64), 1.0, 1.0,
              torch.tensor([[0.5]], dtype=f64)), edge=True),
    ]
    return cases


def _ls_ascent(grad_energy, x, step_size, noise, xi):
    return x + step_size * grad_energy(x) + noise * math.sqrt(2 * step_size) * xi


def _ls_no_two(grad_energy, x, step_size, noise, xi):
    return x - step_size * grad_energy(x) + noise * math.sqrt(step_size) * xi


def _ls_linear_noise(grad_energy, x, step_size, noise, xi):
    return x - step_size * grad_energy(x) + noise * step_size * xi


def _ls_half_step(grad_energy, x, step_size, noise, xi):
    return x - 0.5 * step_size * grad_energy(x) + noise * math.sqrt(2 * step_size) * xi


register(
    Checker(
        name="langevin_step",
        reference=_langevin_step,
        generate=_langevin_cases,
        outputs=("x_new",),
        hints=[
            Hint("Langevin moves downhill in energy (uphill in log p): subtract "
                 "step_size * grad_energy(x).", wrong=_ls_ascent),
            Hint("The noise has standard deviation noise * sqrt(2 * step_size), not "
                 "noise * sqrt(step_size).", wrong=_ls_no_two),
            Hint("The noise scales with the square root of the step: "
                 "noise * sqrt(2 * step_size) * xi.", wrong=_ls_linear_noise),
            Hint("The drift is step_size * grad_energy(x), without a factor 1/2 (that form "
                 "pairs with noise sqrt(step_size)).", wrong=_ls_half_step),
        ],
    )
)
