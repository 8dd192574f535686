r"""Checkers of the chapter *Diffusion as stochastic differential equations*."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gmbook.exercises._framework import DTYPES, Case, Checker, Hint, fmt_dtype, randint, register
from gmbook.samplers import GaussianPath, Prediction, VEPath, ddim, karras_grid
from gmbook.sde import edm_coefficients

__all__: list[str] = []


# -- ddim_exp_step ---------------------------------------------------------------------


class _HalfLogSNRPath(GaussianPath):
    r"""The variance-preserving path with time :math:`t = -\lambda`, :math:`\lambda =
    \log(\alpha / \sigma)`: :math:`\alpha^2 = \mathrm{sigmoid}(2\lambda)`, :math:`\sigma^2 =
    \mathrm{sigmoid}(-2\lambda)`, so :math:`\dot\alpha = -\alpha\sigma^2` and
    :math:`\dot\sigma = \sigma\alpha^2`."""

    t_min, t_max = -math.inf, math.inf

    def alpha(self, t):
        t = self._check_t(t)
        return torch.sigmoid(-2 * t.double()).sqrt().to(t.dtype)

    def sigma(self, t):
        t = self._check_t(t)
        return torch.sigmoid(2 * t.double()).sqrt().to(t.dtype)

    def d_alpha(self, t):
        return -self.alpha(t) * self.sigma(t) ** 2

    def d_sigma(self, t):
        return self.sigma(t) * self.alpha(t) ** 2


def _ddim_exp_step(x_t: Tensor, x0_hat: Tensor, lam_t: float, lam_s: float) -> Tensor:
    r"""Reference: one step of the first-order exponential integrator in half log-SNR
    (eq. ``eq-sde-ddim-exp``) from :math:`\lambda_t` to :math:`\lambda_s > \lambda_t` on the
    variance-preserving path, ``x_t`` and ``x0_hat`` of shape ``(B, D)``: the package's DDIM
    step (:func:`gmbook.samplers.ddim` with ``eta = 0``) with :math:`\hat x_0` held fixed."""
    pred = Prediction(lambda x, t: x0_hat.to(x.dtype), "x0", _HalfLogSNRPath())
    grid = torch.tensor([-lam_t, -lam_s], dtype=torch.float64)
    return ddim(pred, x_t, grid).samples


def _exp_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, d = randint(generator, 1, 7), randint(generator, 1, 4)
        x_t = torch.randn(b, d, generator=generator, dtype=f64)
        x0 = torch.randn(b, d, generator=generator, dtype=f64)
        lam_t = round(-3 + 4 * float(torch.rand((), generator=generator, dtype=f64)), 3)
        h = round(0.05 + 1.5 * float(torch.rand((), generator=generator, dtype=f64)), 3)
        cases.append(Case(f"B={b}, D={d}, lam_t={lam_t}, lam_s={lam_t + h:.3f}, "
                          f"{fmt_dtype(dtype)}",
                          (x_t.to(dtype), x0.to(dtype), lam_t, round(lam_t + h, 3))))
    x0 = torch.tensor([[1.0, -0.5]], dtype=f64)
    eps = torch.tensor([[0.3, 2.0]], dtype=f64)

    def on_path(lam: float) -> Tensor:  # the noised point of the single data point x0
        return math.sqrt(1 / (1 + math.exp(-2 * lam))) * x0 + \
            math.sqrt(1 / (1 + math.exp(2 * lam))) * eps

    cases += [
        Case("a single data point: x0_hat exact, the step lands on the path, float64",
             (on_path(-2.0), x0, -2.0, 1.0), edge=True),
        Case("a large step to almost no noise (lam_s = 8): x_s is close to x0_hat, float64",
             (on_path(-1.0), torch.tensor([[0.2, 0.4]], dtype=f64), -1.0, 8.0), edge=True),
        Case("a tiny step (h = 1e-6): x_s is close to x_t, float64",
             (torch.tensor([[0.5, -1.5]], dtype=f64), torch.tensor([[2.0, 1.0]], dtype=f64),
              0.25, 0.250001), edge=True),
    ]
    return cases


def _coefs(lam: float) -> tuple[float, float]:
    return math.sqrt(1 / (1 + math.exp(-2 * lam))), math.sqrt(1 / (1 + math.exp(2 * lam)))


def _exp_sign(x_t, x0_hat, lam_t, lam_s):
    (a_t, s_t), (a_s, s_s) = _coefs(lam_t), _coefs(lam_s)
    return s_s / s_t * x_t - a_s * (math.exp(lam_s - lam_t) - 1) * x0_hat


def _exp_alpha_ratio(x_t, x0_hat, lam_t, lam_s):
    (a_t, s_t), (a_s, s_s) = _coefs(lam_t), _coefs(lam_s)
    return a_s / a_t * x_t - a_s * (math.exp(-(lam_s - lam_t)) - 1) * x0_hat


def _exp_full_log_snr(x_t, x0_hat, lam_t, lam_s):
    (a_t, s_t), (a_s, s_s) = _coefs(lam_t), _coefs(lam_s)
    return s_s / s_t * x_t - a_s * (math.exp(-2 * (lam_s - lam_t)) - 1) * x0_hat


def _exp_linearised(x_t, x0_hat, lam_t, lam_s):
    (a_t, s_t), (a_s, s_s) = _coefs(lam_t), _coefs(lam_s)
    return s_s / s_t * x_t + a_s * (lam_s - lam_t) * x0_hat


def _exp_sigmoid_no_sqrt(x_t, x0_hat, lam_t, lam_s):
    a_t, s_t = 1 / (1 + math.exp(-2 * lam_t)), 1 / (1 + math.exp(2 * lam_t))
    a_s, s_s = 1 / (1 + math.exp(-2 * lam_s)), 1 / (1 + math.exp(2 * lam_s))
    return s_s / s_t * x_t - a_s * (math.exp(-(lam_s - lam_t)) - 1) * x0_hat


register(
    Checker(
        name="ddim_exp_step",
        reference=_ddim_exp_step,
        generate=_exp_cases,
        outputs=("x_s",),
        hints=[
            Hint("The weight of x0_hat is alpha_s (1 - exp(-h)), h = lam_s - lam_t > 0: "
                 "the integral of exp(lam) from lam_t to lam_s, times sigma_s.",
                 wrong=_exp_sign),
            Hint("In the data-prediction form the linear part is carried by sigma: "
                 "x_t is multiplied by sigma_s / sigma_t (alpha_s / alpha_t belongs to "
                 "the noise-prediction form).", wrong=_exp_alpha_ratio),
            Hint("lam is half the log-SNR, log(alpha / sigma): the factor is exp(-h), "
                 "not exp(-2 h).", wrong=_exp_full_log_snr),
            Hint("Integrate the weight exp(lam) exactly: alpha_s (1 - exp(-h)), not its "
                 "first-order expansion alpha_s h (that is Euler in lam, not the "
                 "exponential integrator).", wrong=_exp_linearised),
            Hint("alpha^2 = sigmoid(2 lam) and sigma^2 = sigmoid(-2 lam): take square "
                 "roots.", wrong=_exp_sigmoid_no_sqrt),
        ],
    )
)


# -- edm_coefficients ------------------------------------------------------------------


def _edm(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Reference: EDM's preconditioning coefficients (eq. ``eq-sde-edm-precond``) at noise
    levels ``sigma`` ``(B,)`` for data of standard deviation ``sigma_data``: ``(c_skip,
    c_out, c_in, c_noise)``, each of the shape of ``sigma``
    (:func:`gmbook.sde.edm_coefficients`)."""
    return tuple(torch.as_tensor(c).to(sigma.dtype).expand_as(sigma).clone()
                 for c in edm_coefficients(sigma, sigma_data))


