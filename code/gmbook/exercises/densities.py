r"""Checkers of the chapter *Modeling continuous random variables*."""

from __future__ import annotations

import math

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

# -- log_sum_exp -----------------------------------------------------------------------


def _log_sum_exp(a: Tensor) -> Tensor:
    r"""Reference: :math:`\log \sum_k e^{a_k}` over the last dimension, shape ``a.shape[:-1]``."""
    m = a.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return (m + (a - m).exp().sum(dim=-1, keepdim=True).log()).squeeze(-1)


def _lse_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        shape = [(randint(generator, 2, 9),), (randint(generator, 2, 5), randint(generator, 2, 9)),
                 (2, 3, randint(generator, 2, 6))][k % 3]
        a = 3 * torch.randn(shape, generator=generator, dtype=torch.float64)
        cases.append(Case(f"shape {tuple(shape)}, values of size about 3, {fmt_dtype(dtype)}",
                          (a.to(dtype),)))
    big = torch.tensor([[1000.0, 999.0, 998.0], [-1000.0, -1001.0, -1003.0]], dtype=torch.float64)
    cases += [
        Case("large and very negative values (exp overflows / underflows), shape (2, 3), "
             "float64", (big,), edge=True),
        Case("large values in float32, shape (1, 4)",
             (torch.tensor([[90.0, 95.0, 100.0, 80.0]], dtype=torch.float32),), edge=True),
        Case("a row of -inf (log of zero probabilities) and a row with one -inf, shape (2, 3), "
             "float64",
             (torch.tensor([[-math.inf] * 3, [0.0, -math.inf, 1.0]], dtype=torch.float64),),
             edge=True),
        Case("a single entry, shape (3, 1), float64",
             (torch.tensor([[2.0], [-5.0], [700.0]], dtype=torch.float64),), edge=True),
    ]
    return cases


def _lse_naive(a: Tensor) -> Tensor:
    return a.exp().sum(dim=-1).log()


def _lse_first_dim(a: Tensor) -> Tensor:
    return _log_sum_exp(a.transpose(0, -1)).transpose(0, -1) if a.ndim > 1 else _log_sum_exp(a)


def _lse_no_shift_back(a: Tensor) -> Tensor:
    m = a.amax(dim=-1, keepdim=True)
    return (a - m).exp().sum(dim=-1).log()


def _lse_nan_on_inf(a: Tensor) -> Tensor:
    m = a.amax(dim=-1, keepdim=True)
    return (m + (a - m).exp().sum(dim=-1, keepdim=True).log()).squeeze(-1)


register(
    Checker(
        name="log_sum_exp",
        reference=_log_sum_exp,
        generate=_lse_cases,
        outputs=("lse",),
        hints=[
            Hint(
                "exp() overflows to inf for arguments above about 709 (88 in float32) and "
                "underflows to 0 below about -745: subtract the maximum m first and add it "
                "back, m + log(sum(exp(a - m))).",
                wrong=_lse_naive,
            ),
            Hint(
                "You subtracted the maximum but did not add it back: the result is "
                "log(sum(exp(a - m))), which is off by m.",
                wrong=_lse_no_shift_back,
            ),
            Hint(
                "When every entry of a row is -inf, the maximum is -inf and a - m is "
                "-inf - (-inf) = nan. Replace an infinite maximum by 0 (torch.where) before "
                "subtracting; the answer for that row is -inf.",
                wrong=_lse_nan_on_inf,
            ),
            Hint(
                "Reduce over the last dimension (dim=-1), not the first.",
                wrong=_lse_first_dim,
            ),
        ],
    )
)


# -- em_step_1d ------------------------------------------------------------------------


