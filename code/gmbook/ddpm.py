r"""Denoising diffusion probabilistic models (DDPM): schedules, conversions, the model.

Derived in the chapter "Denoising diffusion probabilistic models"
(``book/diffusion/ddpm.md``); each function names the equation it implements.

Time is DDPM's discrete time (Ho et al., 2020): data at :math:`t = 0`, steps
:math:`t = 1, \dots, T`, noise levels :math:`\beta_t`, :math:`\alpha_t = 1 - \beta_t` and
:math:`\bar\alpha_t = \prod_{s \le t} \alpha_s`, so that
:math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon`
(eq. ``eq-ddpm-marginal``).

- Schedules, computed in float64: :func:`linear_betas` (Ho et al., 2020),
  :func:`cosine_betas` (Nichol & Dhariwal, 2021), :func:`alpha_bars`, :func:`snr`.
- The forward chain: :func:`q_sample` (eq. ``eq-ddpm-marginal``) and
  :func:`posterior_mean_var` (eq. ``eq-ddpm-posterior``).
- Conversions between the four things a network may predict (eq. ``eq-ddpm-conversions``):
  :func:`x0_from_eps`, :func:`eps_from_x0`, :func:`v_from_eps`, :func:`eps_from_v`,
  :func:`x0_from_v`, :func:`score_from_eps`, :func:`eps_from_score`. Each takes
  ``alpha_bar``, either a tensor broadcastable to ``x`` or one value per example of shape
  ``(B,)`` (then expanded with :func:`gmbook.nets.append_dims`).
- :class:`DDPM`, the model: ``loss(x)`` (eq. ``eq-ddpm-simple``), ``prediction()`` (the
  network as a :class:`gmbook.samplers.Prediction` on the schedule's
  :class:`gmbook.samplers.DiscreteVPPath`), ``sample(n, ...)`` (ancestral sampling, eq.
  ``eq-ddpm-ancestral``, or the deterministic DDIM update, eq. ``eq-ddpm-ddim``, on any
  sub-sequence of steps, run by :func:`gmbook.samplers.ddim`) and ``nll_bound(x)``, the
  negative variational bound per example (eq. ``eq-ddpm-elbo``).

Example:
    >>> from gmbook.nets import MLP
    >>> model = DDPM(MLP(2, hidden=32, time_dim=16), T=100)
    >>> model.loss(torch.randn(8, 2)).shape
    torch.Size([])
    >>> model.sample(5, steps=10).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from gmbook import samplers
from gmbook._checks import (check_bool, check_generator, check_int, check_positive, check_shape,
                            describe)
from gmbook._random import randn
from gmbook.nets import MLP, append_dims

__all__ = [
    "DDPM",
    "alpha_bars",
    "cosine_betas",
    "ddim_step",
    "eps_from_score",
    "eps_from_v",
    "eps_from_x0",
    "linear_betas",
    "posterior_mean_var",
    "q_sample",
    "score_from_eps",
    "snr",
    "v_from_eps",
    "x0_from_eps",
    "x0_from_v",
]

_PREDICTIONS = ("eps", "x0", "v")
_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- schedules


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    r"""The linear schedule of Ho et al. (2020): :math:`\beta_t` evenly spaced.

    For ``T = 1000`` the noise levels run from :math:`\beta_1 = 10^{-4}` to
    :math:`\beta_T = 0.02`, as in Ho et al. (2020, Sec. 4). For another ``T`` both ends are
    multiplied by :math:`1000 / T` (Nichol & Dhariwal, 2021), so that the chain still
    ends near pure noise (:math:`\bar\alpha_T \approx e^{-10}`).

    Args:
        T: number of steps.
        beta_1: first noise level for ``T = 1000``.
        beta_T: last noise level for ``T = 1000``.

    Returns:
        :math:`(\beta_1, \dots, \beta_T)`, shape ``(T,)``, float64.
    """
    T = check_int("T", T)
    scale = 1000.0 / T
    lo, hi = check_positive("beta_1", beta_1) * scale, check_positive("beta_T", beta_T) * scale
    if not lo <= hi:
        raise ValueError(f"linear_betas: need beta_1 <= beta_T, got {beta_1}, {beta_T}")
    return torch.linspace(lo, hi, T, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    r"""The cosine schedule of Nichol & Dhariwal (2021, eq. 17).

    :math:`\bar\alpha_t = f(t) / f(0)` with
    :math:`f(t) = \cos^2\!\big(\tfrac{t/T + s}{1 + s} \tfrac{\pi}{2}\big)`, and
    :math:`\beta_t = 1 - \bar\alpha_t / \bar\alpha_{t-1}`, clipped at ``max_beta`` to avoid
    the singularity at :math:`t = T` (eq. ``eq-ddpm-cosine``).

    Args:
        T: number of steps.
        s: small offset that keeps :math:`\beta_1` from being vanishingly small.
        max_beta: upper clip of :math:`\beta_t`.

    Returns:
        :math:`(\beta_1, \dots, \beta_T)`, shape ``(T,)``, float64.
    """
    T = check_int("T", T)
    s = check_positive("s", s)
    if not 0 < max_beta < 1:
        raise ValueError(f"cosine_betas: max_beta must be in (0, 1), got {max_beta}")
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2  # (T + 1,)
    ab = f / f[0]
    return (1 - ab[1:] / ab[:-1]).clamp(max=max_beta)


def alpha_bars(betas: Tensor) -> Tensor:
    r""":math:`\bar\alpha_t = \prod_{s=1}^t (1 - \beta_s)`, with :math:`\bar\alpha_0 = 1` first.

    Args:
        betas: :math:`(\beta_1, \dots, \beta_T)`, shape ``(T,)``, each in ``(0, 1)``.

    Returns:
        :math:`(\bar\alpha_0, \bar\alpha_1, \dots, \bar\alpha_T)`, shape ``(T + 1,)``, in
        float64, so that index ``t`` is step ``t``.
    """
    if not isinstance(betas, Tensor) or betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(f"alpha_bars: betas must be a tensor of shape (T,), got {describe(betas)}")
    b = betas.to(torch.float64)
    if not bool(((b > 0) & (b < 1)).all()):
        raise ValueError("alpha_bars: every beta must lie in (0, 1)")
    return torch.cat([b.new_ones(1), torch.cumprod(1 - b, dim=0)])


def snr(alpha_bar: Tensor) -> Tensor:
    r"""Signal-to-noise ratio :math:`\mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t)`.

    Eq. ``eq-ddpm-snr``. Infinite at :math:`\bar\alpha = 1` (clean data).

    Args:
        alpha_bar: values of :math:`\bar\alpha`, any shape.

    Returns:
        The SNR, same shape and dtype.
    """
    if not isinstance(alpha_bar, Tensor):
        raise TypeError(f"snr: alpha_bar must be a tensor, got {describe(alpha_bar)}")
    return alpha_bar / (1 - alpha_bar)


# --------------------------------------------------------------------------- conversions


def _ab(alpha_bar: Tensor | float, like: Tensor, name: str) -> Tensor:
    """Return ``alpha_bar`` broadcastable to ``like``, in its dtype and device."""
    if not isinstance(like, Tensor) or not like.is_floating_point():
        raise TypeError(f"{name}: the inputs must be floating-point tensors, got {describe(like)}")
    ab = torch.as_tensor(alpha_bar, device=like.device)
    if ab.ndim == 1 and like.ndim > 1 and ab.shape[0] == like.shape[0]:
        ab = append_dims(ab, like.ndim)  # (B,) -> (B, 1, ..., 1)
    # the rule of torch.broadcast_shapes (trailing sizes equal or one of them 1), on tuples
    if any(a != b and 1 not in (a, b) for a, b in zip(reversed(ab.shape), reversed(like.shape))):
        raise ValueError(
            f"{name}: alpha_bar of shape {tuple(ab.shape)} does not broadcast to "
            f"{tuple(like.shape)}; pass shape (B,) or a tensor broadcastable to x"
        )
    if ab.numel():  # one reduction for the range check (NaN fails it too)
        low, high = torch.aminmax(ab)
        if not (bool(low > 0) and bool(high <= 1)):
            raise ValueError(f"{name}: alpha_bar must lie in (0, 1]")
    return ab.to(like.dtype)


def _same_shape(a: Tensor, b: Tensor, name: str) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name}: inputs must be tensors, got {describe(a)} and {describe(b)}")
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} and {tuple(b.shape)}")


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    r"""Clean data from noise.

    :math:`x_0 = (x_t - \sqrt{1-\bar\alpha}\,\epsilon)/\sqrt{\bar\alpha}`;
    eq. ``eq-ddpm-conversions`` (the marginal ``eq-ddpm-marginal`` solved for :math:`x_0`).

    Args:
        x_t: noisy data, shape ``(B, *D)``.
        eps: noise (or its prediction), shape ``(B, *D)``.
        alpha_bar: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable to ``x_t``.

    Returns:
        :math:`x_0`, shape ``(B, *D)``.
    """
    _same_shape(x_t, eps, "x0_from_eps")
    ab = _ab(alpha_bar, x_t, "x0_from_eps")
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar: Tensor | float) -> Tensor:
    r"""Noise from clean data.

    :math:`\epsilon = (x_t - \sqrt{\bar\alpha}\,x_0)/\sqrt{1-\bar\alpha}`;
    eq. ``eq-ddpm-conversions``. Requires :math:`\bar\alpha < 1`.

    Args:
        x_t: noisy data, shape ``(B, *D)``.
        x0: clean data (or its prediction), shape ``(B, *D)``.
        alpha_bar: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable to ``x_t``.

    Returns:
        :math:`\epsilon`, shape ``(B, *D)``.
    """
    _same_shape(x_t, x0, "eps_from_x0")
    ab = _ab(alpha_bar, x_t, "eps_from_x0")
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def v_from_eps(x0: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    r"""The velocity :math:`v = \sqrt{\bar\alpha}\,\epsilon - \sqrt{1-\bar\alpha}\,x_0`.

    Salimans & Ho (2022); eq. ``eq-ddpm-conversions``. With
    :math:`\bar\alpha = \cos^2\phi`, :math:`x_t = \cos\phi\,x_0 + \sin\phi\,\epsilon` and
    :math:`v = \mathrm{d}x_t / \mathrm{d}\phi`.

    Args:
        x0: clean data, shape ``(B, *D)``.
        eps: noise, shape ``(B, *D)``.
        alpha_bar: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable to ``x0``.

    Returns:
        :math:`v`, shape ``(B, *D)``.
    """
    _same_shape(x0, eps, "v_from_eps")
    ab = _ab(alpha_bar, x0, "v_from_eps")
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def eps_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor | float) -> Tensor:
    r"""Noise from velocity: :math:`\epsilon = \sqrt{\bar\alpha}\,v + \sqrt{1-\bar\alpha}\,x_t`.

    Eq. ``eq-ddpm-conversions``.

    Args:
        x_t: noisy data, shape ``(B, *D)``.
        v: velocity (or its prediction), shape ``(B, *D)``.
        alpha_bar: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable to ``x_t``.

    Returns:
        :math:`\epsilon`, shape ``(B, *D)``.
    """
    _same_shape(x_t, v, "eps_from_v")
    ab = _ab(alpha_bar, x_t, "eps_from_v")
    return ab.sqrt() * v + (1 - ab).sqrt() * x_t


def x0_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor | float) -> Tensor:
    r"""Clean data from velocity: :math:`x_0 = \sqrt{\bar\alpha}\,x_t - \sqrt{1-\bar\alpha}\,v`.

    Eq. ``eq-ddpm-conversions``.

    Args:
        x_t: noisy data, shape ``(B, *D)``.
        v: velocity (or its prediction), shape ``(B, *D)``.
        alpha_bar: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable to ``x_t``.

    Returns:
        :math:`x_0`, shape ``(B, *D)``.
    """
    _same_shape(x_t, v, "x0_from_v")
    ab = _ab(alpha_bar, x_t, "x0_from_v")
    return ab.sqrt() * x_t - (1 - ab).sqrt() * v


def score_from_eps(eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    r"""Score of :math:`q(x_t)` from the noise prediction: :math:`-\epsilon / \sqrt{1-\bar\alpha}`.

    Eq. ``eq-ddpm-conversions``: by Tweedie's formula,
    :math:`\nabla \log q(x_t) = -\mathbb E[\epsilon \mid x_t] / \sqrt{1 - \bar\alpha_t}`.
    Requires :math:`\bar\alpha < 1`.

    Args:
        eps: noise prediction :math:`\mathbb E[\epsilon \mid x_t]`, shape ``(B, *D)``.
        alpha_bar: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable to ``eps``.

    Returns:
        The score, shape ``(B, *D)``.
    """
    ab = _ab(alpha_bar, eps, "score_from_eps")
    return -eps / (1 - ab).sqrt()


def eps_from_score(score: Tensor, alpha_bar: Tensor | float) -> Tensor:
    r"""Noise prediction from the score: :math:`\epsilon = -\sqrt{1-\bar\alpha}\,\nabla\log q(x_t)`.

    Eq. ``eq-ddpm-conversions``; the inverse of :func:`score_from_eps`.

    Args:
        score: score of :math:`q(x_t)`, shape ``(B, *D)``.
        alpha_bar: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable to ``score``.

    Returns:
        :math:`\epsilon`, shape ``(B, *D)``.
    """
    ab = _ab(alpha_bar, score, "eps_from_score")
    return -(1 - ab).sqrt() * score


# --------------------------------------------------------------------------- the chain


def q_sample(x0: Tensor, alpha_bar: Tensor | float, eps: Tensor) -> Tensor:
    r"""Draw from the closed-form marginal :math:`q(x_t \mid x_0)`.

    Eq. ``eq-ddpm-marginal``:
    :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon`.

    Args:
        x0: clean data, shape ``(B, *D)``.
        alpha_bar: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable to ``x0``.
        eps: standard normal noise, shape ``(B, *D)``.

    Returns:
        :math:`x_t`, shape ``(B, *D)``.
    """
    _same_shape(x0, eps, "q_sample")
    ab = _ab(alpha_bar, x0, "q_sample")
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def posterior_mean_var(
    x0: Tensor, x_t: Tensor, alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float
) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of the forward posterior :math:`q(x_{s} \mid x_t, x_0)`, :math:`s < t`.

    Eq. ``eq-ddpm-posterior``, with :math:`s = t - 1` in DDPM and any earlier step for a
    strided chain; :math:`\beta = 1 - \bar\alpha_t / \bar\alpha_s` is the noise added
    between the two steps:

    .. math::

        \tilde\mu = \frac{\sqrt{\bar\alpha_s}\,\beta}{1 - \bar\alpha_t}\, x_0
        + \frac{\sqrt{1-\beta}\,(1 - \bar\alpha_s)}{1 - \bar\alpha_t}\, x_t, \qquad
        \tilde\beta = \frac{1 - \bar\alpha_s}{1 - \bar\alpha_t}\, \beta.

    Args:
        x0: clean data, shape ``(B, *D)``.
        x_t: noisy data, shape ``(B, *D)``.
        alpha_bar_t: :math:`\bar\alpha_t < 1`, shape ``(B,)`` or broadcastable.
        alpha_bar_prev: :math:`\bar\alpha_s \ge \bar\alpha_t`, same shape rules.

    Returns:
        ``(mean, var)``: the mean, shape ``(B, *D)``, and the variance, broadcastable to it.
    """
    _same_shape(x0, x_t, "posterior_mean_var")
    ab_t = _ab(alpha_bar_t, x_t, "posterior_mean_var")
    ab_s = _ab(alpha_bar_prev, x_t, "posterior_mean_var")
    if bool((ab_s < ab_t).any()) or bool((ab_t >= 1).any()):
        raise ValueError(
            "posterior_mean_var: need alpha_bar_t < 1 and alpha_bar_prev >= alpha_bar_t"
        )
    beta = 1 - ab_t / ab_s
    mean = (ab_s.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_s) * x_t) / (1 - ab_t)
    var = (1 - ab_s) / (1 - ab_t) * beta
    return mean, var


def ddim_step(
    x_t: Tensor,
    eps: Tensor,
    alpha_bar_t: Tensor | float,
    alpha_bar_prev: Tensor | float,
    *,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    r"""One step :math:`x_t \to x_s` of the DDIM family (Song et al., 2021a, eq. 12).

    Eq. ``eq-ddpm-ddim``: with :math:`\hat x_0` from :func:`x0_from_eps`,

    .. math::

        x_s = \sqrt{\bar\alpha_s}\, \hat x_0 + \sqrt{1 - \bar\alpha_s - \sigma^2}\,\hat\epsilon
        + \sigma z, \qquad
        \sigma^2 = \eta^2\, \frac{1 - \bar\alpha_s}{1 - \bar\alpha_t}
        \Big(1 - \frac{\bar\alpha_t}{\bar\alpha_s}\Big).

    ``eta = 1`` draws from :math:`q(x_s \mid x_t, \hat x_0)` (ancestral sampling,
    eq. ``eq-ddpm-ancestral``); ``eta = 0`` is the deterministic DDIM update.

    Args:
        x_t: current state, shape ``(B, *D)``.
        eps: noise prediction at ``x_t``, shape ``(B, *D)``.
        alpha_bar_t: :math:`\bar\alpha_t`, shape ``(B,)`` or broadcastable.
        alpha_bar_prev: :math:`\bar\alpha_s \ge \bar\alpha_t`, same shape rules.
        eta: stochasticity, in ``[0, 1]``.
        noise: the standard normal :math:`z`, shape ``(B, *D)``; required if ``eta > 0``.

    Returns:
        :math:`x_s`, shape ``(B, *D)``.
    """
    _same_shape(x_t, eps, "ddim_step")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddim_step: eta must be in [0, 1], got {eta}")
    ab_t = _ab(alpha_bar_t, x_t, "ddim_step")
    ab_s = _ab(alpha_bar_prev, x_t, "ddim_step")
    x0 = x0_from_eps(x_t, eps, ab_t)
    var = eta**2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
    out = ab_s.sqrt() * x0 + (1 - ab_s - var).clamp(min=0).sqrt() * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step: noise is required when eta > 0")
        _same_shape(x_t, noise, "ddim_step")
        out = out + var.sqrt() * noise
    return out


# --------------------------------------------------------------------------- the model


def _timesteps(T: int, steps: int) -> list[int]:
    """``steps + 1`` integer steps from ``T`` down to 0, evenly spaced (rounded)."""
    grid = torch.linspace(T, 0, steps + 1, dtype=torch.float64).round().long().tolist()
    out = [grid[0]]
    for t in grid[1:]:
        if t < out[-1]:
            out.append(t)
    return out


class DDPM(nn.Module):
    r"""A denoising diffusion probabilistic model (Ho et al., 2020).

    The network ``net(x, t)`` takes flattened states ``(B, prod(D))`` and times
    :math:`t / T \in (0, 1]` of shape ``(B,)`` (the convention of
    :class:`gmbook.nets.MLP`) and predicts, according to ``prediction``, the noise
    :math:`\epsilon`, the clean data :math:`x_0` or the velocity :math:`v`
    (eq. ``eq-ddpm-conversions``). The schedule is kept in float64 buffers
    ``betas`` and ``alpha_bar`` of shape ``(T + 1,)`` (index ``t`` is step ``t``;
    :math:`\beta_0 = 0`, :math:`\bar\alpha_0 = 1`) and cast on use.

    Args:
        net: the network, ``(B, prod(D)), (B,) -> (B, prod(D))``.
        shape: the shape ``D`` of one example, e.g. ``(2,)`` or ``(1, 8, 8)``.
        T: number of diffusion steps.
        schedule: ``"linear"`` (:func:`linear_betas`) or ``"cosine"``
            (:func:`cosine_betas`), or a tensor of :math:`\beta_1, \dots, \beta_T`.
        prediction: ``"eps"`` (default), ``"x0"`` or ``"v"``; kept as the attribute
            ``kind`` (the method :meth:`gmbook.ddpm.DDPM.prediction` returns the network as a
            :class:`gmbook.samplers.Prediction`).
    """

    betas: Tensor
    alpha_bar: Tensor

    def __init__(
        self,
        net: nn.Module,
        shape: tuple[int, ...] = (2,),
        *,
        T: int = 1000,
        schedule: str | Tensor = "linear",
        prediction: str = "eps",
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"DDPM: net must be an nn.Module, got {describe(net)}")
        shape = check_shape("DDPM: shape", shape)
        T = check_int("T", T)
        if prediction not in _PREDICTIONS:
            raise ValueError(f"DDPM: prediction must be one of {_PREDICTIONS}, got {prediction!r}")
        if isinstance(schedule, Tensor):
            betas = schedule.to(torch.float64)
            if betas.shape != (T,):
                raise ValueError(f"DDPM: schedule tensor must have shape (T,) = ({T},)")
            name = "custom"
        elif schedule == "linear":
            betas, name = linear_betas(T), "linear"
        elif schedule == "cosine":
            betas, name = cosine_betas(T), "cosine"
        else:
            raise ValueError(
                f"DDPM: schedule must be 'linear', 'cosine' or a tensor, got {schedule!r}"
            )
        self.net = net
        self.shape = tuple(shape)
        self.T = T
        self.schedule = name
        self.kind = prediction
        self.register_buffer("betas", torch.cat([betas.new_zeros(1), betas]))
        self.register_buffer("alpha_bar", alpha_bars(betas))

    # ------------------------------------------------------------------ helpers

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, T={self.T}, schedule={self.schedule!r}, "
            f"prediction={self.kind!r}"
        )

    def _check_x(self, x: object, name: str = "x") -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"DDPM: {name} must be a floating-point tensor, got {describe(x)}")
        if x.ndim != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"DDPM: {name} must have shape (B, *{self.shape}), got {tuple(x.shape)}"
            )
        return x

    def ab(self, t: Tensor, like: Tensor) -> Tensor:
        r""":math:`\bar\alpha_t` for integer steps ``t`` of shape ``(B,)``, cast like ``like``."""
        return self.alpha_bar[t].to(like.dtype)

    def net_output(self, x_t: Tensor, t: Tensor | int) -> Tensor:
        r"""The raw network output at ``x_t`` and integer steps ``t``.

        Args:
            x_t: states, shape ``(B, *D)``.
            t: integer steps in ``[1, T]``, shape ``(B,)``, or one int for the whole batch.

        Returns:
            The prediction (of :math:`\epsilon`, :math:`x_0` or :math:`v`), ``(B, *D)``.

        A time-conditioned :class:`gmbook.nets.MLP` evaluates itself faster (its time
        branch once per distinct step) whenever autograd is off: in the sampler and in the
        bound.
        """
        flat = x_t.flatten(1)  # (B, prod(D))
        if isinstance(t, int):
            times = flat.new_full((flat.shape[0],), t / self.T)
        else:
            times = t.to(flat.dtype) / self.T
        return self.net(flat, times).reshape(x_t.shape)

    def predict(self, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        r"""Predictions :math:`(\hat\epsilon, \hat x_0)` at ``x_t`` and steps ``t``.

        The network's own prediction is converted by eq. ``eq-ddpm-conversions``.

        Args:
            x_t: states, shape ``(B, *D)``.
            t: integer steps in ``[1, T]``, shape ``(B,)``, or one int.

        Returns:
            ``(eps_hat, x0_hat)``, each of shape ``(B, *D)``.
        """
        out = self.net_output(x_t, t)
        if isinstance(t, int):
            ab = self.alpha_bar[t].to(x_t.dtype)
        else:
            ab = append_dims(self.ab(t, x_t), x_t.ndim)
        if self.kind == "eps":
            return out, x0_from_eps(x_t, out, ab)
        if self.kind == "x0":
            return eps_from_x0(x_t, out, ab), out
        return eps_from_v(x_t, out, ab), x0_from_v(x_t, out, ab)

    # ------------------------------------------------------------------ training

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""The simple loss of Ho et al. (2020), eq. ``eq-ddpm-simple``.

        Draws :math:`t \sim \mathcal U\{1, \dots, T\}` and :math:`\epsilon \sim
        \mathcal N(0, I)` per example and returns the mean squared error between the
        network output and its target: :math:`\epsilon`, :math:`x_0` or :math:`v`
        (eq. ``eq-ddpm-conversions``), averaged over batch and dimensions.

        Args:
            x: clean data, shape ``(B, *D)``.
            generator: the source of :math:`t` and :math:`\epsilon` (drawn on its own
                device, as in ``gmbook._random``); ``None`` for the global RNG.

        Returns:
            A scalar.
        """
        x = self._check_x(x)
        generator = check_generator(generator)
        where = x.device if generator is None else generator.device
        t = torch.randint(1, self.T + 1, (x.shape[0],), generator=generator,
                          device=where).to(x.device)  # (B,)
        eps = randn(x.shape, like=x, generator=generator)
        ab = append_dims(self.ab(t, x), x.ndim)
        x_t = q_sample(x, ab, eps)
        target = {"eps": eps, "x0": x, "v": None}[self.kind]
        if target is None:
            target = v_from_eps(x, eps, ab)
        return (self.net_output(x_t, t) - target).pow(2).mean()

    # ------------------------------------------------------------------ sampling

    def path(self) -> samplers.DiscreteVPPath:
        r"""The schedule as a Gaussian path of :mod:`gmbook.samplers`: step :math:`k` at
        time :math:`t = k / T`, with :math:`\alpha_t^2 = \bar\alpha_k` and
        :math:`\sigma_t^2 = 1 - \bar\alpha_k` (eq. ``eq-ddpm-marginal``)."""
        return samplers.DiscreteVPPath(self.alpha_bar[1:])

    def prediction(self, clip: float | None = None) -> samplers.Prediction:
        r"""The network as a :class:`gmbook.samplers.Prediction` on :meth:`gmbook.ddpm.DDPM.path`.

        The prediction takes states ``(B, *D)`` and times :math:`t = k / T` of shape
        ``(B,)`` (the network's own time input); its kind is the model's (``"eps"``,
        ``"x0"`` or ``"v"``) and :class:`~gmbook.samplers.Prediction` converts it to the
        others (eq. ``eq-ddpm-conversions``).

        Args:
            clip: if given, the prediction is :math:`\hat x_0` clamped to
                ``[-clip, clip]`` (a prediction of kind ``"x0"``, from which
                :math:`\hat\epsilon` is recomputed), the "clip denoised" option of
                common libraries; right for data in ``[-1, 1]`` with ``clip=1``, wrong for
                standardized data.
        """
        path = self.path()
        scalar = isinstance(self.net, MLP)  # takes one time for the batch

        def net(x: Tensor, t: Tensor) -> Tensor:
            if scalar and t.ndim == 1 and bool((t == t[0]).all()):
                t = t[0]  # a sampler's step: the time branch runs once, not per row
            return self.net(x.flatten(1), t).reshape(x.shape)

        pred = samplers.Prediction(net, self.kind, path)
        if clip is None:
            return pred
        c = check_positive("clip", clip)

        def clipped(x: Tensor, t: Tensor) -> Tensor:
            return pred.x0_eps(x, t)[0].clamp(-c, c)

        return samplers.Prediction(clipped, "x0", path)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        deterministic: bool = False,
        clip: float | None = None,
        return_path: bool = False,
        x_T: Tensor | None = None,
    ) -> Tensor | samplers.SamplePath:
        r"""Generate ``n`` samples by running the reverse chain from noise.

        With ``steps = T`` (default) and ``deterministic=False`` this is the ancestral
        sampler of Ho et al. (2020, Algorithm 2) with :math:`\sigma_t^2 = \tilde\beta_t`
        (eq. ``eq-ddpm-ancestral``). With fewer ``steps``, the chain visits an evenly
        spaced sub-sequence :math:`T = \tau_K > \dots > \tau_0 = 0` and each step draws
        from :math:`q(x_{\tau_{i-1}} \mid x_{\tau_i}, \hat x_0)` (``eta = 1`` in
        :func:`ddim_step`); with ``deterministic=True`` it takes the DDIM step
        (``eta = 0``, eq. ``eq-ddpm-ddim``). The last step returns :math:`\hat x_0`.

        The loop is :func:`gmbook.samplers.ddim` on :meth:`gmbook.ddpm.DDPM.prediction`
        over the grid :math:`t = \tau_i / T`, the one sampler loop of the book;
        :func:`ddim_step` is the same update written with the chapter's :math:`\bar\alpha`.

        Args:
            n: number of samples.
            generator: randomness of the starting noise and of every step.
            steps: number of network evaluations :math:`K \le T` (default ``T``).
            deterministic: use the deterministic DDIM update.
            clip: if given, clamp every prediction :math:`\hat x_0` to
                ``[-clip, clip]`` (see :meth:`gmbook.ddpm.DDPM.prediction`).
            return_path: return the sampler's :class:`gmbook.samplers.SamplePath`, with
                the times :math:`\tau_i / T`, every state and every :math:`\hat x_0`.
            x_T: starting noise, shape ``(n, *D)``, instead of drawing it.

        Returns:
            Samples of shape ``(n, *D)``, or a :class:`gmbook.samplers.SamplePath`.
        """
        n = check_int("n", n)
        steps = self.T if steps is None else check_int("steps", steps)
        if steps > self.T:
            raise ValueError(f"DDPM.sample: steps ({steps}) must be at most T ({self.T})")
        check_bool("deterministic", deterministic)
        check_bool("return_path", return_path)
        generator = check_generator(generator)
        pred = self.prediction(clip)
        dtype = next(self.net.parameters(), torch.empty(0)).dtype
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        if x_T is None:
            x = randn((n, *self.shape), device=self.betas.device, dtype=dtype,
                      generator=generator)
        else:
            x = self._check_x(x_T, "x_T").clone()
            if x.shape[0] != n:
                raise ValueError(f"DDPM.sample: x_T has {x.shape[0]} rows, expected n = {n}")
        grid = torch.tensor(_timesteps(self.T, steps), dtype=torch.float64) / self.T
        out = samplers.ddim(pred, x, grid, eta=0.0 if deterministic else 1.0,
                            generator=generator, return_path=return_path)
        return out if return_path else out.samples

    # ------------------------------------------------------------------ likelihood

    @torch.no_grad()
    def nll_bound(
        self,
        x: Tensor,
        *,
        bin_width: float | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 4096,
        variance: Literal["posterior", "beta"] | tuple[str, ...] = "posterior",
    ) -> Tensor | tuple[Tensor, ...]:
        r"""The negative variational bound :math:`-\mathrm{ELBO}(x)` in nats, per example.

        Eq. ``eq-ddpm-elbo``: :math:`L_T + \sum_{t=2}^T L_{t-1} + L_0`, every term
        computed (one Monte Carlo draw of :math:`x_t` per term), with
        :math:`L_{t-1} = \|\tilde\mu_t(x_t, x_0) - \tilde\mu_t(x_t, \hat x_0)\|^2 /
        (2\tilde\beta_t)` (the reverse variance is :math:`\tilde\beta_t`, eq.
        ``eq-ddpm-kl-term``), :math:`L_T = \mathrm{KL}(q(x_T \mid x_0) \,\|\, \mathcal
        N(0, I))` and the decoder term :math:`L_0 = -\log p(x_0 \mid x_1)`, a Gaussian
        of variance :math:`\beta_1` around :math:`\hat x_0(x_1, 1)`. With ``bin_width``
        :math:`\Delta` the data are discrete on a grid of spacing :math:`\Delta` inside
        ``[-1, 1]`` and :math:`p(x_0 \mid x_1)` is the discretized Gaussian of Ho et al.
        (2020, eq. 13): the mass of the bin of width :math:`\Delta` around each value,
        the edge bins extended to infinity. The result then bounds the discrete
        negative log-likelihood.

        Args:
            x: clean data, shape ``(B, *D)``.
            bin_width: :math:`\Delta` for discrete data, or ``None`` (continuous density).
            generator: randomness of the noise draws.
            batch_size: examples times steps evaluated per network call.
            variance: the reverse variance :math:`\sigma_t^2` of the terms
                :math:`t \ge 2`: ``"posterior"`` (:math:`\tilde\beta_t`) or ``"beta"``
                (:math:`\beta_t`), the two choices of Ho et al. (2020); or a tuple of
                them, whose bounds then share the draws of :math:`x_t` and the network
                calls (each is what a call with that one choice and the same generator
                state returns, at the cost of one).

        Returns:
            The bound in nats, shape ``(B,)``; for a tuple of variances, a tuple of such
            bounds in the same order.
        """
        x = self._check_x(x)
        generator = check_generator(generator)
        batch_size = check_int("batch_size", batch_size)
        if bin_width is not None:
            bin_width = check_positive("bin_width", bin_width)
        several = isinstance(variance, tuple)
        choices = variance if several else (variance,)
        if not choices or any(v not in ("posterior", "beta") for v in choices):
            raise ValueError("nll_bound: variance must be 'posterior' or 'beta' (or a "
                             f"non-empty tuple of them), got {variance!r}")
        B, D = x.shape[0], math.prod(self.shape)
        totals = [self.prior_kl(x) for _ in choices]  # L_T, (B,) each
        per_chunk = max(1, batch_size // B)
        ts = list(range(1, self.T + 1))
        for i in range(0, self.T, per_chunk):
            chunk = torch.tensor(ts[i : i + per_chunk], device=x.device)  # (k,)
            k = chunk.shape[0]
            t = chunk.repeat_interleave(B)  # (k B,)
            x0 = x.repeat(k, *([1] * len(self.shape)))  # (k B, *D)
            eps = randn(x0.shape, like=x, generator=generator)
            ab_t = append_dims(self.ab(t, x), x.ndim)
            x_t = q_sample(x0, ab_t, eps)
            _, x0_hat = self.predict(x_t, t)
            for j, var in enumerate(choices):
                terms = self._kl_terms(x0, x0_hat, x_t, t, bin_width, var)  # (k B,)
                totals[j] = totals[j] + terms.reshape(k, B).sum(0)
        del D
        return tuple(totals) if several else totals[0]

    @torch.no_grad()
    def bound_term(
        self,
        x: Tensor,
        t: int,
        *,
        bin_width: float | None = None,
        generator: torch.Generator | None = None,
        variance: Literal["posterior", "beta"] = "posterior",
    ) -> Tensor:
        r"""One term of the bound: :math:`L_{t-1}`, or :math:`L_0` at ``t = 1``.

        Eq. ``eq-ddpm-elbo``; the terms of :meth:`gmbook.ddpm.DDPM.nll_bound`, one at a time.

        Args:
            x: clean data, shape ``(B, *D)``.
            t: the step, in ``[1, T]``.
            bin_width: as in :meth:`gmbook.ddpm.DDPM.nll_bound`.
            generator: randomness of the draw of :math:`x_t`.
            variance: as in :meth:`gmbook.ddpm.DDPM.nll_bound`.

        Returns:
            The term in nats per example (one draw of :math:`x_t`), shape ``(B,)``.
        """
        x = self._check_x(x)
        t = check_int("t", t)
        if t > self.T:
            raise ValueError(f"bound_term: t must be at most T = {self.T}, got {t}")
        steps = torch.full((x.shape[0],), t, device=x.device)
        eps = randn(x.shape, like=x, generator=generator)
        x_t = q_sample(x, append_dims(self.ab(steps, x), x.ndim), eps)
        _, x0_hat = self.predict(x_t, t)
        return self._kl_terms(x, x0_hat, x_t, steps, bin_width, variance)

    def prior_kl(self, x: Tensor) -> Tensor:
        r"""The prior term of the bound, per example, shape ``(B,)``.

        :math:`L_T = \mathrm{KL}(q(x_T \mid x_0) \,\|\, \mathcal N(0, I))`, eq.
        ``eq-ddpm-elbo``, in closed form.
        """
        x = self._check_x(x)
        ab = self.alpha_bar[self.T].to(x.dtype)
        mean2 = (ab * x.flatten(1) ** 2).sum(1)  # (B,)
        D = math.prod(self.shape)
        return 0.5 * (mean2 + D * ((1 - ab) - 1 - torch.log(1 - ab)))

    def _kl_terms(
        self,
        x0: Tensor,
        x0_hat: Tensor,
        x_t: Tensor,
        t: Tensor,
        bin_width: float | None,
        variance: str = "posterior",
    ) -> Tensor:
        """The terms :math:`L_{t-1}` (``t >= 2``) and :math:`L_0` (``t = 1``), ``(N,)``."""
        ab_t = append_dims(self.ab(t, x0), x0.ndim)
        ab_s = append_dims(self.ab(t - 1, x0), x0.ndim)
        beta = append_dims(self.betas[t].to(x0.dtype), x0.ndim)
        coef = ab_s.sqrt() * beta / (1 - ab_t)  # weight of x0 in the posterior mean
        var = (1 - ab_s) / (1 - ab_t) * beta  # tilde beta_t (0 at t = 1)
        first = t == 1
        sigma2 = beta if variance == "beta" else torch.where(append_dims(first, x0.ndim), beta, var)
        ratio = var / sigma2  # 1 for the posterior variance
        kl = (coef**2 * (x0 - x0_hat) ** 2 / (2 * sigma2)
              + 0.5 * (ratio - 1 - torch.log(ratio))).flatten(1).sum(1)  # (N,)
        if variance == "posterior":
            kl = (coef**2 * (x0 - x0_hat) ** 2 / (2 * sigma2)).flatten(1).sum(1)
        dec = self._decoder_nll(x0, x0_hat, beta, bin_width)  # (N,)
        return torch.where(first, dec, kl)

    @staticmethod
    def _decoder_nll(x0: Tensor, mean: Tensor, var: Tensor, bin_width: float | None) -> Tensor:
        r""":math:`-\log p(x_0 \mid x_1)`, Gaussian or discretized Gaussian, ``(N,)``."""
        if bin_width is None:
            nll = 0.5 * ((x0 - mean) ** 2 / var + torch.log(var) + _LOG_2PI)
            return nll.flatten(1).sum(1)
        std = var.sqrt()
        inf = torch.full_like(x0, math.inf)
        upper = torch.where(x0 > 1 - bin_width / 2, inf, (x0 + bin_width / 2 - mean) / std)
        lower = torch.where(x0 < -1 + bin_width / 2, -inf, (x0 - bin_width / 2 - mean) / std)
        # log(Phi(u) - Phi(l)) on the side of the smaller tail, with log_ndtr for accuracy
        flip = (lower + upper) > 0
        lo, up = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
        log_up, log_lo = torch.special.log_ndtr(up), torch.special.log_ndtr(lo)
        log_mass = log_up + torch.log1p(-torch.exp(log_lo - log_up))
        return -log_mass.flatten(1).sum(1)
