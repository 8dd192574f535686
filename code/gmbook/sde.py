r"""Diffusion as stochastic differential equations: chapter ``book/diffusion/sde.md``.

Every Gaussian path :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon` of
:mod:`gmbook.samplers` is the marginal law of a linear forward SDE, and every such SDE has a
reverse-time SDE and a probability-flow ODE with the same marginals (Song et al., 2021).
The module holds

- the forward SDE of a path (:func:`forward_sde`, eq. ``eq-sde-forward``), in the form
  :func:`gmbook.stochastic.integrate_sde` takes, so that the variance-preserving SDE can be
  simulated against DDPM's closed-form marginals;
- EDM's preconditioning (:func:`edm_coefficients`, eq. ``eq-sde-edm-precond``; Karras et
  al., 2022, Table 1): the skip, output and input scalings and the noise embedding that
  make a network's input and training target unit-variance at every noise level;
- the model :class:`EDM` on the variance-exploding path :math:`\sigma(t) = t`
  (:class:`gmbook.samplers.VEPath`), with the book's verbs: ``loss`` (EDM's weighted
  denoising loss with log-normal noise levels, eq. ``eq-sde-edm-loss``), ``sample`` (any
  sampler of :mod:`gmbook.samplers` on the model's :meth:`EDM.prediction`, by default
  DPM-Solver++(2M) on EDM's time grid) and ``log_prob`` (the probability-flow ODE, eq.
  ``eq-sde-pf-ode``, with the instantaneous change of variables, eq.
  ``eq-sde-change-of-variables``, and an exact divergence). The reverse-time SDE (eq.
  ``eq-sde-reverse``) is run by :func:`gmbook.samplers.euler_maruyama` and
  :func:`gmbook.samplers.heun_churn` on the same prediction.

The defaults of :class:`EDM` are the recipe calibrated on the standardized two moons
(``sigma_data = 1``); the chapter measures each choice.

References: Song et al. (2021), *Score-based generative modeling through stochastic
differential equations*; Karras et al. (2022), *Elucidating the design space of
diffusion-based generative models*; Anderson (1982), *Reverse-time diffusion equation
models*.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gmbook import samplers
from gmbook._checks import check_generator, check_int, check_positive, check_real, describe
from gmbook._random import rand, randn
from gmbook.nets import MLP, append_dims
from gmbook.score import divergence

__all__ = ["EDM", "edm_coefficients", "forward_sde"]

_LIMIT_STEP = 1e-12
"""Where :meth:`gmbook.samplers.GaussianPath.diffusion2` is :math:`0 \\cdot \\infty` (at a
time with :math:`\\sigma_t = 0`), :func:`forward_sde` takes its limit from the right,
evaluated this far (relative to ``t_max``) to the right."""


# --------------------------------------------------------------------------- forward SDE


def forward_sde(path: samplers.GaussianPath) -> tuple[Callable[[Tensor, Tensor], Tensor],
                                                      Callable[[Tensor, Tensor], Tensor]]:
    r"""The forward SDE whose marginals are those of a Gaussian path, eq. ``eq-sde-forward``.

    .. math::

        \mathrm d x = f_t\, x\, \mathrm d t + g_t\, \mathrm d W, \qquad
        f_t = \frac{\dot\alpha_t}{\alpha_t}, \qquad
        g_t^2 = \frac{\mathrm d \sigma_t^2}{\mathrm d t} - 2 f_t \sigma_t^2

    (:meth:`gmbook.samplers.GaussianPath.diffusion2`): started at :math:`x_0`, its
    law at time :math:`t` is :math:`\mathcal N(\alpha_t x_0, \sigma_t^2 I)`. For
    :class:`gmbook.samplers.VPPath` this is the variance-preserving SDE
    :math:`\mathrm d x = -\tfrac12 \beta(t) x\, \mathrm d t + \sqrt{\beta(t)}\, \mathrm d W`,
    for :class:`gmbook.samplers.VEPath` the variance-exploding
    :math:`\mathrm d x = \sqrt{2t}\, \mathrm d W`.

    Args:
        path: a :class:`gmbook.samplers.GaussianPath` with :math:`\alpha_t > 0`.

    Returns:
        ``(drift, diffusion)``, both called as ``fn(x, t)`` with ``x`` ``(B, *D)`` and
        ``t`` a 0-dim tensor, as :func:`gmbook.stochastic.integrate_sde` calls them: the
        drift :math:`f_t x` of shape ``(B, *D)`` and the diffusion coefficient
        :math:`g_t` as a 0-dim tensor (the same for every coordinate). At a time where
        :math:`\sigma_t = 0` (the start of a VP path), where the formula is
        :math:`0 \cdot \infty` in floating point, :math:`g_t` is its limit from the right.

    Example:
        >>> drift, g = forward_sde(samplers.VEPath())
        >>> x = torch.ones(3, 2)
        >>> drift(x, torch.tensor(2.0)).abs().max().item(), g(x, torch.tensor(2.0)).item()
        (0.0, 2.0)
    """
    if not isinstance(path, samplers.GaussianPath):
        raise TypeError(f"path must be a gmbook.samplers.GaussianPath, got {describe(path)}")

    def drift(x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return (path.d_alpha(t) / path.alpha(t)).to(x) * x

    def diffusion(x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        g2 = path.diffusion2(t)
        if not bool(torch.isfinite(g2).all()):  # 0 * inf where sigma_t = 0: the limit
            g2 = path.diffusion2(t + _LIMIT_STEP * max(1.0, path.t_max))
        return g2.clamp_min(0).sqrt().to(x)

    return drift, diffusion


# --------------------------------------------------------------------------- EDM


def edm_coefficients(sigma: Tensor | float, sigma_data: float = 1.0
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""EDM's preconditioning at noise level :math:`\sigma`, eq. ``eq-sde-edm-precond``
    (Karras et al., 2022, Table 1):

    .. math::

        c_{\mathrm{skip}} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
        c_{\mathrm{out}} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{\mathrm{in}} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{\mathrm{noise}} = \tfrac14 \log \sigma ,

    for the denoiser :math:`D(x; \sigma) = c_{\mathrm{skip}} x + c_{\mathrm{out}}
    F(c_{\mathrm{in}} x; c_{\mathrm{noise}})`. For data of variance :math:`\sigma_d^2` per
    coordinate and :math:`x = x_0 + \sigma \varepsilon`, the network's input
    :math:`c_{\mathrm{in}} x` and its training target :math:`(x_0 - c_{\mathrm{skip}} x) /
    c_{\mathrm{out}}` both have unit variance at every :math:`\sigma`.

    Args:
        sigma: noise levels :math:`\sigma > 0`, a number or a tensor of any shape.
        sigma_data: :math:`\sigma_d > 0`, the data's standard deviation (1 after
            standardizing).

    Returns:
        ``(c_skip, c_out, c_in, c_noise)``, tensors of the shape of ``sigma`` (float64 for
        a number, else ``sigma``'s dtype).

    Example:
        >>> [round(float(c), 4) for c in edm_coefficients(1.0)]
        [0.5, 0.7071, 0.7071, 0.0]
    """
    sd = check_positive("sigma_data", sigma_data)
    if isinstance(sigma, bool) or not isinstance(sigma, (Tensor, int, float)):
        raise TypeError(f"sigma must be a number or a tensor, got {describe(sigma)}")
    s = torch.as_tensor(sigma, dtype=torch.float64) if not isinstance(sigma, Tensor) \
        else sigma
    if not s.is_floating_point():
        s = s.double()
    if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ValueError("sigma must be finite and > 0")
    s2 = s**2 + sd**2
    return sd**2 / s2, s * sd / s2.sqrt(), s2.rsqrt(), s.log() / 4


