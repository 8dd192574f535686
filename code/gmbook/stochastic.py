r"""Brownian motion and stochastic calculus (Appendix B, ``book/appendix/stochastic_calculus.md``).

The pieces the appendix derives and checks by simulation, each citing its equation label:

* Brownian paths from a generator (:func:`brownian_motion`, eq. ``eq-sc-bm-increments``),
  the scaled random walk that converges to it (:func:`random_walk`, eq.
  ``eq-sc-random-walk``), and the quadratic variation (:func:`quadratic_variation`, eq.
  ``eq-sc-qv``);
* the left-point (Ito) and endpoint-average (Stratonovich) sums (:func:`ito_sum`,
  :func:`stratonovich_sum`, eqs. ``eq-sc-ito-sum`` and ``eq-sc-strat-sum``);
* one Euler-Maruyama and one Milstein step (:func:`em_step`, :func:`milstein_step`, eqs.
  ``eq-sc-em`` and ``eq-sc-milstein``) and one integrator (:func:`integrate_sde`) for
  :math:`\mathrm d x = f(x, t)\, \mathrm d t + g(x, t)\, \mathrm d W` with diagonal noise;
* the exact Ornstein-Uhlenbeck transition (:func:`ou_transition`, eq.
  ``eq-sc-ou-transition``), the exact geometric Brownian motion (:func:`gbm_exact`, eq.
  ``eq-sc-gbm-solution``) and the OU process as a Gaussian path of
  :mod:`gmbook.samplers` (:class:`OUPath`), so that the reverse-time SDE is run by
  :func:`gmbook.samplers.euler_maruyama`;
* a conservative 1-D Fokker-Planck solver (:func:`fokker_planck_1d`, eq. ``eq-sc-fp``);
* the Girsanov KL divergence between two path measures (:func:`girsanov_kl`, eq.
  ``eq-sc-girsanov-kl``).

Noise is drawn through ``gmbook._random.randn``; nothing here seeds a global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gmbook._checks import (
    check_float_tensor,
    check_generator,
    check_int,
    check_nonnegative,
    check_positive,
    describe,
)
from gmbook._random import rand, randn
from gmbook.samplers import GaussianPath

__all__ = [
    "OUPath",
    "SDEPath",
    "brownian_motion",
    "em_step",
    "fokker_planck_1d",
    "gbm_exact",
    "girsanov_kl",
    "integrate_sde",
    "ito_sum",
    "milstein_step",
    "ou_transition",
    "quadratic_variation",
    "random_walk",
    "stratonovich_sum",
]

def _check_tensor(name: str, x: object, min_ndim: int = 1) -> Tensor:
    x = check_float_tensor(name, x)
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape "
                         f"{tuple(x.shape)}")
    return x


def _check_callable(name: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {describe(fn)}")


# --------------------------------------------------------------------------- Brownian motion


def brownian_motion(n_paths: int, n_steps: int, t_max: float = 1.0, *,
                    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""Brownian paths on a uniform grid, from independent Gaussian increments
    (eq. ``eq-sc-bm-increments``): :math:`W_0 = 0`,
    :math:`W_{t_{k+1}} - W_{t_k} \sim \mathcal N(0, h)`, :math:`h = t_{\max} / K`.

    Args:
        n_paths: number of independent paths ``B``.
        n_steps: number of steps ``K``.
        t_max: final time :math:`> 0`.
        dtype, device: of the result (float64 by default).
        generator: source of the increments.

    Returns:
        ``(times, W)`` of shapes ``(K + 1,)`` and ``(B, K + 1)``.

    Example:
        >>> t, w = brownian_motion(3, 4, generator=torch.Generator().manual_seed(0))
        >>> t.shape, w.shape, w[:, 0].abs().max().item()
        (torch.Size([5]), torch.Size([3, 5]), 0.0)
    """
    b, k = check_int("n_paths", n_paths), check_int("n_steps", n_steps)
    t_max = check_positive("t_max", t_max)
    generator = check_generator(generator)
    h = t_max / k
    dw = math.sqrt(h) * randn((b, k), device=device, dtype=dtype, generator=generator)
    w = torch.cat([torch.zeros(b, 1, dtype=dtype, device=dw.device), dw.cumsum(1)], 1)
    times = torch.linspace(0.0, t_max, k + 1, dtype=dtype, device=dw.device)
    return times, w