def _edm_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b = randint(generator, 1, 8)
        sigma = torch.exp(-4 + 7 * torch.rand(b, generator=generator, dtype=f64))
        sd = round(0.3 + 1.5 * float(torch.rand((), generator=generator, dtype=f64)), 3)
        cases.append(Case(f"B={b}, sigma in [0.02, 20], sigma_data={sd}, "
                          f"{fmt_dtype(dtype)}", (sigma.to(dtype), sd)))
    cases += [
        Case("sigma = sigma_data = 1: c_skip = 1/2, c_out = c_in = 1/sqrt(2), float64",
             (torch.tensor([1.0], dtype=f64), 1.0), edge=True),
        Case("tiny and huge sigma (1e-4, 1e3), sigma_data = 0.5, float64",
             (torch.tensor([1e-4, 1e3], dtype=f64), 0.5), edge=True),
    ]
    return cases


def _edm_no_sd_in_out(sigma, sigma_data):
    c_skip, _, c_in, c_noise = _edm(sigma, sigma_data)
    return c_skip, sigma / (sigma**2 + sigma_data**2).sqrt(), c_in, c_noise


def _edm_skip_swapped(sigma, sigma_data):
    _, c_out, c_in, c_noise = _edm(sigma, sigma_data)
    return sigma**2 / (sigma**2 + sigma_data**2), c_out, c_in, c_noise


def _edm_in_one_over_sigma(sigma, sigma_data):
    c_skip, c_out, _, c_noise = _edm(sigma, sigma_data)
    return c_skip, c_out, 1 / sigma, c_noise


def _edm_noise_log(sigma, sigma_data):
    c_skip, c_out, c_in, _ = _edm(sigma, sigma_data)
    return c_skip, c_out, c_in, sigma.log()


