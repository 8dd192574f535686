r"""Checkers of the chapter *Guidance and conditional generation*."""

from __future__ import annotations

import torch
from torch import Tensor

from gmbook.exercises._framework import DTYPES, Case, Checker, Hint, fmt_dtype, randint, register
from gmbook.guidance import LabelledMixture, cfg
from gmbook.samplers import Prediction, VEPath

__all__: list[str] = []


# -- cfg_score -------------------------------------------------------------------------


def _cfg_score(x: Tensor, x0_uncond: Tensor, x0_cond: Tensor, sigma: Tensor,
               w: float) -> Tensor:
    r"""Reference: the classifier-free guided score (eq. ``eq-guid-cfg``, weight ``w``, 0
    the unconditional and 1 the conditional model) on the path :math:`x_\sigma = x_0 +
    \sigma\epsilon` at ``x`` ``(B, D)``, from the two denoised estimates ``(B, D)`` at noise
    levels ``sigma`` ``(B,)``: the score of :func:`gmbook.guidance.cfg`, :math:`(\hat x_0^{(w)}
    - x)/\sigma^2`."""
    path = VEPath(float(sigma.max()) * 2 + 1)
    uncond = Prediction(lambda z, t: x0_uncond.to(z.dtype), "x0", path)
    cond = Prediction(lambda z, t: x0_cond.to(z.dtype), "x0", path)
    return cfg(uncond, cond, w).score(x, sigma)


def _cfg_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d = randint(generator, 1, 6), randint(generator, 1, 3)
        x, xu, xc = torch.randn(3, b, d, generator=generator, dtype=f64)
        sigma = torch.exp(-2 + 4 * torch.rand(b, generator=generator, dtype=f64))
        w = round(float(8 * torch.rand((), generator=generator, dtype=f64)), 3)
        cases.append(Case(f"B={b}, D={d}, w={w}, {fmt_dtype(dtype)}",
                          (x.to(dtype), xu.to(dtype), xc.to(dtype), sigma.to(dtype), w)))
    x = torch.tensor([[0.5, -1.0]], dtype=f64)
    xu = torch.tensor([[0.0, 0.0]], dtype=f64)
    xc = torch.tensor([[1.0, 2.0]], dtype=f64)
    s = torch.tensor([0.5], dtype=f64)
    cases += [
        Case("w = 0: the unconditional score, float64", (x, xu, xc, s, 0.0), edge=True),
        Case("w = 1: the conditional score, float64", (x, xu, xc, s, 1.0), edge=True),
        Case("w = 3 at sigma = 2, float64", (x, xu, xc, torch.tensor([2.0], dtype=f64), 3.0),
             edge=True),
    ]
    return cases


def _cfg_ho_salimans(x, x0_uncond, x0_cond, sigma, w):
    """Ho & Salimans' weight: (1 + w) cond - w uncond."""
    return _cfg_score(x, x0_uncond, x0_cond, sigma, w + 1)


def _cfg_swapped(x, x0_uncond, x0_cond, sigma, w):
    return _cfg_score(x, x0_cond, x0_uncond, sigma, w)


def _cfg_no_conversion(x, x0_uncond, x0_cond, sigma, w):
    return x0_uncond + w * (x0_cond - x0_uncond)


def _cfg_sigma_not_squared(x, x0_uncond, x0_cond, sigma, w):
    return _cfg_score(x, x0_uncond, x0_cond, sigma, w) * sigma[:, None]


def _cfg_sign(x, x0_uncond, x0_cond, sigma, w):
    return -_cfg_score(x, x0_uncond, x0_cond, sigma, w)


register(
    Checker(
        name="cfg_score",
        reference=_cfg_score,
        generate=_cfg_cases,
        outputs=("score",),
        hints=[
            Hint("In this book w = 1 is the conditional model: x0 = x0_u + w (x0_c - x0_u). "
                 "(1 + w) x0_c - w x0_u is Ho & Salimans' convention, whose w is ours minus "
                 "one.", wrong=_cfg_ho_salimans),
            Hint("The guidance pushes from the unconditional towards the conditional "
                 "estimate: x0_u + w (x0_c - x0_u), not the other way round.",
                 wrong=_cfg_swapped),
            Hint("That is the guided denoised estimate; the score is (x0 - x) / sigma^2 "
                 "(Tweedie's formula on the path x = x0 + sigma eps).",
                 wrong=_cfg_no_conversion),
            Hint("Tweedie's formula divides by the variance: (x0 - x) / sigma^2, not by "
                 "sigma.", wrong=_cfg_sigma_not_squared),
            Hint("The score points from x towards the denoised estimate: (x0 - x) / "
                 "sigma^2.", wrong=_cfg_sign),
        ],
    )
)


