r"""Checkers of the chapter *Variational autoencoders* (``book/latent/vae.md``)."""

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

# -- iwae_bound ------------------------------------------------------------------------


def _iwae_bound(log_w: Tensor) -> Tensor:
    r"""Reference: :math:`\log \frac1K \sum_k e^{\log w_k}` over the first dimension of
    ``log_w`` ``(K, B)`` (eq. ``eq-vae-iwae``), shape ``(B,)``."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def _iwae_cases(generator: torch.Generator) -> list[Case]:
    def make(k: int, b: int, dtype: torch.dtype, loc: float = -5.0, scale: float = 2.0
             ) -> tuple[Tensor]:
        lw = loc + scale * torch.randn(k, b, generator=generator, dtype=torch.float64)
        return (lw.to(dtype),)

    cases = []
    for i in range(6):
        dtype = DTYPES[i % 2]
        k, b = randint(generator, 2, 40), randint(generator, 1, 6)
        if k == b:
            k += 1  # keep K != B, so that reducing the wrong dimension shows in the shape
        cases.append(Case(f"K={k} samples, B={b} points, {fmt_dtype(dtype)}", make(k, b, dtype)))
    f64 = torch.float64
    equal = torch.full((5, 3), -2.5, dtype=f64)
    cases += [
        Case("K=1 sample (the bound is the log-weight itself), B=4, float64",
             make(1, 4, f64), edge=True),
        Case("equal log-weights (the bound is their common value), K=5, B=3, float64",
             (equal,), edge=True),
        Case("very negative log-weights, about -1000 (64-D images), K=8, B=3, float64",
             make(8, 3, f64, loc=-1000.0, scale=20.0), edge=True),
        Case("large positive log-weights, about +800, K=6, B=2, float64",
             make(6, 2, f64, loc=800.0, scale=5.0), edge=True),
    ]
    return cases


def _iwae_mean_of_logs(log_w: Tensor) -> Tensor:
    return log_w.mean(0)


def _iwae_no_log_k(log_w: Tensor) -> Tensor:
    return torch.logsumexp(log_w, dim=0)


def _iwae_naive(log_w: Tensor) -> Tensor:
    return log_w.exp().mean(0).log()


def _iwae_max(log_w: Tensor) -> Tensor:
    return log_w.amax(0)


register(
    Checker(
        name="iwae_bound",
        reference=_iwae_bound,
        generate=_iwae_cases,
        outputs=("bound",),
        hints=[
            Hint(
                "You averaged the log-weights: that is the ELBO (K copies of L_1), not the "
                "IWAE bound. Average the weights themselves, log(mean(exp(log_w))).",
                wrong=_iwae_mean_of_logs,
            ),
            Hint(
                "logsumexp gives log(sum_k w_k); the bound is the log of the MEAN, so "
                "subtract log(K).",
                wrong=_iwae_no_log_k,
            ),
            Hint(
                "exp() underflows to 0 (or overflows to inf) for log-weights of a few "
                "hundred: use torch.logsumexp over the samples, minus log(K).",
                wrong=_iwae_naive,
            ),
            Hint(
                "The largest log-weight is only the dominant term: add the log of the sum "
                "of exp(log_w - max), minus log(K).",
                wrong=_iwae_max,
            ),
            Hint(
                "log_w has shape (K, B): reduce over the K samples (dim=0), keep the B "
                "points.",
                when=lambda case, got, exp: tuple(got.shape) != tuple(exp.shape),
            ),
        ],
    )
)


# -- ppca_posterior ---------------------------------------------------------


def _ppca_posterior(W: Tensor, b: Tensor, noise_var: float, x: Tensor
                               ) -> tuple[Tensor, Tensor]:
    r"""Reference: the posterior of :math:`x = W z + b + \sigma \epsilon`,
    :math:`z \sim \mathcal N(0, I)` (eq. ``eq-vae-linear-posterior``):
    mean :math:`M^{-1} W^\top (x - b)` ``(B, L)`` and covariance :math:`\sigma^2 M^{-1}`
    ``(L, L)``, with :math:`M = W^\top W + \sigma^2 I`."""
    lat = W.shape[1]
    m = W.T @ W + noise_var * torch.eye(lat, dtype=W.dtype)
    mean = torch.linalg.solve(m, W.T @ (x - b).T).T
    cov = noise_var * torch.linalg.inv(m)
    return mean, 0.5 * (cov + cov.T)


def _posterior_cases(generator: torch.Generator) -> list[Case]:
    def make(d: int, lat: int, dtype: torch.dtype, noise_var: float = 0.3,
             w: Tensor | None = None, at_b: bool = False) -> tuple:
        w = torch.randn(d, lat, generator=generator, dtype=torch.float64) if w is None else w
        b = torch.randn(d, generator=generator, dtype=torch.float64)
        n = randint(generator, 1, 5)
        x = b + torch.randn(n, d, generator=generator, dtype=torch.float64) * 2
        if at_b:
            x = b.expand(3, d).clone()
        return w.to(dtype), b.to(dtype), noise_var, x.to(dtype)

    cases = []
    for i in range(6):
        dtype = DTYPES[i % 2]
        d = randint(generator, 3, 7)
        lat = randint(generator, 1, d - 1)
        s2 = float(0.1 + torch.rand((), generator=generator, dtype=torch.float64))
        cases.append(Case(f"D={d}, L={lat}, noise_var={s2:.3f}, {fmt_dtype(dtype)}",
                          make(d, lat, dtype, s2)))
    f64 = torch.float64
    q, _ = torch.linalg.qr(torch.randn(5, 2, generator=generator, dtype=f64))
    orthogonal = q * torch.tensor([2.0, 0.7], dtype=f64)
    cases += [
        Case("one latent coordinate, D=4, L=1, float64", make(4, 1, f64), edge=True),
        Case("orthogonal columns of W (diagonal posterior covariance), D=5, L=2, float64",
             make(5, 2, f64, 0.5, w=orthogonal), edge=True),
        Case("x = b (posterior mean 0), D=4, L=2, float64", make(4, 2, f64, at_b=True),
             edge=True),
        Case("large noise_var = 25 (the posterior is close to the prior), D=3, L=2, float64",
             make(3, 2, f64, 25.0), edge=True),
    ]
    return cases


def _post_no_noise_in_m(W: Tensor, b: Tensor, noise_var: float, x: Tensor
                        ) -> tuple[Tensor, Tensor]:
    m = W.T @ W
    return torch.linalg.solve(m, W.T @ (x - b).T).T, noise_var * torch.linalg.inv(m)


def _post_not_centred(W: Tensor, b: Tensor, noise_var: float, x: Tensor
                      ) -> tuple[Tensor, Tensor]:
    return _ppca_posterior(W, torch.zeros_like(b), noise_var, x)


def _post_cov_no_scale(W: Tensor, b: Tensor, noise_var: float, x: Tensor
                       ) -> tuple[Tensor, Tensor]:
    mean, cov = _ppca_posterior(W, b, noise_var, x)
    return mean, cov / noise_var


def _post_prior_cov(W: Tensor, b: Tensor, noise_var: float, x: Tensor) -> tuple[Tensor, Tensor]:
    mean, _ = _ppca_posterior(W, b, noise_var, x)
    return mean, torch.eye(W.shape[1], dtype=W.dtype)


def _post_precision(W: Tensor, b: Tensor, noise_var: float, x: Tensor) -> tuple[Tensor, Tensor]:
    mean, cov = _ppca_posterior(W, b, noise_var, x)
    return mean, torch.linalg.inv(cov)


register(
    Checker(
        name="ppca_posterior",
        reference=_ppca_posterior,
        generate=_posterior_cases,
        outputs=("mean", "cov"),
        hints=[
            Hint(
                "Centre the observation: the posterior mean is M^-1 W^T (x - b), not "
                "M^-1 W^T x.",
                wrong=_post_not_centred,
            ),
            Hint(
                "M = W^T W + noise_var * I: the prior adds the identity to the precision "
                "(after scaling by noise_var). Without it M can be singular, and the "
                "posterior ignores the prior.",
                wrong=_post_no_noise_in_m,
            ),
            Hint(
                "The posterior covariance is noise_var * M^-1, not M^-1: the posterior "
                "precision is (W^T W) / noise_var + I = M / noise_var.",
                wrong=_post_cov_no_scale,
                output="cov",
            ),
            Hint(
                "The covariance you returned is the prior's, I: observing x shrinks it to "
                "noise_var * M^-1.",
                wrong=_post_prior_cov,
                output="cov",
            ),
            Hint(
                "You returned the posterior precision M / noise_var; the covariance is its "
                "inverse.",
                wrong=_post_precision,
                output="cov",
            ),
            Hint(
                "Check the shapes: mean is (B, L), one row per data point, and cov is "
                "(L, L), the same for every x.",
                when=lambda case, got, exp: tuple(got[0].shape) != tuple(exp[0].shape)
                or tuple(got[1].shape) != tuple(exp[1].shape),
            ),
        ],
    )
)


# -- vector_quantize -------------------------------------------------------------------


def _vector_quantize(z_e: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: the nearest code (Euclidean) of each row of ``z_e`` ``(B, d)`` among the
    rows of ``codebook`` ``(K, d)``: int64 indices ``(B,)`` and the codes ``(B, d)``."""
    d2 = ((z_e[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)  # (B, K)
    idx = d2.argmin(dim=1)
    return idx, codebook[idx]


def _vq_cases(generator: torch.Generator) -> list[Case]:
    def separated(k: int, d: int, scales: Tensor | None = None, gap: float = 1.0) -> Tensor:
        # codes far apart, so that no point is near a tie in float32
        while True:
            c = 3 * torch.randn(k, d, generator=generator, dtype=torch.float64)
            if scales is not None:
                c = c * scales[:, None]
            gaps = torch.cdist(c, c) + 1e9 * torch.eye(k, dtype=torch.float64)
            if k == 1 or float(gaps.min()) > gap:
                return c

    def near(codebook: Tensor, n: int, spread: float = 0.3) -> Tensor:
        pick = torch.randint(codebook.shape[0], (n,), generator=generator)
        noise = torch.randn(n, codebook.shape[1], generator=generator, dtype=torch.float64)
        return codebook[pick] + spread * noise

    cases = []
    for i in range(6):
        dtype = DTYPES[i % 2]
        k, d, n = randint(generator, 3, 12), randint(generator, 2, 5), randint(generator, 2, 9)
        c = separated(k, d)
        cases.append(Case(f"B={n} vectors, K={k} codes of size d={d}, {fmt_dtype(dtype)}",
                          (near(c, n).to(dtype), c.to(dtype))))
    f64 = torch.float64
    one = separated(1, 3)
    c = separated(6, 3)
    norms = separated(5, 2, scales=torch.tensor([0.2, 0.3, 1.0, 3.0, 6.0], dtype=f64),
                      gap=0.3)
    small = norms[:2].repeat_interleave(2, dim=0)  # points right on the small codes
    cases += [
        Case("a single code, K=1, B=4, d=3, float64", (near(one, 4), one), edge=True),
        Case("vectors exactly equal to codes, K=6, B=6, d=3, float64",
             (c[torch.tensor([5, 0, 3, 3, 1, 2])], c), edge=True),
        Case("codes of very different lengths, K=5, B=4, d=2, float64",
             (small + 0.01, norms), edge=True),
        Case("one-dimensional codes, K=4, B=5, d=1, float64",
             (near(separated(4, 1), 5), separated(4, 1)), edge=True),
    ]
    return cases


def _vq_argmax(z_e: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    d2 = ((z_e[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    idx = d2.argmax(dim=1)
    return idx, codebook[idx]


def _vq_dot(z_e: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    idx = (z_e @ codebook.T).argmax(dim=1)
    return idx, codebook[idx]


def _vq_identity(z_e: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    return _vector_quantize(z_e, codebook)[0], z_e


register(
    Checker(
        name="vector_quantize",
        reference=_vector_quantize,
        generate=_vq_cases,
        outputs=("indices", "z_q"),
        hints=[
            Hint(
                "You picked the FARTHEST code: the nearest one minimises the distance "
                "(argmin, not argmax).",
                wrong=_vq_argmax,
            ),
            Hint(
                "The largest dot product z . e is not the nearest code when the codes have "
                "different lengths: |z - e|^2 = |z|^2 - 2 z . e + |e|^2 needs the |e|^2 "
                "term.",
                wrong=_vq_dot,
            ),
            Hint(
                "z_q must be the chosen codebook rows, codebook[indices], not the input "
                "vectors.",
                wrong=_vq_identity,
                output="z_q",
            ),
            Hint(
                "indices must be an int64 tensor of shape (B,) (argmin returns one); z_q "
                "has the shape of z_e.",
                when=lambda case, got, exp: got[0].dtype != torch.int64
                or tuple(got[0].shape) != tuple(exp[0].shape),
            ),
        ],
    )
)