def _edm_out_variance(sigma, sigma_data):
    c_skip, _, c_in, c_noise = _edm(sigma, sigma_data)
    return c_skip, sigma**2 * sigma_data**2 / (sigma**2 + sigma_data**2), c_in, c_noise


register(
    Checker(
        name="edm_coefficients",
        reference=_edm,
        generate=_edm_cases,
        outputs=("c_skip", "c_out", "c_in", "c_noise"),
        hints=[
            Hint("c_skip = sigma_data^2 / (sigma^2 + sigma_data^2): it tends to 1 as sigma -> "
                 "0, where the denoiser is mostly the identity.", wrong=_edm_skip_swapped,
                 output="c_skip"),
            Hint("c_out is a standard deviation, sigma sigma_data / sqrt(sigma^2 + "
                 "sigma_data^2), not its square.", wrong=_edm_out_variance, output="c_out"),
            Hint("c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2): the factor "
                 "sigma_data is missing.", wrong=_edm_no_sd_in_out, output="c_out"),
            Hint("c_in normalises the variance of x = y + sigma n, which is sigma^2 + "
                 "sigma_data^2: c_in = 1 / sqrt(sigma^2 + sigma_data^2).",
                 wrong=_edm_in_one_over_sigma, output="c_in"),
            Hint("c_noise = log(sigma) / 4 in EDM.", wrong=_edm_noise_log, output="c_noise"),
        ],
    )
)


# -- karras_sigmas ---------------------------------------------------------------------


def _karras(steps: int, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    r"""Reference: the noise levels of EDM's time grid (eq. ``eq-sde-karras-grid``),
    ``steps`` levels from ``sigma_max`` down to ``sigma_min``, uniform in
    :math:`\sigma^{1/\rho}`, then a final 0: float64, shape ``(steps + 1,)``
    (:func:`gmbook.samplers.karras_grid` on the path :math:`\sigma_t = t`)."""
    return karras_grid(VEPath(sigma_max), steps, sigma_min=sigma_min, sigma_max=sigma_max,
                       rho=rho).to(torch.float64)


def _karras_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for _ in range(6):
        steps = randint(generator, 2, 20)
        smin = round(float(10 ** (-3 + 2 * torch.rand((), generator=generator, dtype=f64))), 4)
        smax = round(float(1 + 80 * torch.rand((), generator=generator, dtype=f64)), 2)
        rho = round(float(1 + 8 * torch.rand((), generator=generator, dtype=f64)), 2)
        cases.append(Case(f"steps={steps}, sigma_min={smin}, sigma_max={smax}, rho={rho}",
                          (steps, smin, smax, rho)))
    cases += [
        Case("EDM's image defaults: steps=18, sigma_min=0.002, sigma_max=80, rho=7",
             (18, 0.002, 80.0, 7.0), edge=True),
        Case("rho = 1: uniform in sigma, steps=5, sigma_min=1, sigma_max=5",
             (5, 1.0, 5.0, 1.0), edge=True),
        Case("two steps: just sigma_max, sigma_min and 0", (2, 0.01, 10.0, 3.0), edge=True),
    ]
    return cases


def _k(steps, sigma_min, sigma_max, rho, denom, rho_out=None):
    i = torch.arange(steps, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    s = (a + i / denom * (b - a)) ** (rho if rho_out is None else rho_out)
    return torch.cat([s, s.new_zeros(1)])


def _karras_denominator(steps, sigma_min, sigma_max, rho):
    return _k(steps, sigma_min, sigma_max, rho, steps)


def _karras_inverse_power(steps, sigma_min, sigma_max, rho):
    i = torch.arange(steps, dtype=torch.float64)
    a, b = sigma_max**rho, sigma_min**rho
    return torch.cat([(a + i / (steps - 1) * (b - a)) ** (1 / rho), torch.zeros(1,
                                                                           dtype=torch.float64)])


def _karras_increasing(steps, sigma_min, sigma_max, rho):
    s = _k(steps, sigma_min, sigma_max, rho, steps - 1)[:-1].flip(0)
    return torch.cat([torch.zeros(1, dtype=torch.float64), s])


register(
    Checker(
        name="karras_sigmas",
        reference=_karras,
        generate=_karras_cases,
        outputs=("sigmas",),
        hints=[
            Hint("The fraction is i / (steps - 1), so that the last of the steps levels is "
                 "exactly sigma_min (then append 0).", wrong=_karras_denominator),
            Hint("Interpolate sigma^(1/rho) linearly, then raise to the power rho (not the "
                 "other way round).", wrong=_karras_inverse_power),
            Hint("The grid runs from the most noise to the least: sigma_max first, 0 last.",
                 wrong=_karras_increasing),
        ],
    )
)