# -- noised_classifier_grad ------------------------------------------------------------


def _classifier_grad(x: Tensor, means: Tensor, var: float, weights: Tensor, sigma: float,
                     c: int) -> Tensor:
    r"""Reference: the gradient of the noised classifier :math:`\nabla_x \log p_\sigma(c
    \mid x)` (eq. ``eq-guid-classifier``) of a mixture of two isotropic Gaussians, class
    :math:`k` being :math:`\mathcal N(\mu_k, v I)` with probability :math:`\pi_k`, noised
    by :math:`x_\sigma = x_0 + \sigma\epsilon`: ``x`` ``(B, D)``, ``means`` ``(2, D)``,
    ``weights`` ``(2,)``; returns ``(B, D)``
    (:meth:`gmbook.guidance.LabelledMixture.classifier_grad`)."""
    mix = LabelledMixture(weights.to(torch.float64), means.to(torch.float64),
                          torch.full_like(means, var, dtype=torch.float64),
                          torch.tensor([0, 1]), 2)
    return mix.classifier_grad(x, c, sigma, VEPath(sigma * 2 + 1)).to(x.dtype)


def _grad_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d = randint(generator, 1, 6), randint(generator, 1, 3)
        x = 2 * torch.randn(b, d, generator=generator, dtype=f64)
        means = 1.5 * torch.randn(2, d, generator=generator, dtype=f64)
        var = round(0.1 + float(torch.rand((), generator=generator, dtype=f64)), 3)
        p = round(0.2 + 0.6 * float(torch.rand((), generator=generator, dtype=f64)), 3)
        sigma = round(0.05 + 2 * float(torch.rand((), generator=generator, dtype=f64)), 3)
        c = k % 2
        cases.append(Case(f"B={b}, D={d}, v={var}, pi=({p}, {1 - p:.3f}), sigma={sigma}, "
                          f"c={c}, {fmt_dtype(dtype)}",
                          (x.to(dtype), means.to(dtype), var,
                           torch.tensor([p, 1 - p], dtype=dtype), sigma, c)))
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=f64)
    half = torch.tensor([0.5, 0.5], dtype=f64)
    cases += [
        Case("x halfway between equal classes: the gradient points to class c, float64",
             (torch.zeros(1, 2, dtype=f64), means, 0.5, half, 1.0, 1), edge=True),
        Case("x deep inside class 0, c = 0: a vanishing gradient, float64",
             (torch.tensor([[-6.0, 0.0]], dtype=f64), means, 0.25, half, 0.1, 0), edge=True),
        Case("large noise (sigma = 10): a nearly constant gradient, float64",
             (torch.tensor([[0.3, -2.0], [5.0, 1.0]], dtype=f64), means, 0.5, half, 10.0, 0),
             edge=True),
    ]
    return cases


def _grad_no_noise(x, means, var, weights, sigma, c):
    return _classifier_grad(x, means, var, weights, 1e-8, c)


def _grad_class_score(x, means, var, weights, sigma, c):
    return (means[c] - x) / (var + sigma**2)


def _grad_sigma_not_squared(x, means, var, weights, sigma, c):
    return _classifier_grad(x, means, var, weights, sigma**0.5, c)


def _grad_sign(x, means, var, weights, sigma, c):
    return -_classifier_grad(x, means, var, weights, sigma, c)


register(
    Checker(
        name="noised_classifier_grad",
        reference=_classifier_grad,
        generate=_grad_cases,
        outputs=("grad",),
        hints=[
            Hint("Noise the classes first: under x = x0 + sigma eps class k is N(mu_k, "
                 "(v + sigma^2) I), and the classifier is the ratio of the noised "
                 "densities.", wrong=_grad_no_noise),
            Hint("That is the class's own score; Bayes' rule subtracts the score of the "
                 "whole mixture: grad log p(c | x) = grad log p(x | c) - grad log p(x).",
                 wrong=_grad_class_score),
            Hint("The noised variance is v + sigma^2, not v + sigma.",
                 wrong=_grad_sigma_not_squared),
            Hint("The gradient points towards class c: (mu_c - sum_k r_k mu_k) / (v + "
                 "sigma^2), r_k the posterior class probabilities.", wrong=_grad_sign),
        ],
    )
)