class EDM(nn.Module):
    r"""A diffusion model in EDM's parameterisation (Karras et al., 2022).

    The forward process is the variance-exploding path :math:`x_\sigma = x_0 + \sigma
    \varepsilon` (:class:`gmbook.samplers.VEPath`, time :math:`t = \sigma`). The network
    :math:`F_\theta` is wrapped by the preconditioning of :func:`edm_coefficients` into a
    denoiser :math:`D_\theta(x; \sigma) \approx \mathbb E[x_0 \mid x_\sigma = x]`,
    trained by EDM's loss, eq. ``eq-sde-edm-loss``,

    .. math::

        \mathcal L(\theta) = \mathbb E_{\sigma, x_0, \varepsilon}\,
        \lambda(\sigma)\, \big\| D_\theta(x_0 + \sigma\varepsilon; \sigma) - x_0 \big\|^2,
        \qquad \ln \sigma \sim \mathcal N(P_{\mathrm{mean}}, P_{\mathrm{std}}^2), \quad
        \lambda(\sigma) = c_{\mathrm{out}}(\sigma)^{-2},

    i.e. :math:`\| F_\theta(c_{\mathrm{in}} x; c_{\mathrm{noise}}) - (x_0 -
    c_{\mathrm{skip}} x) / c_{\mathrm{out}} \|^2`, averaged over the dimensions. Without
    ``precondition`` the network is the denoiser itself, :math:`D_\theta(x; \sigma) =
    F_\theta(x; c_{\mathrm{noise}})`, with weight 1 unless ``weighting="edm"`` asks for
    :math:`\lambda(\sigma) = c_{\mathrm{out}}(\sigma)^{-2}` (the two choices can then be
    measured apart).

    Samples integrate the probability-flow ODE :math:`\mathrm d x / \mathrm d\sigma =
    (x - D_\theta(x; \sigma)) / \sigma` (eq. ``eq-sde-pf-ode``) or a reverse SDE from
    :math:`\sigma_{\max}` to 0 with a sampler of :mod:`gmbook.samplers`, from
    :math:`x \sim \mathcal N(0, (\sigma_{\max}^2 + \sigma_d^2) I)`, the isotropic Gaussian
    with the per-axis variance of the marginal at :math:`\sigma_{\max}` (EDM uses
    :math:`\sigma_{\max}^2` alone, a slightly too narrow start when :math:`\sigma_{\max}` is
    small; in the calibration runs on the two moons with :math:`\sigma_{\max} = 3` the
    paired difference of the two starts was within its standard error).

    The defaults are the recipe calibrated on the standardized two moons
    (``sigma_data = 1``): EDM's own log-normal training levels (:math:`P_{\mathrm{mean}} =
    -1.2`, :math:`P_{\mathrm{std}} = 1.2`; the three other choices tried in the calibration
    runs made no difference the scorecard could resolve) and, for sampling, a grid far shorter than the image models' (their
    :math:`\sigma_{\max} = 80` wastes most steps where the moons' marginal is already
    Gaussian, and :math:`\sigma_{\min} = 0.002` a step where the data are already
    clean): :math:`\sigma_{\max} = 3`, :math:`\sigma_{\min} = 0.02`, :math:`\rho = 7`,
    run by DPM-Solver++(2M) with 10 network calls. At 5 calls, ``grid(5, sigma_min=0.1,
    rho=5)`` is better in W2, at the price of moons that are slightly too thin (the last
    step is the denoiser at :math:`\sigma = 0.1`).

    Args:
        net: the network :math:`F_\theta`, called as ``net(x, c_noise)`` with ``x``
            ``(B, prod D)`` (flattened) and ``c_noise`` of shape ``(B,)`` or 0-dim (one
            level for the batch, as :class:`gmbook.nets.MLP` accepts), e.g.
            ``MLP(2, time_dim=32)``.
        shape: the shape ``D`` of one data point.
        sigma_data: :math:`\sigma_d`, the data's standard deviation per coordinate.
        p_mean, p_std: the log-normal training distribution of :math:`\sigma`.
        levels: the training distribution of :math:`\sigma`: ``"lognormal"`` (EDM's,
            with ``p_mean`` and ``p_std``) or ``"loguniform"`` (:math:`\ln\sigma` uniform
            on :math:`[\ln\sigma_{\min}, \ln\sigma_{\max}]`, the ends of the sampling
            grid; ``p_mean`` and ``p_std`` are then unused).
        sigma_min, sigma_max: the ends of the default sampling grid (:meth:`grid`);
            :meth:`log_prob` integrates up to ``sigma_max`` too.
        rho: the exponent of EDM's time grid (:func:`gmbook.samplers.karras_grid`).
        precondition: use EDM's preconditioning (else :math:`D_\theta = F_\theta`).
        weighting: the loss weight :math:`\lambda(\sigma)`: ``"edm"`` for
            :math:`c_{\mathrm{out}}(\sigma)^{-2}` (with :func:`edm_coefficients`' own
            :math:`c_{\mathrm{out}}`, preconditioned or not), ``"unit"`` for 1; ``None``
            (default) for ``"edm"`` with preconditioning and ``"unit"`` without.

    Example:
        >>> model = EDM(MLP(2, hidden=16, time_dim=8))
        >>> model.loss(torch.randn(8, 2)).shape
        torch.Size([])
        >>> model.denoise(torch.randn(5, 2), torch.tensor(0.5)).shape
        torch.Size([5, 2])
    """

    def __init__(self, net: nn.Module, *, shape: tuple[int, ...] = (2,),
                 sigma_data: float = 1.0, p_mean: float = -1.2, p_std: float = 1.2,
                 sigma_min: float = 0.02, sigma_max: float = 3.0, rho: float = 7.0,
                 precondition: bool = True, weighting: str | None = None,
                 levels: str = "lognormal") -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"EDM: net must be an nn.Module, got {describe(net)}")
        if (not isinstance(shape, tuple) or not shape
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                           for s in shape)):
            raise ValueError(f"EDM: shape must be a tuple of positive ints, got {shape!r}")
        self.net, self.shape = net, shape
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.p_mean = check_real("p_mean", p_mean)
        self.p_std = check_positive("p_std", p_std)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
        self.rho = check_positive("rho", rho)
        if not isinstance(precondition, bool):
            raise TypeError(f"precondition must be a bool, got {describe(precondition)}")
        self.precondition = precondition
        if weighting is None:
            weighting = "edm" if precondition else "unit"
        if weighting not in ("edm", "unit"):
            raise ValueError(f"weighting must be 'edm', 'unit' or None, got {weighting!r}")
        self.weighting = weighting
        if levels not in ("lognormal", "loguniform"):
            raise ValueError(f"levels must be 'lognormal' or 'loguniform', got {levels!r}")
        self.levels = levels

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, sigma_data={self.sigma_data:g}, p_mean={self.p_mean:g}, "
                f"p_std={self.p_std:g}, sigma_min={self.sigma_min:g}, "
                f"sigma_max={self.sigma_max:g}, rho={self.rho:g}, "
                f"precondition={self.precondition}, weighting={self.weighting!r}, "
                f"levels={self.levels!r}")

    def _check_batch(self, x: object, name: str = "x") -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {describe(x)}")
        if tuple(x.shape[1:]) != self.shape or x.ndim < 2:
            raise ValueError(f"{name} must have shape (B, *{self.shape}), got {tuple(x.shape)}")
        return x

    def _coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.precondition:
            return edm_coefficients(sigma, self.sigma_data)
        one = torch.ones_like(sigma)
        return 0 * one, one, one, sigma.log() / 4

    def denoise(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        r"""The denoiser :math:`D_\theta(x; \sigma) = c_{\mathrm{skip}} x + c_{\mathrm{out}}
        F_\theta(c_{\mathrm{in}} x; c_{\mathrm{noise}})`, eq. ``eq-sde-edm-precond``.

        Args:
            x: noisy points, shape ``(B, *D)``.
            sigma: their noise levels, shape ``(B,)``, or one level (a number or 0-dim
                tensor) for the whole batch (the network's time branch then runs once).
            cond: a condition passed unchanged to the network as its third argument,
                ``net(x, c_noise, cond)`` (e.g. class labels,
                :class:`gmbook.guidance.ConditionalEDM`); ``None``: ``net(x, c_noise)``.

        Returns:
            The denoised points, shape ``(B, *D)``.
        """
        x = self._check_batch(x)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 1 and sigma.numel() == x.shape[0] and sigma.numel() > 0 \
                and bool((sigma == sigma[0]).all()):
            sigma = sigma[0]  # one level for the batch: the time branch runs once
        if sigma.ndim not in (0, 1) or (sigma.ndim == 1 and sigma.shape[0] != x.shape[0]):
            raise ValueError(f"sigma must be a number or have shape (B,) = ({x.shape[0]},), "
                             f"got {tuple(sigma.shape)}")
        c_skip, c_out, c_in, c_noise = self._coefficients(sigma)
        b = (lambda c: append_dims(c, x.ndim)) if sigma.ndim == 1 else (lambda c: c)
        f = self._net((b(c_in) * x).flatten(1), c_noise, cond).view_as(x)  # (B, *D)
        return b(c_skip) * x + b(c_out) * f

    def _net(self, z: Tensor, c_noise: Tensor, cond: Tensor | None) -> Tensor:
        return self.net(z, c_noise) if cond is None else self.net(z, c_noise, cond)

    def loss(self, x: Tensor, *, cond: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        r"""EDM's weighted denoising loss on a minibatch, eq. ``eq-sde-edm-loss``.

        Args:
            x: clean data, shape ``(B, *D)``.
            cond: a condition per point passed to the network, as in :meth:`denoise`.
            generator: randomness of the noise levels and the noise.

        Returns:
            The scalar loss.
        """
        x = self._check_batch(x)
        generator = check_generator(generator)
        if self.levels == "lognormal":
            z = randn((x.shape[0],), like=x, generator=generator)
            sigma = (self.p_mean + self.p_std * z).exp()  # (B,), log-normal
        else:  # log-uniform on [sigma_min, sigma_max]
            u = rand((x.shape[0],), like=x, generator=generator)
            lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
            sigma = (lo + (hi - lo) * u).exp()  # (B,)
        eps = randn(x.shape, like=x, generator=generator)
        x_noisy = x + append_dims(sigma, x.ndim) * eps
        c_skip, c_out, c_in, c_noise = (append_dims(c, x.ndim)
                                        for c in self._coefficients(sigma))
        f = self._net((c_in * x_noisy).flatten(1), c_noise.flatten(), cond).view_as(x)
        target = (x - c_skip * x_noisy) / c_out  # unit variance with preconditioning
        # ||F - target||^2 = ||D - x0||^2 / c_out^2: the weight c_out^-2 of EDM when the
        # preconditioning's own c_out is EDM's; otherwise reweight to the asked lambda
        err = (f - target) ** 2
        edm_weight = self.weighting == "edm"
        if edm_weight != self.precondition:
            c_edm = append_dims(edm_coefficients(sigma, self.sigma_data)[1], x.ndim)
            err = err * (c_out / c_edm) ** 2 if edm_weight else err * c_out**2
        return err.mean()

    def path(self) -> samplers.VEPath:
        r"""The variance-exploding path :math:`\sigma_t = t` on :math:`[0, \sigma_{\max}]`."""
        return samplers.VEPath(self.sigma_max)

    def prediction(self) -> samplers.Prediction:
        r"""The denoiser as an ``"x0"`` :class:`gmbook.samplers.Prediction` on :meth:`path`
        (time :math:`t = \sigma`), for the samplers of :mod:`gmbook.samplers`."""
        return samplers.Prediction(self.denoise, "x0", self.path())

    def grid(self, steps: int, *, sigma_min: float | None = None,
             sigma_max: float | None = None, rho: float | None = None) -> Tensor:
        r"""EDM's time grid (:func:`gmbook.samplers.karras_grid`): ``steps`` noise levels
        from :math:`\sigma_{\max}` to :math:`\sigma_{\min}`, evenly spaced in
        :math:`\sigma^{1/\rho}`, then 0; shape ``(steps + 1,)``.

        Args:
            steps: number of noise levels.
            sigma_min, sigma_max, rho: override the model's defaults.
        """
        steps = check_int("steps", steps)
        return samplers.karras_grid(
            self.path(), steps,
            sigma_min=self.sigma_min if sigma_min is None else sigma_min,
            sigma_max=self.sigma_max if sigma_max is None else sigma_max,
            rho=self.rho if rho is None else rho)

    def prior(self, n: int, *, sigma: float | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        r"""Starting points :math:`x \sim \mathcal N(0, (\sigma^2 + \sigma_d^2) I)` at
        noise level :math:`\sigma` (default :math:`\sigma_{\max}`), the Gaussian with the
        covariance of the marginal there; shape ``(n, *D)``."""
        n = check_int("n", n)
        sigma = self.sigma_max if sigma is None else check_positive("sigma", sigma)
        p = next(self.parameters())
        z = randn((n, *self.shape), device=p.device, dtype=p.dtype,
                  generator=check_generator(generator))
        return math.sqrt(sigma**2 + self.sigma_data**2) * z

    @torch.no_grad()
    def sample(self, n: int, *, steps: int = 10,
               sampler: Callable[..., samplers.SamplePath] | None = None,
               grid: Tensor | None = None, x: Tensor | None = None,
               generator: torch.Generator | None = None, return_path: bool = False,
               **options) -> Tensor | samplers.SamplePath:
        r"""Generate with a sampler of :mod:`gmbook.samplers` on :meth:`prediction`.

        Args:
            n: number of samples.
            steps: noise levels of the default grid (:meth:`grid`); ignored if ``grid`` is
                given.
            sampler: a sampler with the common signature; default
                :func:`gmbook.samplers.dpm_solver_pp_2m` (one network call per level:
                ``nfe = steps``).
            grid: decreasing times (noise levels) ``(K + 1,)``; default :meth:`grid`.
            x: starting points ``(n, *D)`` at ``grid[0]``; default :meth:`prior` at
                ``grid[0]``.
            generator: randomness of the starting points and of a stochastic sampler.
            return_path: return the :class:`gmbook.samplers.SamplePath`.
            **options: passed to the sampler (e.g. ``churn``, ``eta``).

        Returns:
            Samples ``(n, *D)``, or with ``return_path`` the sampler's path.
        """
        n = check_int("n", n)
        generator = check_generator(generator)
        if sampler is not None and not callable(sampler):
            raise TypeError(f"sampler must be a sampler function, got {describe(sampler)}")
        grid = self.grid(steps) if grid is None else \
            torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
        if len(grid) < 2 or not float(grid[0]) > 0:
            raise ValueError("grid must hold at least 2 decreasing noise levels, the first > 0")
        if x is None:
            x = self.prior(n, sigma=float(grid[0]), generator=generator)
        else:
            x = self._check_batch(x)
            if x.shape[0] != n:
                raise ValueError(f"x must have {n} rows, got {x.shape[0]}")
        sampler = samplers.dpm_solver_pp_2m if sampler is None else sampler
        out = sampler(self.prediction(), x, grid, generator=generator,
                      return_path=return_path, **options)
        return out if return_path else out.samples

    @torch.no_grad()
    def nll_bound(self, x: Tensor, *, levels: int = 64, sigma_min: float = 0.002,
                  generator: torch.Generator | None = None) -> Tensor:
        r"""The continuous-time variational bound on :math:`-\log p(x)` of the reverse SDE
        with this denoiser (Kingma et al., 2021, on the VE path; Song et al., 2021),
        eq. ``eq-sde-elbo``, in nats per example:

        .. math::

            \mathrm{KL}\big(\mathcal N(x, \sigma_{\max}^2 I) \,\|\, \pi\big)
            + \tfrac D2 \log(2\pi e\, \sigma_{\min}^2)
            + \int_{\ln\sigma_{\min}}^{\ln\sigma_{\max}}
              \mathbb E_\varepsilon \frac{\|x - D_\theta(x + \sigma\varepsilon;
              \sigma)\|^2}{\sigma^2}\, \mathrm d\ln\sigma ,

        with the prior :math:`\pi = \mathcal N(0, (\sigma_{\max}^2 + \sigma_d^2) I)` of
        :meth:`prior` and the decoder :math:`p(x \mid x_{\sigma_{\min}}) = \mathcal
        N(x; x_{\sigma_{\min}}, \sigma_{\min}^2 I)`, whose expected negative log-density
        is the middle term. The integral (the diffusion term, :math:`\frac12\int
        -\mathrm{SNR}'\, \|x - \hat x_0\|^2`, with :math:`\mathrm{SNR} = \sigma^{-2}`) is
        estimated by Monte Carlo with ``levels`` stratified levels per example, uniform in
        :math:`\ln\sigma`, and one noise draw each: unbiased, so the mean over examples
        estimates the bound's mean.

        Args:
            x: clean points, shape ``(B, *D)``.
            levels: Monte Carlo levels per example.
            sigma_min: the smallest level (the decoder's standard deviation).
            generator: randomness of the levels and the noise.

        Returns:
            The bound, shape ``(B,)``.
        """
        x = self._check_batch(x)
        levels = check_int("levels", levels)
        sigma_min = check_positive("sigma_min", sigma_min)
        if not sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min must be below sigma_max = {self.sigma_max}, "
                             f"got {sigma_min}")
        generator = check_generator(generator)
        b, d = x.shape[0], int(math.prod(self.shape))
        lo, hi = math.log(sigma_min), math.log(self.sigma_max)
        strata = torch.arange(levels, dtype=x.dtype, device=x.device)  # (K,)
        u = (strata + rand((b, levels), like=x, generator=generator)) / levels  # (B, K)
        sigma = (lo + (hi - lo) * u).exp().reshape(-1)  # (B K,)
        x0 = x.repeat_interleave(levels, dim=0)  # (B K, *D)
        eps = randn(x0.shape, like=x, generator=generator)
        err = (self.denoise(x0 + append_dims(sigma, x.ndim) * eps, sigma) - x0)
        err = err.square().flatten(1).sum(1) / sigma**2  # (B K,)
        diffusion = (hi - lo) * err.reshape(b, levels).mean(1)  # (B,)
        var = self.sigma_max**2 + self.sigma_data**2
        sq = x.flatten(1).square().sum(1)
        prior_kl = 0.5 * (d * self.sigma_max**2 / var + sq / var - d
                          - d * math.log(self.sigma_max**2 / var))
        decoder = 0.5 * d * (math.log(2 * math.pi * sigma_min**2) + 1)
        return prior_kl + decoder + diffusion

    def log_prob(self, x: Tensor, *, sigma_min: float = 0.002, rtol: float = 1e-5,
                 atol: float = 1e-5) -> Tensor:
        r"""Log-density by the probability-flow ODE, eq. ``eq-sde-change-of-variables``.

        In :math:`\tau = \log\sigma` the probability-flow ODE is :math:`\mathrm d x /
        \mathrm d\tau = x - D_\theta(x; e^\tau)` (eq. ``eq-sde-pf-ode`` times
        :math:`\sigma`); integrating it with the log-density along the trajectory,

        .. math::

            \frac{\mathrm d}{\mathrm d\tau} \log p_\sigma(x_\tau) =
            -\nabla\cdot\big(x - D_\theta(x; e^\tau)\big),

        from ``sigma_min`` to :math:`\sigma_{\max}` (adaptive ``dopri5``,
        :func:`gmbook.flow_matching.odeint`; exact divergence, one backward pass per
        dimension) gives, with :math:`\sigma_{\min}` = ``sigma_min``,
        :math:`\log p_{\sigma_{\min}}(x) = \log \mathcal N(x_{\sigma_{\max}};
        0, (\sigma_{\max}^2 + \sigma_d^2) I) + \int \nabla\cdot(x - D_\theta)\,
        \mathrm d\tau`. Two approximations remain: the Gaussian prior at
        :math:`\sigma_{\max}` (exact only for Gaussian data) and the density at
        :math:`\sigma_{\min}`, the data's convolved with :math:`\mathcal N(0,
        \sigma_{\min}^2 I)`.

        Args:
            x: points, shape ``(B, *D)``.
            sigma_min: the noise level the density is taken at, by default smaller than
                the sampling grid's :math:`\sigma_{\min}`: a few-step sampler wants that one
                large, while the density of the noised data moves away from the data's as
                it grows.
            rtol, atol: tolerances of ``dopri5``.

        Returns:
            Log-densities, shape ``(B,)``.
        """
        from gmbook.flow_matching import odeint

        x = self._check_batch(x)
        rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
        sigma_min = check_positive("sigma_min", sigma_min)
        if not sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min must be below sigma_max = {self.sigma_max}, "
                             f"got {sigma_min}")
        d = int(math.prod(self.shape))
        b = x.shape[0]

        def aug(state: Tensor, tau: Tensor) -> Tensor:
            with torch.enable_grad():
                z = state[:, :d].detach().requires_grad_(True)  # (B, d)
                v = z - self.denoise(z.view(b, *self.shape), tau.exp()).flatten(1)
                div = divergence(v, z, create_graph=False)  # (B,)
            return torch.cat([v.detach(), -div.detach()[:, None]], dim=1)  # (B, d + 1)

        state = torch.cat([x.flatten(1), x.new_zeros(b, 1)], dim=1)
        out = odeint(aug, state, t0=math.log(sigma_min), t1=math.log(self.sigma_max),
                     solver="dopri5", rtol=rtol, atol=atol, scalar_t=True)
        z, delta = out[:, :d], out[:, d]  # delta = -int div dtau
        var = self.sigma_max**2 + self.sigma_data**2
        log_prior = -0.5 * (z**2).sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)
        return log_prior - delta
