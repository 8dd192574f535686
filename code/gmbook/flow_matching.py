r"""Flow matching and rectified flow: chapter ``book/diffusion/flow_matching.md``.

A flow-matching model learns a time-dependent velocity field :math:`v_\theta(x, t)` whose
ODE :math:`\dot x = v_\theta(x, t)` carries noise at :math:`t = 0` to data at
:math:`t = 1` (the book's time convention, fixed in Chapter 1: :math:`x_0` is noise,
:math:`x_1` is data). The module holds

- the Gaussian conditional paths :math:`x_t = \alpha_t x_1 + \sigma_t x_0`
  (:func:`path_coefficients`, :func:`gaussian_path`, label ``eq-fm-gaussian-path``): the
  linear (rectified) path and a variance-preserving path that recovers diffusion;
- the conversions between velocity, noise and score predictions
  (:func:`velocity_from_eps`, :func:`eps_from_velocity`, :func:`score_from_velocity`,
  :func:`velocity_from_score`, label ``eq-fm-conversions``);
- couplings of noise and data within a minibatch (:func:`couple`): independent, exact
  minibatch optimal transport, and a cheap sort along a random direction;
- ODE solvers (:func:`odeint`): Euler, midpoint, Heun and the adaptive ``dopri5`` of
  torchdiffeq, for any field ``f(x, t)`` (the likelihood's augmented ODE, the exercises);
- the model :class:`FlowMatching` with the book's verbs ``loss``, ``sample`` and
  ``log_prob`` (the instantaneous change of variables, label ``eq-fm-change-of-variables``),
  and :func:`reflow_pairs` for rectified flow. The model exposes its velocity as a
  :class:`gmbook.samplers.Prediction` (:meth:`FlowMatching.prediction`) and samples with
  the book's common samplers (:mod:`gmbook.samplers`), like every diffusion model.

References: Lipman et al. (2023), *Flow matching for generative modeling*; Liu et al.
(2023), *Flow straight and fast*; Albergo and Vanden-Eijnden (2023), *Building normalizing
flows with stochastic interpolants*; Tong et al. (2024), *Improving and generalizing
flow-based generative models with minibatch optimal transport*; Pooladian et al. (2023),
*Multisample flow matching*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gmbook import samplers
from gmbook._checks import check_generator as _check_generator
from gmbook._checks import check_int as _check_int
from gmbook._random import rand as _rand
from gmbook._random import randn as _randn
from gmbook.cnf import odeint  # noqa: F401 (public name here too; defined in the CNF chapter)
from gmbook.nets import MLP, append_dims
from gmbook.score import divergence

__all__ = [
    "COUPLINGS",
    "PATHS",
    "SOLVERS",
    "TIME_SAMPLINGS",
    "FlowMatching",
    "PathCoefficients",
    "PathSample",
    "couple",
    "eps_from_velocity",
    "gaussian_path",
    "gaussian_velocity",
    "mixture_velocity",
    "odeint",
    "path_coefficients",
    "reflow_pairs",
    "sample_times",
    "score_from_velocity",
    "solver_nfe",
    "velocity_from_eps",
    "velocity_from_score",
]

PATHS: tuple[str, ...] = ("linear", "vp")
"""The Gaussian conditional paths, ``"linear"`` (:math:`\\alpha_t = t, \\sigma_t = 1 - t`)
and ``"vp"`` (:math:`\\alpha_t = \\sin(\\pi t / 2), \\sigma_t = \\cos(\\pi t / 2)`)."""

COUPLINGS: tuple[str, ...] = ("independent", "ot", "sort")
"""Couplings of a minibatch of noise with a minibatch of data, see :func:`couple`."""

SOLVERS: tuple[str, ...] = ("euler", "midpoint", "heun", "dopri5")
"""ODE solvers of :func:`odeint`."""

TIME_SAMPLINGS: tuple[str, ...] = ("uniform", "logit_normal")
"""Distributions of the training times, see :func:`sample_times`."""

_NFE_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2}


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = type(x).__name__ if not isinstance(x, Tensor) else f"dtype {x.dtype}"
        raise TypeError(f"{name} must be a floating-point tensor, got {got}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape (B, *D), got a 0-dim tensor")
    return x


def _check_times(t: object, batch: int, name: str = "t") -> Tensor:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (B,)")
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape (B,) = ({batch},), got {tuple(t.shape)}")
    return t


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class PathCoefficients:
    r"""The coefficients of a Gaussian path at times ``t``, each of shape ``(B,)``.

    Attributes:
        alpha: :math:`\alpha_t`, the weight of the data point :math:`x_1`.
        sigma: :math:`\sigma_t`, the weight of the noise :math:`x_0`.
        d_alpha: :math:`\dot\alpha_t = \mathrm d\alpha_t / \mathrm dt`.
        d_sigma: :math:`\dot\sigma_t = \mathrm d\sigma_t / \mathrm dt`.
    """

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor


@dataclass(frozen=True)
class PathSample:
    r"""A point of a conditional path and its conditional velocity.

    Attributes:
        x_t: :math:`x_t = \alpha_t x_1 + \sigma_t x_0`, shape ``(B, *D)``.
        u_t: :math:`u_t = \dot\alpha_t x_1 + \dot\sigma_t x_0`, shape ``(B, *D)``.
        t: the times, shape ``(B,)``.
    """

    x_t: Tensor
    u_t: Tensor
    t: Tensor


def path_coefficients(t: Tensor, path: str = "linear") -> PathCoefficients:
    r"""Coefficients :math:`\alpha_t, \sigma_t` and their derivatives, eq. ``eq-fm-gaussian-path``.

    ``"linear"``: :math:`\alpha_t = t`, :math:`\sigma_t = 1 - t` (the rectified-flow /
    optimal-transport displacement path, label ``eq-fm-linear-path``).
    ``"vp"``: :math:`\alpha_t = \sin(\tfrac{\pi}{2} t)`,
    :math:`\sigma_t = \cos(\tfrac{\pi}{2} t)`, variance preserving
    (:math:`\alpha_t^2 + \sigma_t^2 = 1`, label ``eq-fm-vp-path``); with
    :math:`\bar\alpha = \alpha_t^2` it is DDPM's forward process run backwards in time, with
    the cosine schedule of Nichol and Dhariwal (2021) without offset.

    Args:
        t: times in :math:`[0, 1]`, shape ``(B,)``.
        path: one of :data:`PATHS`.

    Returns:
        The :class:`PathCoefficients`, each of shape ``(B,)``.
    """
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise TypeError("path_coefficients: t must be a floating-point tensor of shape (B,)")
    if t.ndim != 1:
        raise ValueError(f"path_coefficients: t must have shape (B,), got {tuple(t.shape)}")
    _check_choice("path", path, PATHS)
    if path == "linear":
        return PathCoefficients(t, 1 - t, torch.ones_like(t), -torch.ones_like(t))
    h = 0.5 * math.pi
    return PathCoefficients(torch.sin(h * t), torch.cos(h * t),
                            h * torch.cos(h * t), -h * torch.sin(h * t))


def gaussian_path(x0: Tensor, x1: Tensor, t: Tensor, path: str = "linear") -> PathSample:
    r"""Sample the conditional path and its velocity, eqs. ``eq-fm-gaussian-path`` and
    ``eq-fm-conditional-velocity``.

    .. math::

        x_t = \alpha_t x_1 + \sigma_t x_0, \qquad
        u_t(x_t \mid x_0, x_1) = \dot\alpha_t x_1 + \dot\sigma_t x_0 .

    Args:
        x0: noise (the source point), shape ``(B, *D)``.
        x1: data (the target point), shape ``(B, *D)``.
        t: times, shape ``(B,)``.
        path: one of :data:`PATHS`.

    Returns:
        The :class:`PathSample` ``(x_t, u_t, t)``.

    Example:
        >>> x0, x1 = torch.zeros(2, 2), torch.ones(2, 2)
        >>> s = gaussian_path(x0, x1, torch.tensor([0.25, 1.0]))
        >>> s.x_t.tolist(), s.u_t.tolist()
        ([[0.25, 0.25], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]])
    """
    x0, x1 = _check_tensor("x0", x0), _check_tensor("x1", x1)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}")
    t = _check_times(t, x0.shape[0])
    c = path_coefficients(t, path)
    a, s = append_dims(c.alpha, x0.ndim), append_dims(c.sigma, x0.ndim)  # (B, 1, ..., 1)
    da, ds = append_dims(c.d_alpha, x0.ndim), append_dims(c.d_sigma, x0.ndim)
    return PathSample(a * x1 + s * x0, da * x1 + ds * x0, t)


# --------------------------------------------------------------------------- conversions


def _coeffs_like(x: Tensor, t: Tensor, path: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = _check_tensor("x_t", x)
    t = _check_times(t, x.shape[0])
    c = path_coefficients(t, path)
    return tuple(append_dims(v, x.ndim) for v in (c.alpha, c.sigma, c.d_alpha, c.d_sigma))


def velocity_from_eps(x_t: Tensor, eps: Tensor, t: Tensor, path: str = "linear") -> Tensor:
    r"""Velocity from a noise prediction, eq. ``eq-fm-conversions``.

    With :math:`\hat x_1 = (x_t - \sigma_t \hat\varepsilon) / \alpha_t`,
    :math:`v = \dot\alpha_t \hat x_1 + \dot\sigma_t \hat\varepsilon`. Needs
    :math:`\alpha_t > 0` (``t > 0``).

    Args:
        x_t: points on the path, shape ``(B, *D)``.
        eps: predicted noise :math:`\mathbb E[x_0 \mid x_t]`, shape ``(B, *D)``.
        t: times in :math:`(0, 1]`, shape ``(B,)``.
        path: one of :data:`PATHS`.

    Returns:
        The velocity, shape ``(B, *D)``.
    """
    a, s, da, ds = _coeffs_like(x_t, t, path)
    if eps.shape != x_t.shape:
        raise ValueError(f"eps must have the shape of x_t {tuple(x_t.shape)}")
    return da * (x_t - s * eps) / a + ds * eps


def eps_from_velocity(x_t: Tensor, v: Tensor, t: Tensor, path: str = "linear") -> Tensor:
    r"""Noise prediction from a velocity, the inverse of :func:`velocity_from_eps`.

    :math:`\hat\varepsilon = (\alpha_t v - \dot\alpha_t x_t) /
    (\alpha_t \dot\sigma_t - \dot\alpha_t \sigma_t)`, eq. ``eq-fm-conversions``.

    Args:
        x_t: points on the path, shape ``(B, *D)``.
        v: velocities, shape ``(B, *D)``.
        t: times, shape ``(B,)``.
        path: one of :data:`PATHS`.

    Returns:
        The noise prediction, shape ``(B, *D)``.
    """
    a, s, da, ds = _coeffs_like(x_t, t, path)
    if v.shape != x_t.shape:
        raise ValueError(f"v must have the shape of x_t {tuple(x_t.shape)}")
    return (a * v - da * x_t) / (a * ds - da * s)


def score_from_velocity(x_t: Tensor, v: Tensor, t: Tensor, path: str = "linear") -> Tensor:
    r"""Score :math:`\nabla \log p_t(x_t) = -\hat\varepsilon / \sigma_t` from a velocity,
    eq. ``eq-fm-conversions`` (needs :math:`\sigma_t > 0`, i.e. ``t < 1``).

    Args:
        x_t: points, shape ``(B, *D)``.
        v: velocities, shape ``(B, *D)``.
        t: times in :math:`(0, 1)`, shape ``(B,)``.
        path: one of :data:`PATHS`.

    Returns:
        The score, shape ``(B, *D)``.
    """
    _, s, _, _ = _coeffs_like(x_t, t, path)
    return -eps_from_velocity(x_t, v, t, path) / s


def velocity_from_score(x_t: Tensor, score: Tensor, t: Tensor, path: str = "linear") -> Tensor:
    r"""Velocity from a score, the inverse of :func:`score_from_velocity`,
    eq. ``eq-fm-conversions``.

    Args:
        x_t: points, shape ``(B, *D)``.
        score: :math:`\nabla \log p_t(x_t)`, shape ``(B, *D)``.
        t: times in :math:`(0, 1)`, shape ``(B,)``.
        path: one of :data:`PATHS`.

    Returns:
        The velocity, shape ``(B, *D)``.
    """
    _, s, _, _ = _coeffs_like(x_t, t, path)
    return velocity_from_eps(x_t, -s * score, t, path)


# --------------------------------------------------------------------------- closed forms


def gaussian_velocity(mean: float, std: float, path: str = "linear"
                      ) -> Callable[[Tensor, Tensor], Tensor]:
    r"""The exact marginal velocity from :math:`\mathcal N(0, I)` to :math:`\mathcal N(m, s^2 I)`.

    With :math:`x_1 \sim \mathcal N(m, s^2 I)` independent of :math:`x_0`, the marginal
    :math:`p_t = \mathcal N(\alpha_t m, (\alpha_t^2 s^2 + \sigma_t^2) I)` and
    eq. ``eq-fm-marginal-velocity`` gives

    .. math::

        u_t(x) = \dot\alpha_t m + \frac{\alpha_t \dot\alpha_t s^2 + \sigma_t \dot\sigma_t}
                 {\alpha_t^2 s^2 + \sigma_t^2} (x - \alpha_t m).

    Args:
        mean: :math:`m`.
        std: :math:`s > 0`.
        path: one of :data:`PATHS`.

    Returns:
        A function ``u(x, t)`` with ``x`` of shape ``(B, *D)`` and ``t`` of shape ``(B,)``.
    """
    if not std > 0:
        raise ValueError(f"gaussian_velocity: std must be > 0, got {std}")
    _check_choice("path", path, PATHS)

    def u(x: Tensor, t: Tensor) -> Tensor:
        a, s, da, ds = _coeffs_like(x, t, path)
        var = a**2 * std**2 + s**2
        return da * mean + (a * da * std**2 + s * ds) / var * (x - a * mean)

    return u


def mixture_velocity(means: Tensor, std: float, path: str = "linear"
                     ) -> Callable[[Tensor, Tensor], Tensor]:
    r"""The exact marginal velocity towards an equal-weight Gaussian mixture.

    Data :math:`x_1 \sim \frac1K \sum_k \mathcal N(\mu_k, s^2 I)`, noise
    :math:`x_0 \sim \mathcal N(0, I)`, independent. Given the component :math:`k`, the
    path is Gaussian and its velocity is that of :func:`gaussian_velocity`; the marginal
    velocity, eq. ``eq-fm-marginal-velocity``, averages these with the posterior weights
    :math:`w_k(x) \propto \mathcal N(x; \alpha_t \mu_k, (\alpha_t^2 s^2 + \sigma_t^2) I)`.

    Args:
        means: component means, shape ``(K, D)``.
        std: :math:`s > 0`, the components' standard deviation.
        path: one of :data:`PATHS`.

    Returns:
        A function ``u(x, t)``, ``x`` of shape ``(B, D)``, ``t`` of shape ``(B,)``.
    """
    means = _check_tensor("means", means)
    if means.ndim != 2:
        raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
    if not std > 0:
        raise ValueError(f"mixture_velocity: std must be > 0, got {std}")
    _check_choice("path", path, PATHS)

    def u(x: Tensor, t: Tensor) -> Tensor:
        a, s, da, ds = _coeffs_like(x, t, path)  # (B, 1)
        var = a**2 * std**2 + s**2  # (B, 1)
        mu = means.to(x)  # (K, D)
        diff = x[:, None, :] - a[:, None] * mu[None]  # (B, K, D)
        logw = -0.5 * (diff**2).sum(-1) / var  # (B, K)
        w = torch.softmax(logw, dim=1)[..., None]  # (B, K, 1)
        uk = da[:, None] * mu[None] + ((a * da * std**2 + s * ds) / var)[:, None] * diff
        return (w * uk).sum(1)  # (B, D)

    return u


# --------------------------------------------------------------------------- couplings


def couple(x0: Tensor, x1: Tensor, coupling: str = "independent", *,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""Pair a minibatch of noise with a minibatch of data, eq. ``eq-fm-coupling``.

    - ``"independent"``: the pairs as given, :math:`q(x_0, x_1) = p_0(x_0)\, p_1(x_1)`.
    - ``"ot"``: exact optimal transport within the minibatch for the squared distance
      (Pooladian et al., 2023; Tong et al., 2024). With equal weights the OT plan is a
      permutation (Birkhoff), solved exactly by the network simplex of POT
      (``ot.emd``), roughly :math:`O(B^3)`.
    - ``"sort"``: both sets sorted along one random direction and matched in order, the
      optimal coupling of the 1-D projections, :math:`O(B \log B)`.

    Args:
        x0: noise, shape ``(B, *D)``.
        x1: data, shape ``(B, *D)``.
        coupling: one of :data:`COUPLINGS`.
        generator: randomness of the ``"sort"`` direction.

    Returns:
        ``(x0, x1)`` with the rows of ``x0`` permuted, both of shape ``(B, *D)``.
    """
    x0, x1 = _check_tensor("x0", x0), _check_tensor("x1", x1)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}")
    _check_choice("coupling", coupling, COUPLINGS)
    generator = _check_generator(generator)
    if coupling == "independent":
        return x0, x1
    a, b = x0.flatten(1), x1.flatten(1)  # (B, D)
    if coupling == "ot":
        import ot  # POT

        cost = (torch.cdist(b.detach().double(), a.detach().double()) ** 2).cpu().numpy()
        w = np.full(a.shape[0], 1.0 / a.shape[0])
        plan = ot.emd(w, w, cost)  # (B, B), a permutation matrix divided by B
        perm = torch.as_tensor(plan.argmax(axis=1), device=x0.device)
        return x0[perm], x1
    theta = _randn((a.shape[1],), like=a, generator=generator)  # (D,)
    i0 = torch.argsort(a @ theta)
    i1 = torch.argsort(b @ theta)
    perm = torch.empty_like(i0)
    perm[i1] = i0  # the k-th smallest data point gets the k-th smallest noise point
    return x0[perm], x1


