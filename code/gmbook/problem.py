r"""The models and paths of Chapter 1, "The generative modeling problem".

Derived in ``book/foundations/problem.md``:

- :class:`GridDensity`, a neural density normalised by brute force on a grid
  (eq. ``eq-grid-normalizer``): it works in two dimensions and shows why it cannot work in more;
- Gaussian fits by maximum likelihood (moment matching, :prf:ref:`prop-moment-matching`) and by
  reverse KL (:func:`fit_gaussian_reverse_kl`), to compare mass-covering and mode-seeking;
- the linear path from :math:`\mathcal N(0, I)` to the data (eq. ``eq-linear-path``), the exact
  marginal velocity of an empirical distribution (eq. ``eq-empirical-velocity``) and Euler's method.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from gmbook._checks import check_int, check_points
from gmbook._random import rand, randn
from gmbook.nets import append_dims

__all__ = [
    "GridDensity",
    "gaussian_moments",
    "GaussianModel",
    "fit_gaussian_reverse_kl",
    "kl_monte_carlo",
    "linear_path",
    "empirical_velocity",
    "euler",
]


class GridDensity(nn.Module):
    r"""A neural log-density normalised by a Riemann sum on a square grid.

    :math:`\log p_\theta(x) = f_\theta(x) - \log Z_\theta` with
    :math:`Z_\theta \approx \sum_{g} e^{f_\theta(g)} \,\Delta A` over the centres :math:`g` of
    an ``n`` by ``n`` grid of cells of area :math:`\Delta A` covering ``[lo, hi]^2``
    (eq. ``eq-grid-normalizer``). The model lives on that box: ``log_prob`` is ``-inf`` outside.

    Args:
        net: any module mapping ``(B, 2)`` to ``(B, 1)`` or ``(B,)`` (the unnormalised
            log-density :math:`f_\theta`).
        lims: the box ``(lo, hi)`` in both coordinates.
        n: grid cells per axis; a forward pass costs ``n * n`` network evaluations.
    """

    def __init__(self, net: nn.Module, lims: tuple[float, float] = (-3.5, 3.5), n: int = 128):
        super().__init__()
        lo, hi = float(lims[0]), float(lims[1])
        if not hi > lo:
            raise ValueError(f"lims must be (lo, hi) with hi > lo, got {lims}")
        n = check_int("n", n, 2)
        self.net, self.lo, self.hi, self.n = net, lo, hi, n
        h = (hi - lo) / n
        centres = lo + h * (torch.arange(n, dtype=torch.float32) + 0.5)
        gx, gy = torch.meshgrid(centres, centres, indexing="xy")
        self.register_buffer("grid", torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1))
        self.log_cell_area = 2.0 * math.log(h)

    def energy(self, x: Tensor) -> Tensor:
        r"""Unnormalised log-density :math:`f_\theta(x)`, shape ``(B,)`` for ``x`` ``(B, 2)``."""
        check_points("x", x, 2)
        out = self.net(x)
        return out.reshape(x.shape[0])

    def log_normalizer(self) -> Tensor:
        r"""Scalar :math:`\log Z_\theta` by the grid sum, eq. ``eq-grid-normalizer``."""
        f = self.energy(self.grid)  # (n * n,)
        f_max = f.max().detach()
        # log-sum-exp. Terms below e^-60 of the largest change log Z by < 1e-22;
        # clamping them keeps exp() away from slow subnormal floats.
        rel = (f - f_max).clamp(min=-60.0)
        return f_max + rel.exp().sum().log() + self.log_cell_area

    def log_prob(self, x: Tensor, *, log_z: Tensor | None = None) -> Tensor:
        r"""Normalised log-density, shape ``(B,)``; ``-inf`` outside the box.

        Args:
            x: points, shape ``(B, 2)``.
            log_z: :math:`\log Z_\theta` from :meth:`log_normalizer`, computed once to
                score several batches with the same network (the grid sum costs ``n * n``
                network evaluations); ``None`` computes it here.
        """
        if log_z is None:
            log_z = self.log_normalizer()
        elif not isinstance(log_z, Tensor) or log_z.ndim != 0:
            raise TypeError(f"log_z must be a scalar tensor or None, got {log_z!r}")
        lp = self.energy(x) - log_z
        inside = ((x >= self.lo) & (x <= self.hi)).all(dim=1)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def loss(self, x: Tensor) -> Tensor:
        """Negative log-likelihood of the batch ``x`` ``(B, 2)`` averaged over it (a scalar)."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` points, shape ``(n, 2)``: a grid cell with probability proportional to
        :math:`e^{f_\theta(g)}`, then a uniform point inside it (exact for the piecewise-constant
        density the grid sum integrates)."""
        n = check_int("n", n)
        probs = torch.softmax(self.energy(self.grid), dim=0)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        h = (self.hi - self.lo) / self.n
        jitter = rand((n, 2), device=self.grid.device, generator=generator) - 0.5
        return self.grid[idx] + h * jitter


def gaussian_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean ``(D,)`` and biased covariance ``(D, D)`` of samples ``x`` ``(n, D)``.

    This is the maximum-likelihood Gaussian: the minimiser over Gaussians :math:`q` of the
    cross-entropy :math:`\mathbb E_p[-\log q]` for the empirical distribution :math:`p` of
    ``x``, and an estimate of the forward-KL minimiser when ``x`` is drawn from a density
    (:prf:ref:`prop-moment-matching`).
    """
    check_points("x", x)
    mean = x.mean(dim=0)
    centred = x - mean
    return mean, centred.T @ centred / x.shape[0]