def _em_step_1d(
    x: Tensor, weights: Tensor, means: Tensor, variances: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Reference: one EM iteration for a 1-D mixture of ``K`` Gaussians.

    ``x`` ``(n,)``; ``weights``, ``means``, ``variances`` ``(K,)``. E-step: the
    responsibilities ``r (n, K)`` by a log-sum-exp over components; M-step: the weighted
    counts ``N_k``, weights ``N_k / n``, means and (biased, weighted) variances.
    """
    log_n = -0.5 * (torch.log(2 * math.pi * variances) + (x[:, None] - means) ** 2 / variances)
    joint = weights.log() + log_n  # (n, K)
    r = (joint - torch.logsumexp(joint, dim=1, keepdim=True)).exp()  # (n, K)
    nk = r.sum(0)  # (K,)
    new_means = (r * x[:, None]).sum(0) / nk
    new_vars = (r * (x[:, None] - new_means) ** 2).sum(0) / nk
    return nk / x.shape[0], new_means, new_vars


def _em_cases(generator: torch.Generator) -> list[Case]:
    def params(k: int) -> tuple[Tensor, Tensor, Tensor]:
        w = torch.rand(k, generator=generator, dtype=torch.float64) + 0.2
        mu = 3 * torch.randn(k, generator=generator, dtype=torch.float64)
        var = torch.exp(torch.randn(k, generator=generator, dtype=torch.float64) * 0.5)
        return w / w.sum(), mu, var

    cases = []
    for j in range(6):
        dtype = DTYPES[j % 2]
        k = 1 + j % 4
        n = randint(generator, 10, 60)
        x = 3 * torch.randn(n, generator=generator, dtype=torch.float64)
        w, mu, var = params(k)
        cases.append(Case(f"n={n}, K={k}, {fmt_dtype(dtype)}",
                          tuple(t.to(dtype) for t in (x, w, mu, var))))
    f64 = torch.float64
    x_far = torch.tensor([-40.0, -39.5, 0.0, 0.3, 41.0, 40.2], dtype=f64)
    cases += [
        Case("points far from every mean (densities underflow to 0), n=6, K=2, float64",
             (x_far, torch.tensor([0.5, 0.5], dtype=f64), torch.tensor([-1.0, 1.0], dtype=f64),
              torch.tensor([0.5, 0.5], dtype=f64)), edge=True),
        Case("one component, K=1 (EM gives the sample mean and variance), n=5, float64",
             (torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=f64), torch.ones(1, dtype=f64),
              torch.zeros(1, dtype=f64), torch.ones(1, dtype=f64)), edge=True),
    ]
    return cases


def _em_unbiased_var(x: Tensor, w: Tensor, mu: Tensor, var: Tensor) -> tuple[Tensor, ...]:
    nw, nm, nv = _em_step_1d(x, w, mu, var)
    r_counts = nw * x.shape[0]
    return nw, nm, nv * r_counts / (r_counts - 1)


def _em_old_means(x: Tensor, w: Tensor, mu: Tensor, var: Tensor) -> tuple[Tensor, ...]:
    log_n = -0.5 * (torch.log(2 * math.pi * var) + (x[:, None] - mu) ** 2 / var)
    joint = w.log() + log_n
    r = torch.softmax(joint, dim=1)
    nk = r.sum(0)
    return nk / x.shape[0], (r * x[:, None]).sum(0) / nk, (r * (x[:, None] - mu) ** 2).sum(0) / nk


def _em_no_weights(x: Tensor, w: Tensor, mu: Tensor, var: Tensor) -> tuple[Tensor, ...]:
    return _em_step_1d(x, torch.ones_like(w) / w.shape[0], mu, var)


def _em_normalized_over_points(x: Tensor, w: Tensor, mu: Tensor, var: Tensor) -> tuple[Tensor, ...]:
    log_n = -0.5 * (torch.log(2 * math.pi * var) + (x[:, None] - mu) ** 2 / var)
    r = torch.softmax(w.log() + log_n, dim=0)  # over points: wrong axis
    nk = r.sum(0)
    m = (r * x[:, None]).sum(0) / nk
    return nk / x.shape[0], m, (r * (x[:, None] - m) ** 2).sum(0) / nk


register(
    Checker(
        name="em_step_1d",
        reference=_em_step_1d,
        generate=_em_cases,
        outputs=("weights", "means", "variances"),
        rtol=1e-6,
        atol=1e-8,
        hints=[
            Hint(
                "The M-step variance is the responsibility-weighted mean of (x - new mean)^2, "
                "divided by N_k, not N_k - 1.",
                wrong=_em_unbiased_var,
            ),
            Hint(
                "Compute the new variances around the NEW means (the M-step maximizes over "
                "means first), not around the means you were given.",
                wrong=_em_old_means,
            ),
            Hint(
                "The E-step multiplies each component's density by its weight: "
                "r_ik is proportional to weights[k] * N(x_i; means[k], variances[k]).",
                wrong=_em_no_weights,
            ),
            Hint(
                "Normalize the responsibilities over the components (each row of r sums "
                "to 1, dim=1), not over the points.",
                wrong=_em_normalized_over_points,
            ),
            Hint(
                "Some densities underflow to 0 for points far from every mean, and 0/0 is "
                "nan: work with log-densities and a log-sum-exp over components.",
                when=lambda case, got, exp: case.edge
                and any(bool(torch.isnan(g).any()) for g in got),
            ),
        ],
    )
)


# -- kde_log_prob ----------------------------------------------------------------------


def _kde_log_prob(x: Tensor, data: Tensor, bandwidth: float) -> Tensor:
    r"""Reference: log of the Gaussian KDE of ``data`` ``(n, D)`` at ``x`` ``(m, D)``,
    shape ``(m,)``: ``logsumexp_i log N(x; data_i, h^2 I) - log n``."""
    n, d = data.shape
    d2 = ((x[:, None, :] - data[None, :, :]) ** 2).sum(-1)  # (m, n)
    log_k = -d2 / (2 * bandwidth**2) - 0.5 * d * math.log(2 * math.pi * bandwidth**2)
    return torch.logsumexp(log_k, dim=1) - math.log(n)


def _kde_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for j in range(6):
        dtype = DTYPES[j % 2]
        d = 1 + j % 3
        n, m = randint(generator, 3, 30), randint(generator, 2, 10)
        h = round(0.1 + float(torch.rand((), generator=generator)) * 1.5, 3)
        data = torch.randn(n, d, generator=generator, dtype=torch.float64)
        x = 1.5 * torch.randn(m, d, generator=generator, dtype=torch.float64)
        cases.append(Case(f"m={m} query points, n={n}, D={d}, bandwidth={h}, "
                          f"{fmt_dtype(dtype)}", (x.to(dtype), data.to(dtype), h)))
    f64 = torch.float64
    data = torch.randn(5, 2, generator=generator, dtype=f64)
    cases += [
        Case("query points far from the data (kernels underflow), m=2, n=5, D=2, "
             "bandwidth=0.1, float64",
             (torch.tensor([[30.0, 0.0], [0.0, -25.0]], dtype=f64), data, 0.1), edge=True),
        Case("a single data point (a Gaussian density), m=3, n=1, D=3, bandwidth=0.7, float64",
             (torch.randn(3, 3, generator=generator, dtype=f64),
              torch.zeros(1, 3, dtype=f64), 0.7), edge=True),
    ]
    return cases


def _kde_sum(x: Tensor, data: Tensor, h: float) -> Tensor:
    return _kde_log_prob(x, data, h) + math.log(data.shape[0])


def _kde_one_dim_norm(x: Tensor, data: Tensor, h: float) -> Tensor:
    d = data.shape[1]
    return _kde_log_prob(x, data, h) + 0.5 * (d - 1) * math.log(2 * math.pi * h**2)


def _kde_h_variance(x: Tensor, data: Tensor, h: float) -> Tensor:
    return _kde_log_prob(x, data, math.sqrt(h))


def _kde_mean_of_logs(x: Tensor, data: Tensor, h: float) -> Tensor:
    n, d = data.shape
    d2 = ((x[:, None, :] - data[None, :, :]) ** 2).sum(-1)
    log_k = -d2 / (2 * h**2) - 0.5 * d * math.log(2 * math.pi * h**2)
    return log_k.mean(1)


register(
    Checker(
        name="kde_log_prob",
        reference=_kde_log_prob,
        generate=_kde_cases,
        outputs=("log_prob",),
        rtol=1e-5,
        atol=1e-6,
        hints=[
            Hint("The KDE averages the n kernels: subtract log(n) after the log-sum-exp.",
                 wrong=_kde_sum),
            Hint(
                "In D dimensions the normalizer of N(x; x_i, h^2 I) is (2 pi h^2)^(D/2): "
                "multiply the 1-D log-normalizer by D.",
                wrong=_kde_one_dim_norm,
            ),
            Hint("The bandwidth h is a standard deviation: the kernel variance is h**2.",
                 wrong=_kde_h_variance),
            Hint(
                "The log of an average is not the average of the logs: combine the kernel "
                "log-densities with a log-sum-exp over the data points, then subtract log n.",
                wrong=_kde_mean_of_logs,
            ),
            Hint(
                "Far from the data every kernel underflows to 0 and log(0) = -inf: use "
                "torch.logsumexp over the log-kernels instead of log(sum(exp(...))).",
                when=lambda case, got, exp: case.edge and bool(torch.isinf(got).any()),
            ),
        ],
    )
)
