r"""Checkers of Chapter 1, *The generative modeling problem*."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gmbook.exercises._framework import (
    DTYPES,
    Case,
    Checker,
    Hint,
    close,
    fmt_dtype,
    randint,
    register,
)
from gmbook.nets import append_dims

# -- gaussian_mle ----------------------------------------------------------------------


def _gaussian_mle(x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: maximum-likelihood mean and (biased) covariance, ``(d,)`` and ``(d, d)``."""
    mean = x.mean(dim=0)  # (d,)
    xc = x - mean  # (n, d), centred first: accurate even with a large offset
    return mean, xc.T @ xc / x.shape[0]


def _gaussian_cases(generator: torch.Generator) -> list[Case]:
    def sample(n: int, d: int, dtype: torch.dtype, offset: float, scale: float) -> Tensor:
        a = torch.randn(d, d, generator=generator, dtype=torch.float64)  # correlated axes
        mu = offset + 3 * torch.randn(d, generator=generator, dtype=torch.float64)
        z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        return (mu + scale * z @ a.T).to(dtype)  # (n, d)

    cases = []
    for k, d in enumerate((2, 3, 1, 4, 2, 3)):
        dtype = DTYPES[k % 2]
        n = randint(generator, 5, 40)
        cases.append(Case(f"n={n}, d={d}, {fmt_dtype(dtype)}", (sample(n, d, dtype, 0.0, 1.0),)))
    cases += [
        Case(
            "a single sample, n=1, d=2, float64",
            (sample(1, 2, torch.float64, 0.0, 1.0),),
            edge=True,
        ),
        Case(
            "one dimension, d=1, n=10, float64",
            (sample(10, 1, torch.float64, 0.0, 1.0),),
            edge=True,
        ),
        Case(
            "large offset: 1e4 + noise of scale 0.01, n=20, d=2, float64",
            (sample(20, 2, torch.float64, 1e4, 1e-2),),
            edge=True,
            rtol=1e-6,
            atol=1e-10,
            tag="offset",
        ),
    ]
    return cases


