r"""One interface for the continuous-time samplers of diffusion and flow models.

Every model of the diffusion part of the book (DDPM, the score model, flow matching) is a
Gaussian path :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon` with
:math:`\varepsilon \sim \mathcal N(0, I)` independent of the data :math:`x_0`, and a network
that predicts one of four equivalent quantities: the noise :math:`\hat\varepsilon`, the
clean data :math:`\hat x_0`, the score :math:`\nabla \log p_t = -\hat\varepsilon / \sigma_t`,
or the velocity :math:`\dot x_t = \dot\alpha_t \hat x_0 + \dot\sigma_t \hat\varepsilon`
of the probability-flow ODE. The pieces are kept apart, as in k-diffusion (every sampler one
signature) and diffusers (schedules apart from models):

* a **path** (:class:`GaussianPath`: :class:`VPPath`, :class:`DiscreteVPPath`,
  :class:`VEPath`, :class:`LinearPath`) gives :math:`\alpha_t`, :math:`\sigma_t` and their
  derivatives, with the convention of the diffusion chapters: data at small :math:`t`,
  noise at large :math:`t` (flow matching's :math:`t` runs the other way: its
  :math:`t_{\mathrm{FM}} = 1 - t` here);
* a :class:`Prediction` wraps a network ``fn(x, t)`` of one kind (``"eps"``, ``"x0"``,
  ``"v"``, ``"score"``, ``"velocity"``) and a path, and converts it to every other kind:
  the conversions live here and nowhere else;
* a **sampler** is a function ``sampler(pred, x, grid, *, generator=None, return_path=False,
  **options) -> SamplePath`` that integrates from ``grid[0]`` (the most noise) to
  ``grid[-1]``; every sampler returns a :class:`SamplePath`.

The samplers here are the ones every later chapter starts from: :func:`euler` (the
probability-flow ODE), :func:`heun` (Karras et al., 2022, Algorithm 1) and :func:`midpoint`
(second order), :func:`ddim` (Song, Meng & Ermon, 2021; ``eta = 1`` is ancestral sampling),
:func:`euler_maruyama` (the reverse-time SDE family with noise scale ``eta``; Song et al.,
2021), and the Langevin samplers :func:`langevin_corrector` (the corrector of
predictor-corrector sampling) and :func:`annealed_langevin` (Song & Ermon, 2019), which take
the package's one Langevin step, :func:`gmbook.mcmc.langevin_step`. The DDPM
(:meth:`gmbook.ddpm.DDPM.prediction`), the score model (:meth:`gmbook.score.NCSN.prediction`)
and flow matching (:meth:`gmbook.flow_matching.FlowMatching.prediction`) expose their
networks as a :class:`Prediction`, and their ``sample`` methods run these samplers.

The chapter on diffusion SDEs adds the sub-VP path :class:`SubVPPath`; the time grids
:func:`karras_grid` (EDM's, Karras et al., 2022) and :func:`log_snr_grid` (DPM-Solver's);
the exponential integrators in log-SNR :func:`dpm_solver_2` (Lu et al., 2022) and
:func:`dpm_solver_pp_2m` (Lu et al., 2022b), EDM's stochastic sampler :func:`heun_churn`
and the adaptive reference :func:`dopri5`; the exact denoiser of a Gaussian mixture,
:func:`mixture_prediction` (for the two moons: exact scores, so that a sampler's error is
its own), and :func:`fit_order`, the measured order of convergence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gmbook._checks import (check_generator, check_int, check_nonnegative, check_positive,
                            describe)
from gmbook._random import randn
from gmbook.mcmc import langevin_step

__all__ = [
    "KINDS",
    "CosinePath",
    "DiscreteVPPath",
    "GaussianPath",
    "LinearPath",
    "Prediction",
    "SamplePath",
    "SubVPPath",
    "VEPath",
    "VPPath",
    "annealed_langevin",
    "ddim",
    "dopri5",
    "dpm_solver_2",
    "dpm_solver_pp_2m",
    "euler",
    "euler_maruyama",
    "fit_order",
    "heun",
    "heun_churn",
    "karras_grid",
    "langevin_corrector",
    "log_snr_grid",
    "midpoint",
    "mixture_prediction",
]

KINDS = ("eps", "x0", "v", "score", "velocity")
"""What a network may predict (see :class:`Prediction`)."""


def _bt(t: Tensor, x: Tensor) -> Tensor:
    """Times ``(B,)`` or ``()`` as ``(B, 1, ..., 1)`` against ``x`` ``(B, *D)``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (x.ndim - 1)))


# --------------------------------------------------------------------------- paths


