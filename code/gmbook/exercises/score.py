r"""Checkers of the chapter *Score matching and denoising*."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gmbook.exercises._framework import DTYPES, Case, Checker, Hint, fmt_dtype, randint, register

# -- noised_mixture_score --------------------------------------------------------------


def _noised_mixture_score(
    x: Tensor, weights: Tensor, means: Tensor, variances: Tensor, sigma: float
) -> Tensor:
    r"""Reference: the score of :math:`\sum_k \pi_k \mathcal N(\mu_k, (v_k + \sigma^2) I)`
    (eq. ``eq-sm-mixture-score`` with isotropic components), shape ``(B, D)``."""
    var = variances + sigma**2  # (K,)
    d2 = (x[:, None, :] - means[None]).pow(2).sum(-1)  # (B, K)
    logits = weights.log() - 0.5 * d2 / var - 0.5 * x.shape[1] * var.log()
    r = torch.softmax(logits, dim=1)  # (B, K)
    return ((r / var)[..., None] * (means[None] - x[:, None, :])).sum(1)


def _mixture_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d, m = randint(generator, 1, 9), randint(generator, 1, 4), randint(generator, 1, 5)
        w = torch.rand(m, generator=generator, dtype=f64) + 0.1
        w = w / w.sum()
        mu = 2 * torch.randn(m, d, generator=generator, dtype=f64)
        var = 0.2 + torch.rand(m, generator=generator, dtype=f64)
        x = 2 * torch.randn(b, d, generator=generator, dtype=f64)
        sigma = [0.1, 0.5, 1.3][k % 3]
        cases.append(Case(f"B={b}, D={d}, K={m} components, sigma={sigma}, {fmt_dtype(dtype)}",
                          (x.to(dtype), w.to(dtype), mu.to(dtype), var.to(dtype), sigma)))
    w2 = torch.tensor([0.5, 0.5], dtype=f64)
    mu2 = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=f64)
    v2 = torch.tensor([0.01, 0.01], dtype=f64)
    cases += [
        Case("points far from both components (exp underflows), sigma=0.05, float64",
             (torch.tensor([[40.0, 3.0], [-50.0, 1.0]], dtype=f64), w2, mu2, v2, 0.05),
             edge=True),
        Case("a single Gaussian, K=1, D=1: score -(x - mu) / (v + sigma^2), float64",
             (torch.tensor([[0.0], [2.0]], dtype=f64), torch.ones(1, dtype=f64),
              torch.ones(1, 1, dtype=f64), torch.full((1,), 0.5, dtype=f64), 0.5), edge=True),
    ]
    return cases


def _nms_clean(x, weights, means, variances, sigma):
    return _noised_mixture_score(x, weights, means, variances, 1e-12)


def _nms_sigma_not_squared(x, weights, means, variances, sigma):
    return _noised_mixture_score(x, weights, means, variances, math.sqrt(sigma))


def _nms_no_normaliser(x, weights, means, variances, sigma):
    var = variances + sigma**2
    d2 = (x[:, None, :] - means[None]).pow(2).sum(-1)
    r = torch.softmax(weights.log() - 0.5 * d2 / var, dim=1)
    return ((r / var)[..., None] * (means[None] - x[:, None, :])).sum(1)


def _nms_naive(x, weights, means, variances, sigma):
    var = variances + sigma**2
    d2 = (x[:, None, :] - means[None]).pow(2).sum(-1)
    dens = weights * torch.exp(-0.5 * d2 / var) / var ** (0.5 * x.shape[1])
    r = dens / dens.sum(1, keepdim=True)
    return ((r / var)[..., None] * (means[None] - x[:, None, :])).sum(1)


def _nms_sign(x, weights, means, variances, sigma):
    return -_noised_mixture_score(x, weights, means, variances, sigma)


register(
    Checker(
        name="noised_mixture_score",
        reference=_noised_mixture_score,
        generate=_mixture_cases,
        outputs=("score",),
        hints=[
            Hint("Noise of scale sigma adds sigma**2 to every component's variance: use "
                 "variances + sigma**2, not the clean variances.", wrong=_nms_clean),
            Hint("The added variance is sigma**2, not sigma.", wrong=_nms_sigma_not_squared),
            Hint("The responsibilities need each component's normaliser: add "
                 "-D/2 * log(variance) to the log-weights when the variances differ.",
                 wrong=_nms_no_normaliser),
            Hint("exp(-d2 / (2 var)) underflows to 0/0 far from the data: compute the "
                 "responsibilities with torch.softmax of the log-weights.", wrong=_nms_naive),
            Hint("The score points towards the means: (mu_k - x) / var, not (x - mu_k) / var.",
                 wrong=_nms_sign),
        ],
    )
)


# -- annealed_langevin_step ------------------------------------------------------------


def _annealed_step(
    x: Tensor, score: Tensor, sigma: float, sigma_last: float, eps: float, z: Tensor
) -> Tensor:
    r"""Reference: one step of eq. ``eq-sm-annealed``,
    :math:`x + \alpha s + \sqrt{2\alpha}\, z` with :math:`\alpha = \epsilon \sigma^2 /
    \sigma_L^2`, shape ``(B, D)``."""
    alpha = eps * (sigma / sigma_last) ** 2
    return x + alpha * score + math.sqrt(2 * alpha) * z


def _annealed_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d = randint(generator, 1, 9), randint(generator, 1, 4)
        x, s, z = (torch.randn(b, d, generator=generator, dtype=f64) for _ in range(3))
        sigma_last = [0.01, 0.05, 0.1][k % 3]
        sigma = sigma_last * (1 + 20 * float(torch.rand((), generator=generator, dtype=f64)))
        eps = [1e-5, 2e-5, 1e-4][(k + 1) % 3]
        cases.append(Case(f"B={b}, D={d}, sigma={sigma:.4f}, sigma_last={sigma_last}, "
                          f"eps={eps}, {fmt_dtype(dtype)}",
                          (x.to(dtype), s.to(dtype), sigma, sigma_last, eps, z.to(dtype))))
    x = torch.tensor([[1.0, -1.0]], dtype=f64)
    cases += [
        Case("the last level, sigma = sigma_last = 0.1 (alpha = eps = 0.01), float64",
             (x, torch.tensor([[2.0, 0.0]], dtype=f64), 0.1, 0.1, 0.01,
              torch.tensor([[0.5, 1.0]], dtype=f64)), edge=True),
        Case("zero noise z = 0: a pure score step, sigma=1, sigma_last=0.1, eps=1e-4, float64",
             (x, torch.tensor([[1.0, 1.0]], dtype=f64), 1.0, 0.1, 1e-4,
              torch.zeros(1, 2, dtype=f64)), edge=True),
    ]
    return cases


def _as_no_ratio(x, score, sigma, sigma_last, eps, z):
    alpha = eps * sigma**2
    return x + alpha * score + math.sqrt(2 * alpha) * z


def _as_not_squared(x, score, sigma, sigma_last, eps, z):
    alpha = eps * sigma / sigma_last
    return x + alpha * score + math.sqrt(2 * alpha) * z


def _as_no_two(x, score, sigma, sigma_last, eps, z):
    alpha = eps * (sigma / sigma_last) ** 2
    return x + alpha * score + math.sqrt(alpha) * z


def _as_half(x, score, sigma, sigma_last, eps, z):
    alpha = eps * (sigma / sigma_last) ** 2
    return x + 0.5 * alpha * score + math.sqrt(alpha) * z


register(
    Checker(
        name="annealed_langevin_step",
        reference=_annealed_step,
        generate=_annealed_cases,
        outputs=("x_new",),
        hints=[
            Hint("The step size is relative to the last level: alpha = eps * sigma**2 / "
                 "sigma_last**2.", wrong=_as_no_ratio),
            Hint("The ratio of noise levels enters squared: alpha = eps * (sigma / "
                 "sigma_last)**2.", wrong=_as_not_squared),
            Hint("This book's Langevin step is x + alpha * s + sqrt(2 * alpha) * z (Song and "
                 "Ermon write alpha / 2 * s + sqrt(alpha) * z).", wrong=_as_half),
            Hint("The noise has standard deviation sqrt(2 * alpha), not sqrt(alpha).",
                 wrong=_as_no_two),
        ],
    )
)