def _gaussian_unbiased(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(dim=0)
    xc = x - mean
    return mean, xc.T @ xc / (x.shape[0] - 1)


def _gaussian_uncentred(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(dim=0), x.T @ x / x.shape[0]


def _gaussian_uncentred_unbiased(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(dim=0), x.T @ x / (x.shape[0] - 1)


def _got(got: Any, i: int) -> Tensor:
    out = got[i]
    if not isinstance(out, Tensor):
        raise TypeError
    return out.detach().cpu()


def _is_std(case: Case, got: Any, expected: Any) -> bool:
    cov = _got(got, 1)
    variances = expected[1].diagonal()
    n = case.args[0].shape[0]
    diag = cov if cov.ndim == 1 else cov.diagonal()
    for var in (variances, variances * n / max(n - 1, 1)):
        if diag.shape == var.shape and close(diag, var.sqrt(), 1e-3, 1e-8):
            return not close(var, var.sqrt(), 1e-3, 1e-8)
    return False


def _is_vector(case: Case, got: Any, expected: Any) -> bool:
    return _got(got, 1).ndim == 1


def _is_diagonal(case: Case, got: Any, expected: Any) -> bool:
    cov, exp = _got(got, 1), expected[1]
    if cov.shape != exp.shape or cov.shape[0] < 2:
        return False
    off = ~torch.eye(cov.shape[0], dtype=torch.bool)
    return bool((cov[off] == 0).all()) and bool((exp[off].abs() > 1e-12).any())


def _is_n_by_n(case: Case, got: Any, expected: Any) -> bool:
    n, d = case.args[0].shape
    return n != d and tuple(_got(got, 1).shape) == (n, n)


def _is_scalar_cov(case: Case, got: Any, expected: Any) -> bool:
    return case.args[0].shape[1] == 1 and _got(got, 1).ndim == 0


def _mean_over_features(case: Case, got: Any, expected: Any) -> bool:
    n, d = case.args[0].shape
    return n != d and tuple(_got(got, 0).shape) == (n,)


def _lost_precision(case: Case, got: Any, expected: Any) -> bool:
    cov, exp = _got(got, 1), expected[1]
    if case.tag != "offset" or cov.shape != exp.shape or cov.dtype != exp.dtype:
        return False
    tight = close(cov, exp, case.rtol or 0.0, case.atol or 0.0)
    return not tight and close(cov, exp, 1e-2, 0.0)


_HINT_MEAN_AXIS = (
    "Average over the samples, dim=0 (one value per axis, shape (d,)), not over dim=1."
)

register(
    Checker(
        name="gaussian_mle",
        reference=_gaussian_mle,
        generate=_gaussian_cases,
        outputs=("mean", "cov"),
        hints=[
            Hint(
                "You divided by n - 1 (the unbiased estimator, also torch.cov's default). "
                "The maximum-likelihood covariance divides by n.",
                wrong=_gaussian_unbiased,
                output="cov",
            ),
            Hint(
                "You forgot to centre the data: the covariance is the average of "
                "(x_i - mean)(x_i - mean)^T, i.e. xc.T @ xc / n with xc = x - mean.",
                wrong=_gaussian_uncentred,
                output="cov",
            ),
            Hint(
                "You forgot to centre the data (and divided by n - 1): the covariance is "
                "xc.T @ xc / n with xc = x - mean.",
                wrong=_gaussian_uncentred_unbiased,
                output="cov",
            ),
            Hint(_HINT_MEAN_AXIS, when=_mean_over_features),
            Hint(
                "cov holds standard deviations; the covariance holds variances (squares), "
                "as a full (d, d) matrix.",
                when=_is_std,
            ),
            Hint(
                "cov must be the full (d, d) covariance matrix, not the vector of per-axis "
                "variances: include the off-diagonal terms.",
                when=_is_vector,
            ),
            Hint(
                "cov is diagonal: the off-diagonal entries (covariances between axes) are "
                "missing. Use the outer products, xc.T @ xc / n.",
                when=_is_diagonal,
            ),
            Hint(
                "cov has shape (n, n): you computed xc @ xc.T. The (d, d) covariance is "
                "xc.T @ xc / n.",
                when=_is_n_by_n,
            ),
            Hint(
                "With one variable torch.cov returns a 0-dim tensor; reshape it to (1, 1).",
                when=_is_scalar_cov,
            ),
            Hint(
                "Close, but not accurate enough with a large offset: E[x x^T] - mean mean^T "
                "cancels catastrophically. Centre first: xc = x - mean, cov = xc.T @ xc / n.",
                when=_lost_precision,
            ),
        ],
    )
)


# -- linear_path -----------------------------------------------------------------------


def _linear_path(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: ``x_t = (1 - t) x0 + t x1`` and ``u_t = x1 - x0``, both ``(B, *D)``."""
    t = append_dims(t, x0.ndim)  # (B,) -> (B, 1, ..., 1)
    return (1 - t) * x0 + t * x1, x1 - x0


def _path_cases(generator: torch.Generator) -> list[Case]:
    def make(
        b: int, shape: tuple[int, ...], dtype: torch.dtype, t: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        x0 = torch.randn(b, *shape, generator=generator, dtype=torch.float64)  # noise
        x1 = 1 + 2 * torch.randn(b, *shape, generator=generator, dtype=torch.float64)  # data
        if t is None:
            t = torch.rand(b, generator=generator, dtype=torch.float64)
        return x0.to(dtype), x1.to(dtype), t.to(dtype)

    cases = []
    for k, shape in enumerate(((2,), (3, 4, 4), (1,), (2,), (3, 4, 4), (5,))):
        dtype = DTYPES[k % 2]
        b = randint(generator, 3, 8)
        cases.append(Case(f"B={b}, D={shape}, {fmt_dtype(dtype)}", make(b, shape, dtype, None)))
    f64 = torch.float64
    cases += [
        Case(
            "a single example, B=1, D=(3, 4, 4), float64",
            make(1, (3, 4, 4), f64, None),
            edge=True,
        ),
        Case(
            "t = 0 exactly (x_t = x0), B=5, D=(2,), float64",
            make(5, (2,), f64, torch.zeros(5)),
            edge=True,
        ),
        Case(
            "t = 1 exactly (x_t = x1), B=3, D=(3, 4, 4), float64",
            make(3, (3, 4, 4), f64, torch.ones(3)),
            edge=True,
        ),
    ]
    return cases


def _path_swapped(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = append_dims(t, x0.ndim)
    return (1 - t) * x1 + t * x0, x1 - x0


def _path_sign(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = append_dims(t, x0.ndim)
    return (1 - t) * x0 + t * x1, x0 - x1


def _path_no_broadcast(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return (1 - t) * x0 + t * x1, x1 - x0


def _path_one_dim(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = t[:, None]
    return (1 - t) * x0 + t * x1, x1 - x0


_HINT_BROADCAST = (
    "t has shape (B,); reshape it to (B, 1, ..., 1) so that it broadcasts over the "
    "data dims D, e.g. t.view(-1, *[1] * (x0.ndim - 1)) or "
    "gmbook.nets.append_dims(t, x0.ndim). t[:, None] only works when D has one dim."
)

register(
    Checker(
        name="linear_path",
        reference=_linear_path,
        generate=_path_cases,
        outputs=("x_t", "u_t"),
        hints=[
            Hint(
                "x_t goes the wrong way: it must start at x0 (noise) at t = 0 and end at "
                "x1 (data) at t = 1: x_t = (1 - t) * x0 + t * x1.",
                wrong=_path_swapped,
                output="x_t",
            ),
            Hint(
                "u_t has the wrong sign: the velocity is d x_t / dt = x1 - x0 (from noise "
                "x0 towards data x1).",
                wrong=_path_sign,
                output="u_t",
            ),
            Hint(_HINT_BROADCAST, wrong=_path_no_broadcast),
            Hint(_HINT_BROADCAST, wrong=_path_one_dim),
        ],
    )
)


# -- kl_gaussians ----------------------------------------------------------------------


def _kl_gaussians(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    r"""Reference: KL(p || q) for diagonal Gaussians, summed over the last dim, ``(B,)``."""
    terms = torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1  # (B, d)
    return 0.5 * terms.sum(dim=-1)


def _kl_cases(generator: torch.Generator) -> list[Case]:
    def make(b: int, d: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
        mu_p, mu_q = 2 * torch.randn(2, b, d, generator=generator, dtype=torch.float64)
        var_p, var_q = torch.exp(torch.randn(2, b, d, generator=generator, dtype=torch.float64))
        return tuple(a.to(dtype) for a in (mu_p, var_p, mu_q, var_q))

    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d = randint(generator, 2, 6), randint(generator, 2, 5)
        cases.append(Case(f"B={b}, d={d}, {fmt_dtype(dtype)}", make(b, d, dtype)))
    mu, var, _, _ = make(4, 3, torch.float64)
    same = (mu, var, mu.clone(), var.clone())
    mu_p, _, mu_q, _ = make(4, 2, torch.float64)
    var_p = torch.tensor([[1e-4, 1e3], [1e3, 1e-4], [1e-3, 1e-3], [1e2, 1e2]], dtype=torch.float64)
    var_q = torch.tensor([[1e3, 1e-4], [1e-4, 1e3], [1e2, 1e-2], [1e-3, 1e-1]], dtype=torch.float64)
    cases += [
        Case("identical Gaussians (KL = 0), B=4, d=3, float64", same, edge=True),
        Case("one dimension, d=1, B=5, float64", make(5, 1, torch.float64), edge=True),
        Case(
            "very different variances (1e-4 to 1e3), B=4, d=2, float64",
            (mu_p, var_p, mu_q, var_q),
            edge=True,
        ),
    ]
    return cases


def _kl_swapped(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_q, var_q, mu_p, var_p)


def _kl_no_half(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return 2 * _kl_gaussians(mu_p, var_p, mu_q, var_q)


def _kl_squared(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_p, var_p**2, mu_q, var_q**2)


def _kl_sqrt(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_p, var_p.sqrt(), mu_q, var_q.sqrt())


def _kl_log_std(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    # log(sigma_q / sigma_p) written as log(var_q / var_p), without its 1/2
    return _kl_gaussians(mu_p, var_p, mu_q, var_q) + 0.5 * torch.log(var_q / var_p).sum(-1)


def _kl_not_summed(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1)


def _kl_mean(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_p, var_p, mu_q, var_q) / mu_p.shape[-1]


def _kl_total(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_p, var_p, mu_q, var_q).sum()


register(
    Checker(
        name="kl_gaussians",
        reference=_kl_gaussians,
        generate=_kl_cases,
        outputs=("kl",),
        hints=[
            Hint(
                "You computed KL(q || p). KL(p || q) takes the expectation under p: "
                "var_p / var_q and (mu_p - mu_q)^2 / var_q, plus log(var_q / var_p).",
                wrong=_kl_swapped,
            ),
            Hint("You are missing the overall factor 1/2.", wrong=_kl_no_half),
            Hint(
                "var_p and var_q are variances already: you squared them, as if they were "
                "standard deviations.",
                wrong=_kl_squared,
            ),
            Hint(
                "You used standard deviations where the formula needs variances: "
                "var_p and var_q are sigma^2, do not take their square root.",
                wrong=_kl_sqrt,
            ),
            Hint(
                "The log term: log(sigma_q / sigma_p) = 0.5 * log(var_q / var_p); you "
                "dropped its 1/2.",
                wrong=_kl_log_std,
            ),
            Hint(
                "Sum over the last dim d (the KL of a diagonal Gaussian is a sum over "
                "axes): the result has shape (B,).",
                wrong=_kl_not_summed,
            ),
            Hint("Sum over d, do not average: the result is a sum over axes.", wrong=_kl_mean),
            Hint(
                "Sum only over d, not over the batch: return one KL per row, shape (B,).",
                wrong=_kl_total,
            ),
        ],
    )
)


# -- standardize -----------------------------------------------------------------------


def _standardize(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Reference: ``z = (x - mean) / std`` per axis with the population std, ``(n, d)``."""
    mean = x.mean(dim=0)  # (d,)
    std = x.std(dim=0, correction=0)  # (d,), divides by n
    return (x - mean) / std, mean, std


def _standardize_cases(generator: torch.Generator) -> list[Case]:
    def make(
        n: int, d: int, dtype: torch.dtype, scale: Tensor | None = None
    ) -> tuple[Tensor]:
        if scale is None:
            scale = torch.exp(torch.randn(d, generator=generator, dtype=torch.float64))
        offset = 5 * torch.randn(d, generator=generator, dtype=torch.float64)
        z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        return ((offset + scale * z).to(dtype),)  # (n, d)

    cases = []
    for k, d in enumerate((2, 3, 4, 2, 3, 4)):
        dtype = DTYPES[k % 2]
        n = randint(generator, 5, 40)
        cases.append(Case(f"n={n}, d={d}, {fmt_dtype(dtype)}", make(n, d, dtype)))
    scales = torch.tensor([1e3, 1e-2], dtype=torch.float64)
    cases += [
        Case("one dimension, d=1, n=12, float64", make(12, 1, torch.float64), edge=True),
        Case("two samples, n=2, d=3, float64", make(2, 3, torch.float64), edge=True),
        Case(
            "axes on very different scales (1e3 and 1e-2), n=15, d=2, float64",
            make(15, 2, torch.float64, scales),
            edge=True,
        ),
    ]
    return cases


def _standardize_unbiased(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(dim=0), x.std(dim=0)
    return (x - mean) / std, mean, std


def _standardize_global(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(), x.std(correction=0)
    return (x - mean) / std, mean, std


def _standardize_global_unbiased(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(), x.std()
    return (x - mean) / std, mean, std


def _standardize_mean_over_features(case: Case, got: Any, expected: Any) -> bool:
    n, d = case.args[0].shape
    return n != d and tuple(_got(got, 1).shape) == (n,)


_HINT_GLOBAL = (
    "You used one mean and std for all entries. Standardize each axis (column) on its "
    "own: mean and std over dim=0, both of shape (d,)."
)

register(
    Checker(
        name="standardize",
        reference=_standardize,
        generate=_standardize_cases,
        outputs=("z", "mean", "std"),
        hints=[
            Hint(
                "You used the unbiased std (dividing by n - 1, torch.std's default); use "
                "the population std: x.std(dim=0, unbiased=False).",
                wrong=_standardize_unbiased,
            ),
            Hint(_HINT_GLOBAL, wrong=_standardize_global, output="z"),
            Hint(_HINT_GLOBAL, wrong=_standardize_global_unbiased, output="z"),
            Hint(_HINT_MEAN_AXIS, when=_standardize_mean_over_features),
        ],
    )
)