class GaussianPath:
    r"""A Gaussian path: its coefficients and their time derivatives.

    The path is :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`. Subclasses implement
    ``alpha``, ``sigma``, ``d_alpha`` and ``d_sigma`` for a tensor of times (float64 inside,
    returned in the input's dtype).

    Attributes:
        t_min, t_max: the interval of times on which the path is defined.
    """

    t_min: float = 0.0
    t_max: float = 1.0

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def log_snr(self, t: Tensor) -> Tensor:
        r""":math:`\lambda_t = \log(\alpha_t^2 / \sigma_t^2)`."""
        return 2 * (self.alpha(t).log() - self.sigma(t).log())

    def diffusion2(self, t: Tensor) -> Tensor:
        r"""The squared diffusion coefficient of the forward SDE with the path's marginals.

        That SDE is :math:`\mathrm d x = \frac{\dot\alpha_t}{\alpha_t} x\, \mathrm d t +
        g_t\, \mathrm d W` with :math:`g_t^2 = \frac{\mathrm d\sigma_t^2}{\mathrm d t} -
        2 \frac{\dot\alpha_t}{\alpha_t} \sigma_t^2`.
        """
        a, s = self.alpha(t), self.sigma(t)
        return 2 * s * self.d_sigma(t) - 2 * self.d_alpha(t) / a * s**2

    def marginal(self, x0: Tensor, t: Tensor, *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r"""Draw :math:`x_t` given :math:`x_0` ``(B, *D)`` at times ``t`` ``(B,)``; returns
        ``(x_t, eps)``."""
        eps = randn(x0.shape, like=x0, generator=generator)
        return _bt(self.alpha(t), x0) * x0 + _bt(self.sigma(t), x0) * eps, eps

    def _check_t(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            t = t.double()
        return t


class VPPath(GaussianPath):
    r"""The variance-preserving path of the continuous DDPM (Song et al., 2021):
    :math:`\beta(t) = \beta_{\min} + t (\beta_{\max} - \beta_{\min})` on :math:`[0, 1]`,
    :math:`\alpha_t = \exp(-\tfrac12 \int_0^t \beta)`, :math:`\sigma_t = \sqrt{1 -
    \alpha_t^2}`. The defaults are the continuous limit of DDPM's linear schedule with
    :math:`T = 1000` (:math:`\beta_{\min} = 0.1`, :math:`\beta_{\max} = 20`).

    Args:
        beta_min, beta_max: the rates at :math:`t = 0` and :math:`t = 1`.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min = check_nonnegative("beta_min", beta_min)
        self.beta_max = check_nonnegative("beta_max", beta_max)
        if not self.beta_max > self.beta_min:
            raise ValueError(f"beta_max must exceed beta_min, got {beta_max} <= {beta_min}")

    def _log_alpha(self, t: Tensor) -> Tensor:
        t = self._check_t(t).double()
        return -0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + self._check_t(t).double() * (self.beta_max - self.beta_min)

    def alpha(self, t):
        t = self._check_t(t)
        return self._log_alpha(t).exp().to(t.dtype)

    def sigma(self, t):
        t = self._check_t(t)
        return (-torch.expm1(2 * self._log_alpha(t))).sqrt().to(t.dtype)

    def d_alpha(self, t):
        t = self._check_t(t)
        return (-0.5 * self._beta(t) * self._log_alpha(t).exp()).to(t.dtype)

    def d_sigma(self, t):
        t = self._check_t(t)
        a2 = (2 * self._log_alpha(t)).exp()
        return (0.5 * self._beta(t) * a2 / (-torch.expm1(2 * self._log_alpha(t))).sqrt()).to(
            t.dtype)


class DiscreteVPPath(GaussianPath):
    r"""A discrete DDPM schedule :math:`\bar\alpha_1, \dots, \bar\alpha_T` as a path on
    :math:`[0, 1]`: step :math:`k` sits at :math:`t = k / T`, :math:`\alpha_t^2 =
    \bar\alpha_k` there (:math:`\bar\alpha_0 = 1`), and :math:`\log \alpha_t` is linear
    between steps (so the derivatives are piecewise constant, taken on the left interval
    at a grid point).

    Args:
        alpha_bar: the cumulative products :math:`\bar\alpha_k`, shape ``(T,)``,
            decreasing in :math:`(0, 1)`.
    """

    def __init__(self, alpha_bar: Tensor) -> None:
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(-1)
        if len(ab) < 1 or not bool(((ab > 0) & (ab < 1)).all()) or \
                not bool((ab[1:] < ab[:-1]).all()):
            raise ValueError("alpha_bar must be strictly decreasing values in (0, 1)")
        self.T = len(ab)
        self._log_a = torch.cat([ab.new_zeros(1), 0.5 * ab.log()])  # (T + 1,)

    def _interp(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``log alpha_t`` and its slope in ``t``."""
        s = self._check_t(t).double().clamp(0, 1) * self.T
        k = s.ceil().clamp(1, self.T).long() - 1   # the interval [k, k + 1] holding s
        lo, hi = self._log_a[k], self._log_a[k + 1]
        slope = (hi - lo)
        return lo + (s - k) * slope, slope * self.T

    def alpha(self, t):
        t = self._check_t(t)
        return self._interp(t)[0].exp().to(t.dtype)

    def sigma(self, t):
        t = self._check_t(t)
        return (-torch.expm1(2 * self._interp(t)[0])).sqrt().to(t.dtype)

    def d_alpha(self, t):
        t = self._check_t(t)
        la, dla = self._interp(t)
        return (dla * la.exp()).to(t.dtype)

    def d_sigma(self, t):
        t = self._check_t(t)
        la, dla = self._interp(t)
        a2 = (2 * la).exp()
        return (-dla * a2 / (-torch.expm1(2 * la)).sqrt()).to(t.dtype)


class VEPath(GaussianPath):
    r"""The variance-exploding path of EDM (Karras et al., 2022): :math:`\alpha_t = 1`,
    :math:`\sigma_t = t` for :math:`t \in [0, \sigma_{\max}]`.

    Args:
        sigma_max: the largest time (noise level).
    """

    def __init__(self, sigma_max: float = 80.0) -> None:
        self.t_max = check_nonnegative("sigma_max", sigma_max)
        if self.t_max == 0:
            raise ValueError("sigma_max must be positive")

    def alpha(self, t):
        t = self._check_t(t)
        return torch.ones_like(t)

    def sigma(self, t):
        return self._check_t(t).clone()

    def d_alpha(self, t):
        return torch.zeros_like(self._check_t(t))

    def d_sigma(self, t):
        return torch.ones_like(self._check_t(t))


class LinearPath(GaussianPath):
    r"""The linear (rectified-flow) path of flow matching, in the diffusion direction:
    :math:`\alpha_t = 1 - t`, :math:`\sigma_t = t`. Flow matching's time is :math:`1 - t`."""

    def alpha(self, t):
        return 1 - self._check_t(t)

    def sigma(self, t):
        return self._check_t(t).clone()

    def d_alpha(self, t):
        return -torch.ones_like(self._check_t(t))

    def d_sigma(self, t):
        return torch.ones_like(self._check_t(t))


# --------------------------------------------------------------------------- predictions


class Prediction:
    r"""A network's prediction of one kind, with every conversion (the one place they live).

    With :math:`x = \alpha x_0 + \sigma \varepsilon` at time :math:`t`:

    * ``"eps"``: :math:`\hat\varepsilon`; ``"x0"``: :math:`\hat x_0`;
    * ``"score"``: :math:`s = -\hat\varepsilon / \sigma` (Tweedie; needs the noise
      independent of the data);
    * ``"v"``: :math:`v = \alpha \hat\varepsilon - \sigma \hat x_0` (Salimans & Ho, 2022),
      variance-preserving paths only (:math:`\alpha^2 + \sigma^2 = 1`);
    * ``"velocity"``: :math:`u = \dot\alpha \hat x_0 + \dot\sigma \hat\varepsilon`, the
      probability-flow ODE's :math:`\mathrm d x / \mathrm d t`.

    Args:
        fn: the network, ``fn(x, t)`` with ``x`` ``(B, *D)`` and ``t`` ``(B,)``.
        kind: one of :data:`KINDS`.
        path: the :class:`GaussianPath` the network was trained on.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], kind: str,
                 path: GaussianPath) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(x, t), got {describe(fn)}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(path, GaussianPath):
            raise TypeError(f"path must be a GaussianPath, got {describe(path)}")
        self.fn, self.kind, self.path = fn, kind, path

    def _coef(self, x: Tensor, t: Tensor, which: str = "a s da ds"):
        """The path's coefficients named in ``which`` (of ``a s da ds``), shaped like x: a
        sampler's step asks for two of the four (each costs a schedule lookup)."""
        p = self.path
        funcs = {"a": p.alpha, "s": p.sigma, "da": p.d_alpha, "ds": p.d_sigma}
        return tuple(_bt(funcs[name](t).to(x.dtype), x) for name in which.split())

    def x0_eps(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(x0_hat, eps_hat)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)`` or one time ``()``:
        one network call (the network always gets ``t`` as ``(B,)``)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        out = self.fn(x, t.expand(x.shape[0]))
        if self.kind != "velocity":  # one time: the coefficients once, not per row
            a, s = self._coef(x, t, "a s")
        else:
            a, s, da, ds = self._coef(x, t)
        if self.kind == "eps":
            return (x - s * out) / a, out
        if self.kind == "x0":
            return out, (x - a * out) / s
        if self.kind == "score":
            eps = -s * out
            return (x - s * eps) / a, eps
        if self.kind == "v":
            return a * x - s * out, s * x + a * out
        # velocity u = da x0 + ds eps and x = a x0 + s eps: solve the 2x2 system
        det = a * ds - s * da
        return (ds * x - s * out) / det, (a * out - da * x) / det

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        r"""The probability-flow ODE's drift :math:`\dot\alpha_t \hat x_0 + \dot\sigma_t
        \hat\varepsilon`: the mean velocity of the path given :math:`x_t = x`."""
        return self.velocity_x0(x, t)[0]

    def velocity_x0(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(velocity, x0_hat)`` from one network call."""
        x0, eps = self.x0_eps(x, t)
        da, ds = self._coef(x, torch.as_tensor(t, dtype=x.dtype, device=x.device), "da ds")
        return da * x0 + ds * eps, x0

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        r"""The score :math:`-\hat\varepsilon / \sigma_t`."""
        _, eps = self.x0_eps(x, t)
        (s,) = self._coef(x, torch.as_tensor(t, dtype=x.dtype, device=x.device), "s")
        return -eps / s


# --------------------------------------------------------------------------- samplers


@dataclass
class SamplePath:
    r"""What every sampler returns.

    Attributes:
        samples: the final points, shape ``(B, *D)``.
        times: the time grid, shape ``(K + 1,)``, from the most noise to the least.
        nfe: network evaluations per sample.
        states: with ``return_path``, the states at the grid times, ``(K + 1, B, *D)``
            (``states[0]`` the start, ``states[-1]`` the samples); else ``None``.
        x0_preds: with ``return_path``, the denoised predictions made at the first ``K``
            grid times, ``(K, B, *D)``; else ``None``.
    """

    samples: Tensor
    times: Tensor
    nfe: int
    states: Tensor | None = None
    x0_preds: Tensor | None = None


def _check(pred: Prediction, x: Tensor, grid: Tensor) -> Tensor:
    if not isinstance(pred, Prediction):
        raise TypeError(f"pred must be a gmbook.samplers.Prediction, got {describe(pred)}")
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor (B, *D), got {describe(x)}")
    grid = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    if len(grid) < 2 or not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("grid must hold at least 2 strictly decreasing times (noise first)")
    return grid


class _Recorder:
    def __init__(self, x: Tensor, keep: bool) -> None:
        self.keep, self.states, self.x0s = keep, [x] if keep else [], []

    def step(self, x: Tensor, x0: Tensor | None) -> None:
        if self.keep:
            self.states.append(x)
            if x0 is not None:
                self.x0s.append(x0)

    def done(self, x: Tensor, grid: Tensor, nfe: int) -> SamplePath:
        if not self.keep:
            return SamplePath(x, grid, nfe)
        x0s = torch.stack(self.x0s) if self.x0s else None
        return SamplePath(x, grid, nfe, torch.stack(self.states), x0s)


@torch.no_grad()
def euler(pred: Prediction, x: Tensor, grid: Tensor, *,
          generator: torch.Generator | None = None, return_path: bool = False) -> SamplePath:
    r"""Euler steps of the probability-flow ODE; one network call per step.

    Each step is :math:`x_{k+1} = x_k + (t_{k+1} - t_k)\, u(x_k, t_k)`.

    Args:
        pred: the model's prediction.
        x: the starting points at ``grid[0]``, shape ``(B, *D)``.
        grid: decreasing times ``(K + 1,)``.
        generator: unused (a deterministic sampler), accepted for the common signature.
        return_path: keep the states and predictions.
    """
    grid = _check(pred, x, grid)
    check_generator(generator)
    rec = _Recorder(x, return_path)
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        u, x0 = pred.velocity_x0(x, torch.tensor(t, dtype=torch.float64))
        x = x + (t_next - t) * u
        rec.step(x, x0)
    return rec.done(x, grid, len(grid) - 1)


@torch.no_grad()
def heun(pred: Prediction, x: Tensor, grid: Tensor, *,
         generator: torch.Generator | None = None, return_path: bool = False) -> SamplePath:
    r"""Heun's second-order method on the probability-flow ODE (Karras et al., 2022,
    Algorithm 1 without churn): an Euler step, then the average of the two slopes; the
    last step is plain Euler when it ends at :math:`t = 0` (where the slope may be
    singular). Two network calls per step (one for that last step).
    """
    grid = _check(pred, x, grid)
    check_generator(generator)
    rec = _Recorder(x, return_path)
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        x, x0 = _heun_step(pred, x, t, t_next)
        rec.step(x, x0)
    nfe = 2 * (len(grid) - 1) - (1 if float(grid[-1]) <= 0 else 0)
    return rec.done(x, grid, nfe)


def _heun_step(pred: Prediction, x: Tensor, t: float, t_next: float) -> tuple[Tensor, Tensor]:
    """One step of :func:`heun` (and of :func:`heun_churn` after its noise): ``(x, x0_hat)``."""
    u, x0 = pred.velocity_x0(x, torch.tensor(t, dtype=torch.float64))
    x_euler = x + (t_next - t) * u
    if t_next > 0:
        u_next = pred.velocity(x_euler, torch.tensor(t_next, dtype=torch.float64))
        return x + (t_next - t) * 0.5 * (u + u_next), x0
    return x_euler, x0


@torch.no_grad()
def ddim(pred: Prediction, x: Tensor, grid: Tensor, *, eta: float = 0.0,
         generator: torch.Generator | None = None, return_path: bool = False) -> SamplePath:
    r"""DDIM steps (Song, Meng & Ermon, 2021) for a general Gaussian path:

    .. math::

        x_s = \alpha_s \hat x_0 + \sqrt{\sigma_s^2 - c^2}\, \hat\varepsilon + c\, z, \qquad
        c^2 = \eta^2 \frac{\sigma_s^2}{\sigma_t^2}\Big(\sigma_t^2 - \frac{\alpha_t^2}
        {\alpha_s^2} \sigma_s^2\Big),

    from time :math:`t` to :math:`s < t`, with :math:`z \sim \mathcal N(0, I)`.
    ``eta = 0`` is the deterministic sampler, the first-order exponential integrator of the
    probability-flow ODE in log-SNR (the chapter's ``eq-sde-ddim-exp``; DPM-Solver-1 of Lu et
    al., 2022), exact when :math:`\hat x_0` is constant along the solution; ``eta = 1``
    draws from the Gaussian posterior :math:`q(x_s \mid x_t, x_0 = \hat x_0)`, i.e.
    ancestral sampling. One network call per step.

    Args:
        eta: the noise scale in :math:`[0, 1]`.
    """
    grid = _check(pred, x, grid)
    generator = check_generator(generator)
    eta = check_nonnegative("eta", eta)
    path = pred.path
    a_all, s_all = path.alpha(grid), path.sigma(grid)
    rec = _Recorder(x, return_path)
    for k in range(len(grid) - 1):
        x0, eps = pred.x0_eps(x, grid[k].to(x.dtype))
        a_t, s_t, a_s, s_s = (float(v) for v in (a_all[k], s_all[k], a_all[k + 1],
                                                  s_all[k + 1]))
        c2 = 0.0
        if eta > 0 and s_s > 0:
            c2 = eta**2 * s_s**2 / s_t**2 * max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0)
        x = a_s * x0 + math.sqrt(max(s_s**2 - c2, 0.0)) * eps
        if c2 > 0:
            x = x + math.sqrt(c2) * randn(x.shape, like=x, generator=generator)
        rec.step(x, x0)
    return rec.done(x, grid, len(grid) - 1)


@torch.no_grad()
def euler_maruyama(pred: Prediction, x: Tensor, grid: Tensor, *, eta: float = 1.0,
                   generator: torch.Generator | None = None,
                   return_path: bool = False) -> SamplePath:
    r"""Euler-Maruyama steps of the reverse-time SDE family

    .. math::

        \mathrm d x = \Big[u_t(x) - \frac{\eta^2}{2} g_t^2\, \nabla \log p_t(x)\Big]\,
        \mathrm d t + \eta\, g_t\, \mathrm d \bar W_t ,

    integrated backwards in time (:math:`\mathrm d t < 0`), where :math:`u_t` is the
    probability-flow drift and :math:`g_t^2` the path's :meth:`GaussianPath.diffusion2`.
    Every member has the marginals of the path; ``eta = 0`` is the probability-flow ODE
    (then this is :func:`euler`), ``eta = 1`` Anderson's reverse SDE. One network call per
    step; no noise is added on a step that ends at :math:`t = 0`.
    """
    grid = _check(pred, x, grid)
    generator = check_generator(generator)
    eta = check_nonnegative("eta", eta)
    path = pred.path
    rec = _Recorder(x, return_path)
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        tt = torch.tensor(t, dtype=torch.float64)
        x0, eps = pred.x0_eps(x, tt)
        s = path.sigma(tt).item()
        da, ds, g2 = path.d_alpha(tt).item(), path.d_sigma(tt).item(), \
            path.diffusion2(tt).item()
        score = -eps / s
        drift = da * x0 + ds * eps - 0.5 * eta**2 * g2 * score
        h = t_next - t  # negative
        x = x + h * drift
        if eta > 0 and t_next > 0:
            x = x + eta * math.sqrt(g2 * -h) * randn(x.shape, like=x, generator=generator)
        rec.step(x, x0)
    return rec.done(x, grid, len(grid) - 1)


# ------------------------------------------------------- Langevin samplers (score chapter)
# Annealed Langevin dynamics (Song & Ermon, 2019) and the Langevin corrector of
# predictor-corrector sampling (Song et al., 2021) on the common signature; both take
# gmbook.mcmc.langevin_step, the one Langevin step of the package.


def _level_sigmas(pred: Prediction, grid: Tensor) -> list[float]:
    sig = pred.path.sigma(grid).tolist()
    if any(s <= 0 for s in sig):
        raise ValueError("every time of the grid needs a positive noise level sigma_t")
    return sig


def _check_time(pred: Prediction, x: Tensor, t: float | Tensor) -> Tensor:
    """The checks of :func:`_check` for one time instead of a grid; ``t`` as ``(1,)``."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if t.numel() != 1:
        raise ValueError(f"t must be one time, got {t.numel()} values")
    _check(pred, x, torch.cat([t + 1, t]))  # pred and x, checked as every sampler does
    return t


@torch.no_grad()
def langevin_corrector(pred: Prediction, x: Tensor, t: float | Tensor, *, steps: int = 1,
                       step_size: float, generator: torch.Generator | None = None,
                       return_path: bool = False) -> SamplePath:
    r"""Langevin steps at one fixed time :math:`t`, driven by the prediction's score: the
    corrector of predictor-corrector sampling (Song et al., 2021, Algorithm 4) and the inner
    loop of :func:`annealed_langevin`.

    Each step is eq. ``eq-sm-langevin`` on the marginal :math:`p_t`,
    :math:`x \leftarrow x + h\, \nabla \log p_t(x) + \sqrt{2h}\, \xi`, taken by
    :func:`gmbook.mcmc.langevin_step`; it leaves :math:`p_t` invariant up to the
    discretisation bias of the unadjusted Langevin algorithm. One network call per step.

    Args:
        pred: the model's prediction (any kind; its score is used).
        x: the states at time ``t``, shape ``(B, *D)``.
        t: the time, a number or a tensor with one element.
        steps: Langevin steps (0 returns ``x``).
        step_size: :math:`h > 0`.
        generator: source of the noise :math:`\xi`.
        return_path: keep the state after every step.

    Returns:
        A :class:`SamplePath` with ``times`` the one time ``(1,)`` and ``nfe = steps``; with
        ``return_path`` its ``states`` are ``x`` and the state after each step,
        ``(steps + 1, B, *D)`` (all at the same time ``t``), and ``x0_preds`` is ``None``.
    """
    t = _check_time(pred, x, t)
    steps = check_int("steps", steps, minimum=0)
    h = check_positive("step_size", step_size)
    generator = check_generator(generator)
    if _level_sigmas(pred, t)[0] <= 0:
        raise ValueError("the corrector needs a time with sigma_t > 0")
    states = [x] if return_path else []
    tt = t[0].to(x.dtype)
    for _ in range(steps):
        x = langevin_step(x, pred.score(x, tt), h, generator=generator)
        if return_path:
            states.append(x)
    return SamplePath(x, t, steps, torch.stack(states) if return_path else None)


@torch.no_grad()
def annealed_langevin(pred: Prediction, x: Tensor, grid: Tensor, *,
                      steps_per_level: int = 100, eps: float = 1e-3, denoise: bool = True,
                      generator: torch.Generator | None = None,
                      return_path: bool = False) -> SamplePath:
    r"""Annealed Langevin dynamics (eq. ``eq-sm-annealed``), Song & Ermon (2019,
    Algorithm 1), on the times of ``grid`` (for a :class:`VEPath`, the noise levels
    :math:`\sigma_1 > \dots > \sigma_L`).

    At each time :math:`t_i` of the grid, ``steps_per_level`` steps of
    :func:`langevin_corrector` with the step size
    :math:`\alpha_i = \epsilon\, \sigma_{t_i}^2 / \sigma_{t_L}^2`:

    .. math::

        x \leftarrow x + \alpha_i\, \nabla \log p_{t_i}(x) + \sqrt{2 \alpha_i}\, \xi .

    With ``denoise``, one last step to the prediction's :math:`\hat x_0` at :math:`t_L`,
    which for a :class:`VEPath` is Tweedie's formula :math:`x + \sigma_L^2 \nabla \log
    p_{\sigma_L}(x)` (eq. ``eq-sm-tweedie``; Jolicoeur-Martineau et al., 2021).

    Args:
        pred: the model's prediction (any kind; its score and :math:`\hat x_0` are used).
        x: the starting points at ``grid[0]``, shape ``(B, *D)``.
        grid: the decreasing times ``(L,)``, each with :math:`\sigma_t > 0`.
        steps_per_level: :math:`T` Langevin steps per time.
        eps: :math:`\epsilon`, the step size at the last time.
        denoise: finish with the step to :math:`\hat x_0`.
        generator: source of the noise.
        return_path: keep the state at the end of every level.

    Returns:
        A :class:`SamplePath`; ``times`` is the grid, followed by ``0`` with ``denoise``;
        ``nfe = L T`` (+ 1 with ``denoise``); with ``return_path``, ``states`` holds the
        state at the end of each level (then the denoised samples), so that ``states[-1]``
        is the samples, and ``x0_preds`` is ``None``.
    """
    grid = _check(pred, x, grid)
    steps = check_int("steps_per_level", steps_per_level, minimum=0)
    eps = check_positive("eps", eps)
    generator = check_generator(generator)
    sig = _level_sigmas(pred, grid)
    states = []
    for t, s in zip(grid, sig):
        alpha = eps * (s / sig[-1]) ** 2
        x = langevin_corrector(pred, x, t, steps=steps, step_size=alpha,
                               generator=generator).samples
        if return_path:
            states.append(x)
    times, nfe = grid, len(sig) * steps
    if denoise:
        x = pred.x0_eps(x, grid[-1].to(x.dtype))[0]
        times, nfe = torch.cat([grid, grid.new_zeros(1)]), nfe + 1
        if return_path:
            states.append(x)
    return SamplePath(x, times, nfe, torch.stack(states) if return_path else None)


# --------------------------------------------------------------------------- flow matching
# (the flow-matching chapter's section: its variance-preserving path and the midpoint rule)


class CosinePath(GaussianPath):
    r"""The variance-preserving path of flow matching (``path="vp"`` of
    :mod:`gmbook.flow_matching`), in the diffusion direction: :math:`\alpha_t =
    \cos(\tfrac{\pi}{2} t)`, :math:`\sigma_t = \sin(\tfrac{\pi}{2} t)` on :math:`[0, 1]`,
    the cosine schedule of Nichol & Dhariwal (2021) without offset. Flow matching's time is
    :math:`1 - t`, where its :math:`\alpha = \sin(\tfrac{\pi}{2} t_{\mathrm{FM}})`."""

    def alpha(self, t):
        t = self._check_t(t)
        return torch.cos(0.5 * math.pi * t.double()).to(t.dtype)

    def sigma(self, t):
        t = self._check_t(t)
        return torch.sin(0.5 * math.pi * t.double()).to(t.dtype)

    def d_alpha(self, t):
        t = self._check_t(t)
        return (-0.5 * math.pi * torch.sin(0.5 * math.pi * t.double())).to(t.dtype)

    def d_sigma(self, t):
        t = self._check_t(t)
        return (0.5 * math.pi * torch.cos(0.5 * math.pi * t.double())).to(t.dtype)


@torch.no_grad()
def midpoint(pred: Prediction, x: Tensor, grid: Tensor, *,
             generator: torch.Generator | None = None,
             return_path: bool = False) -> SamplePath:
    r"""The explicit midpoint rule (second-order Runge-Kutta) on the probability-flow ODE:

    .. math::

        x_{k+1} = x_k + h_k\, u\big(x_k + \tfrac{h_k}{2} u(x_k, t_k),\,
        t_k + \tfrac{h_k}{2}\big), \qquad h_k = t_{k+1} - t_k .

    Unlike :func:`heun` it never evaluates the network at ``grid[-1]``, so the last step
    needs no special case; two network calls per step. The recorded prediction
    :math:`\hat x_0` is the one made at :math:`(x_k, t_k)`.

    Args:
        pred: the model's prediction.
        x: the starting points at ``grid[0]``, shape ``(B, *D)``.
        grid: decreasing times ``(K + 1,)``.
        generator: unused (a deterministic sampler), accepted for the common signature.
        return_path: keep the states and predictions.
    """
    grid = _check(pred, x, grid)
    check_generator(generator)
    rec = _Recorder(x, return_path)
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        h = t_next - t
        u, x0 = pred.velocity_x0(x, torch.tensor(t, dtype=torch.float64))
        t_mid = torch.tensor(t + 0.5 * h, dtype=torch.float64)
        x = x + h * pred.velocity(x + 0.5 * h * u, t_mid)
        rec.step(x, x0)
    return rec.done(x, grid, 2 * (len(grid) - 1))


# --------------------------------------------------------------------------- the SDE chapter
# (diffusion as SDEs: the sub-VP path, EDM's and DPM-Solver's time grids, the exponential
# integrators in log-SNR, EDM's stochastic Heun, the adaptive reference, the exact denoiser
# of a Gaussian mixture and the fitted order of convergence)


class SubVPPath(GaussianPath):
    r"""The sub-variance-preserving path of Song et al. (2021, Sec. 3.4): :math:`\alpha_t` as
    in :class:`VPPath` and :math:`\sigma_t = 1 - \alpha_t^2`, so that the forward SDE
    :math:`\mathrm d x = -\tfrac12 \beta(t) x\, \mathrm d t + \sqrt{\beta(t)(1 -
    e^{-2\int_0^t \beta})}\, \mathrm d W` has variance :math:`\sigma_t^2 \le 1 -
    \alpha_t^2` (below the VP path's) at every :math:`t`.

    Args:
        beta_min, beta_max: the rates at :math:`t = 0` and :math:`t = 1`, as in
            :class:`VPPath`.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self._vp = VPPath(beta_min, beta_max)
        self.beta_min, self.beta_max = self._vp.beta_min, self._vp.beta_max

    def alpha(self, t):
        return self._vp.alpha(t)

    def d_alpha(self, t):
        return self._vp.d_alpha(t)

    def sigma(self, t):
        t = self._check_t(t)
        return (-torch.expm1(2 * self._vp._log_alpha(t))).to(t.dtype)

    def d_sigma(self, t):
        t = self._check_t(t)   # d/dt (1 - alpha^2) = -2 alpha alpha' = beta alpha^2
        return (self._vp._beta(t) * (2 * self._vp._log_alpha(t)).exp()).to(t.dtype)


def _check_path(path: object) -> GaussianPath:
    if not isinstance(path, GaussianPath):
        raise TypeError(f"path must be a gmbook.samplers.GaussianPath, got {describe(path)}")
    return path


def _ratio(path: GaussianPath, t: Tensor) -> Tensor:
    r"""The noise-to-signal ratio :math:`\sigma_t / \alpha_t` (EDM's noise level), float64."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return path.sigma(t) / path.alpha(t)


def _invert(f: Callable[[Tensor], Tensor], targets: Tensor, lo: float, hi: float) -> Tensor:
    """Times ``t`` in ``[lo, hi]`` with ``f(t) = targets`` for an increasing ``f``: bisection
    in float64 to the last bit (enough steps to halve ``hi - lo`` below float64 spacing)."""
    targets = torch.as_tensor(targets, dtype=torch.float64)
    a = torch.full_like(targets, float(lo))
    b = torch.full_like(targets, float(hi))
    for _ in range(1100):  # at most ~1075 halvings separate two float64 numbers
        m = 0.5 * (a + b)
        if not bool(((m > a) & (m < b)).any()):
            break
        below = f(m) < targets
        a, b = torch.where(below, m, a), torch.where(below, b, m)
    return torch.where((f(a) - targets).abs() <= (f(b) - targets).abs(), a, b)


def _time_of_ratio(path: GaussianPath, ratios: Tensor) -> Tensor:
    r"""Times where :math:`\sigma_t / \alpha_t` equals ``ratios`` (float64): :math:`t =`
    ratio on a :class:`VEPath`, else by bisection on ``[path.t_min, path.t_max]``."""
    ratios = torch.as_tensor(ratios, dtype=torch.float64)
    if isinstance(path, VEPath):
        return ratios.clone()
    return _invert(lambda t: _ratio(path, t), ratios, path.t_min, path.t_max)


def karras_grid(path: GaussianPath, steps: int, *, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    r"""EDM's time grid (Karras et al., 2022, eq. 5; the chapter's ``eq-sde-karras-grid``)
    on any Gaussian path.

    The noise-to-signal ratios

    .. math::

        \tilde\sigma_i = \Big(\sigma_{\max}^{1/\rho} + \frac{i}{N - 1}\big(
        \sigma_{\min}^{1/\rho} - \sigma_{\max}^{1/\rho}\big)\Big)^{\rho},
        \qquad i = 0, \dots, N - 1,

    are mapped to the times where :math:`\sigma_t / \alpha_t = \tilde\sigma_i` (on a
    :class:`VEPath`, :math:`t = \tilde\sigma_i`; on other paths by bisection in float64),
    and a last time :math:`t_N = 0` is appended. :math:`\rho = 1` spaces the levels evenly,
    larger :math:`\rho` crowds them near :math:`\sigma_{\min}`.

    Args:
        path: the path whose times are returned.
        steps: :math:`N \ge 1`, the number of steps (``steps = 1`` gives
            :math:`(t(\sigma_{\max}), 0)`).
        sigma_min, sigma_max: the smallest and largest nonzero ratios,
            :math:`0 < \sigma_{\min} < \sigma_{\max}`; :math:`\sigma_{\max}` must be
            reachable on the path (:math:`\le \sigma_{t_{\max}} / \alpha_{t_{\max}}`).
        rho: :math:`\rho > 0`.

    Returns:
        The decreasing times, float64, shape ``(steps + 1,)``, ending at 0.

    Example:
        >>> karras_grid(VEPath(), 3, sigma_min=0.5, sigma_max=8.0, rho=1.0)
        tensor([8.0000, 4.2500, 0.5000, 0.0000], dtype=torch.float64)
    """
    path = _check_path(path)
    steps = check_int("steps", steps)
    sigma_min = check_positive("sigma_min", sigma_min)
    sigma_max = check_positive("sigma_max", sigma_max)
    rho = check_positive("rho", rho)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
    top = float(_ratio(path, torch.tensor(path.t_max, dtype=torch.float64)))
    if not isinstance(path, VEPath) and not sigma_max <= top:
        raise ValueError(f"sigma_max = {sigma_max} is beyond the path's largest "
                         f"noise-to-signal ratio sigma_t / alpha_t = {top:.6g} at t_max")
    if steps == 1:
        ratios = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(steps, dtype=torch.float64) / (steps - 1)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        ratios = (hi + i * (lo - hi)) ** rho
        ratios[0], ratios[-1] = sigma_max, sigma_min  # exact ends
    return torch.cat([_time_of_ratio(path, ratios), torch.zeros(1, dtype=torch.float64)])


def _half_log_snr(path: GaussianPath, t: Tensor) -> Tensor:
    r""":math:`\log(\alpha_t / \sigma_t)`, float64 (DPM-Solver's :math:`\lambda_t`)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return path.alpha(t).log() - path.sigma(t).log()


def _time_of_log_snr(path: GaussianPath, lam: Tensor) -> Tensor:
    r"""Times where :func:`_half_log_snr` equals ``lam`` (it decreases in t), float64:
    :math:`t = e^{-\lambda}` on a :class:`VEPath`, else by bisection."""
    if isinstance(path, VEPath):
        return (-torch.as_tensor(lam, dtype=torch.float64)).exp()
    return _invert(lambda t: -_half_log_snr(path, t), -torch.as_tensor(lam, dtype=torch.float64),
                   path.t_min, path.t_max)


def log_snr_grid(path: GaussianPath, steps: int, *, t_max: float | None = None,
                 t_min: float = 1e-3) -> Tensor:
    r"""DPM-Solver's time grid (Lu et al., 2022; "uniform logSNR" steps): times whose
    log-SNR :math:`\lambda_t = \log(\alpha_t^2 / \sigma_t^2)` (:meth:`GaussianPath.log_snr`)
    is evenly spaced from :math:`\lambda_{t_{\max}}` to :math:`\lambda_{t_{\min}}`.

    Args:
        path: the path.
        steps: the number of steps :math:`N \ge 1`.
        t_max: the first time (default ``path.t_max``); its :math:`\lambda` must be finite
            (a :class:`LinearPath` has :math:`\alpha = 0` at :math:`t = 1`: pass a smaller
            ``t_max``).
        t_min: the last time, ``0 < t_min < t_max``.

    Returns:
        The decreasing times, float64, shape ``(steps + 1,)``, from ``t_max`` to ``t_min``.
    """
    path = _check_path(path)
    steps = check_int("steps", steps)
    t_max = path.t_max if t_max is None else check_positive("t_max", t_max)
    t_min = check_positive("t_min", t_min)
    if not t_min < t_max <= path.t_max:
        raise ValueError(f"need 0 < t_min < t_max <= path.t_max = {path.t_max}, got "
                         f"t_min = {t_min}, t_max = {t_max}")
    ends = _half_log_snr(path, torch.tensor([t_max, t_min], dtype=torch.float64))
    if not bool(torch.isfinite(ends).all()):
        raise ValueError(f"the log-SNR is not finite at t_max = {t_max} or t_min = {t_min}; "
                         "choose times where 0 < sigma_t and 0 < alpha_t")
    lam = torch.linspace(float(ends[0]), float(ends[1]), steps + 1, dtype=torch.float64)
    times = _time_of_log_snr(path, lam)
    times[0], times[-1] = t_max, t_min  # exact ends
    return times


def _schedule(path: GaussianPath, grid: Tensor) -> tuple[list[float], list[float], list[float]]:
    """``alpha``, ``sigma`` and DPM-Solver's ``lambda = log(alpha / sigma)`` on the grid, as
    float64 numbers (``lambda = inf`` where ``sigma = 0``)."""
    a, s = path.alpha(grid), path.sigma(grid)
    if bool((a <= 0).any()):
        raise ValueError("every time of the grid needs alpha_t > 0 (the data's scale); "
                         "start the grid below the path's t_max")
    return a.tolist(), s.tolist(), (a.log() - s.log()).tolist()


@torch.no_grad()
def dpm_solver_2(pred: Prediction, x: Tensor, grid: Tensor, *, r: float = 0.5,
                 generator: torch.Generator | None = None,
                 return_path: bool = False) -> SamplePath:
    r"""Singlestep DPM-Solver-2 (Lu et al., 2022, Algorithm 1, the noise-prediction form;
    the chapter's ``eq-sde-dpm2``): with :math:`\lambda_t = \log(\alpha_t / \sigma_t)` (half
    the log-SNR of :meth:`GaussianPath.log_snr`), each step from :math:`t` to :math:`t' < t`
    is

    .. math::

        h = \lambda_{t'} - \lambda_t, \quad s = t_\lambda(\lambda_t + r h), \quad
        u = \frac{\alpha_s}{\alpha_t} x - \sigma_s (e^{r h} - 1)\, \hat\varepsilon(x, t),

        x' = \frac{\alpha_{t'}}{\alpha_t} x - \sigma_{t'} (e^{h} - 1)\, \hat\varepsilon(x, t)
        - \frac{\sigma_{t'}}{2 r} (e^{h} - 1) \big(\hat\varepsilon(u, s)
        - \hat\varepsilon(x, t)\big),

    a second-order exponential integrator of the probability-flow ODE written in
    :math:`\lambda`, whose exact solution is :math:`x_{t'} = \frac{\alpha_{t'}}{\alpha_t} x_t
    - \alpha_{t'} \int_{\lambda_t}^{\lambda_{t'}} e^{-\lambda} \hat\varepsilon\,
    \mathrm d\lambda` (Lu et al., 2022, Sec. 3): the linear part is exact, and the
    first two terms are DDIM's step (:func:`ddim`, the chapter's ``eq-sde-ddim-exp``). So the
    step is exact when :math:`\hat\varepsilon` is constant along the solution (e.g. a
    constant :math:`\hat x_0`), but not when it is linear in :math:`\lambda`: the weight
    :math:`(e^h - 1)/2` of the slope term stands for the exact :math:`(e^h - 1 - h)/h`, an
    :math:`O(h^3)` local error, hence order 2 (the tests check both). The intermediate time
    :math:`s` is found by bisection (float64; :math:`t = e^{-\lambda}` on a
    :class:`VEPath`). A step that ends at :math:`\sigma_{t'} = 0` (:math:`h = \infty`) is
    the first-order limit :math:`x' = \alpha_{t'} \hat x_0(x, t)` (one call), as in
    :func:`heun`.

    Args:
        pred: the model's prediction.
        x: the starting points at ``grid[0]``, shape ``(B, *D)``.
        grid: decreasing times ``(K + 1,)``, each with :math:`\alpha_t > 0` and
            :math:`\sigma_t > 0` except possibly :math:`\sigma = 0` at ``grid[-1]``.
        r: the position :math:`r \in (0, 1]` of the intermediate point in :math:`\lambda`
            (:math:`r = 1/2` is DPM-Solver-2's midpoint).
        generator: unused (a deterministic sampler), accepted for the common signature.
        return_path: keep the states and predictions.

    Returns:
        A :class:`SamplePath` with ``nfe = 2 K`` (``2 K - 1`` if ``grid[-1]`` has
        :math:`\sigma = 0`).
    """
    grid = _check(pred, x, grid)
    check_generator(generator)
    r = check_positive("r", r)
    if r > 1:
        raise ValueError(f"r must be in (0, 1], got {r}")
    path = pred.path
    a, s, lam = _schedule(path, grid)
    if any(v <= 0 for v in s[:-1]):
        raise ValueError("DPM-Solver needs sigma_t > 0 at every time of the grid but the last")
    last_zero = s[-1] <= 0
    k_mid = len(grid) - 1 - (1 if last_zero else 0)
    lam_mid = torch.tensor([lam[k] + r * (lam[k + 1] - lam[k]) for k in range(k_mid)],
                           dtype=torch.float64)
    t_mid = _time_of_log_snr(path, lam_mid) if k_mid else lam_mid
    a_mid, s_mid = path.alpha(t_mid).tolist(), path.sigma(t_mid).tolist()
    rec = _Recorder(x, return_path)
    for k in range(len(grid) - 1):
        x0, eps = pred.x0_eps(x, grid[k].to(x.dtype))
        if k == k_mid:  # the last step, to sigma = 0
            x = a[k + 1] * x0
        else:
            h = lam[k + 1] - lam[k]
            u = a_mid[k] / a[k] * x - s_mid[k] * math.expm1(r * h) * eps
            eps_u = pred.x0_eps(u, t_mid[k].to(x.dtype))[1]
            e = math.expm1(h)
            x = a[k + 1] / a[k] * x - s[k + 1] * e * eps - s[k + 1] / (2 * r) * e * (eps_u - eps)
        rec.step(x, x0)
    return rec.done(x, grid, 2 * (len(grid) - 1) - (1 if last_zero else 0))


@torch.no_grad()
def dpm_solver_pp_2m(pred: Prediction, x: Tensor, grid: Tensor, *,
                     generator: torch.Generator | None = None,
                     return_path: bool = False) -> SamplePath:
    r"""Multistep DPM-Solver++(2M) (Lu et al., 2022b, Algorithm 2, the data-prediction form;
    the chapter's ``eq-sde-dpmpp2m``): with :math:`\lambda_t = \log(\alpha_t / \sigma_t)`,
    the step from :math:`t_{k}` to :math:`t_{k+1}` is

    .. math::

        x_{k+1} = \frac{\sigma_{t_{k+1}}}{\sigma_{t_k}} x_k - \alpha_{t_{k+1}}
        (e^{-h_k} - 1)\, D_k, \qquad h_k = \lambda_{t_{k+1}} - \lambda_{t_k},

        D_k = \Big(1 + \frac{1}{2 r_k}\Big) \hat x_0(x_k, t_k) - \frac{1}{2 r_k}
        \hat x_0(x_{k-1}, t_{k-1}), \qquad r_k = h_{k-1} / h_k ,

    the exponential integrator of the probability-flow ODE in its data-prediction form with
    :math:`\hat x_0` extrapolated linearly in :math:`\lambda` from the last two calls. The
    first step takes :math:`D_0 = \hat x_0(x_0, t_0)`, which is :func:`ddim` with ``eta =
    0`` (the chapter's ``eq-sde-ddim-exp``); so is a step that ends at :math:`\sigma = 0`,
    :math:`x = \alpha \hat x_0` (as k-diffusion does). One network call per step.

    Args:
        pred: the model's prediction.
        x: the starting points at ``grid[0]``, shape ``(B, *D)``.
        grid: decreasing times ``(K + 1,)`` with :math:`\alpha_t > 0` and
            :math:`\sigma_t > 0`, except possibly :math:`\sigma = 0` at ``grid[-1]``.
        generator: unused (a deterministic sampler), accepted for the common signature.
        return_path: keep the states and predictions.
    """
    grid = _check(pred, x, grid)
    check_generator(generator)
    a, s, lam = _schedule(pred.path, grid)
    if any(v <= 0 for v in s[:-1]):
        raise ValueError("DPM-Solver++ needs sigma_t > 0 at every time of the grid but the "
                         "last")
    rec = _Recorder(x, return_path)
    x0_prev, h_prev = None, None
    for k in range(len(grid) - 1):
        x0 = pred.x0_eps(x, grid[k].to(x.dtype))[0]
        if s[k + 1] <= 0:
            x = a[k + 1] * x0
        else:
            h = lam[k + 1] - lam[k]
            d = x0
            if x0_prev is not None:
                c = 0.5 * h / h_prev   # 1 / (2 r_k)
                d = (1 + c) * x0 - c * x0_prev
            x = s[k + 1] / s[k] * x - a[k + 1] * math.expm1(-h) * d
            h_prev = h
        x0_prev = x0
        rec.step(x, x0)
    return rec.done(x, grid, len(grid) - 1)


@torch.no_grad()
def heun_churn(pred: Prediction, x: Tensor, grid: Tensor, *, churn: float = 0.0,
               s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
               generator: torch.Generator | None = None,
               return_path: bool = False) -> SamplePath:
    r"""EDM's stochastic sampler (Karras et al., 2022, Algorithm 2) on any Gaussian path.

    Noise levels are the noise-to-signal ratios :math:`\tilde\sigma_t = \sigma_t / \alpha_t`
    of the scaled variable :math:`\tilde x = x / \alpha_t` (on a :class:`VEPath`,
    :math:`\tilde\sigma_t = t` and this is Algorithm 2 itself). Before the step from
    :math:`t_i` to :math:`t_{i+1}`, with :math:`N` steps,

    .. math::

        \gamma_i = \begin{cases} \min(S_{\mathrm{churn}} / N, \sqrt2 - 1) &
        \text{if } \tilde\sigma_{t_i} \in [S_{t\min}, S_{t\max}], \\ 0 & \text{else,}
        \end{cases} \qquad \tilde\sigma_{\hat t} = (1 + \gamma_i)\, \tilde\sigma_{t_i},

        \hat x = \frac{\alpha_{\hat t}}{\alpha_{t_i}} x_i + \alpha_{\hat t}
        \sqrt{\tilde\sigma_{\hat t}^2 - \tilde\sigma_{t_i}^2}\; S_{\mathrm{noise}}\, z,
        \qquad z \sim \mathcal N(0, I),

    raises the noise level (the time goes back to :math:`\hat t`: on paths with a largest
    time, :math:`\hat t` is capped at ``path.t_max`` and the noise is what reaches its
    level), then takes one step of :func:`heun` from :math:`\hat t` to :math:`t_{i+1}`.
    With ``churn = 0`` nothing random happens and the result is :func:`heun`'s bit for
    bit. Two network calls per step (one for a last step to :math:`t = 0`).

    Args:
        pred: the model's prediction.
        x: the starting points at ``grid[0]``, shape ``(B, *D)``.
        grid: decreasing times ``(K + 1,)``.
        churn: :math:`S_{\mathrm{churn}} \ge 0`, the total amount of fresh noise.
        s_tmin, s_tmax: the range of noise levels :math:`\tilde\sigma` where noise is added.
        s_noise: :math:`S_{\mathrm{noise}} > 0`, the scale of the fresh noise.
        generator: the source of :math:`z`.
        return_path: keep the states (after each step) and predictions.
    """
    grid = _check(pred, x, grid)
    generator = check_generator(generator)
    churn = check_nonnegative("churn", churn)
    s_tmin = check_nonnegative("s_tmin", s_tmin)
    if isinstance(s_tmax, bool) or not isinstance(s_tmax, (int, float)) or \
            math.isnan(s_tmax) or not s_tmax >= s_tmin:
        raise ValueError(f"s_tmax must be a number >= s_tmin = {s_tmin}, got {s_tmax!r}")
    s_noise = check_positive("s_noise", s_noise)
    path = pred.path
    n_steps = len(grid) - 1
    gamma = min(churn / n_steps, math.sqrt(2) - 1)
    ratios = _ratio(path, grid).tolist()
    rec = _Recorder(x, return_path)
    for i, (t, t_next) in enumerate(zip(grid[:-1].tolist(), grid[1:].tolist())):
        if gamma > 0 and s_tmin <= ratios[i] <= s_tmax and ratios[i] > 0:
            t_hat = float(_time_of_ratio(path, torch.tensor((1 + gamma) * ratios[i])))
            t_hat = min(t_hat, path.t_max) if not isinstance(path, VEPath) else t_hat
            th = torch.tensor(t_hat, dtype=torch.float64)
            r_hat, a_hat = float(_ratio(path, th)), float(path.alpha(th))
            a_t = float(path.alpha(torch.tensor(t, dtype=torch.float64)))
            z = randn(x.shape, like=x, generator=generator)
            x = a_hat / a_t * x + a_hat * math.sqrt(max(r_hat**2 - ratios[i] ** 2, 0.0)) \
                * s_noise * z
            t = t_hat
        x, x0 = _heun_step(pred, x, t, t_next)
        rec.step(x, x0)
    nfe = 2 * n_steps - (1 if float(grid[-1]) <= 0 else 0)
    return rec.done(x, grid, nfe)


@torch.no_grad()
def dopri5(pred: Prediction, x: Tensor, grid: Tensor, *, rtol: float = 1e-7,
           atol: float = 1e-7, generator: torch.Generator | None = None,
           return_path: bool = False) -> SamplePath:
    r"""The reference solution: the adaptive Dormand-Prince method (order 5 with an embedded
    order-4 error estimate; ``torchdiffeq``) on the probability-flow ODE
    :math:`\mathrm d x / \mathrm d t = \dot\alpha_t \hat x_0 + \dot\sigma_t \hat\varepsilon`
    from ``grid[0]`` to ``grid[-1]``. Its steps land on the grid's times (torchdiffeq's
    ``step_t``) instead of stepping past the end and interpolating back, so that the
    network is never called outside the grid's interval.

    Where ``grid[-1]`` has :math:`\sigma = 0` (a :func:`karras_grid` ends at :math:`t = 0`,
    where the velocity of an ``x0``- or ``eps``-prediction is 0/0), the ODE is integrated to
    ``grid[-2]`` and the last step is the one every sampler here takes to :math:`\sigma =
    0`: :math:`x = \alpha_{t_N} \hat x_0(x, t_{N-1})` (one call).

    Args:
        pred: the model's prediction.
        x: the starting points at ``grid[0]``, shape ``(B, *D)``.
        grid: decreasing times ``(K + 1,)``; only its ends matter, except with
            ``return_path`` (the states are then reported at every grid time).
        rtol, atol: the tolerances of the step-size control (positive).
        generator: unused (a deterministic solver), accepted for the common signature.
        return_path: keep the states at the grid times (``x0_preds`` stays ``None``).

    Returns:
        A :class:`SamplePath` whose ``nfe`` is the number of network calls made, each on the
        whole batch (so also the calls per sample).
    """
    from torchdiffeq import odeint

    grid = _check(pred, x, grid)
    check_generator(generator)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    path = pred.path
    calls = [0]

    def f(t: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return pred.velocity(y, t.to(torch.float64))

    denoise = float(path.sigma(grid[-1])) <= 0
    times = grid[:-1] if denoise else grid
    if not return_path:
        times = times[[0, -1]] if len(times) > 1 else times
    t_dtype = torch.float64 if x.dtype == torch.float64 else x.dtype
    if len(times) > 1:
        tq = times.to(device=x.device, dtype=t_dtype)
        # step_t: land on the output times instead of stepping past the end and
        # interpolating back (the path may be undefined beyond it, e.g. t < 0)
        states = odeint(f, x, tq, rtol=rtol, atol=atol, method="dopri5",
                        options={"step_t": tq})
    else:
        states = x[None]
    y = states[-1]
    if denoise:
        x0 = pred.x0_eps(y, grid[-2].to(x.dtype))[0]
        calls[0] += 1
        y = float(path.alpha(grid[-1])) * x0
        states = torch.cat([states, y[None]])
    return SamplePath(y, grid, calls[0], states if return_path else None)


_MIXTURE_ROWS = 1024
"""Rows per block in :func:`mixture_prediction` for 1024 components (blocks hold about
``_MIXTURE_ROWS * 1024`` logits, at least ``_MIXTURE_ROWS`` rows): its ``(rows, K)`` logits
then stay in the CPU's cache (for 10 000 points and 1024 components about a third faster
than one block of 80 MB in float64; with few components, larger blocks save the per-block
overhead). A batch is cut into equal blocks, each of more than half the maximum, so each
row's numbers do not depend on the blocks; a whole batch of a few dozen points may take
other BLAS kernels than a large one and differ from it in the last bit."""


def mixture_prediction(weights: Tensor, means: Tensor, variances: Tensor,
                       path: GaussianPath) -> Prediction:
    r"""The exact denoiser of a mixture of axis-aligned Gaussians under a path, as an
    ``"x0"`` :class:`Prediction`: "the exact noised score" of, e.g., the two moons
    (:meth:`gmbook.data.TwoMoons.mixture`).

    For :math:`x_0 \sim \sum_k w_k \mathcal N(\mu_k, \operatorname{diag} v_k)` and
    :math:`x = \alpha x_0 + \sigma \varepsilon`, component :math:`k` gives
    :math:`x \sim \mathcal N(\alpha\mu_k, \operatorname{diag} c_k)` with :math:`c_k =
    \alpha^2 v_k + \sigma^2`, and Bayes' rule per coordinate gives

    .. math::

        \mathbb E[x_0 \mid x] &= \sum_k r_k(x) \Big(\mu_k + \frac{\alpha v_k}{c_k}
        (x - \alpha \mu_k)\Big), \\
        r_k(x) &= \operatorname{softmax}_k\Big(\log w_k - \tfrac12 \sum_d \Big[\log c_{kd}
        + \frac{(x_d - \alpha\mu_{kd})^2}{c_{kd}} \Big]\Big),

    the diagonal case of :func:`gmbook.score.mixture_posterior_mean` (which the tests
    compare with); its score :math:`-\hat\varepsilon / \sigma` is the exact score
    ``eq-sm-mixture-score`` of the noised mixture (Tweedie, ``eq-sm-tweedie``). Computed
    in float64 with a log-sum-exp (softmax) over the components and the squared distances
    expanded into one matrix product, so that no ``(B, K, D)`` tensor is formed, in blocks of
    ``_MIXTURE_ROWS`` = 1024 points for 1024 components (more for fewer; about 13 ms of CPU
    per call for 2000 points and 1024 components on one thread of this book's CPU under
    load, less when it is idle; a second thread does not help);
    returned in the input's dtype. A batch of several times is handled one distinct time
    at a time (the samplers call it with one).

    Args:
        weights: :math:`w`, shape ``(K,)``, nonnegative with a positive sum (normalized
            here).
        means: :math:`\mu`, shape ``(K, D)``.
        variances: :math:`v`, shape ``(K, D)``, nonnegative (0 is a point mass; then
            :math:`\sigma_t > 0` is needed).
        path: the :class:`GaussianPath`.

    Returns:
        ``Prediction(fn, "x0", path)`` with ``fn(x, t)``, ``x`` ``(B, D)``, ``t`` ``(B,)``.
    """
    for name, v in (("weights", weights), ("means", means), ("variances", variances)):
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {describe(v)}")
    path = _check_path(path)
    if means.ndim != 2:
        raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
    k, d = means.shape
    if weights.shape != (k,) or variances.shape != (k, d):
        raise ValueError(f"with means of shape (K, D) = {(k, d)}, weights must be (K,) and "
                         f"variances (K, D); got {tuple(weights.shape)} and "
                         f"{tuple(variances.shape)}")
    w = weights.detach().to(torch.float64)
    mu = means.detach().to(torch.float64)
    var = variances.detach().to(torch.float64)
    if not bool(torch.isfinite(w).all() & torch.isfinite(mu).all() & torch.isfinite(var).all()):
        raise ValueError("weights, means and variances must be finite")
    if bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError("weights must be nonnegative with a positive sum")
    if bool((var < 0).any()):
        raise ValueError("variances must be nonnegative")
    log_w = (w / w.sum()).log()   # (K,), -inf for a zero weight
    mu2 = mu**2

    rows = max(_MIXTURE_ROWS, _MIXTURE_ROWS * 1024 // k)   # rows per block

    def one_time(x: Tensor, a: float, s: float) -> Tensor:   # x (B, D) float64
        if x.shape[0] > rows:  # in equal blocks of at most rows: the same numbers, faster
            size = -(-x.shape[0] // -(-x.shape[0] // rows))   # no small last block
            return torch.cat([one_time(x[i:i + size], a, s)
                              for i in range(0, x.shape[0], size)])
        c = a * a * var + s * s                                # (K, D)
        if bool((c <= 0).any()):
            raise ValueError("a component has zero variance at this time (sigma_t = 0 and a "
                             "point mass): the posterior mean is undefined")
        ic = 1 / c
        g = a * var * ic                                       # (K, D): the gains
        const = log_w - 0.5 * (c.log().sum(1) + (a * a * mu2 * ic).sum(1))   # (K,)
        # log w_k + log N(x; a mu_k, diag c_k) up to a constant in k, as one product
        # [x^2, x, 1] @ [-ic / 2; a mu ic; const]: (B, 2D + 1) @ (2D + 1, K) -> (B, K)
        feats = torch.cat([x * x, x, x.new_ones(x.shape[0], 1)], 1)
        coef = torch.cat([-0.5 * ic.T, a * (mu * ic).T, const[None]], 0)
        logits = feats @ coef                                  # (B, K)
        # the softmax in place, normalized after the product: exp(logits - max) weighs
        # [mu - a g mu, g, 1], whose last column is the normalizer (log-sum-exp stable)
        r = logits.sub_(logits.amax(1, keepdim=True)).exp_()   # (B, K), unnormalized
        ones = mu.new_ones(k, 1)
        both = r @ torch.cat([mu - a * g * mu, g, ones], 1)    # (B, 2D + 1)
        return (both[:, :d] + x * both[:, d:2 * d]) / both[:, 2 * d:]   # (B, D)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"x must have shape (B, {d}), got {describe(x)}")
        xd = x.detach().to(torch.float64)
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        a_all, s_all = path.alpha(tt).to(torch.float64), path.sigma(tt).to(torch.float64)
        times = torch.unique(tt)
        if len(times) == 1:
            out = one_time(xd, float(a_all[0]), float(s_all[0]))
        else:
            out = torch.empty_like(xd)
            for u in times:
                rows = tt == u
                j = int(rows.nonzero()[0, 0])
                out[rows] = one_time(xd[rows], float(a_all[j]), float(s_all[j]))
        return out.to(x.dtype)

    return Prediction(fn, "x0", path)


def fit_order(nfe: Tensor | list[float], errors: Tensor | list[float]) -> float:
    r"""The measured order of convergence: the least-squares slope :math:`p` of
    :math:`-\log(\text{error})` on :math:`\log(\text{NFE})`, so that error
    :math:`\approx C\, \mathrm{NFE}^{-p}`.

    Args:
        nfe: the numbers of function evaluations, at least two distinct positive values.
        errors: the errors at those budgets, positive, same length.

    Returns:
        :math:`p` as a float.

    Example:
        >>> fit_order([4, 8, 16], [1.0, 0.25, 0.0625])
        2.0
    """
    n = torch.as_tensor(nfe, dtype=torch.float64).reshape(-1)
    e = torch.as_tensor(errors, dtype=torch.float64).reshape(-1)
    if len(n) != len(e):
        raise ValueError(f"nfe and errors must have the same length, got {len(n)} and {len(e)}")
    if len(n) < 2 or len(torch.unique(n)) < 2:
        raise ValueError("fit_order needs at least two distinct NFE values")
    if not bool(((n > 0) & (e > 0) & torch.isfinite(n) & torch.isfinite(e)).all()):
        raise ValueError("nfe and errors must be positive and finite")
    u, v = n.log(), -e.log()
    u0 = u - u.mean()
    return float((u0 * (v - v.mean())).sum() / (u0 * u0).sum())