def random_walk(n_paths: int, n_steps: int, t_max: float = 1.0, *,
                dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""The scaled simple random walk of eq. ``eq-sc-random-walk``: steps of
    :math:`\pm\sqrt h` with probability 1/2 each, :math:`h = t_{\max} / K`. By the central
    limit theorem its value at a fixed time tends to :math:`\mathcal N(0, t)` as
    :math:`K \to \infty` (Donsker's theorem: the whole path tends to Brownian motion).

    Args:
        n_paths, n_steps, t_max, dtype, device, generator: as in :func:`brownian_motion`.

    Returns:
        ``(times, S)`` of shapes ``(K + 1,)`` and ``(B, K + 1)``.
    """
    b, k = check_int("n_paths", n_paths), check_int("n_steps", n_steps)
    t_max = check_positive("t_max", t_max)
    generator = check_generator(generator)
    u = rand((b, k), device=device, dtype=dtype, generator=generator)
    steps = math.sqrt(t_max / k) * torch.where(u < 0.5, -1.0, 1.0).to(dtype)
    s = torch.cat([torch.zeros(b, 1, dtype=dtype, device=steps.device), steps.cumsum(1)], 1)
    return torch.linspace(0.0, t_max, k + 1, dtype=dtype, device=steps.device), s


def quadratic_variation(w: Tensor) -> Tensor:
    r"""The sum of squared increments along the last dimension (eq. ``eq-sc-qv``):
    :math:`\sum_k (W_{t_{k+1}} - W_{t_k})^2`, which tends to :math:`t` in mean square.

    Args:
        w: paths, shape ``(*B, K + 1)``.

    Returns:
        Shape ``(*B,)``.
    """
    w = _check_tensor("w", w)
    if w.shape[-1] < 2:
        raise ValueError(f"w needs at least 2 grid points on its last dimension, got "
                         f"{tuple(w.shape)}")
    return w.diff(dim=-1).pow(2).sum(-1)


def _check_pair(h: Tensor, w: Tensor) -> None:
    _check_tensor("h", h)
    _check_tensor("w", w)
    if h.shape != w.shape or w.shape[-1] < 2:
        raise ValueError(f"h and w must have the same shape (*B, K + 1) with K >= 1, got "
                         f"{tuple(h.shape)} and {tuple(w.shape)}")


def ito_sum(h: Tensor, w: Tensor) -> Tensor:
    r"""The left-point sum :math:`\sum_k h_{t_k} (W_{t_{k+1}} - W_{t_k})` of eq.
    ``eq-sc-ito-sum``, whose limit is the Ito integral :math:`\int h\, \mathrm d W`.

    Args:
        h: the integrand on the grid, shape ``(*B, K + 1)`` (its last value is not used).
        w: the Brownian paths on the same grid, shape ``(*B, K + 1)``.

    Returns:
        Shape ``(*B,)``.
    """
    _check_pair(h, w)
    return (h[..., :-1] * w.diff(dim=-1)).sum(-1)


def stratonovich_sum(h: Tensor, w: Tensor) -> Tensor:
    r"""The sum :math:`\sum_k \tfrac12 (h_{t_k} + h_{t_{k+1}}) (W_{t_{k+1}} - W_{t_k})`
    of eq. ``eq-sc-strat-sum`` (the integrand at the average of its endpoint values),
    whose limit is the Stratonovich integral :math:`\int h \circ \mathrm d W`.

    Args:
        h, w: as in :func:`ito_sum`.

    Returns:
        Shape ``(*B,)``.
    """
    _check_pair(h, w)
    return (0.5 * (h[..., :-1] + h[..., 1:]) * w.diff(dim=-1)).sum(-1)


# --------------------------------------------------------------------------- SDE integrators


def _check_step(f: object, g: object, x: object, h: object, dw: object) -> tuple[Tensor, float]:
    _check_callable("f", f)
    _check_callable("g", g)
    x = _check_tensor("x", x)
    dw = _check_tensor("dw", dw)
    if dw.shape != x.shape:
        raise ValueError(f"dw must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(dw.shape)}")
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) \
            or h == 0:
        raise ValueError(f"h must be a finite nonzero number, got {h!r}")
    return x, float(h)


def em_step(f: Callable, g: Callable, x: Tensor, t: float, h: float, dw: Tensor) -> Tensor:
    r"""One Euler-Maruyama step (eq. ``eq-sc-em``):
    :math:`x + f(x, t)\, h + g(x, t)\, \Delta W`.

    Args:
        f: the drift, ``f(x, t)`` with ``x`` ``(B, *D)`` and ``t`` a 0-dim tensor,
            returning ``(B, *D)``.
        g: the diffusion coefficient, ``g(x, t)``, same shapes (diagonal noise: each
            coordinate has its own Brownian motion).
        x: the states at time ``t``, shape ``(B, *D)``.
        t: the current time.
        h: the step.
        dw: the Brownian increments over the step, :math:`\mathcal N(0, h)` each, shape
            of ``x``.

    Returns:
        The states at ``t + h``, shape of ``x``.
    """
    x, h = _check_step(f, g, x, h, dw)
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return x + f(x, tt) * h + g(x, tt) * dw


def milstein_step(f: Callable, g: Callable, dg: Callable, x: Tensor, t: float, h: float,
                  dw: Tensor) -> Tensor:
    r"""One Milstein step (eq. ``eq-sc-milstein``):
    :math:`x + f h + g\, \Delta W + \tfrac12 g\, \partial_x g\, (\Delta W^2 - h)`.

    Args:
        f, g, x, t, h, dw: as in :func:`em_step`.
        dg: :math:`\partial g / \partial x` (elementwise, diagonal noise), ``dg(x, t)``.

    Returns:
        The states at ``t + h``, shape of ``x``.
    """
    x, h = _check_step(f, g, x, h, dw)
    _check_callable("dg", dg)
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    gx = g(x, tt)
    return x + f(x, tt) * h + gx * dw + 0.5 * gx * dg(x, tt) * (dw**2 - h)


@dataclass
class SDEPath:
    r"""What :func:`integrate_sde` returns.

    Attributes:
        samples: the states at the last grid time, shape ``(B, *D)``.
        times: the grid, shape ``(K + 1,)``.
        states: with ``return_path``, every state, ``(K + 1, B, *D)``; else ``None``.
    """

    samples: Tensor
    times: Tensor
    states: Tensor | None = None


def integrate_sde(f: Callable, g: Callable, x0: Tensor, grid: Tensor, *, scheme: str = "em",
                  dg: Callable | None = None, increments: Tensor | None = None,
                  generator: torch.Generator | None = None,
                  return_path: bool = False) -> SDEPath:
    r"""Integrate :math:`\mathrm d x = f(x, t)\, \mathrm d t + g(x, t)\, \mathrm d W` on a
    time grid with Euler-Maruyama (eq. ``eq-sc-em``) or Milstein (eq. ``eq-sc-milstein``).

    Args:
        f, g: drift and diffusion coefficient, as in :func:`em_step`.
        x0: initial states, shape ``(B, *D)``.
        grid: increasing times, shape ``(K + 1,)``.
        scheme: ``"em"`` or ``"milstein"`` (which needs ``dg``).
        dg: :math:`\partial g / \partial x`, for Milstein.
        increments: the Brownian increments, shape ``(K, B, *D)``, step ``k`` with
            variance ``grid[k+1] - grid[k]``; drawn from ``generator`` when ``None``. Pass
            them to drive two schemes or two step sizes by one Brownian path (sum
            consecutive fine increments to get the coarse ones).
        generator: source of the increments when they are not given.
        return_path: also return every state.

    Returns:
        An :class:`SDEPath`.
    """
    x = _check_tensor("x0", x0)
    grid = _check_tensor("grid", grid)
    if grid.ndim != 1 or grid.numel() < 2 or not bool((grid.diff() > 0).all()):
        raise ValueError(f"grid must be an increasing 1-D tensor of at least 2 times, got "
                         f"{describe(grid)}")
    if scheme not in ("em", "milstein"):
        raise ValueError(f"scheme must be 'em' or 'milstein', got {scheme!r}")
    if scheme == "milstein" and dg is None:
        raise ValueError("the Milstein scheme needs dg, the derivative of g in x")
    generator = check_generator(generator)
    k = grid.numel() - 1
    steps = grid.diff().tolist()
    if increments is None:
        z = randn((k, *x.shape), like=x, generator=generator)
        increments = z * grid.diff().to(x).sqrt().reshape(k, *([1] * x.ndim))
    else:
        increments = _check_tensor("increments", increments)
        if increments.shape != (k, *x.shape):
            raise ValueError(f"increments must have shape (K, *x0.shape) = "
                             f"{(k, *x.shape)}, got {tuple(increments.shape)}")
    states = [x] if return_path else None
    for j, (t, h) in enumerate(zip(grid[:-1].tolist(), steps)):
        if scheme == "em":
            x = em_step(f, g, x, t, h, increments[j])
        else:
            x = milstein_step(f, g, dg, x, t, h, increments[j])
        if states is not None:
            states.append(x)
    return SDEPath(x, grid, torch.stack(states) if states is not None else None)


# --------------------------------------------------------------------------- exact solutions


def ou_transition(x0: Tensor, t: float | Tensor, theta: float, sigma: float,
                  mu: float = 0.0) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of the Ornstein-Uhlenbeck transition (eq. ``eq-sc-ou-transition``)
    for :math:`\mathrm d x = \theta (\mu - x)\, \mathrm d t + \sigma\, \mathrm d W`:

    .. math::

        x_t \mid x_0 \sim \mathcal N\Big(\mu + (x_0 - \mu) e^{-\theta t},\;
        \frac{\sigma^2}{2\theta} \big(1 - e^{-2\theta t}\big)\Big).

    Args:
        x0: starting points, any shape.
        t: elapsed time :math:`\ge 0` (a number or a tensor broadcasting against ``x0``).
        theta: the rate :math:`\theta > 0`.
        sigma: the noise scale :math:`\sigma \ge 0`.
        mu: the long-run mean.

    Returns:
        ``(mean, var)``, broadcast shapes of ``x0`` and ``t``.
    """
    x0 = _check_tensor("x0", x0, 0)
    theta, sigma = check_positive("theta", theta), check_nonnegative("sigma", sigma)
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    if bool((t < 0).any()):
        raise ValueError("t must be >= 0")
    decay = torch.exp(-theta * t)
    var = sigma**2 / (2 * theta) * -torch.expm1(-2 * theta * t)
    mean = mu + (x0 - mu) * decay
    return mean, var.expand_as(mean) if var.shape != mean.shape else var


def gbm_exact(x0: Tensor | float, w: Tensor, times: Tensor, mu: float, sigma: float) -> Tensor:
    r"""The exact geometric Brownian motion driven by given Brownian paths (eq.
    ``eq-sc-gbm-solution``): :math:`x_t = x_0 \exp\big((\mu - \sigma^2/2) t + \sigma W_t\big)`
    solves :math:`\mathrm d x = \mu x\, \mathrm d t + \sigma x\, \mathrm d W`.

    Args:
        x0: the starting value(s), a number or a tensor broadcasting against ``w``.
        w: Brownian paths, shape ``(*B, K + 1)``.
        times: the grid, shape ``(K + 1,)``.
        mu, sigma: drift and volatility.

    Returns:
        The paths, shape ``(*B, K + 1)``.
    """
    w = _check_tensor("w", w)
    times = _check_tensor("times", times)
    if times.shape != w.shape[-1:]:
        raise ValueError(f"times must have shape ({w.shape[-1]},), got {tuple(times.shape)}")
    mu, sigma = float(mu), check_nonnegative("sigma", sigma)
    return x0 * torch.exp((mu - 0.5 * sigma**2) * times.to(w) + sigma * w)


class OUPath(GaussianPath):
    r"""The Ornstein-Uhlenbeck process as a Gaussian path of :mod:`gmbook.samplers`.

    The process :math:`\mathrm d x = -\theta x\, \mathrm d t + \sqrt{2\theta}\,
    \mathrm d W` is the path
    :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon` with :math:`\alpha_t = e^{-\theta t}`,
    :math:`\sigma_t = \sqrt{1 - e^{-2\theta t}}` (eq. ``eq-sc-ou-transition`` with
    :math:`\mu = 0`, :math:`\sigma^2 = 2\theta`); its stationary law is
    :math:`\mathcal N(0, I)`. Then
    :meth:`gmbook.samplers.GaussianPath.diffusion2` is the constant :math:`2\theta`, and
    :func:`gmbook.samplers.euler_maruyama` runs its reverse-time SDE (eq. ``eq-sc-reverse``).

    Args:
        theta: the rate :math:`\theta > 0`.
        t_max: the final time (the path is defined on ``[0, t_max]``).
    """

    def __init__(self, theta: float = 1.0, t_max: float = 5.0) -> None:
        self.theta = check_positive("theta", theta)
        self.t_max = check_positive("t_max", t_max)

    def alpha(self, t):
        t = self._check_t(t)
        return torch.exp(-self.theta * t.double()).to(t.dtype)

    def sigma(self, t):
        t = self._check_t(t)
        return (-torch.expm1(-2 * self.theta * t.double())).sqrt().to(t.dtype)

    def d_alpha(self, t):
        return -self.theta * self.alpha(t)

    def d_sigma(self, t):
        t = self._check_t(t)
        td = t.double()
        return (self.theta * torch.exp(-2 * self.theta * td)
                / (-torch.expm1(-2 * self.theta * td)).sqrt()).to(t.dtype)


# --------------------------------------------------------------------------- Fokker-Planck


def _bernoulli(z: Tensor) -> Tensor:
    r""":math:`B(z) = z / (e^z - 1)`, with :math:`B(0) = 1`, computed stably."""
    small = z.abs() < 1e-8
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1 - z / 2, safe / torch.expm1(safe))


def fokker_planck_1d(drift: Callable[[Tensor], Tensor], diffusion2: float | Callable,
                     p0: Tensor, x: Tensor, times: Tensor) -> Tensor:
    r"""Solve the 1-D Fokker-Planck equation (eq. ``eq-sc-fp``)

    .. math::

        \partial_t p = -\partial_x \big(f p\big) + \tfrac12 \partial_x^2 \big(g^2 p\big)

    on a uniform grid with zero-flux boundaries, for a time-homogeneous drift :math:`f(x)`
    and :math:`g^2(x)`. The space discretisation is a finite-volume scheme with the
    exponentially fitted (Scharfetter-Gummel) flux between neighbouring cells,
    :math:`J_{i+1/2} = \frac{D}{\Delta x} \big(B(-z) p_i - B(z) p_{i+1}\big)` with
    :math:`D = g^2/2`, :math:`z = \tilde f \Delta x / D`, :math:`B(z) = z / (e^z - 1)` and
    :math:`\tilde f = f - \partial_x D` at the cell face. The resulting linear system
    :math:`\dot p = A p` is solved exactly in time, :math:`p(t) = e^{A t} p(0)`, through
    the eigendecomposition of the symmetrised generator (the chain of cells is reversible). The
    columns of :math:`A` sum to zero (the total mass is conserved to rounding), its
    off-diagonal entries are nonnegative (the density stays nonnegative), and for a
    gradient drift with constant :math:`g` its null vector is the Boltzmann density up to
    :math:`O(\Delta x^2)`.

    Args:
        drift: :math:`f`, called on the grid of faces ``(N - 1,)``.
        diffusion2: :math:`g^2 > 0`, a number or a callable on points.
        p0: the initial density on the grid, shape ``(N,)`` (normalised here so that
            :math:`\sum_i p_i \Delta x = 1`).
        x: the uniform grid, shape ``(N,)``, ``N >= 3``.
        times: times :math:`\ge 0` at which to return the density, shape ``(T,)``.

    Returns:
        The densities, shape ``(T, N)``, float64.
    """
    _check_callable("drift", drift)
    x = _check_tensor("x", x).double()
    p0 = _check_tensor("p0", p0).double()
    times = _check_tensor("times", times).double()
    if x.ndim != 1 or x.numel() < 3 or p0.shape != x.shape or times.ndim != 1:
        raise ValueError(f"x and p0 must be (N,) with N >= 3 and times (T,), got "
                         f"{tuple(x.shape)}, {tuple(p0.shape)}, {tuple(times.shape)}")
    dx = (x[-1] - x[0]).item() / (x.numel() - 1)
    if not torch.allclose(x.diff(), torch.full_like(x[1:], dx), rtol=1e-6, atol=0):
        raise ValueError("x must be a uniform increasing grid")
    if bool((p0 < 0).any()) or not p0.sum() > 0:
        raise ValueError("p0 must be nonnegative with positive mass")
    if bool((times < 0).any()):
        raise ValueError("times must be >= 0")
    faces = 0.5 * (x[:-1] + x[1:])
    if callable(diffusion2):
        d_nodes = 0.5 * torch.as_tensor(diffusion2(x), dtype=torch.float64)
        d_face = 0.5 * (d_nodes[:-1] + d_nodes[1:])
        d_prime = d_nodes.diff() / dx
    else:
        d_face = torch.full_like(faces, 0.5 * check_positive("diffusion2", diffusion2))
        d_prime = torch.zeros_like(faces)
    if bool((d_face <= 0).any()):
        raise ValueError("diffusion2 must be > 0 on the grid")
    f_face = torch.as_tensor(drift(faces), dtype=torch.float64) - d_prime
    z = f_face * dx / d_face
    right = d_face / dx**2 * _bernoulli(-z)  # rate from cell i to i+1
    left = d_face / dx**2 * _bernoulli(z)  # rate from cell i+1 to i
    # A 1-D chain of neighbouring cells is reversible: with pi_{i+1} / pi_i = right_i /
    # left_i = e^{z_i}, S = Pi^{-1/2} A Pi^{1/2} is symmetric, and one eigendecomposition
    # gives e^{A t} for every t.
    n = x.numel()
    diag = torch.zeros(n, dtype=torch.float64)
    diag[:-1] -= right  # outflow to the right
    diag[1:] -= left  # outflow to the left
    off = (right * left).sqrt()
    s = torch.diag(diag) + torch.diag(off, 1) + torch.diag(off, -1)
    log_pi = torch.cat([torch.zeros(1, dtype=torch.float64), z.cumsum(0)])
    half = torch.exp(0.5 * (log_pi - log_pi.max()))  # Pi^{1/2}, scaled
    lam, v = torch.linalg.eigh(s)
    lam = lam.clamp(max=0.0)  # the generator's spectrum is <= 0; remove rounding
    p = p0 / (p0.sum() * dx)
    coef = v.T @ (p / half)  # (N,)
    out = [half * (v @ (torch.exp(lam * t) * coef)) for t in times.tolist()]
    return torch.stack(out)


# --------------------------------------------------------------------------- Girsanov


def girsanov_kl(drift_p: Callable, drift_q: Callable, g: Callable, states: Tensor,
                times: Tensor) -> Tensor:
    r"""Per-path Girsanov integrand of eq. ``eq-sc-girsanov-kl``, on paths drawn from
    :math:`P`: :math:`\tfrac12 \sum_k \lVert (f_P - f_Q)/g \rVert^2 (x_{t_k}, t_k)\,
    (t_{k+1} - t_k)`. Its mean over paths of :math:`P` estimates
    :math:`\mathrm{KL}(P \,\|\, Q)` between the laws of two diffusions with the same
    diffusion coefficient :math:`g` and the same initial law; on Euler-Maruyama chains it
    is exactly the KL between the chains' Gaussian transitions, summed.

    Args:
        drift_p, drift_q: the two drifts, ``f(x, t)`` as in :func:`em_step`.
        g: the common diffusion coefficient (nonzero).
        states: paths of :math:`P`, shape ``(K + 1, B, *D)`` (e.g.
            ``SDEPath.states``).
        times: the grid, shape ``(K + 1,)``.

    Returns:
        Shape ``(B,)``: one value per path.
    """
    for name, fn in (("drift_p", drift_p), ("drift_q", drift_q), ("g", g)):
        _check_callable(name, fn)
    states = _check_tensor("states", states, 2)
    times = _check_tensor("times", times)
    if times.shape != states.shape[:1]:
        raise ValueError(f"times must have shape ({states.shape[0]},), got "
                         f"{tuple(times.shape)}")
    total = torch.zeros(states.shape[1], dtype=states.dtype, device=states.device)
    for k, h in enumerate(times.diff().tolist()):
        x, t = states[k], times[k].to(states)
        u = (drift_p(x, t) - drift_q(x, t)) / g(x, t)
        total = total + 0.5 * h * u.pow(2).reshape(x.shape[0], -1).sum(1)
    return total
