r"""Checkers of the chapter *Neural ODEs and continuous normalizing flows*."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gmbook import cnf, score
from gmbook.exercises._framework import (
    DTYPES,
    Case,
    Checker,
    Hint,
    fmt_dtype,
    randint,
    register,
)

# -- exact_divergence ------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """A velocity field ``(B, D) -> (B, D)`` with a short name for reports; two are equal
    when their names and parameters are (reproducible cases)."""

    name: str
    params: tuple
    fn: Callable[[Tensor], Tensor] = field(compare=False)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def __repr__(self) -> str:
        return self.name


def _linear_field(a: Tensor, b: Tensor) -> _Field:
    params = (tuple(map(tuple, a.tolist())), tuple(b.tolist()))
    return _Field(f"linear field x A^T + b (D={a.shape[0]})", params,
                  lambda x: x @ a.to(x.dtype).T + b.to(x.dtype))


def _tanh_field(w: Tensor, u: Tensor) -> _Field:
    """v(x) = tanh(x W^T) U^T: a small network with a full, point-dependent Jacobian."""
    params = (tuple(map(tuple, w.tolist())), tuple(map(tuple, u.tolist())))
    return _Field(f"one-layer tanh network (D={w.shape[1]}, H={w.shape[0]})", params,
                  lambda x: torch.tanh(x @ w.to(x.dtype).T) @ u.to(x.dtype).T)


def _exact_divergence(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    r"""Reference: the divergence :math:`\nabla\cdot f = \operatorname{tr} \nabla_x f` at
    the points ``x`` ``(B, D)``, shape ``(B,)``, by ``D`` backward passes (eq.
    ``eq-cnf-icov``; :func:`gmbook.score.divergence`)."""
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        return score.divergence(f(z), z, create_graph=False).detach()


def _divergence_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for i in range(6):
        dtype = DTYPES[i % 2]
        d, b = randint(generator, 2, 6), randint(generator, 3, 30)
        if i < 2:
            fn = _linear_field(torch.randn(d, d, generator=generator, dtype=f64),
                               torch.randn(d, generator=generator, dtype=f64))
        else:
            h = randint(generator, 3, 12)
            fn = _tanh_field(torch.randn(h, d, generator=generator, dtype=f64),
                             torch.randn(d, h, generator=generator, dtype=f64))
        x = torch.randn(b, d, generator=generator, dtype=f64).to(dtype)
        cases.append(Case(f"{fn.name}, B={b} points, {fmt_dtype(dtype)}", (fn, x)))
    w = torch.randn(5, 1, generator=generator, dtype=f64)
    cases += [
        Case("one dimension, D=1: the divergence is the derivative, float64",
             (_tanh_field(w, torch.randn(1, 5, generator=generator, dtype=f64)),
              torch.linspace(-2, 2, 9, dtype=f64)[:, None]), edge=True),
        Case("a rotation field x -> (-x_2, x_1): divergence 0 everywhere, float64",
             (_linear_field(torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=f64),
                            torch.zeros(2, dtype=f64)),
              torch.randn(4, 2, generator=generator, dtype=f64)), edge=True),
        Case("a single point, B=1, D=3, tanh network, float64",
             (_tanh_field(torch.randn(4, 3, generator=generator, dtype=f64),
                          torch.randn(3, 4, generator=generator, dtype=f64)),
              torch.randn(1, 3, generator=generator, dtype=f64)), edge=True),
    ]
    return cases


def _div_column_sums(f, x):
    z = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(z).sum(), z)
    return g.sum(1)


def _div_negated(f, x):
    return -_exact_divergence(f, x)


register(
    Checker(
        name="exact_divergence",
        reference=_exact_divergence,
        generate=_divergence_cases,
        outputs=("divergence",),
        hints=[
            Hint("The gradient of f(x).sum() adds up every entry of the Jacobian (its "
                 "column sums), not its diagonal: take the gradient of f(x)[:, i].sum() "
                 "and keep its coordinate i, for i = 0, ..., D - 1.",
                 wrong=_div_column_sums),
            Hint("The divergence is +tr(grad f); the minus sign belongs to the "
                 "instantaneous change of variables, d log p / dt = -div v.",
                 wrong=_div_negated),
        ],
    )
)


# -- hutchinson_variances --------------------------------------------------------------


def _hutchinson_variances(jacobian: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: the variances of one probe of Hutchinson's estimate
    :math:`\varepsilon^\top A \varepsilon` of :math:`\operatorname{tr} A` for Gaussian and
    for Rademacher probes, each of shape ``(B,)``, for Jacobians ``(B, D, D)`` (eq.
    ``eq-cnf-hutchinson-var``; :func:`gmbook.cnf.hutchinson_variance`)."""
    return (cnf.hutchinson_variance(jacobian, "gaussian"),
            cnf.hutchinson_variance(jacobian, "rademacher"))


def _variance_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for i in range(6):
        dtype = DTYPES[i % 2]
        d, b = randint(generator, 2, 7), randint(generator, 1, 12)
        a = torch.randn(b, d, d, generator=generator, dtype=f64)
        cases.append(Case(f"random non-symmetric Jacobians, B={b}, D={d}, "
                          f"{fmt_dtype(dtype)}", (a.to(dtype),)))
    diag = torch.diag_embed(torch.randn(3, 4, generator=generator, dtype=f64))
    skew = torch.randn(2, 3, 3, generator=generator, dtype=f64)
    cases += [
        Case("diagonal Jacobians, B=3, D=4: the Rademacher estimate is exact, float64",
             (diag,), edge=True),
        Case("antisymmetric Jacobians A = -A^T, B=2, D=3: every estimate is 0, float64",
             (skew - skew.transpose(1, 2),), edge=True),
        Case("one dimension, D=1, B=5, float64",
             (torch.randn(5, 1, 1, generator=generator, dtype=f64),), edge=True),
    ]
    return cases


def _var_not_symmetrised(jacobian):
    g = 2 * (jacobian**2).sum((-1, -2))
    return g, g - 2 * (torch.diagonal(jacobian, dim1=-2, dim2=-1) ** 2).sum(-1)


def _var_rademacher_keeps_diagonal(jacobian):
    g, _ = _hutchinson_variances(jacobian)
    return g, g


register(
    Checker(
        name="hutchinson_variances",
        reference=_hutchinson_variances,
        generate=_variance_cases,
        outputs=("gaussian", "rademacher"),
        hints=[
            Hint("The quadratic form only sees the symmetric part S = (A + A^T) / 2: "
                 "eps^T A eps = eps^T S eps, and the variances are those of S.",
                 wrong=_var_not_symmetrised),
            Hint("With random signs eps_i^2 = 1, so the diagonal of S contributes no "
                 "variance: 2 * sum over i != j of S_ij^2.",
                 wrong=_var_rademacher_keeps_diagonal, output="rademacher"),
        ],
    )
)
