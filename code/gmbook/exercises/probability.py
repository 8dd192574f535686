r"""Checkers of Appendix A, *Probability theory*."""

from __future__ import annotations

from typing import Any

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
from gmbook.probability import gaussian_conditional, gaussian_kl


def _spd(d: int, generator: torch.Generator, jitter: float = 0.3) -> Tensor:
    r"""A random symmetric positive definite ``(d, d)`` matrix in float64."""
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + jitter * torch.eye(d, dtype=torch.float64)


def _spectrum(d: int, generator: torch.Generator, eigenvalues: Tensor) -> Tensor:
    r"""A random rotation of ``diag(eigenvalues)``, ``(d, d)`` float64."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T


def _nonfinite(got: Any) -> bool:
    parts = got if isinstance(got, (tuple, list)) else (got,)
    return any(isinstance(p, Tensor) and not bool(torch.isfinite(p).all()) for p in parts)


# -- gaussian_conditional --------------------------------------------------------------


def _conditional(mean: Tensor, cov: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: ``X_a | X_b = x_b`` with ``b`` the last ``m = len(x_b)`` coordinates."""
    d, m = mean.shape[0], x_b.shape[0]
    return gaussian_conditional(mean, cov, range(d - m, d), x_b)


def _conditional_cases(generator: torch.Generator) -> list[Case]:
    def make(d: int, m: int, dtype: torch.dtype, cov: Tensor | None = None,
             at_mean: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        mean = 2 * torch.randn(d, generator=generator, dtype=torch.float64)
        cov = _spd(d, generator) if cov is None else cov
        x_b = mean[d - m:] + torch.randn(m, generator=generator, dtype=torch.float64)
        if at_mean:
            x_b = mean[d - m:].clone()
        return mean.to(dtype), cov.to(dtype), x_b.to(dtype)

    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        d = randint(generator, 3, 6)
        m = randint(generator, 1, d - 1)
        cases.append(Case(f"D={d}, m={m} observed, {fmt_dtype(dtype)}", make(d, m, dtype)))
    f64 = torch.float64
    blocks = torch.block_diag(_spd(2, generator), _spd(2, generator))
    rho = torch.tensor([[1.0, 0.99], [0.99, 1.0]], dtype=f64)
    cases += [
        Case("two coordinates, D=2, m=1, float64", make(2, 1, f64), edge=True),
        Case("independent blocks (Sigma_ab = 0: the conditional is the marginal), D=4, m=2,"
             " float64", make(4, 2, f64, blocks), edge=True),
        Case("x_b equal to its mean, D=4, m=1, float64", make(4, 1, f64, at_mean=True),
             edge=True),
        Case("strong correlation rho = 0.99, D=2, m=1, float64", make(2, 1, f64, rho),
             edge=True, rtol=1e-6, atol=1e-9),
    ]
    return cases


def _blocks(mean: Tensor, cov: Tensor, m: int) -> tuple[Tensor, ...]:
    k = mean.shape[0] - m
    return mean[:k], mean[k:], cov[:k, :k], cov[:k, k:], cov[k:, k:]


def _cond_not_centred(mean: Tensor, cov: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
    mu_a, _, s_aa, s_ab, s_bb = _blocks(mean, cov, x_b.shape[0])
    gain = s_ab @ torch.linalg.inv(s_bb)
    return mu_a + gain @ x_b, s_aa - gain @ s_ab.T


def _cond_plus(mean: Tensor, cov: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
    mu_a, mu_b, s_aa, s_ab, s_bb = _blocks(mean, cov, x_b.shape[0])
    gain = s_ab @ torch.linalg.inv(s_bb)
    return mu_a + gain @ (x_b - mu_b), s_aa + gain @ s_ab.T


def _cond_no_inverse(mean: Tensor, cov: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
    mu_a, mu_b, s_aa, s_ab, s_bb = _blocks(mean, cov, x_b.shape[0])
    gain = s_ab @ s_bb
    return mu_a + gain @ (x_b - mu_b), s_aa - gain @ s_ab.T


def _cond_marginal(mean: Tensor, cov: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
    mu_a, _, s_aa, _, _ = _blocks(mean, cov, x_b.shape[0])
    return mu_a, s_aa


def _cond_first(mean: Tensor, cov: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
    m = x_b.shape[0]
    return gaussian_conditional(mean, cov, range(m), x_b)


register(
    Checker(
        name="gaussian_conditional",
        reference=_conditional,
        generate=_conditional_cases,
        outputs=("mean_a", "cov_a"),
        hints=[
            Hint(
                "The observed block b is the LAST m = len(x_b) coordinates; you "
                "conditioned on the first m.",
                wrong=_cond_first,
            ),
            Hint(
                "You returned the marginal of X_a: conditioning on x_b shifts the mean by "
                "K (x_b - mu_b) and shrinks the covariance by K Sigma_ba, with "
                "K = Sigma_ab Sigma_bb^-1.",
                wrong=_cond_marginal,
            ),
            Hint(
                "Centre the observation: the mean is mu_a + K (x_b - mu_b), not "
                "mu_a + K x_b.",
                wrong=_cond_not_centred,
                output="mean_a",
            ),
            Hint(
                "Conditioning reduces uncertainty: the covariance is Sigma_aa MINUS "
                "Sigma_ab Sigma_bb^-1 Sigma_ba (a Schur complement).",
                wrong=_cond_plus,
                output="cov_a",
            ),
            Hint(
                "The gain is K = Sigma_ab Sigma_bb^-1, with the INVERSE of Sigma_bb "
                "(torch.linalg.solve), not Sigma_ab Sigma_bb.",
                wrong=_cond_no_inverse,
            ),
            Hint(
                "Check the shapes: with k = D - m free coordinates, mean_a is (k,) and "
                "cov_a is (k, k); Sigma_ab is the (k, m) top-right block.",
                when=lambda case, got, exp: tuple(got[1].shape) != tuple(exp[1].shape),
            ),
        ],
    )
)


# -- kl_mvn ----------------------------------------------------------------------------


def _kl_mvn(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    r"""Reference: KL(p || q) between full-covariance Gaussians, a 0-dim tensor."""
    return gaussian_kl(mean_p, cov_p, mean_q, cov_q)


def _kl_cases(generator: torch.Generator) -> list[Case]:
    def make(d: int, dtype: torch.dtype, cov_p: Tensor | None = None,
             cov_q: Tensor | None = None) -> tuple[Tensor, ...]:
        mean_p, mean_q = torch.randn(2, d, generator=generator, dtype=torch.float64)
        cov_p = _spd(d, generator) if cov_p is None else cov_p
        cov_q = _spd(d, generator) if cov_q is None else cov_q
        return tuple(a.to(dtype) for a in (mean_p, cov_p, mean_q, cov_q))

    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        d = randint(generator, 2, 5)
        cases.append(Case(f"D={d}, {fmt_dtype(dtype)}", make(d, dtype)))
    f64 = torch.float64
    mean, cov = torch.randn(3, generator=generator, dtype=f64), _spd(3, generator)
    diag_p = torch.diag(torch.rand(3, generator=generator, dtype=f64) + 0.2)
    diag_q = torch.diag(torch.rand(3, generator=generator, dtype=f64) + 0.2)
    wide = torch.tensor([1e-3, 1.0, 1e2], dtype=f64)
    cases += [
        Case("identical Gaussians (KL = 0), D=3, float64", (mean, cov, mean.clone(),
             cov.clone()), edge=True, atol=1e-9),
        Case("one dimension, D=1, float64", make(1, f64), edge=True),
        Case("diagonal covariances, D=3, float64", make(3, f64, diag_p, diag_q), edge=True),
        Case("ill-conditioned covariances (eigenvalues 1e-3 to 1e2), D=3, float64",
             make(3, f64, _spectrum(3, generator, wide), _spectrum(3, generator, wide)),
             edge=True, rtol=1e-6, atol=1e-8),
    ]
    return cases


def _kl_terms(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> dict[str, Tensor]:
    inv_p, inv_q = torch.linalg.inv(cov_p), torch.linalg.inv(cov_q)
    diff = mean_q - mean_p
    return {
        "trace": torch.trace(inv_q @ cov_p),
        "trace_swapped": torch.trace(inv_p @ cov_q),
        "maha": diff @ inv_q @ diff,
        "maha_p": diff @ inv_p @ diff,
        "logdet": torch.logdet(cov_q) - torch.logdet(cov_p),
        "d": torch.tensor(float(mean_p.shape[0]), dtype=mean_p.dtype),
    }


def _kl_from(**use: str) -> Any:
    def wrong(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
        t = _kl_terms(mean_p, cov_p, mean_q, cov_q)
        half = 1.0 if use.get("no_half") else 0.5
        sign = -1.0 if use.get("logdet_sign") else 1.0
        minus_d = 0.0 if use.get("no_d") else t["d"]
        return half * (t[use.get("trace", "trace")] + t[use.get("maha", "maha")]
                       - minus_d + sign * t["logdet"])

    return wrong


def _kl_swapped(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    return gaussian_kl(mean_q, cov_q, mean_p, cov_p)


def _kl_diagonal(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    return gaussian_kl(mean_p, torch.diag(cov_p.diagonal()), mean_q,
                       torch.diag(cov_q.diagonal()))


register(
    Checker(
        name="kl_mvn",
        reference=_kl_mvn,
        generate=_kl_cases,
        outputs=("kl",),
        hints=[
            Hint(
                "You computed KL(q || p). KL(p || q) is an expectation under p: "
                "tr(Sigma_q^-1 Sigma_p), the Mahalanobis term with Sigma_q^-1, and "
                "log det Sigma_q - log det Sigma_p.",
                wrong=_kl_swapped,
            ),
            Hint("You are missing the overall factor 1/2.", wrong=_kl_from(no_half="1")),
            Hint(
                "The trace term is tr(Sigma_q^-1 Sigma_p): invert the covariance of q, "
                "not of p.",
                wrong=_kl_from(trace="trace_swapped"),
            ),
            Hint(
                "The Mahalanobis term uses Sigma_q^-1: (mu_q - mu_p)^T Sigma_q^-1 "
                "(mu_q - mu_p).",
                wrong=_kl_from(maha="maha_p"),
            ),
            Hint(
                "The log-determinant term has the wrong sign: it is "
                "log det Sigma_q - log det Sigma_p.",
                wrong=_kl_from(logdet_sign="1"),
            ),
            Hint(
                "You forgot the -D: with it the KL of a Gaussian from itself is 0.",
                wrong=_kl_from(no_d="1"),
            ),
            Hint(
                "You used only the diagonals of the covariances; the off-diagonal "
                "entries matter. Use full matrices (torch.linalg.solve, torch.logdet).",
                wrong=_kl_diagonal,
            ),
        ],
    )
)


# -- self_normalized_is ----------------------------------------------------------------


def _snis(log_w: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: self-normalized estimate and effective sample size, both 0-dim."""
    w = torch.softmax(log_w, dim=0)  # normalised weights, stable for any offset
    return (w * fx).sum(), 1.0 / w.pow(2).sum()


def _snis_cases(generator: torch.Generator) -> list[Case]:
    def make(n: int, dtype: torch.dtype, spread: float = 1.0,
             offset: float = 0.0) -> tuple[Tensor, Tensor]:
        log_w = offset + spread * torch.randn(n, generator=generator, dtype=torch.float64)
        fx = 1 + 2 * torch.randn(n, generator=generator, dtype=torch.float64)
        return log_w.to(dtype), fx.to(dtype)

    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        n = randint(generator, 5, 60)
        spread = [0.5, 1.0, 2.0][k % 3]
        cases.append(Case(f"n={n}, log-weights of spread {spread}, {fmt_dtype(dtype)}",
                          make(n, dtype, spread)))
    f64 = torch.float64
    equal_w, equal_f = make(10, f64, spread=0.0)
    dominant_w, dominant_f = make(8, f64)
    dominant_w = torch.full((8,), -60.0, dtype=f64)
    dominant_w[3] = 0.0
    cases += [
        Case("equal weights (ESS = n), n=10, float64", (equal_w, equal_f), edge=True),
        Case("one weight dominates (ESS = 1), n=8, float64", (dominant_w, dominant_f),
             edge=True),
        Case("large log-weights, around +1000, n=20, float64",
             make(20, f64, offset=1000.0), edge=True, tag="overflow"),
        Case("small log-weights, around -1000, n=20, float64",
             make(20, f64, offset=-1000.0), edge=True, tag="overflow"),
        Case("a single draw, n=1, float64", make(1, f64), edge=True),
    ]
    return cases


def _snis_plain(log_w: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
    return (log_w.exp() * fx).mean(), _snis(log_w, fx)[1]


def _snis_unweighted(log_w: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
    return fx.mean(), _snis(log_w, fx)[1]


def _snis_log_as_weights(log_w: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
    return (log_w * fx).sum() / log_w.sum(), _snis(log_w, fx)[1]


def _ess_inverse_sum(log_w: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.softmax(log_w, dim=0)
    return (w * fx).sum(), 1.0 / w.sum()


def _ess_unnormalised(log_w: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
    return _snis(log_w, fx)[0], 1.0 / log_w.exp().pow(2).sum()


def _ess_no_square(log_w: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
    w = log_w.exp()
    return _snis(log_w, fx)[0], w.sum() / w.pow(2).sum()


def _overflowed(case: Case, got: Any, expected: Any) -> bool:
    return case.tag == "overflow" and _nonfinite(got)


register(
    Checker(
        name="self_normalized_is",
        reference=_snis,
        generate=_snis_cases,
        outputs=("estimate", "ess"),
        hints=[
            Hint(
                "exp(log_w) overflowed or underflowed. Weights matter only up to a "
                "constant: subtract log_w.max() before exponentiating, or use "
                "torch.softmax(log_w, dim=0) for the normalised weights.",
                when=_overflowed,
            ),
            Hint(
                "Divide by the sum of the weights, not by n: the self-normalized "
                "estimate is sum(w f) / sum(w), which needs p only up to a constant.",
                wrong=_snis_plain,
                output="estimate",
            ),
            Hint(
                "Weight the values: the estimate is sum_i w_i f_i / sum_i w_i, not the "
                "plain mean of f.",
                wrong=_snis_unweighted,
                output="estimate",
            ),
            Hint(
                "log_w holds LOG-weights: the weights are exp(log_w).",
                wrong=_snis_log_as_weights,
                output="estimate",
            ),
            Hint(
                "The ESS is 1 / sum of the SQUARED normalised weights, "
                "(sum w)^2 / sum w^2; the normalised weights always sum to 1.",
                wrong=_ess_inverse_sum,
                output="ess",
            ),
            Hint(
                "Normalise the weights before squaring them: ESS = 1 / sum(wbar^2) with "
                "wbar = w / sum(w), or (sum w)^2 / sum(w^2).",
                wrong=_ess_unnormalised,
                output="ess",
            ),
            Hint(
                "Square the sum in the numerator: ESS = (sum w)^2 / sum(w^2).",
                wrong=_ess_no_square,
                output="ess",
            ),
        ],
    )
)
