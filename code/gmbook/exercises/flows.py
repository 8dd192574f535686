r"""Checkers of the chapter *Normalizing flows*."""

from __future__ import annotations

import torch
from torch import Tensor

from gmbook import flows
from gmbook.exercises._framework import (
    DTYPES,
    Case,
    Checker,
    Hint,
    fmt_dtype,
    randint,
    register,
)

# -- rq_spline -------------------------------------------------------------------------


def _rq_spline(
    x: Tensor, x_knots: Tensor, y_knots: Tensor, derivatives: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Reference: the rational-quadratic spline through the knots ``(K + 1,)`` at points
    ``x`` ``(B,)`` inside them, and its log-derivative (:func:`gmbook.flows.spline_from_knots`)."""
    return flows.spline_from_knots(x, x_knots, y_knots, derivatives)


def _random_knots(generator: torch.Generator, k: int, dtype: torch.dtype
                  ) -> tuple[Tensor, Tensor, Tensor]:
    f64 = torch.float64
    w = 0.2 + torch.rand(k, generator=generator, dtype=f64)
    h = 0.2 + torch.rand(k, generator=generator, dtype=f64)
    xk = torch.cat([torch.zeros(1, dtype=f64), w.cumsum(0)]) - 0.5 * w.sum()
    yk = torch.cat([torch.zeros(1, dtype=f64), h.cumsum(0)]) - 0.5 * h.sum()
    dk = torch.exp(torch.randn(k + 1, generator=generator, dtype=f64))
    return xk.to(dtype), yk.to(dtype), dk.to(dtype)


def _spline_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for i in range(6):
        dtype = DTYPES[i % 2]
        k = randint(generator, 2, 9)
        b = randint(generator, 5, 40)
        xk, yk, dk = _random_knots(generator, k, dtype)
        u = torch.rand(b, generator=generator, dtype=torch.float64).to(dtype)
        x = xk[0] + (xk[-1] - xk[0]) * u
        cases.append(Case(f"K={k} bins, B={b} random points, {fmt_dtype(dtype)}",
                          (x, xk, yk, dk)))
    f64 = torch.float64
    xk, yk, dk = _random_knots(generator, 5, f64)
    cases.append(Case("x exactly at every knot, both ends included, K=5, float64",
                      (xk.clone(), xk, yk, dk), edge=True, tag="knots"))
    one = torch.tensor([-1.0, 2.0], dtype=f64)
    cases.append(Case("a single bin, K=1, float64",
                      (torch.linspace(-1, 2, 7, dtype=f64), one, torch.tensor([0.0, 1.0],
                       dtype=f64), torch.tensor([0.2, 3.0], dtype=f64)), edge=True))
    xk = torch.tensor([-2.0, -1.0, 0.5, 2.0], dtype=f64)
    yk = torch.tensor([-1.0, 0.0, 2.0, 2.5], dtype=f64)
    slopes = (yk.diff() / xk.diff())
    dk = torch.tensor([slopes[0], 1.0, 1.0, slopes[-1]], dtype=f64)
    cases.append(Case("interior derivatives 1 and steep, flat bins, K=3, float64",
                      (torch.linspace(-2, 2, 9, dtype=f64), xk, yk, dk), edge=True))
    return cases


def _spline_derivative_not_log(x, x_knots, y_knots, derivatives):
    y, ld = flows.spline_from_knots(x, x_knots, y_knots, derivatives)
    return y, ld.exp()


def _spline_swapped_derivatives(x, x_knots, y_knots, derivatives):
    return flows.spline_from_knots(x, x_knots, y_knots, derivatives.flip(0))


def _spline_denominator_not_squared(x, x_knots, y_knots, derivatives):
    y, ld = flows.spline_from_knots(x, x_knots, y_knots, derivatives)
    k = torch.searchsorted(x_knots, x, right=True).clamp(1, len(x_knots) - 1) - 1
    w, h = x_knots.diff()[k], y_knots.diff()[k]
    s = h / w
    xi = (x - x_knots[k]) / w
    denom = s + (derivatives[k + 1] + derivatives[k] - 2 * s) * xi * (1 - xi)
    return y, ld + torch.log(denom)


register(
    Checker(
        name="rq_spline",
        reference=_rq_spline,
        generate=_spline_cases,
        outputs=("y", "log_deriv"),
        hints=[
            Hint("log_deriv is the logarithm of g'(x): take torch.log of the derivative.",
                 wrong=_spline_derivative_not_log, output="log_deriv"),
            Hint("In bin k the spline starts with slope d_k at its left knot x_k and ends "
                 "with d_{k+1} at x_{k+1}: d_k multiplies xi (1 - xi) in the numerator.",
                 wrong=_spline_swapped_derivatives, output="y"),
            Hint("The derivative has the denominator squared: "
                 "s^2 [d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2] / denom^2.",
                 wrong=_spline_denominator_not_squared, output="log_deriv"),
            Hint("A point exactly at a knot belongs to either neighbouring bin (both give the "
                 "same value), and x = x_K to the last bin: clamp the bin index to "
                 "0..K-1 (searchsorted(..., right=True) - 1, then clamp).",
                 when=lambda case, got, exp: case.tag == "knots"
                 and not bool(torch.isfinite(got[0]).all())),
        ],
    )
)


# -- made_masks ------------------------------------------------------------------------


def _made_masks(in_degrees: Tensor, hidden_degrees: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: the masks ``(H, D)`` and ``(D, H)`` of a one-hidden-layer MADE, float32
    zeros and ones (:func:`gmbook.flows.made_masks`, converted)."""
    hidden, out = flows.made_masks(in_degrees, [hidden_degrees])
    return hidden.float(), out.float()


def _made_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        d = randint(generator, 2, 8)
        h = randint(generator, 3, 20)
        order = torch.randperm(d, generator=generator) + 1
        hid = torch.randint(1, d, (h,), generator=generator)
        cases.append(Case(f"D={d} inputs in a random order, H={h} hidden units",
                          (order, hid)))
    cases += [
        Case("D=2: the first input is seen by nobody's output but the second's",
             (torch.tensor([1, 2]), torch.tensor([1, 1, 1])), edge=True),
        Case("natural order, D=4, hidden degrees 1, 2, 3 cyclically, H=7",
             (torch.arange(1, 5), torch.arange(7) % 3 + 1), edge=True),
        Case("reversed order, D=3, H=4",
             (torch.tensor([3, 2, 1]), torch.tensor([2, 1, 2, 1])), edge=True),
    ]
    return cases


def _made_strict_hidden(in_degrees, hidden_degrees):
    return (hidden_degrees[:, None] > in_degrees[None, :]).float(), \
        (in_degrees[:, None] > hidden_degrees[None, :]).float()


def _made_weak_output(in_degrees, hidden_degrees):
    return (hidden_degrees[:, None] >= in_degrees[None, :]).float(), \
        (in_degrees[:, None] >= hidden_degrees[None, :]).float()


register(
    Checker(
        name="made_masks",
        reference=_made_masks,
        generate=_made_cases,
        outputs=("mask_hidden", "mask_out"),
        hints=[
            Hint("The output of coordinate d must not see x_d itself: the output mask "
                 "needs the strict inequality m(d) > m(k).",
                 wrong=_made_weak_output, output="mask_out"),
            Hint("A hidden unit of degree m(k) may see the inputs of degree up to and "
                 "including m(k): use m(k) >= m(d) in the hidden mask.",
                 wrong=_made_strict_hidden, output="mask_hidden"),
        ],
    )
)