class GaussianModel(nn.Module):
    r"""A full-covariance Gaussian :math:`q = \mathcal N(m, L L^\top)` with learnable ``m`` and
    lower-triangular ``L`` (positive diagonal through ``exp``), for reverse-KL fits.

    Args:
        mean: initial mean ``(D,)``.
        scale: initial standard deviation of every axis (``L = scale * I``).
    """

    def __init__(self, mean: Tensor, scale: float = 1.0):
        super().__init__()
        if mean.ndim != 1:
            raise ValueError(f"mean must have shape (D,), got {tuple(mean.shape)}")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        d = mean.shape[0]
        self.mean = nn.Parameter(mean.clone().float())
        self.log_diag = nn.Parameter(torch.full((d,), math.log(scale)))
        self.offdiag = nn.Parameter(torch.zeros(d, d))

    def scale_tril(self) -> Tensor:
        """The Cholesky factor ``L`` ``(D, D)``."""
        return torch.tril(self.offdiag, -1) + torch.diag(self.log_diag.exp())

    def distribution(self) -> MultivariateNormal:
        """The fitted Gaussian as a ``torch.distributions.MultivariateNormal``."""
        return MultivariateNormal(self.mean, scale_tril=self.scale_tril())

    def covariance(self) -> Tensor:
        """``L L^T``, shape ``(D, D)``."""
        L = self.scale_tril()
        return L @ L.T


def kl_monte_carlo(
    log_p: Callable[[Tensor], Tensor] | Tensor,
    log_q: Callable[[Tensor], Tensor] | Tensor,
    x_from_p: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""Monte Carlo estimate of :math:`\mathrm{KL}(p \,\|\, q) = \mathbb E_p[\log p - \log q]`
    (eq. ``eq-kl``) and its standard error, from samples ``x_from_p`` ``(n, D)`` of :math:`p`.

    Swap the roles (samples of :math:`q`, ``log_p=log_q``) for the reverse KL.

    Args:
        log_p, log_q: log-densities ``(n, D) -> (n,)``, or their values at ``x_from_p``,
            shape ``(n,)`` (to evaluate a costly density once for several estimates).
        x_from_p: samples of :math:`p`, shape ``(n, D)``.

    Returns:
        ``(estimate, standard_error)``, two scalars.
    """
    check_points("x_from_p", x_from_p)

    def values(name: str, log_f) -> Tensor:
        if not isinstance(log_f, Tensor):
            return log_f(x_from_p)
        if log_f.shape != x_from_p.shape[:1]:
            raise ValueError(f"{name} given as values must have shape ({x_from_p.shape[0]},), "
                             f"got {tuple(log_f.shape)}")
        return log_f

    diff = values("log_p", log_p) - values("log_q", log_q)
    return diff.mean(), diff.std() / math.sqrt(diff.numel())


def fit_gaussian_reverse_kl(
    log_p: Callable[[Tensor], Tensor],
    init_mean: Tensor,
    *,
    init_scale: float = 0.5,
    steps: int = 1500,
    batch_size: int = 512,
    lr: float = 0.02,
    generator: torch.Generator | None = None,
) -> tuple[GaussianModel, list[float]]:
    r"""Fit a Gaussian :math:`q` by minimising :math:`\mathrm{KL}(q \,\|\, p)` with Adam.

    The objective :math:`\mathbb E_q[\log q(x) - \log p(x)]` (eq. ``eq-reverse-kl``) is
    estimated with the reparameterisation :math:`x = m + L\varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, I)`: it needs the target's log-density (up to a
    constant), never its samples.

    Args:
        log_p: log-density of the target, ``(B, D) -> (B,)``, differentiable in ``x``.
        init_mean: starting mean ``(D,)``.
        init_scale: starting standard deviation of every axis.
        steps, batch_size, lr: Adam steps, Monte Carlo samples per step, learning rate.
        generator: random source of the noise :math:`\varepsilon`.

    Returns:
        The fitted :class:`GaussianModel` and the loss (KL up to :math:`\log Z_p`) per step.
    """
    q = GaussianModel(init_mean, init_scale)
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    d = init_mean.shape[0]
    losses = []
    for _ in range(steps):
        eps = randn((batch_size, d), device=init_mean.device, generator=generator)
        x = q.mean + eps @ q.scale_tril().T
        loss = (q.distribution().log_prob(x) - log_p(x)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return q, losses


def linear_path(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""The straight path from noise ``x0`` to data ``x1`` and its velocity (eq. ``eq-linear-path``).

    :math:`x_t = (1 - t)\, x_0 + t\, x_1` and :math:`u_t = \dot x_t = x_1 - x_0`.

    Args:
        x0: noise, shape ``(B, *D)``.
        x1: data, shape ``(B, *D)``.
        t: times in ``[0, 1]``, shape ``(B,)``.

    Returns:
        ``(x_t, u_t)``, both ``(B, *D)``.

    Example:
        >>> x0, x1 = torch.zeros(2, 3), torch.ones(2, 3)
        >>> linear_path(x0, x1, torch.tensor([0.25, 1.0]))[0][:, 0]
        tensor([0.2500, 1.0000])
    """
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}")
    if t.shape != x0.shape[:1]:
        raise ValueError(f"t must have shape (B,) = ({x0.shape[0]},), got {tuple(t.shape)}")
    t = append_dims(t, x0.ndim)  # (B,) -> (B, 1, ..., 1)
    return (1 - t) * x0 + t * x1, x1 - x0


