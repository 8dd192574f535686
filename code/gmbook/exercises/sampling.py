r"""Checkers of the chapter *Sampling and Markov chain Monte Carlo*."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gmbook import mcmc
from gmbook.exercises._framework import (
    DTYPES,
    Case,
    Checker,
    Hint,
    NamedFunction,
    fmt_dtype,
    randint,
    register,
)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


# -- mh_transition_matrix --------------------------------------------------------------


def _mh_transition_matrix(target: Tensor, proposal: Tensor) -> Tensor:
    r"""Reference: the exact Metropolis-Hastings matrix ``(S, S)`` of a positive target
    ``(S,)`` and a row-stochastic proposal ``(S, S)`` (:func:`gmbook.mcmc.mh_transition_matrix`)."""
    return mcmc.mh_transition_matrix(target, proposal)


def _random_proposal(generator: torch.Generator, s: int, zeros: bool) -> Tensor:
    """A random non-symmetric row-stochastic matrix (float64); with ``zeros``, some pairs
    Q_ij = Q_ji = 0, keeping a ring of positive entries."""
    q = torch.rand(s, s, generator=generator, dtype=torch.float64) + 0.05
    if zeros:
        mask = torch.rand(s, s, generator=generator) < 0.4
        idx = torch.arange(s)
        mask[idx, (idx + 1) % s] = False
        mask[(idx + 1) % s, idx] = False
        mask = mask & mask.T
        q = torch.where(mask, torch.zeros_like(q), q)
    return q / q.sum(1, keepdim=True)


def _mh_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        s = randint(generator, 3, 8)
        zeros = k >= 3
        target = torch.exp(1.5 * torch.randn(s, generator=generator, dtype=torch.float64))
        q = _random_proposal(generator, s, zeros)
        extra = ", some Q_ij = Q_ji = 0" if zeros else ""
        cases.append(Case(f"S={s}, random target and proposal{extra}, {fmt_dtype(dtype)}",
                          (target.to(dtype), q.to(dtype)), tag="zeros" if zeros else ""))
    f64 = torch.float64
    ring = torch.zeros(5, 5, dtype=f64)
    idx = torch.arange(5)
    ring[idx, (idx + 1) % 5] = ring[idx, (idx - 1) % 5] = 0.5
    zeros = torch.tensor([[0.2, 0.8, 0.0, 0.0],
                          [0.3, 0.0, 0.7, 0.0],
                          [0.0, 0.5, 0.0, 0.5],
                          [0.6, 0.0, 0.4, 0.0]], dtype=f64)  # Q_03 = 0 but Q_30 > 0
    cases += [
        Case("symmetric proposal (a random walk on a ring of 5 states), float64",
             (torch.tensor([1.0, 2.0, 4.0, 0.5, 3.0], dtype=f64), ring), edge=True),
        Case("a proposal with zeros, including a move i -> j whose reverse j -> i is never "
             "proposed, S=4, float64",
             (torch.tensor([1.0, 3.0, 2.0, 0.5], dtype=f64), zeros), edge=True, tag="zeros"),
        Case("one dominant state (target 1e4 against 1), S=4, float64",
             (torch.tensor([1e4, 1.0, 1.0, 1.0], dtype=f64),
              _random_proposal(generator, 4, False)), edge=True),
        Case("two states, S=2, float32",
             (torch.tensor([1.0, 3.0]), torch.tensor([[0.2, 0.8], [0.6, 0.4]])), edge=True),
    ]
    return cases


def _off_diagonal_to_stochastic(p: Tensor, dim: int = 1) -> Tensor:
    p = p - torch.diag(torch.diagonal(p))
    return p + torch.diag(1 - p.sum(dim))


def _mh_metropolis(target: Tensor, proposal: Tensor) -> Tensor:
    pi = target.to(proposal.dtype)
    p = proposal * torch.clamp(pi[None, :] / pi[:, None], max=1.0)
    return _off_diagonal_to_stochastic(p)


def _mh_no_rejection_mass(target: Tensor, proposal: Tensor) -> Tensor:
    p = _mh_transition_matrix(target, proposal)
    eye = torch.eye(p.shape[0], dtype=torch.bool)
    return torch.where(eye, proposal, p)


def _mh_inverted_target(target: Tensor, proposal: Tensor) -> Tensor:
    return _mh_transition_matrix(1 / target, proposal)


def _mh_column_sums(target: Tensor, proposal: Tensor) -> Tensor:
    return _off_diagonal_to_stochastic(_mh_transition_matrix(target, proposal), dim=0)


register(
    Checker(
        name="mh_transition_matrix",
        reference=_mh_transition_matrix,
        generate=_mh_cases,
        outputs=("P",),
        hints=[
            Hint(
                "You left out the Hastings factor: for a proposal that is not symmetric, "
                "accept a move i -> j with min(1, pi_j Q_ji / (pi_i Q_ij)), not "
                "min(1, pi_j / pi_i).",
                wrong=_mh_metropolis,
            ),
            Hint(
                "The rejected proposals stay put: P_ii = 1 - (sum over j != i of P_ij), so "
                "that each row sums to 1. P_ii is not Q_ii.",
                wrong=_mh_no_rejection_mass,
            ),
            Hint(
                "The acceptance ratio has the target at the proposed state on top: "
                "pi_j / pi_i for a move i -> j (times Q_ji / Q_ij), not pi_i / pi_j.",
                wrong=_mh_inverted_target,
            ),
            Hint(
                "P[i, j] is the probability of moving from i to j, so each row of P sums "
                "to 1: take the diagonal from the row sums (dim=1), not the column sums.",
                wrong=_mh_column_sums,
            ),
            Hint(
                "Where Q_ij = 0 the ratio pi_j Q_ji / (pi_i Q_ij) divides by 0 (0/0 = nan "
                "when Q_ji = 0 too): that move is never proposed, so set P_ij = 0 there "
                "with torch.where before summing the rows.",
                when=lambda case, got, exp: case.tag == "zeros" and bool(torch.isnan(got).any()),
            ),
        ],
    )
)


# -- leapfrog --------------------------------------------------------------------------


_Score = NamedFunction  # a gradient of a log-density (C, D) -> (C, D)


def _gaussian_score(mean: Tensor, precision: Tensor) -> _Score:
    d = mean.shape[0]
    params = (tuple(mean.tolist()), tuple(map(tuple, precision.tolist())))
    return _Score(f"Gaussian score (D={d})", params,
                  lambda x: -(x - mean.to(x.dtype)) @ precision.to(x.dtype))


def _quartic_score(d: int) -> _Score:
    return _Score(f"quartic score (D={d})", (d,), lambda x: -(x**3) - 0.5 * x)


def _banana_score(b: float, s: float) -> _Score:
    def grad(x: Tensor) -> Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        r = (x2 - b * (x1**2 - 1)) / s
        return torch.stack([-x1 + r * 2 * b * x1 / s, -r / s], dim=-1)

    return _Score(f"banana score (b={b}, s={s})", (b, s), grad)


def _leapfrog(
    grad_log_prob: Callable[[Tensor], Tensor], x: Tensor, p: Tensor, step_size: float,
    n_steps: int,
) -> tuple[Tensor, Tensor]:
    r"""Reference: ``n_steps`` leapfrog steps of size ``step_size`` from ``(x, p)``, each
    ``(C, D)`` (:func:`gmbook.mcmc.leapfrog`)."""
    return mcmc.leapfrog(grad_log_prob, x, p, step_size, n_steps)


def _leapfrog_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        kind = ("gaussian", "quartic", "banana")[k % 3]
        c = randint(generator, 1, 5)
        d = 2 if kind == "banana" else randint(generator, 1, 4)
        if kind == "gaussian":
            a = torch.randn(d, d, generator=generator, dtype=f64)
            grad = _gaussian_score(torch.randn(d, generator=generator, dtype=f64),
                                   a @ a.T / d + 0.5 * torch.eye(d, dtype=f64))
        elif kind == "quartic":
            grad = _quartic_score(d)
        else:
            grad = _banana_score(1.0, 0.5)
        h = round(_uniform(generator, 0.03, 0.15), 3)
        n = randint(generator, 2, 12)
        x = torch.randn(c, d, generator=generator, dtype=f64)
        p = torch.randn(c, d, generator=generator, dtype=f64)
        cases.append(Case(f"{kind} target, C={c}, D={d}, step_size={h}, n_steps={n}, "
                          f"{fmt_dtype(dtype)}", (grad, x.to(dtype), p.to(dtype), h, n)))
    x = torch.randn(3, 2, generator=generator, dtype=f64)
    p = torch.randn(3, 2, generator=generator, dtype=f64)
    cases += [
        Case("a single step, n_steps=1, banana target, C=3, D=2, float64",
             (_banana_score(1.0, 0.5), x, p, 0.1, 1), edge=True),
        Case("a negative step size (integrating backwards), step_size=-0.1, n_steps=8, "
             "banana target, float64", (_banana_score(1.0, 0.5), x, p, -0.1, 8), edge=True),
        Case("one chain in one dimension, C=1, D=1, Gaussian target, float32",
             (_gaussian_score(torch.ones(1, dtype=f64), torch.full((1, 1), 2.0, dtype=f64)),
              torch.tensor([[0.5]]), torch.tensor([[-1.0]]), 0.2, 5), edge=True),
    ]
    return cases


def _lf_symplectic_euler(grad_log_prob, x, p, step_size, n_steps):
    for _ in range(n_steps):
        p = p + step_size * grad_log_prob(x)
        x = x + step_size * p
    return x, p


def _lf_drift_first(grad_log_prob, x, p, step_size, n_steps):
    for _ in range(n_steps):
        x = x + step_size * p
        p = p + step_size * grad_log_prob(x)
    return x, p


def _lf_position_verlet(grad_log_prob, x, p, step_size, n_steps):
    for _ in range(n_steps):
        x = x + 0.5 * step_size * p
        p = p + step_size * grad_log_prob(x)
        x = x + 0.5 * step_size * p
    return x, p


def _lf_wrong_sign(grad_log_prob, x, p, step_size, n_steps):
    return _leapfrog(lambda z: -grad_log_prob(z), x, p, step_size, n_steps)


register(
    Checker(
        name="leapfrog",
        reference=_leapfrog,
        generate=_leapfrog_cases,
        outputs=("x", "p"),
        hints=[
            Hint(
                "Each leapfrog step is a half kick p += (h/2) grad_log_prob(x), a drift "
                "x += h p and another half kick. You used full kicks (symplectic Euler), "
                "which is only first-order accurate.",
                wrong=_lf_symplectic_euler,
            ),
            Hint(
                "You drifted before kicking. The leapfrog step starts with a half kick of "
                "the momentum: p += (h/2) grad_log_prob(x); x += h p; "
                "p += (h/2) grad_log_prob(x).",
                wrong=_lf_drift_first,
            ),
            Hint(
                "You wrote the position Verlet scheme (half drift, kick, half drift). It is "
                "second order too, but this leapfrog is the velocity form: half kick, "
                "drift, half kick.",
                wrong=_lf_position_verlet,
            ),
            Hint(
                "Sign error in the kick: the momentum moves uphill in log p, "
                "p += (h/2) grad_log_prob(x); the force is minus the gradient of the "
                "energy -log p.",
                wrong=_lf_wrong_sign,
            ),
        ],
    )
)


# -- autocorrelation -------------------------------------------------------------------


def _autocorrelation(x: Tensor) -> Tensor:
    r"""Reference: the biased sample autocorrelation rho_0, ..., rho_{T-1} of one chain
    ``x`` ``(T,)``, in the dtype of ``x`` (:func:`gmbook.mcmc.autocorrelation`)."""
    return mcmc.autocorrelation(x).to(x.dtype)


def _acf_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        t = randint(generator, 5, 80)
        phi = round(_uniform(generator, -0.9, 0.95), 2)
        e = torch.randn(t, generator=generator, dtype=f64)
        x = torch.empty(t, dtype=f64)
        x[0] = e[0]
        for i in range(1, t):
            x[i] = phi * x[i - 1] + e[i]
        x = _uniform(generator, -3, 3) + _uniform(generator, 0.5, 2) * x
        cases.append(Case(f"an AR(1) chain with phi={phi}, T={t}, {fmt_dtype(dtype)}",
                          (x.to(dtype),)))
    t = torch.arange(30, dtype=f64)
    cases += [
        Case("T=2, float64", (torch.tensor([0.5, 2.0], dtype=f64),), edge=True),
        Case("an alternating chain (negative autocorrelations), T=12, float64",
             ((-1.0) ** torch.arange(12, dtype=f64)
              + 0.3 * torch.randn(12, generator=generator, dtype=f64),), edge=True),
        Case("a chain far from 0 (mean 1000, sd 1), T=25, float64",
             (1000 + torch.randn(25, generator=generator, dtype=f64),), edge=True),
        Case("a linear trend plus noise, T=30, float32",
             ((0.1 * t + 0.2 * torch.randn(30, generator=generator, dtype=f64)).float(),),
             edge=True),
    ]
    return cases


def _acf_unbiased(x: Tensor) -> Tensor:
    t = x.shape[0]
    return _autocorrelation(x) * t / (t - torch.arange(t, dtype=x.dtype))


def _acf_uncentred(x: Tensor) -> Tensor:
    t = x.shape[0]
    gamma = torch.stack([(x[: t - k] * x[k:]).sum() / t for k in range(t)])
    return gamma / gamma[0]


def _acf_autocovariance(x: Tensor) -> Tensor:
    return _autocorrelation(x) * x.var(unbiased=False)


def _acf_unbiased_variance(x: Tensor) -> Tensor:
    return _autocorrelation(x) * x.var(unbiased=False) / x.var()


register(
    Checker(
        name="autocorrelation",
        reference=_autocorrelation,
        generate=_acf_cases,
        outputs=("rho",),
        hints=[
            Hint(
                "Use the biased estimator: divide every gamma_k by T, not by T - k (the "
                "unbiased choice, noisy at large lags, where |rho_k| can exceed 1).",
                wrong=_acf_unbiased,
            ),
            Hint(
                "Subtract the mean of the chain first: gamma_k = (1/T) sum_t "
                "(x_t - xbar)(x_{t+k} - xbar).",
                wrong=_acf_uncentred,
            ),
            Hint(
                "You returned the autocovariances gamma_k: divide by gamma_0 to get the "
                "autocorrelations (rho_0 = 1).",
                wrong=_acf_autocovariance,
            ),
            Hint(
                "Divide by gamma_0 = (1/T) sum_t (x_t - xbar)^2, not by x.var(), which "
                "divides by T - 1 (so rho_0 is not 1).",
                wrong=_acf_unbiased_variance,
            ),
            Hint(
                "np.correlate (or a convolution) with mode='full' returns the lags "
                "-(T-1), ..., T-1: keep the last T entries, the lags 0, ..., T-1.",
                when=lambda case, got, exp: got.shape[0] == 2 * exp.shape[0] - 1,
            ),
        ],
    )
)


# -- gibbs_sweep_2d --------------------------------------------------------------------


def _gibbs_sweep_2d(x: Tensor, rho: float, noise: Tensor) -> Tensor:
    r"""Reference: one systematic-scan Gibbs sweep (first coordinate, then second) for the
    bivariate Gaussian with unit variances and correlation ``rho``, from states ``x``
    ``(C, 2)`` with standard normal ``noise`` ``(C, 2)``
    (:func:`gmbook.mcmc.gibbs_sweep_gaussian`)."""
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    return mcmc.gibbs_sweep_gaussian(x, torch.linalg.inv(cov), noise)


def _gibbs_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        c = randint(generator, 1, 6)
        rho = round(_uniform(generator, -0.95, 0.95), 2)
        x = 2 * torch.randn(c, 2, generator=generator, dtype=f64)
        z = torch.randn(c, 2, generator=generator, dtype=f64)
        cases.append(Case(f"C={c}, rho={rho}, {fmt_dtype(dtype)}",
                          (x.to(dtype), rho, z.to(dtype))))
    x = torch.randn(4, 2, generator=generator, dtype=f64)
    z = torch.randn(4, 2, generator=generator, dtype=f64)
    cases += [
        Case("rho=0 (independent coordinates), C=4, float64", (x, 0.0, z), edge=True),
        Case("strong negative correlation rho=-0.99, C=4, float64", (x, -0.99, z), edge=True),
        Case("zero noise (the sweep is then a deterministic map), rho=0.6, float64",
             (x, 0.6, torch.zeros_like(z)), edge=True),
    ]
    return cases


def _gibbs_jacobi(x: Tensor, rho: float, noise: Tensor) -> Tensor:
    s = (1 - rho**2) ** 0.5
    return torch.stack([rho * x[:, 1] + s * noise[:, 0], rho * x[:, 0] + s * noise[:, 1]], 1)


def _gibbs_var_one_minus_rho(x: Tensor, rho: float, noise: Tensor) -> Tensor:
    s = abs(1 - rho) ** 0.5
    x1 = rho * x[:, 1] + s * noise[:, 0]
    return torch.stack([x1, rho * x1 + s * noise[:, 1]], 1)


def _gibbs_variance_as_std(x: Tensor, rho: float, noise: Tensor) -> Tensor:
    s = 1 - rho**2
    x1 = rho * x[:, 1] + s * noise[:, 0]
    return torch.stack([x1, rho * x1 + s * noise[:, 1]], 1)


def _gibbs_no_shrink(x: Tensor, rho: float, noise: Tensor) -> Tensor:
    x1 = rho * x[:, 1] + noise[:, 0]
    return torch.stack([x1, rho * x1 + noise[:, 1]], 1)


register(
    Checker(
        name="gibbs_sweep_2d",
        reference=_gibbs_sweep_2d,
        generate=_gibbs_cases,
        outputs=("x",),
        hints=[
            Hint(
                "Update the second coordinate given the NEW first one: x1 = rho x2 + s z1, "
                "then x2 = rho x1 + s z2 with that x1. Updating both from the old state is "
                "not Gibbs and does not leave the target invariant.",
                wrong=_gibbs_jacobi,
            ),
            Hint(
                "The conditional variance is 1 - rho^2 (the variance left after regressing "
                "on the other coordinate), not 1 - rho.",
                wrong=_gibbs_var_one_minus_rho,
            ),
            Hint(
                "Scale the noise by the conditional standard deviation sqrt(1 - rho^2), "
                "not by the variance 1 - rho^2.",
                wrong=_gibbs_variance_as_std,
            ),
            Hint(
                "The noise has the conditional variance 1 - rho^2, not 1: multiply it by "
                "sqrt(1 - rho^2).",
                wrong=_gibbs_no_shrink,
            ),
        ],
    )
)