# --------------------------------------------------------------------------- times


def sample_times(n: int, kind: str = "uniform", *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Training times, eq. ``eq-fm-time-weighting``.

    ``"uniform"``: :math:`t \sim \mathcal U[0, 1]`. ``"logit_normal"``:
    :math:`t = 1 / (1 + e^{-z})`, :math:`z \sim \mathcal N(0, 1)` (Esser et al., 2024), which
    puts more weight on the middle of the path, where the velocity is hardest to predict.

    Args:
        n: number of times.
        kind: one of :data:`TIME_SAMPLINGS`.
        generator: source of randomness.
        device: device of the result (default: the generator's).
        dtype: floating-point dtype.

    Returns:
        Times of shape ``(n,)`` in :math:`(0, 1)`.
    """
    n = _check_int("n", n, 1)
    _check_choice("time_sampling", kind, TIME_SAMPLINGS)
    generator = _check_generator(generator)
    if device is None and generator is not None:
        device = generator.device
    if kind == "uniform":
        return _rand((n,), device=device, dtype=dtype, generator=generator)
    return torch.sigmoid(_randn((n,), device=device, dtype=dtype, generator=generator))


# --------------------------------------------------------------------------- solvers


def solver_nfe(solver: str, steps: int) -> int:
    r"""Network evaluations of ``steps`` steps of a fixed-step solver.

    Euler costs one evaluation per step, midpoint and Heun two.

    Args:
        solver: ``"euler"``, ``"midpoint"`` or ``"heun"``.
        steps: number of steps.

    Returns:
        The number of function evaluations.
    """
    _check_choice("solver", solver, tuple(_NFE_PER_STEP))
    return _NFE_PER_STEP[solver] * _check_int("steps", steps, 1)


# --------------------------------------------------------------------------- the model


class FlowMatching(nn.Module):
    r"""A flow-matching model: a learned velocity :math:`v_\theta(x, t)` and its ODE.

    Trained by the conditional flow-matching loss, eq. ``eq-fm-cfm-loss``,

    .. math::

        \mathcal L_{\mathrm{CFM}}(\theta) = \mathbb E_{t, (x_0, x_1) \sim q}
        \big\| v_\theta(x_t, t) - (\dot\alpha_t x_1 + \dot\sigma_t x_0) \big\|^2,

    with :math:`x_t = \alpha_t x_1 + \sigma_t x_0`, times from :func:`sample_times`, and
    pairs from the coupling :math:`q` (:func:`couple`); the loss is averaged over the
    dimensions. Samples solve :math:`\dot x = v_\theta(x, t)` from :math:`x_0 \sim
    \mathcal N(0, I)` (:func:`odeint`); densities follow the instantaneous change of
    variables, eq. ``eq-fm-change-of-variables``.

    Args:
        net: the velocity network, called as ``net(x, t)`` with ``x`` of shape
            ``(B, prod(shape))`` (flattened) and ``t`` of shape ``(B,)``; e.g.
            ``gmbook.nets.MLP(2, time_dim=64)``.
        shape: the shape ``D`` of one data point, e.g. ``(2,)`` or ``(1, 8, 8)``.
        path: the Gaussian path, one of :data:`PATHS`.
        coupling: the minibatch coupling, one of :data:`COUPLINGS`.
        time_sampling: the training times, one of :data:`TIME_SAMPLINGS`.

    Example:
        >>> from gmbook.nets import MLP
        >>> model = FlowMatching(MLP(2, hidden=16, time_dim=8), shape=(2,))
        >>> model.loss(torch.randn(8, 2)).shape
        torch.Size([])
        >>> model.sample(5, steps=4).shape
        torch.Size([5, 2])
    """

    def __init__(self, net: nn.Module, *, shape: tuple[int, ...], path: str = "linear",
                 coupling: str = "independent", time_sampling: str = "uniform") -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"FlowMatching: net must be an nn.Module, got {type(net).__name__}")
        if (not isinstance(shape, tuple) or not shape
                or not all(isinstance(s, int) and s > 0 for s in shape)):
            raise ValueError(f"FlowMatching: shape must be a tuple of positive ints, got {shape!r}")
        self.net = net
        self.shape = shape
        self.path = _check_choice("path", path, PATHS)
        self.coupling = _check_choice("coupling", coupling, COUPLINGS)
        self.time_sampling = _check_choice("time_sampling", time_sampling, TIME_SAMPLINGS)

    def _check_batch(self, x: object, name: str = "x") -> Tensor:
        x = _check_tensor(name, x)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"{name} must have shape (B, *{self.shape}), got {tuple(x.shape)}")
        return x

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        r"""The learned velocity :math:`v_\theta(x, t)`.

        Args:
            x: points, shape ``(B, *D)``.
            t: times, shape ``(B,)``; a 0-dim ``t`` (one time for the batch) only if the
                network accepts it, as :class:`gmbook.nets.MLP` does.

        Returns:
            Velocities, shape ``(B, *D)``.
        """
        return self.net(x.flatten(1), t).view_as(x)  # (B, prod D) -> (B, *D)

    def _scalar_t(self) -> bool:
        """Whether the network takes one 0-dim time for the batch (its time branch runs once)."""
        return isinstance(self.net, MLP)

    def prediction(self) -> samplers.Prediction:
        r"""The model as a velocity prediction for the samplers of :mod:`gmbook.samplers`.

        The samplers use the diffusion chapters' time :math:`t = 1 - t_{\mathrm{FM}}` (noise
        at :math:`t = 1`, data at 0), on which the linear path is
        :class:`gmbook.samplers.LinearPath` and the VP path
        :class:`gmbook.samplers.CosinePath`; a velocity in that time is
        :math:`\mathrm d x / \mathrm d t = -v_\theta(x, 1 - t)`.

        Returns:
            A :class:`gmbook.samplers.Prediction` of kind ``"velocity"``.
        """
        path = samplers.LinearPath() if self.path == "linear" else samplers.CosinePath()
        scalar = self._scalar_t()

        def fn(x: Tensor, t: Tensor) -> Tensor:
            t_fm = 1 - t  # (B,), flow-matching time
            if scalar and t_fm.ndim == 1 and bool((t_fm == t_fm[0]).all()):
                t_fm = t_fm[0]  # one time for the batch: the time branch runs once
            return -self.velocity(x, t_fm)

        return samplers.Prediction(fn, "velocity", path)

    def loss(self, x1: Tensor, x0: Tensor | None = None, *,
             generator: torch.Generator | None = None) -> Tensor:
        r"""The conditional flow-matching loss on a minibatch, eq. ``eq-fm-cfm-loss``.

        Args:
            x1: data, shape ``(B, *D)``.
            x0: optional noise paired with ``x1`` (e.g. reflow pairs, see
                :func:`reflow_pairs`); if given, no coupling is applied. Default: fresh
                :math:`\mathcal N(0, I)` noise coupled by ``self.coupling``.
            generator: randomness of the noise, the times and the coupling.

        Returns:
            The scalar loss.
        """
        x1 = self._check_batch(x1, "x1")
        generator = _check_generator(generator)
        if x0 is None:
            x0 = _randn(x1.shape, like=x1, generator=generator)
            x0, x1 = couple(x0, x1, self.coupling, generator=generator)
        else:
            x0 = self._check_batch(x0, "x0")
            if x0.shape != x1.shape:
                raise ValueError("x0 and x1 must have the same shape")
        t = sample_times(x1.shape[0], self.time_sampling, generator=generator,
                         device=x1.device, dtype=x1.dtype)
        s = gaussian_path(x0, x1, t, self.path)
        return ((self.velocity(s.x_t, t) - s.u_t) ** 2).mean()

    def sample(self, n: int, *, generator: torch.Generator | None = None, steps: int = 10,
               solver: str | Callable[..., samplers.SamplePath] = "euler",
               x0: Tensor | None = None,
               return_path: bool = False) -> Tensor | samplers.SamplePath:
        r"""Generate by solving :math:`\dot x = v_\theta(x, t)` from :math:`t = 0` to 1.

        The ODE is solved by a sampler of :mod:`gmbook.samplers` on the model's
        :meth:`prediction`, over ``steps`` equal steps of the samplers' time
        :math:`1 - t` from 1 to 0: ``"euler"`` (:func:`gmbook.samplers.euler`),
        ``"midpoint"`` (:func:`gmbook.samplers.midpoint`), ``"heun"``
        (:func:`gmbook.samplers.heun`, whose last step is an Euler step), or any function
        with the samplers' common signature. ``"dopri5"`` integrates the same ODE with the
        adaptive solver of :func:`odeint` (a reference; its ``nfe`` is counted).

        Args:
            n: number of samples.
            generator: randomness of the initial noise.
            steps: solver steps (``NFE = steps`` for Euler, ``2 steps`` for midpoint,
                ``2 steps - 1`` for Heun, whose last step is Euler's; the path's ``nfe``
                says it).
            solver: one of :data:`SOLVERS`, or a sampler function.
            x0: optional initial noise of shape ``(n, *D)`` instead of fresh noise.
            return_path: return the :class:`gmbook.samplers.SamplePath`, whose
                ``states[k]`` is the state at flow-matching time ``1 - times[k]``
                (``states[0] = x0``, ``states[-1]`` the samples).

        Returns:
            Samples of shape ``(n, *D)``, or with ``return_path`` a
            :class:`gmbook.samplers.SamplePath`.
        """
        n = _check_int("n", n, 1)
        steps = _check_int("steps", steps, 1)
        generator = _check_generator(generator)
        if callable(solver):
            sampler = solver
        else:
            _check_choice("solver", solver, SOLVERS)
            sampler = None if solver == "dopri5" else getattr(samplers, solver)  # own dopri5
        p = next(self.parameters())
        if x0 is None:
            x0 = _randn((n, *self.shape), device=p.device, dtype=p.dtype, generator=generator)
        else:
            x0 = self._check_batch(x0, "x0")
            if x0.shape[0] != n:
                raise ValueError(f"x0 must have {n} rows, got {x0.shape[0]}")
        grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)  # samplers' time
        if sampler is None:  # dopri5: the adaptive reference
            calls = [0]

            def f(x: Tensor, t: Tensor) -> Tensor:
                calls[0] += 1
                return self.velocity(x, t)

            with torch.no_grad():
                out = odeint(f, x0, steps=steps, solver="dopri5", return_path=return_path,
                             scalar_t=self._scalar_t())
            if not return_path:
                return out
            return samplers.SamplePath(out[-1], grid, calls[0], out)
        path = sampler(self.prediction(), x0, grid, generator=generator,
                       return_path=return_path)
        return path if return_path else path.samples
    def log_prob(self, x: Tensor, *, steps: int = 20, solver: str = "midpoint",
                 rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
        r"""Log-density by the instantaneous change of variables, eq.
        ``eq-fm-change-of-variables``.

        Integrates backwards from :math:`t = 1` to 0 the augmented ODE

        .. math::

            \dot x_t = v_\theta(x_t, t), \qquad
            \frac{\mathrm d}{\mathrm dt} \log p_t(x_t) = -\nabla\cdot v_\theta(x_t, t),

        so :math:`\log p_1(x) = \log \mathcal N(x_0; 0, I) - \int_0^1 \nabla\cdot
        v_\theta(x_t, t)\, \mathrm dt`. The divergence is exact: one backward pass per
        dimension (cheap in 2-D, costly for images).

        Args:
            x: points, shape ``(B, *D)``.
            steps: solver steps.
            solver: one of :data:`SOLVERS`.
            rtol: relative tolerance of ``"dopri5"``.
            atol: absolute tolerance of ``"dopri5"``.

        Returns:
            Log-densities, shape ``(B,)``.
        """
        x = self._check_batch(x)
        d = int(np.prod(self.shape))
        b = x.shape[0]

        def aug(state: Tensor, t: Tensor) -> Tensor:
            with torch.enable_grad():
                z = state[:, :d].detach().requires_grad_(True)  # (B, d)
                v = self.net(z, t)  # (B, d)
                div = divergence(v, z, create_graph=False)  # (B,)
            return torch.cat([v.detach(), -div.detach()[:, None]], dim=1)  # (B, d + 1)

        state = torch.cat([x.flatten(1), x.new_zeros(b, 1)], dim=1)
        out = odeint(aug, state, t0=1.0, t1=0.0, steps=steps, solver=solver, rtol=rtol,
                     atol=atol, scalar_t=self._scalar_t())
        # The last coordinate ends at -int_1^0 div dt = int_0^1 div dt.
        z0, delta = out[:, :d], out[:, d]  # (B, d), (B,)
        log_p0 = -0.5 * (z0**2).sum(1) - 0.5 * d * math.log(2 * math.pi)
        return log_p0 - delta


def reflow_pairs(model: FlowMatching, n: int, *, steps: int = 100, solver: str = "midpoint",
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""Noise-sample pairs :math:`(x_0, \Phi_\theta(x_0))` of a trained model, for reflow.

    Rectified flow (Liu et al., 2023) retrains a model on these deterministic pairs with
    the linear path, eq. ``eq-fm-reflow``; the coupling they define is the one of the
    trained flow, and its paths cross less than independent pairs.

    Args:
        model: a trained :class:`FlowMatching`.
        n: number of pairs.
        steps: solver steps used to generate (accurate: the pairs are training data).
        solver: one of :data:`SOLVERS`.
        generator: randomness of the noise.

    Returns:
        ``(x0, x1)``, both of shape ``(n, *D)``.
    """
    if not isinstance(model, FlowMatching):
        raise TypeError("reflow_pairs: model must be a FlowMatching")
    n = _check_int("n", n, 1)
    generator = _check_generator(generator)
    p = next(model.parameters())
    x0 = _randn((n, *model.shape), device=p.device, dtype=p.dtype, generator=generator)
    return x0, model.sample(n, x0=x0, steps=steps, solver=solver)