def empirical_velocity(x: Tensor, t: float, data: Tensor) -> Tensor:
    r"""Exact marginal velocity of the linear path when the data distribution is the empirical
    distribution of ``data`` (eq. ``eq-empirical-velocity``).

    With :math:`X_0 \sim \mathcal N(0, I)` and :math:`X_1` uniform over the ``N`` data points,
    :math:`u_t(x) = \mathbb E[X_1 - X_0 \mid X_t = x] = (\hat x_1(x, t) - x) / (1 - t)`, where
    :math:`\hat x_1 = \sum_i w_i x^{(i)}` with softmax weights
    :math:`w_i \propto \exp(-\lVert x - t x^{(i)} \rVert^2 / (2 (1 - t)^2))`.

    Args:
        x: positions, shape ``(B, D)``.
        t: a time in ``[0, 1)``.
        data: the data points, shape ``(N, D)``.

    Returns:
        The velocity, shape ``(B, D)``, in the dtype of ``x``; it is computed in float64
        (near :math:`t = 1` the logits divide by :math:`2(1-t)^2`).
    """
    check_points("x", x)
    check_points("data", data, x.shape[1])
    if not 0.0 <= t < 1.0:
        raise ValueError(f"t must be in [0, 1), got {t}")
    # Near t = 1 the logits divide squared distances by 2 (1 - t)^2 ~ 1e-5: float32, and
    # cdist's matmul shortcut |x|^2 + |y|^2 - 2 x.y (which cancels for near-equal points),
    # would make errors of order 1 in them. So: float64 and the direct differences.
    x64, data64 = x.double(), data.double()
    sq = torch.cdist(x64, t * data64,
                     compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # (B, N)
    w = torch.softmax(-sq / (2 * (1 - t) ** 2), dim=1)
    x1_hat = w @ data64  # (B, D)
    return ((x1_hat - x64) / (1 - t)).to(x.dtype)


def euler(
    velocity: Callable[[Tensor, float], Tensor], x0: Tensor, steps: int, *, return_path: bool = False
) -> Tensor:
    r"""Integrate :math:`\dot x = u_t(x)` from :math:`t = 0` to :math:`1` with ``steps`` Euler steps.

    Args:
        velocity: ``u(x, t)`` with ``x`` ``(B, D)`` and a float ``t``.
        x0: starting points ``(B, D)``.
        steps: number of steps (network evaluations), >= 1.
        return_path: also return every intermediate state.

    Returns:
        The end points ``(B, D)``, or the path ``(steps + 1, B, D)`` if ``return_path``.
    """
    steps = check_int("steps", steps)
    h = 1.0 / steps
    x, path = x0, [x0]
    for k in range(steps):
        x = x + h * velocity(x, k * h)
        path.append(x)
    return torch.stack(path) if return_path else x
