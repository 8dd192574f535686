r"""Checkers of the chapter *Generative adversarial networks*."""

from __future__ import annotations

import torch
from torch import Tensor

from gmbook import gans
from gmbook.exercises._framework import DTYPES, Case, Checker, Hint, fmt_dtype, randint, register

__all__: list[str] = []


# -- optimal_discriminator ---------------------------------------------------------------


def _optimal_discriminator(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""Reference: the optimal discriminator :math:`D^* = p / (p + q)` from the two
    log-densities at the same points ``(B,)`` (eq. ``eq-gan-optimal-d``;
    :func:`gmbook.gans.optimal_discriminator`), computed without overflow."""
    return gans.optimal_discriminator(log_p, log_q)


def _optimal_d_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b = randint(generator, 1, 9)
        lp, lq = (4 * torch.randn(2, b, generator=generator, dtype=f64) - 3).unbind(0)
        cases.append(Case(f"B={b} points, {fmt_dtype(dtype)}", (lp.to(dtype), lq.to(dtype))))
    far = torch.tensor([-800.0, -1000.0, -1200.0], dtype=f64)
    cases += [
        Case("equal densities: D* = 1/2 everywhere, float64",
             (torch.tensor([-1.0, 0.5, -7.0], dtype=f64),
              torch.tensor([-1.0, 0.5, -7.0], dtype=f64)), edge=True),
        Case("points far in the tails (log-densities near -1000), float64",
             (far, far - torch.tensor([3.0, -2.0, 0.0], dtype=f64)), edge=True),
        Case("q = 0 (log q = -inf) at the first point, p = 0 at the second, float64",
             (torch.tensor([-2.0, -float("inf")], dtype=f64),
              torch.tensor([-float("inf"), -1.0], dtype=f64)), edge=True),
    ]
    return cases


def _optimal_d_naive(log_p, log_q):
    p, q = log_p.exp(), log_q.exp()
    return p / (p + q)


def _optimal_d_swapped(log_p, log_q):
    return gans.optimal_discriminator(log_q, log_p)


def _optimal_d_logit(log_p, log_q):
    return log_p - log_q


register(
    Checker(
        name="optimal_discriminator",
        reference=_optimal_discriminator,
        generate=_optimal_d_cases,
        outputs=("d_star",),
        hints=[
            Hint("exp(log p) underflows to 0 in the tails, and 0 / 0 is NaN: write D* as "
                 "sigmoid(log p - log q), which needs no density itself.",
                 wrong=_optimal_d_naive),
            Hint("D* is the probability that a point comes from the data p: p / (p + q), "
                 "not q / (p + q).", wrong=_optimal_d_swapped),
            Hint("log p - log q is the logit of D*; apply the sigmoid to get D* itself.",
                 wrong=_optimal_d_logit),
        ],
    )
)


# -- dirac_spectral_radius ---------------------------------------------------------------


def _dirac_spectral_radius(h: float, gamma: float, alternating: bool) -> float:
    r"""Reference: the spectral radius (largest eigenvalue modulus) of one step of gradient
    play on the Dirac-GAN with the GAN loss (:math:`a = f'(0) = 1/2`) and R1 weight
    ``gamma``, linearised at the equilibrium: simultaneous or alternating updates of step
    ``h`` (eq. ``eq-gan-dirac-updates``; :func:`gmbook.gans.dirac_eigenvalues`)."""
    scheme = "alternating" if alternating else "simultaneous"
    mu = gans.dirac_eigenvalues(loss="gan", gamma=gamma, scheme=scheme, h=h)
    return float(mu.abs().max())


def _dirac_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for k in range(6):
        h = round(float(0.05 + 1.5 * torch.rand((), generator=generator)), 3)
        gamma = round(float(2 * torch.rand((), generator=generator)), 3) if k >= 2 else 0.0
        alternating = bool(k % 2)
        cases.append(Case(f"h={h}, gamma={gamma}, "
                          f"{'alternating' if alternating else 'simultaneous'}",
                          (h, gamma, alternating)))
    cases += [
        Case("no R1, simultaneous, h=1: modulus sqrt(1 + h^2 a^2) > 1", (1.0, 0.0, False),
             edge=True),
        Case("no R1, alternating, h=1: on the unit circle", (1.0, 0.0, True), edge=True),
        Case("gamma=2 (real eigenvalues), simultaneous, h=0.5", (0.5, 2.0, False), edge=True),
        Case("gamma=0.3, alternating, h=3 (a large step)", (3.0, 0.3, True), edge=True),
    ]
    return cases


def _dirac_slope_one(h, gamma, alternating):
    scheme = "alternating" if alternating else "simultaneous"
    return float(gans.dirac_eigenvalues(loss="wgan", gamma=gamma, scheme=scheme,
                                        h=h).abs().max())


def _dirac_always_simultaneous(h, gamma, alternating):
    return _dirac_spectral_radius(h, gamma, False)


def _dirac_continuous(h, gamma, alternating):
    return float(gans.dirac_eigenvalues(loss="gan", gamma=gamma).abs().max())


register(
    Checker(
        name="dirac_spectral_radius",
        reference=_dirac_spectral_radius,
        generate=_dirac_cases,
        outputs=("radius",),
        hints=[
            Hint("With f(t) = -log(1 + exp(-t)), the slope at the equilibrium is "
                 "a = f'(0) = 1/2, not 1 (that is the WGAN's f(t) = t).",
                 wrong=_dirac_slope_one),
            Hint("Alternating updates are not 1 + h lambda: the discriminator steps from the "
                 "new theta, so the one-step matrix is the product of two triangular ones "
                 "(its eigenvalues solve mu^2 - (2 - h gamma - h^2 a^2) mu + 1 - h gamma = 0).",
                 wrong=_dirac_always_simultaneous),
            Hint("These are the eigenvalues of the Jacobian J (the continuous flow); a step "
                 "of size h maps them to those of I + h J.", wrong=_dirac_continuous),
        ],
    )
)


# -- power_iteration_step ----------------------------------------------------------------


def _power_iteration_step(weight: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Reference: one step of power iteration for the largest singular value of ``weight``
    ``(m, n)`` from ``u`` ``(m,)``: :math:`v = W^\top u / \|W^\top u\|`, :math:`u' = W v /
    \|W v\|`, :math:`\hat\sigma = u'^\top W v` (eq. ``eq-gan-power-iteration``;
    :func:`gmbook.gans.power_iteration`)."""
    sigma, u_new, v = gans.power_iteration(weight, u, 1)
    return sigma, u_new, v


def _power_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        m, n = randint(generator, 2, 7), randint(generator, 2, 7)
        w = torch.randn(m, n, generator=generator, dtype=f64)
        u = torch.randn(m, generator=generator, dtype=f64)
        cases.append(Case(f"W {m}x{n}, {fmt_dtype(dtype)}", (w.to(dtype), u.to(dtype))))
    cases += [
        Case("a diagonal W = diag(3, 1) from u = (1, 1) (not normalized), float64",
             (torch.diag(torch.tensor([3.0, 1.0], dtype=f64)),
              torch.tensor([1.0, 1.0], dtype=f64)), edge=True),
        Case("a wide W, 2x5, float64", (torch.randn(2, 5, generator=generator, dtype=f64),
                                         torch.randn(2, generator=generator, dtype=f64)),
             edge=True),
        Case("a tall W, 6x1 (a column): exact after one step, float64",
             (torch.randn(6, 1, generator=generator, dtype=f64),
              torch.randn(6, generator=generator, dtype=f64)), edge=True),
    ]
    return cases


def _power_unnormalized_u(weight, u):
    v = weight.T @ u
    v = v / v.norm()
    u_new = weight @ v
    return u_new.norm(), u_new, v


def _power_sigma_from_old_u(weight, u):
    sigma, u_new, v = _power_iteration_step(weight, u)
    u0 = u / u.norm()
    return u0 @ weight @ v, u_new, v


register(
    Checker(
        name="power_iteration_step",
        reference=_power_iteration_step,
        generate=_power_cases,
        outputs=("sigma", "u", "v"),
        hints=[
            Hint("Normalize the new u to unit length: sigma = ||W v|| is its length before "
                 "normalizing, and u' = W v / ||W v||.", wrong=_power_unnormalized_u,
                 output="u"),
            Hint("Estimate sigma with the new u: sigma = u'^T W v = ||W v||, after both "
                 "half-steps.", wrong=_power_sigma_from_old_u, output="sigma"),
        ],
    )
)
