r"""Generation in one or two steps: chapter ``book/diffusion/few_step.md``.

A diffusion or flow model samples by solving its probability-flow ODE, tens of network calls.
The methods of this module learn to jump, in one or a few calls, to where that ODE would
land. All of them live on the variance-exploding path of EDM, :math:`x_\sigma = x_0 + \sigma
\varepsilon` with time :math:`t = \sigma` (:class:`gmbook.samplers.VEPath`), and take their
teachers as a :class:`gmbook.samplers.Prediction` (a trained :class:`gmbook.sde.EDM`, or the
exact denoiser :func:`gmbook.samplers.mixture_prediction` of a Gaussian mixture such as the
two moons):

- the **flow map** :math:`\Phi_{t \to s}` of the probability-flow ODE (:func:`flow_map`, eq.
  ``eq-fs-flow-map``; an accurate adaptive solve) and its closed form for Gaussian data
  (:func:`gaussian_flow_map`, eq. ``eq-fs-gaussian-flow-map``); along one trajectory it
  is self-consistent, :math:`\Phi_{t \to s_0}(x_t) = \Phi_{t' \to s_0}(x_{t'})`;
- **consistency models** (Song et al., 2023): :class:`ConsistencyModel`, a network with the
  boundary condition :math:`f(x, \sigma_{\min}) = x` built in by
  :func:`consistency_coefficients` (eq. ``eq-fs-cm-param``), trained by
  :func:`consistency_loss` (eq. ``eq-fs-cm-loss``): consistency distillation from a teacher
  (one step of a sampler of :mod:`gmbook.samplers`, :func:`teacher_step`) or consistency
  training without one, with the improvements of Song & Dhariwal (2023) as options (the
  pseudo-Huber distance :func:`pseudo_huber`, the discretisation curriculum
  :func:`curriculum`, log-normal noise levels :func:`level_probabilities`, no EMA
  teacher); sampled by :func:`multistep_consistency` (eq. ``eq-fs-cm-multistep``);
- **knowledge distillation** along the teacher's trajectories (after Luhman & Luhman, 2021,
  who regress a one-step student on the teacher's noise-sample pairs):
  :func:`flow_map_pairs` solves the teacher's ODE once and keeps every level,
  :func:`trajectory_distillation_loss` (eq. ``eq-fs-kd-loss``) regresses a consistency
  model on the endpoints; it is consistency distillation with an exact teacher and no
  bootstrapped target;
- **progressive distillation** (Salimans & Ho, 2022): :func:`progressive_distillation_loss`
  (eq. ``eq-fs-pd-loss``) trains a student whose one DDIM step does what two of its
  teacher's do, through the DDIM target :func:`ddim_target` (eq. ``eq-fs-pd-target``).

- **flow maps by their average velocity** (MeanFlow, Geng et al., 2025):
  :class:`MeanFlow` learns :math:`u(z, r, t) = \frac{1}{t - r} \int_r^t v(z_\tau, \tau)\,
  \mathrm d\tau` on the linear path from the MeanFlow identity (:func:`meanflow_target`,
  eq. ``eq-fs-meanflow``), and samples with :math:`z_r = z_t - (t - r)\, u(z_t, r, t)`.

References: Song, Dhariwal, Chen & Sutskever (2023), *Consistency models*; Song & Dhariwal
(2023), *Improved techniques for training consistency models*; Salimans & Ho (2022),
*Progressive distillation for fast sampling of diffusion models*; Karras et al. (2022),
*Elucidating the design space of diffusion-based generative models*; Luhman & Luhman
(2021), *Knowledge distillation in iterative generative models for improved sampling speed*;
Geng, Deng, Bai, Kolter & He (2025), *Mean flows for one-step generative modeling*.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gmbook import samplers
from gmbook._checks import (check_generator, check_int, check_positive, check_real,
                            check_shape, describe)
from gmbook._random import rand, randn
from gmbook.nets import append_dims
from gmbook.sde import edm_coefficients

__all__ = [
    "ConsistencyModel",
    "MeanFlow",
    "consistency_coefficients",
    "consistency_loss",
    "curriculum",
    "ddim_target",
    "flow_map",
    "flow_map_pairs",
    "gaussian_flow_map",
    "level_probabilities",
    "meanflow_target",
    "multistep_consistency",
    "progressive_distillation_loss",
    "pseudo_huber",
    "teacher_step",
    "trajectory_distillation_loss",
]



def _check_batch(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, *D), "
                        f"got {describe(x)}")
    return x


def _check_pred(pred: object, ve: bool = False) -> samplers.Prediction:
    if not isinstance(pred, samplers.Prediction):
        raise TypeError(f"pred must be a gmbook.samplers.Prediction, got {describe(pred)}")
    if ve and not isinstance(pred.path, samplers.VEPath):
        raise ValueError("the teacher must live on the VE path sigma(t) = t "
                         f"(gmbook.samplers.VEPath), got {type(pred.path).__name__}")
    return pred


# --------------------------------------------------------------------------- flow maps


def flow_map(pred: samplers.Prediction, x: Tensor, t: float, s: float, *,
             rtol: float = 1e-8, atol: float = 1e-8,
             generator: torch.Generator | None = None) -> Tensor:
    r"""The flow map of the probability-flow ODE, eq. ``eq-fs-flow-map``:
    :math:`\Phi_{t \to s}(x)`, the solution at time :math:`s` of

    .. math::

        \frac{\mathrm d x}{\mathrm d \tau} = \dot\alpha_\tau \hat x_0(x, \tau)
        + \dot\sigma_\tau \hat\varepsilon(x, \tau), \qquad x(t) = x,

    computed by the adaptive Dormand-Prince solver :func:`gmbook.samplers.dopri5` with tight
    tolerances. With the exact denoiser of the data (e.g.
    :func:`gmbook.samplers.mixture_prediction`), this is the map every few-step method
    tries to learn: the consistency function of Song et al. (2023) is :math:`f(x, t) =
    \Phi_{t \to \sigma_{\min}}(x)`. It is self-consistent: :math:`\Phi_{t' \to s} \circ
    \Phi_{t \to t'} = \Phi_{t \to s}`.

    Args:
        pred: the prediction whose ODE is solved (its ``path`` gives the times).
        x: points at time ``t``, shape ``(B, *D)``.
        t: the starting time.
        s: the end time, ``0 < s < t``: at :math:`\sigma_s = 0` the velocity of a denoiser is
            :math:`0 / 0`; end at a small level instead (:math:`\sigma_{\min}`).
        rtol, atol: the solver's tolerances.
        generator: unused (the map is deterministic), accepted for the samplers' signature.

    Returns:
        :math:`\Phi_{t \to s}(x)`, shape ``(B, *D)``.
    """
    check_generator(generator)
    pred = _check_pred(pred)
    x = _check_batch("x", x)
    t, s = check_positive("t", t), check_positive("s", s)
    if not s < t:
        raise ValueError(f"the flow map runs towards the data: need s < t, got t = {t}, s = {s}")
    grid = torch.tensor([t, s], dtype=torch.float64)
    return samplers.dopri5(pred, x, grid, rtol=check_positive("rtol", rtol),
                           atol=check_positive("atol", atol)).samples


def gaussian_flow_map(x: Tensor, t: float | Tensor, s: float | Tensor, mean: Tensor,
                      var: Tensor, path: samplers.GaussianPath) -> Tensor:
    r"""The closed-form flow map for Gaussian data, eq. ``eq-fs-gaussian-flow-map``.

    For data :math:`\mathcal N(\mu, \operatorname{diag} v)`:

    .. math::

        \Phi_{t \to s}(x) = \alpha_s \mu + \sqrt{\frac{\alpha_s^2 v + \sigma_s^2}
        {\alpha_t^2 v + \sigma_t^2}}\, (x - \alpha_t \mu)

    per coordinate. The marginal at time :math:`t` is :math:`\mathcal N(\alpha_t \mu,
    \alpha_t^2 v + \sigma_t^2)`, the probability-flow ODE is linear in :math:`x`, and this
    affine map (the increasing map between the two marginals) solves it; on the VE path it
    is :math:`\mu + \sqrt{(v + s^2)/(v + t^2)}\,(x - \mu)`. With :math:`s = \sigma_{\min}`
    it is the exact consistency function of Gaussian data.

    Args:
        x: points at time ``t``, shape ``(B, D)``.
        t, s: the times, numbers or tensors of shape ``(B,)``; any order (the map is
            invertible).
        mean: :math:`\mu`, shape ``(D,)``.
        var: :math:`v \ge 0`, shape ``(D,)``.
        path: the :class:`gmbook.samplers.GaussianPath`.

    Returns:
        :math:`\Phi_{t \to s}(x)`, shape ``(B, D)``.
    """
    x = _check_batch("x", x)
    if not isinstance(path, samplers.GaussianPath):
        raise TypeError(f"path must be a gmbook.samplers.GaussianPath, got {describe(path)}")
    for name, v in (("mean", mean), ("var", var)):
        if not isinstance(v, Tensor) or v.shape != x.shape[1:]:
            raise ValueError(f"{name} must be a tensor of shape {tuple(x.shape[1:])}, "
                             f"got {describe(v)}")
    if bool((var < 0).any()):
        raise ValueError("var must be >= 0")

    def coef(tau):
        tau = torch.as_tensor(tau, dtype=torch.float64)
        tau = tau.reshape(-1, *([1] * (x.ndim - 1))) if tau.ndim else tau
        return path.alpha(tau).to(x), path.sigma(tau).to(x)

    (a_t, s_t), (a_s, s_s) = coef(t), coef(s)
    mean, var = mean.to(x), var.to(x)
    scale = ((a_s**2 * var + s_s**2) / (a_t**2 * var + s_t**2)).sqrt()
    return a_s * mean + scale * (x - a_t * mean)


# --------------------------------------------------------------------------- consistency


def consistency_coefficients(sigma: Tensor | float, sigma_data: float = 1.0,
                             sigma_min: float = 0.002) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The consistency model's scalings, eq. ``eq-fs-cm-param`` (Song et al., 2023,
    Appendix C, after EDM's :func:`gmbook.sde.edm_coefficients`):

    .. math::

        c_{\mathrm{skip}} = \frac{\sigma_d^2}{(\sigma - \sigma_{\min})^2 + \sigma_d^2},
        \quad c_{\mathrm{out}} = \frac{(\sigma - \sigma_{\min})\, \sigma_d}
        {\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{\mathrm{in}} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_{\mathrm{noise}} = \tfrac14 \log\sigma ,

    for :math:`f(x, \sigma) = c_{\mathrm{skip}} x + c_{\mathrm{out}} F(c_{\mathrm{in}} x;
    c_{\mathrm{noise}})`: at :math:`\sigma = \sigma_{\min}`, :math:`c_{\mathrm{skip}} = 1`
    and :math:`c_{\mathrm{out}} = 0` exactly, so :math:`f(x, \sigma_{\min}) = x` whatever
    the network (the boundary condition).

    Args:
        sigma: noise levels :math:`\sigma \ge \sigma_{\min}`, a number or a tensor.
        sigma_data: :math:`\sigma_d > 0`.
        sigma_min: :math:`\sigma_{\min} > 0`.

    Returns:
        ``(c_skip, c_out, c_in, c_noise)`` of the shape of ``sigma``.

    Example:
        >>> [float(c) for c in consistency_coefficients(0.002)[:2]]
        [1.0, 0.0]
    """
    sd = check_positive("sigma_data", sigma_data)
    smin = check_positive("sigma_min", sigma_min)
    if isinstance(sigma, bool) or not isinstance(sigma, (Tensor, int, float)):
        raise TypeError(f"sigma must be a number or a tensor, got {describe(sigma)}")
    s = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma), dtype=torch.float64)
    if not s.is_floating_point():
        s = s.double()
    if not bool(torch.isfinite(s).all()) or bool((s < smin).any()):
        raise ValueError(f"sigma must be finite and >= sigma_min = {smin}")
    d = s - smin
    return (sd**2 / (d**2 + sd**2), d * sd / (s**2 + sd**2).sqrt(),
            (s**2 + sd**2).rsqrt(), s.log() / 4)


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    r"""The pseudo-Huber distance of Song & Dhariwal (2023), eq. ``eq-fs-pseudo-huber``:
    :math:`d(a, b) = \sqrt{\|a - b\|^2 + c^2} - c` per row, about :math:`\|a - b\|^2 /
    (2c)` for :math:`\|a - b\| \ll c` and :math:`\|a - b\|` far away (less weight on the
    outliers than the squared distance). They use :math:`c = 0.00054 \sqrt{d}`.

    Args:
        a, b: tensors of the same shape ``(B, *D)``.
        c: :math:`c > 0`.

    Returns:
        Distances, shape ``(B,)``.
    """
    a, b = _check_batch("a", a), _check_batch("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    c = check_positive("c", c)
    return ((a - b).flatten(1).square().sum(1) + c * c).sqrt() - c


def curriculum(step: int, total: int, *, kind: str = "ict", s0: int | None = None,
               s1: int | None = None) -> int:
    r"""The number :math:`N(k)` of noise levels at training step :math:`k` of :math:`K`
    (the discretisation curriculum), eq. ``eq-fs-curriculum``.

    - ``"ict"`` (Song & Dhariwal, 2023, eq. 8; :math:`s_0 = 10`, :math:`s_1 = 1280` by
      default): :math:`N(k) = \min(s_0 2^{\lfloor k / K' \rfloor}, s_1) + 1` with
      :math:`K' = \lfloor K / (\log_2 \lfloor s_1 / s_0 \rfloor + 1) \rfloor`, doubling
      in equal stages;
    - ``"cm"`` (Song et al., 2023, Appendix C; :math:`s_0 = 2`, :math:`s_1 = 150`):
      :math:`N(k) = \lceil \sqrt{k ((s_1 + 1)^2 - s_0^2) / K + s_0^2} - 1 \rceil + 1`.

    Args:
        step: :math:`k \in [0, K)`.
        total: :math:`K \ge 1`.
        kind: ``"ict"`` or ``"cm"``.
        s0, s1: the first and last numbers of intervals (defaults above).

    Returns:
        :math:`N(k)`, at least 2.

    Example:
        >>> [curriculum(k, 800, s0=10, s1=80) for k in (0, 199, 200, 799)]
        [11, 11, 21, 81]
    """
    total = check_int("total", total)
    step = check_int("step", step, minimum=0)
    if step >= total:
        raise ValueError(f"step must be < total = {total}, got {step}")
    if kind not in ("ict", "cm"):
        raise ValueError(f"kind must be 'ict' or 'cm', got {kind!r}")
    s0 = check_int("s0", (10 if kind == "ict" else 2) if s0 is None else s0)
    s1 = check_int("s1", (1280 if kind == "ict" else 150) if s1 is None else s1)
    if s1 < s0:
        raise ValueError(f"s1 must be >= s0, got s0 = {s0}, s1 = {s1}")
    if kind == "ict":
        stage = max(total // (int(math.log2(s1 // s0)) + 1), 1)
        return min(s0 * 2 ** (step // stage), s1) + 1
    return math.ceil(math.sqrt(step * ((s1 + 1) ** 2 - s0**2) / total + s0**2) - 1) + 1


def level_probabilities(levels: Tensor, kind: str = "uniform", *, p_mean: float = -1.1,
                        p_std: float = 2.0) -> Tensor:
    r"""The probabilities of the intervals :math:`[\sigma_i, \sigma_{i+1}]` of a
    discretisation in consistency training, eq. ``eq-fs-lognormal-levels``.

    ``"uniform"``: :math:`1 / (N - 1)` each (Song et al., 2023). ``"lognormal"`` (Song &
    Dhariwal, 2023, eq. 10): the mass a log-normal :math:`\ln\sigma \sim
    \mathcal N(P_{\mathrm{mean}}, P_{\mathrm{std}}^2)` puts on the interval,

    .. math::

        p(\sigma_i) \propto \operatorname{erf}\Big(\frac{\ln\sigma_{i+1} -
        P_{\mathrm{mean}}}{\sqrt2 P_{\mathrm{std}}}\Big) - \operatorname{erf}\Big(
        \frac{\ln\sigma_i - P_{\mathrm{mean}}}{\sqrt2 P_{\mathrm{std}}}\Big).

    Args:
        levels: increasing noise levels :math:`\sigma_1 < \dots < \sigma_N`, shape ``(N,)``.
        kind: ``"uniform"`` or ``"lognormal"``.
        p_mean, p_std: the log-normal's parameters.

    Returns:
        Probabilities of shape ``(N - 1,)``, float64, summing to 1.
    """
    lv = _check_levels(levels)
    if kind == "uniform":
        return torch.full((len(lv) - 1,), 1.0 / (len(lv) - 1), dtype=torch.float64)
    if kind != "lognormal":
        raise ValueError(f"kind must be 'uniform' or 'lognormal', got {kind!r}")
    p_mean, p_std = check_real("p_mean", p_mean), check_positive("p_std", p_std)
    e = torch.erf((lv.log() - p_mean) / (math.sqrt(2) * p_std))
    p = e[1:] - e[:-1]
    if not float(p.sum()) > 0:
        raise ValueError("the log-normal puts no mass on these levels")
    return p / p.sum()


def _check_levels(levels: object) -> Tensor:
    if not isinstance(levels, Tensor) or levels.ndim != 1 or len(levels) < 2:
        raise ValueError(f"levels must be a 1-D tensor of at least 2 noise levels, "
                         f"got {describe(levels)}")
    lv = levels.detach().to(torch.float64)
    if not bool((lv > 0).all()) or not bool((lv[1:] > lv[:-1]).all()):
        raise ValueError("levels must be positive and strictly increasing")
    return lv


@torch.no_grad()
def teacher_step(pred: samplers.Prediction, x: Tensor, t: Tensor, s: Tensor, *,
                 solver: Callable[..., samplers.SamplePath] = samplers.heun,
                 generator: torch.Generator | None = None) -> Tensor:
    r"""One step of a sampler of :mod:`gmbook.samplers` from time :math:`t` to :math:`s`
    per row: the teacher's ODE step of consistency distillation, eq. ``eq-fs-cm-loss``.

    The samplers take one grid for a batch; rows with the same pair :math:`(t, s)` are
    stepped together, one sampler call per distinct pair, except for the default
    :func:`gmbook.samplers.heun` with every :math:`s > 0`, whose step is taken with each
    row's own times in one batched call per slope.

    Args:
        pred: the teacher's prediction.
        x: points at times ``t``, shape ``(B, *D)``.
        t, s: start and end times per row, shape ``(B,)``, :math:`t > s`.
        solver: a sampler with the common signature (:func:`gmbook.samplers.heun`,
            :func:`gmbook.samplers.euler`, :func:`gmbook.samplers.ddim`,
            :func:`gmbook.samplers.dopri5` for an almost exact step, ...).
        generator: passed to the sampler (a stochastic one, e.g. ``ddim`` with ``eta``).

    Returns:
        The points at times ``s``, shape ``(B, *D)``.
    """
    pred = _check_pred(pred)
    x = _check_batch("x", x)
    generator = check_generator(generator)
    if not callable(solver):
        raise TypeError(f"solver must be a sampler function, got {describe(solver)}")
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    s = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
    if t.shape != (x.shape[0],) or s.shape != (x.shape[0],):
        raise ValueError(f"t and s must have shape (B,) = ({x.shape[0]},), got "
                         f"{tuple(t.shape)} and {tuple(s.shape)}")
    if not bool((t > s).all()):
        raise ValueError("every step must go towards the data: t > s")
    if solver is samplers.heun and bool((s > 0).all()):
        # Heun's step (samplers.heun) with each row's own times: one batched call per slope,
        # instead of two calls per distinct pair (small calls whose overhead dominates)
        h = append_dims((s - t).to(x), x.ndim)
        u = pred.velocity(x, t.to(x))
        return x + h * 0.5 * (u + pred.velocity(x + h * u, s.to(x)))
    pairs, index = torch.unique(torch.stack([t, s], 1), dim=0, return_inverse=True)
    out = torch.empty_like(x)
    for j, (tj, sj) in enumerate(pairs.tolist()):
        rows = (index == j).nonzero().squeeze(1)
        out[rows] = solver(pred, x[rows], torch.tensor([tj, sj], dtype=torch.float64),
                           generator=generator).samples
    return out


def consistency_loss(f: Callable[[Tensor, Tensor], Tensor], x: Tensor, levels: Tensor, *,
                     teacher: samplers.Prediction | None = None,
                     solver: Callable[..., samplers.SamplePath] = samplers.heun,
                     target: Callable[[Tensor, Tensor], Tensor] | None = None, distance: str = "l2",
                     huber_c: float | None = None, weighting: str = "uniform",
                     level_sampling: str = "uniform", p_mean: float = -1.1,
                     p_std: float = 2.0, generator: torch.Generator | None = None) -> Tensor:
    r"""The consistency loss on a minibatch, eq. ``eq-fs-cm-loss`` (Song et al., 2023,
    eqs. 7 and 10):

    .. math::

        \mathcal L = \mathbb E_{n, x_0, z}\, \lambda(\sigma_n)\, d\big(
        f_\theta(x_0 + \sigma_{n+1} z, \sigma_{n+1}),\
        f_{\theta^-}(\hat x_{\sigma_n}, \sigma_n)\big),

    with :math:`n` drawn from :func:`level_probabilities` and the point one level down

    - **consistency distillation** (``teacher`` given): :math:`\hat x_{\sigma_n}` is one
      step of ``solver`` on the teacher's probability-flow ODE from :math:`\sigma_{n+1}`
      (:func:`teacher_step`);
    - **consistency training** (no teacher): :math:`\hat x_{\sigma_n} = x_0 + \sigma_n z`
      with the same :math:`z`, the one-sample estimate of the step that needs no score.

    The target :math:`f_{\theta^-}` is ``target`` (e.g. an EMA copy of the model, as in
    Song et al., 2023) or, with ``target=None``, ``f`` itself under ``torch.no_grad`` (a
    stop-gradient, no EMA: Song & Dhariwal, 2023). With the exact consistency function
    :math:`f = \Phi_{\cdot \to \sigma_{\min}}` and an exact teacher step the distillation
    loss is 0 (the tests check it).

    Args:
        f: the consistency function, ``f(x, sigma)`` with ``x`` ``(B, *D)``, ``sigma``
            ``(B,)`` (a :class:`ConsistencyModel`).
        x: clean data :math:`x_0`, shape ``(B, *D)``.
        levels: increasing noise levels :math:`\sigma_1 = \sigma_{\min} < \dots <
            \sigma_N = \sigma_{\max}`, shape ``(N,)`` (:meth:`ConsistencyModel.levels`).
        teacher: the teacher's prediction on the VE path (consistency distillation), or
            ``None`` (consistency training).
        solver: the teacher's sampler (ignored without teacher).
        target: :math:`f_{\theta^-}`, or ``None`` for ``f`` under ``torch.no_grad``.
        distance: ``"l2"`` (the squared norm per row) or ``"pseudo_huber"``
            (:func:`pseudo_huber`).
        huber_c: :math:`c` of the pseudo-Huber distance; default :math:`0.00054 \sqrt d`.
        weighting: :math:`\lambda`: ``"uniform"`` (1) or ``"ict"``
            (:math:`1 / (\sigma_{n+1} - \sigma_n)`, Song & Dhariwal, 2023).
        level_sampling: ``"uniform"`` or ``"lognormal"`` (:func:`level_probabilities`).
        p_mean, p_std: the log-normal's parameters.
        generator: randomness of the levels and the noise.

    Returns:
        The scalar loss.
    """
    if not callable(f):
        raise TypeError(f"f must be callable as f(x, sigma), got {describe(f)}")
    if target is not None and not callable(target):
        raise TypeError(f"target must be callable or None, got {describe(target)}")
    x = _check_batch("x", x)
    lv = _check_levels(levels)
    generator = check_generator(generator)
    if teacher is not None:
        _check_pred(teacher, ve=True)
    if distance not in ("l2", "pseudo_huber"):
        raise ValueError(f"distance must be 'l2' or 'pseudo_huber', got {distance!r}")
    if weighting not in ("uniform", "ict"):
        raise ValueError(f"weighting must be 'uniform' or 'ict', got {weighting!r}")
    d = math.prod(x.shape[1:])
    c = 0.00054 * math.sqrt(d) if huber_c is None else check_positive("huber_c", huber_c)
    probs = level_probabilities(lv, level_sampling, p_mean=p_mean, p_std=p_std)
    u = rand((x.shape[0],), dtype=torch.float64, device=probs.device, generator=generator)
    n = torch.searchsorted(probs.cumsum(0), u).clamp(max=len(probs) - 1)  # (B,) in [0, N-1)
    s_lo, s_hi = lv[n], lv[n + 1]                                        # (B,)
    z = randn(x.shape, like=x, generator=generator)
    hi = s_hi.to(x)
    x_hi = x + append_dims(hi, x.ndim) * z
    if teacher is None:
        x_lo = x + append_dims(s_lo.to(x), x.ndim) * z
    else:
        x_lo = teacher_step(teacher, x_hi, s_hi, s_lo, solver=solver, generator=generator)
    with torch.no_grad():
        y = (f if target is None else target)(x_lo, s_lo.to(x))
    out = f(x_hi, hi)
    dist = pseudo_huber(out, y.detach(), c) if distance == "pseudo_huber" else \
        (out - y.detach()).flatten(1).square().sum(1)
    if weighting == "ict":
        dist = dist / (s_hi - s_lo).to(x)
    return dist.mean()


@torch.no_grad()
def multistep_consistency(f: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                          sigmas: Tensor | list[float], *,
                          sigma_min: float = 0.002,
                          generator: torch.Generator | None = None) -> Tensor:
    r"""Multistep consistency sampling (Song et al., 2023, Algorithm 1), eq.
    ``eq-fs-cm-multistep``: from :math:`x` at :math:`\tau_1` (``sigmas[0]``),

    .. math::

        \hat x_0 \leftarrow f(x, \tau_1); \qquad
        x \leftarrow \hat x_0 + \sqrt{\tau_k^2 - \sigma_{\min}^2}\, z, \quad
        \hat x_0 \leftarrow f(x, \tau_k) \quad (k = 2, \dots, K),

    one call per level. The re-noised point has the law of the noised data at
    :math:`\tau_k` exactly when :math:`\hat x_0` has that of the data at
    :math:`\sigma_{\min}`, so with the exact consistency function every step returns the
    data's law (at :math:`\sigma_{\min}`).

    Args:
        f: the consistency function ``f(x, sigma)``, ``sigma`` of shape ``(B,)``.
        x: starting points at ``sigmas[0]``, shape ``(B, *D)``.
        sigmas: decreasing levels :math:`\tau_1 > \dots > \tau_K > \sigma_{\min}`.
        sigma_min: :math:`\sigma_{\min}` (the level ``f`` maps to).
        generator: randomness of the fresh noise.

    Returns:
        The samples :math:`\hat x_0`, shape ``(B, *D)``.
    """
    if not callable(f):
        raise TypeError(f"f must be callable as f(x, sigma), got {describe(f)}")
    x = _check_batch("x", x)
    generator = check_generator(generator)
    smin = check_positive("sigma_min", sigma_min)
    tau = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if len(tau) < 1 or not bool((tau[1:] < tau[:-1]).all()) or not bool((tau > smin).all()):
        raise ValueError(f"sigmas must be decreasing levels above sigma_min = {smin}, "
                         f"got {tau.tolist()}")
    b = x.shape[0]
    x0 = f(x, x.new_full((b,), float(tau[0])))
    for tk in tau[1:].tolist():
        z = randn(x.shape, like=x, generator=generator)
        x0 = f(x0 + math.sqrt(tk**2 - smin**2) * z, x.new_full((b,), tk))
    return x0


class ConsistencyModel(nn.Module):
    r"""A consistency model (Song et al., 2023) on the VE path, eq. ``eq-fs-cm-param``:

    .. math::

        f_\theta(x, \sigma) = c_{\mathrm{skip}}(\sigma)\, x + c_{\mathrm{out}}(\sigma)\,
        F_\theta\big(c_{\mathrm{in}}(\sigma)\, x;\ c_{\mathrm{noise}}(\sigma)\big),

    with the scalings of :func:`consistency_coefficients`, so that :math:`f_\theta(x,
    \sigma_{\min}) = x` exactly. It is trained to be the flow map :math:`\Phi_{\sigma \to
    \sigma_{\min}}` of the data's probability-flow ODE (:func:`consistency_loss`, with a
    teacher or without) and samples in one call, :math:`f_\theta(x, \sigma_{\max})` with
    :math:`x \sim \mathcal N(0, (\sigma_{\max}^2 + \sigma_d^2) I)`, or in a few
    (:func:`multistep_consistency`).

    Args:
        net: the network :math:`F_\theta`, ``net(x, c_noise)`` with ``x`` ``(B, prod D)``,
            e.g. ``MLP(2, time_dim=32, time_scale=1.0)``.
        shape: the shape ``D`` of one data point.
        sigma_data, sigma_min, sigma_max: :math:`\sigma_d`, the boundary level and the
            largest level.
        rho: the exponent of the levels (:meth:`levels`).

    Example:
        >>> from gmbook.nets import MLP
        >>> cm = ConsistencyModel(MLP(2, hidden=16, time_dim=8))
        >>> x = torch.randn(4, 2)
        >>> torch.equal(cm(x, torch.full((4,), cm.sigma_min)), x)
        True
        >>> cm.sample(5).shape
        torch.Size([5, 2])
    """

    def __init__(self, net: nn.Module, *, shape: tuple[int, ...] = (2,),
                 sigma_data: float = 1.0, sigma_min: float = 0.002, sigma_max: float = 3.0,
                 rho: float = 7.0) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"ConsistencyModel: net must be an nn.Module, got {describe(net)}")
        self.net, self.shape = net, check_shape("ConsistencyModel: shape", shape)
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
        self.rho = check_positive("rho", rho)

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, sigma_data={self.sigma_data:g}, "
                f"sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, rho={self.rho:g}")

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        r""":math:`f_\theta(x, \sigma)`, eq. ``eq-fs-cm-param``.

        Args:
            x: points, shape ``(B, *D)``.
            sigma: their levels, shape ``(B,)`` or one number, :math:`\ge \sigma_{\min}`.

        Returns:
            Shape ``(B, *D)``.
        """
        x = _check_batch("x", x)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, *{self.shape}), got {tuple(x.shape)}")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a number or have shape ({x.shape[0]},), "
                             f"got {tuple(sigma.shape)}")
        c_skip, c_out, c_in, c_noise = consistency_coefficients(
            sigma, self.sigma_data, self.sigma_min)
        t = c_noise[0] if bool((sigma == sigma[0]).all()) else c_noise  # one level: once
        f = self.net((append_dims(c_in, x.ndim) * x).flatten(1), t).view_as(x)
        return append_dims(c_skip, x.ndim) * x + append_dims(c_out, x.ndim) * f

    def levels(self, n: int) -> Tensor:
        r"""The discretisation :math:`\sigma_1 = \sigma_{\min} < \dots < \sigma_N =
        \sigma_{\max}`, evenly spaced in :math:`\sigma^{1/\rho}` (EDM's,
        :func:`gmbook.samplers.karras_grid`, increasing), shape ``(N,)``, float64.

        Args:
            n: :math:`N \ge 2`.
        """
        n = check_int("n", n, minimum=2)
        grid = samplers.karras_grid(samplers.VEPath(self.sigma_max), n,
                                    sigma_min=self.sigma_min, sigma_max=self.sigma_max,
                                    rho=self.rho)
        return grid[:-1].flip(0)

    def loss(self, x: Tensor, *, n_levels: int, generator: torch.Generator | None = None,
             **options) -> Tensor:
        r""":func:`consistency_loss` on :meth:`levels` ``(n_levels)``, eq. ``eq-fs-cm-loss``.

        Args:
            x: clean data ``(B, *D)``.
            n_levels: :math:`N` (e.g. from :func:`curriculum`).
            generator: randomness of the levels and the noise.
            **options: passed to :func:`consistency_loss` (``teacher``, ``solver``,
                ``target``, ``distance``, ``weighting``, ``level_sampling``, ...).
        """
        return consistency_loss(self, x, self.levels(n_levels), generator=generator,
                                **options)

    def prior(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Starting points :math:`\mathcal N(0, (\sigma_{\max}^2 + \sigma_d^2) I)`, the
        isotropic Gaussian with the per-coordinate variance of the marginal at
        :math:`\sigma_{\max}` when the data have variance :math:`\sigma_d^2` per coordinate
        (not its covariance, for correlated data; as :meth:`gmbook.sde.EDM.prior`); shape
        ``(n, *D)``."""
        n = check_int("n", n)
        p = next(self.parameters())
        z = randn((n, *self.shape), device=p.device, dtype=p.dtype,
                  generator=check_generator(generator))
        return math.sqrt(self.sigma_max**2 + self.sigma_data**2) * z

    @torch.no_grad()
    def sample(self, n: int, *, sigmas: Tensor | list[float] | None = None,
               x: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        r"""Samples by :func:`multistep_consistency`: one call per level of ``sigmas``
        (default ``[sigma_max]``, one call), from :meth:`prior` (or ``x``) at ``sigmas[0]``.

        Args:
            n: number of samples.
            sigmas: decreasing levels, the first :math:`\le \sigma_{\max}`.
            x: starting points ``(n, *D)`` at ``sigmas[0]``.
            generator: randomness of the start and the fresh noise.

        Returns:
            Samples ``(n, *D)``.
        """
        n = check_int("n", n)
        generator = check_generator(generator)
        sigmas = [self.sigma_max] if sigmas is None else sigmas
        tau = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        if len(tau) < 1 or float(tau[0]) > self.sigma_max * (1 + 1e-12):
            raise ValueError(f"sigmas must start at most at sigma_max = {self.sigma_max}")
        if x is None:
            x = self.prior(n, generator=generator) * (
                math.sqrt(float(tau[0]) ** 2 + self.sigma_data**2)
                / math.sqrt(self.sigma_max**2 + self.sigma_data**2))
        elif x.shape != (n, *self.shape):
            raise ValueError(f"x must have shape {(n, *self.shape)}, got {describe(x)}")
        return multistep_consistency(self, x, tau, sigma_min=self.sigma_min,
                                     generator=generator)


# --------------------------------------------------------------------------- distillation


@torch.no_grad()
def flow_map_pairs(pred: samplers.Prediction, x: Tensor, levels: Tensor, *,
                   rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    r"""The teacher's trajectories from ``x`` at the top level, kept at every level, for
    :func:`trajectory_distillation_loss`, eq. ``eq-fs-kd-loss``: one adaptive solve
    (:func:`gmbook.samplers.dopri5`) of the probability-flow ODE through all the levels,
    so that ``states[i]`` :math:`= \Phi_{\sigma_N \to \sigma_i}(x)` and ``states[0]`` is
    the endpoint at :math:`\sigma_1 = \sigma_{\min}`.

    Args:
        pred: the teacher's prediction (its path's times are the levels).
        x: starting points at ``levels[-1]``, shape ``(B, *D)`` (e.g.
            :meth:`ConsistencyModel.prior`).
        levels: increasing levels :math:`\sigma_1 < \dots < \sigma_N`, shape ``(N,)``
            (:meth:`ConsistencyModel.levels`).
        rtol, atol: the solver's tolerances.

    Returns:
        ``states`` of shape ``(N, B, *D)``, ordered like ``levels``.
    """
    pred = _check_pred(pred)
    x = _check_batch("x", x)
    lv = _check_levels(levels)
    path = samplers.dopri5(pred, x, lv.flip(0), rtol=check_positive("rtol", rtol),
                           atol=check_positive("atol", atol), return_path=True)
    return path.states.flip(0)


def trajectory_distillation_loss(f: Callable[[Tensor, Tensor], Tensor], states: Tensor,
                                 levels: Tensor, *, batch: int = 256,
                                 top: float = 0.5, distance: str = "l2",
                                 huber_c: float | None = None,
                                 generator: torch.Generator | None = None) -> Tensor:
    r"""Regression of a consistency function on the teacher's flow map, eq.
    ``eq-fs-kd-loss``:

    .. math::

        \mathcal L = \mathbb E_{r, i}\, d\big(f_\theta(x^{(r)}_{\sigma_i}, \sigma_i),\
        x^{(r)}_{\sigma_{\min}}\big),

    over trajectories :math:`r` of :func:`flow_map_pairs` and levels :math:`i > 1`: level
    :math:`\sigma_N` (one-step sampling) with probability ``top``, else uniform over
    :math:`\sigma_2, \dots, \sigma_N`. It is consistency distillation (eq.
    ``eq-fs-cm-loss``) with an exact teacher and the endpoint itself as the target, where
    consistency distillation bootstraps from :math:`f_{\theta^-}` one level down; with
    ``top = 1`` it is the one-step knowledge distillation of Luhman & Luhman (2021).

    Args:
        f: the consistency function ``f(x, sigma)``, ``sigma`` of shape ``(B,)``.
        states: trajectories ``(N, R, *D)`` from :func:`flow_map_pairs`.
        levels: their levels ``(N,)``, increasing.
        batch: rows per step.
        top: the probability of the top level, in ``[0, 1]``.
        distance: ``"l2"`` (squared norm per row) or ``"pseudo_huber"``.
        huber_c: :math:`c` of :func:`pseudo_huber`; default :math:`0.00054 \sqrt d`.
        generator: randomness of the rows and levels.

    Returns:
        The scalar loss.
    """
    if not callable(f):
        raise TypeError(f"f must be callable as f(x, sigma), got {describe(f)}")
    lv = _check_levels(levels)
    if not isinstance(states, Tensor) or not states.is_floating_point() or states.ndim < 3 \
            or states.shape[0] != len(lv):
        raise ValueError(f"states must have shape (N, R, *D) with N = {len(lv)} levels, "
                         f"got {describe(states)}")
    batch = check_int("batch", batch)
    top = check_real("top", top)
    if not 0 <= top <= 1:
        raise ValueError(f"top must be in [0, 1], got {top}")
    if distance not in ("l2", "pseudo_huber"):
        raise ValueError(f"distance must be 'l2' or 'pseudo_huber', got {distance!r}")
    generator = check_generator(generator)
    n, r = states.shape[:2]
    rows = (rand((batch,), dtype=torch.float64, generator=generator) * r).long().clamp(max=r - 1)
    uni = 1 + (rand((batch,), dtype=torch.float64, generator=generator) * (n - 1)).long()
    i = torch.where(rand((batch,), dtype=torch.float64, generator=generator) < top,
                    n - 1, uni.clamp(max=n - 1))                       # (batch,) in [1, N)
    x, y = states[i, rows], states[0, rows]                             # (batch, *D)
    out = f(x, lv[i].to(x))
    if distance == "l2":
        return (out - y).flatten(1).square().sum(1).mean()
    c = 0.00054 * math.sqrt(math.prod(x.shape[1:])) if huber_c is None else \
        check_positive("huber_c", huber_c)
    return pseudo_huber(out, y, c).mean()


# --------------------------------------------------------------------------- progressive


def ddim_target(path: samplers.GaussianPath, x_t: Tensor, x_s: Tensor, t: Tensor | float,
                s: Tensor | float) -> Tensor:
    r"""The denoised point whose one DDIM step from :math:`t` lands on :math:`x_s`, eq.
    ``eq-fs-pd-target`` (Salimans & Ho, 2022, Algorithm 2). A DDIM step (``eta = 0``,
    :func:`gmbook.samplers.ddim`) is :math:`x_s = \alpha_s \hat x_0 + \sigma_s (x_t -
    \alpha_t \hat x_0) / \sigma_t`; solved for :math:`\hat x_0`,

    .. math::

        \tilde x_0 = \frac{x_s - (\sigma_s / \sigma_t)\, x_t}
        {\alpha_s - \sigma_s \alpha_t / \sigma_t}
        \qquad \Big(= \frac{x_s - (s/t)\, x_t}{1 - s/t} \text{ on the VE path}\Big).

    Args:
        path: the :class:`gmbook.samplers.GaussianPath`.
        x_t, x_s: the points at times :math:`t > s`, shape ``(B, *D)``.
        t, s: the times, numbers or shape ``(B,)``, with :math:`\sigma_t > 0`.

    Returns:
        :math:`\tilde x_0`, shape ``(B, *D)``.
    """
    if not isinstance(path, samplers.GaussianPath):
        raise TypeError(f"path must be a gmbook.samplers.GaussianPath, got {describe(path)}")
    x_t, x_s = _check_batch("x_t", x_t), _check_batch("x_s", x_s)
    if x_t.shape != x_s.shape:
        raise ValueError("x_t and x_s must have the same shape")
    t = torch.as_tensor(t, dtype=torch.float64)
    s = torch.as_tensor(s, dtype=torch.float64)
    if not bool((t > s).all()):
        raise ValueError("need t > s")
    a_t, s_t, a_s, s_s = path.alpha(t), path.sigma(t), path.alpha(s), path.sigma(s)
    if not bool((s_t > 0).all()):
        raise ValueError("need sigma_t > 0")
    r = s_s / s_t
    den = a_s - r * a_t

    def b(c):
        return append_dims(c.to(x_t), x_t.ndim) if c.ndim else c.to(x_t)

    return (x_s - b(r) * x_t) / b(den)


def progressive_distillation_loss(student: nn.Module, teacher: samplers.Prediction,
                                  x: Tensor, grid: Tensor, *,
                                  solver: Callable[..., samplers.SamplePath] = samplers.ddim,
                                  generator: torch.Generator | None = None) -> Tensor:
    r"""Progressive distillation's loss on a minibatch, eq. ``eq-fs-pd-loss`` (Salimans &
    Ho, 2022, Algorithm 2), on the VE path: the teacher steps on ``grid`` (``2K`` steps),
    the student on ``grid[::2]`` (``K`` steps). For a student step :math:`t = t_{2i} \to
    s = t_{2i+2}`,

    .. math::

        x_t = x_0 + t \varepsilon, \quad x_s = \text{two teacher steps } t \to t_{2i+1}
        \to s, \quad \mathcal L = \mathbb E\, \lambda(t)\, \big\| D_\phi(x_t; t) -
        \tilde x_0 \big\|^2

    with the DDIM target :math:`\tilde x_0` of :func:`ddim_target` and EDM's weight
    :math:`\lambda(t) = c_{\mathrm{out}}(t)^{-2}` (:func:`gmbook.sde.edm_coefficients`;
    :math:`1 + \mathrm{SNR}` for :math:`\sigma_d = 1`, the "SNR+1" weighting of Salimans &
    Ho), averaged over the dimensions. Then one DDIM step of the student does what two of
    the teacher do; each round halves the steps, the student becoming the next teacher.

    Args:
        student: a :class:`gmbook.sde.EDM` (its ``denoise`` and ``sigma_data``).
        teacher: the teacher's prediction on the VE path (e.g. ``teacher.prediction()``).
        x: clean data, shape ``(B, *D)``.
        grid: the teacher's decreasing levels ``(2K + 1,)``, ending at 0 (e.g.
            ``EDM.grid(2K)``).
        solver: the teacher's sampler (:func:`gmbook.samplers.ddim` as in the paper).
        generator: randomness of the steps and the noise.

    Returns:
        The scalar loss.
    """
    from gmbook.sde import EDM

    if not isinstance(student, EDM):
        raise TypeError(f"student must be a gmbook.sde.EDM, got {describe(student)}")
    _check_pred(teacher, ve=True)
    x = _check_batch("x", x)
    generator = check_generator(generator)
    g = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    if len(g) < 3 or len(g) % 2 != 1 or not bool((g[1:] < g[:-1]).all()) or \
            not float(g[-2]) > 0 or float(g[-1]) < 0:
        raise ValueError("grid must hold 2K + 1 decreasing levels (K >= 1), >= 0")
    k = (len(g) - 1) // 2
    i = (rand((x.shape[0],), dtype=torch.float64, generator=generator) * k).long().clamp(
        max=k - 1)                                       # (B,) student steps
    t, mid, s = g[2 * i], g[2 * i + 1], g[2 * i + 2]     # (B,) each
    eps = randn(x.shape, like=x, generator=generator)
    x_t = x + append_dims(t.to(x), x.ndim) * eps
    x_mid = teacher_step(teacher, x_t, t, mid, solver=solver, generator=generator)
    x_s = teacher_step(teacher, x_mid, mid, s, solver=solver, generator=generator)
    target = ddim_target(teacher.path, x_t, x_s, t, s)
    c_out = edm_coefficients(t.to(x), student.sigma_data)[1]
    err = (student.denoise(x_t, t.to(x)) - target).flatten(1).square().mean(1)
    return (err / c_out**2).mean()


# --------------------------------------------------------------------------- MeanFlow


def meanflow_target(u: Callable[[Tensor, Tensor, Tensor], Tensor], z: Tensor, r: Tensor,
                    t: Tensor, v: Tensor) -> Tensor:
    r"""The MeanFlow identity's right-hand side, eq. ``eq-fs-meanflow`` (Geng et al., 2025,
    eq. 6). The average velocity :math:`u(z_t, r, t) = \frac{1}{t - r} \int_r^t
    v(z_\tau, \tau)\, \mathrm d\tau` over a trajectory of :math:`\dot z = v` satisfies,
    differentiating :math:`(t - r)\, u` in :math:`t`,

    .. math::

        u(z_t, r, t) = v(z_t, t) - (t - r)\, \frac{\mathrm d}{\mathrm d t}
        u(z_t, r, t), \qquad \frac{\mathrm d}{\mathrm d t} u = v\, \partial_z u +
        \partial_t u ,

    the total derivative being one Jacobian-vector product with the tangent
    :math:`(v, 1)` (computed by ``torch.autograd.functional.jvp``: a double backward
    pass, so ``u`` must be twice differentiable in its times: see :class:`MeanFlow`).
    Returned detached (the stop-gradient target).

    Args:
        u: the average velocity ``u(z, r, t)``, ``z`` ``(B, *D)``, ``r`` and ``t`` ``(B,)``.
        z: points at times ``t``, shape ``(B, *D)``.
        r, t: times, shape ``(B,)``.
        v: the velocity at :math:`(z, t)` (the conditional :math:`\varepsilon - x_0` in
            training), shape ``(B, *D)``.

    Returns:
        The target, shape ``(B, *D)``.
    """
    if not callable(u):
        raise TypeError(f"u must be callable as u(z, r, t), got {describe(u)}")
    z, v = _check_batch("z", z), _check_batch("v", v)
    if v.shape != z.shape:
        raise ValueError(f"v must have the shape of z {tuple(z.shape)}, got {tuple(v.shape)}")
    for name, w in (("r", r), ("t", t)):
        if not isinstance(w, Tensor) or w.shape != (z.shape[0],):
            raise ValueError(f"{name} must be a tensor of shape ({z.shape[0]},), "
                             f"got {describe(w)}")
    with torch.enable_grad():
        out, dudt = torch.autograd.functional.jvp(
            lambda zz, tt: u(zz, r, tt), (z.detach(), t.detach()),
            (v.detach(), torch.ones_like(t)))
    return (v - append_dims(t - r, z.ndim) * dudt).detach()


class MeanFlow(nn.Module):
    r"""A MeanFlow model (Geng et al., 2025): the average velocity :math:`u_\theta(z, r, t)`
    of the linear path :math:`z_t = (1 - t)\, x + t \varepsilon` (noise at :math:`t = 1`,
    :class:`gmbook.samplers.LinearPath`), eq. ``eq-fs-meanflow``. Its one step
    :math:`z_r = z_t - (t - r)\, u(z_t, r, t)` is the flow map :math:`\Phi_{t \to r}`
    when :math:`u` is exact; :math:`u(z, t, t) = v(z, t)` is the ordinary velocity.

    Trained by :math:`\| u_\theta(z_t, r, t) - \operatorname{sg}(u_{\mathrm{tgt}}) \|^2`
    with :math:`u_{\mathrm{tgt}}` from :func:`meanflow_target` on the conditional velocity
    :math:`v = \varepsilon - x`; the times are two logit-normal draws
    (:math:`t` the larger), with :math:`r = t` (plain flow matching) for a fraction
    ``equal`` of the rows.

    Args:
        net: ``net(h)`` with ``h = [z, t, t - r]`` of shape ``(B, prod D + 2)``, output
            ``(B, prod D)``; e.g. ``MLP(4, 2)`` for 2-D data. The times enter as plain
            inputs: the loss differentiates through them twice
            (:func:`meanflow_target`), which a time branch that groups equal times
            (:class:`gmbook.nets.MLP` with ``time_dim > 0``) does not support.
        shape: the shape ``D`` of a point.
        equal: the fraction of rows with :math:`r = t`, in ``[0, 1)``.
        p_mean, p_std: the logit-normal times, :math:`\operatorname{logit} t \sim
            \mathcal N(P_{\mathrm{mean}}, P_{\mathrm{std}}^2)`.
        adaptive_p: the power :math:`p` of the adaptive loss weight
            :math:`\operatorname{sg}(1 / (\|\Delta\|^2 + 10^{-3})^{p})` (0: plain squared
            error; Geng et al. use 1).

    Example:
        >>> from gmbook.nets import MLP
        >>> mf = MeanFlow(MLP(4, 2, hidden=16))
        >>> mf.loss(torch.randn(8, 2)).shape, mf.sample(5).shape
        (torch.Size([]), torch.Size([5, 2]))
    """

    def __init__(self, net: nn.Module, *, shape: tuple[int, ...] = (2,), equal: float = 0.75,
                 p_mean: float = -0.4, p_std: float = 1.0, adaptive_p: float = 1.0) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"MeanFlow: net must be an nn.Module, got {describe(net)}")
        self.net, self.shape = net, check_shape("MeanFlow: shape", shape)
        self.equal = check_real("equal", equal)
        if not 0 <= self.equal < 1:
            raise ValueError(f"equal must be in [0, 1), got {equal}")
        self.p_mean, self.p_std = check_real("p_mean", p_mean), check_positive("p_std", p_std)
        self.adaptive_p = check_real("adaptive_p", adaptive_p)
        if self.adaptive_p < 0:
            raise ValueError(f"adaptive_p must be >= 0, got {adaptive_p}")

    def average_velocity(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        r""":math:`u_\theta(z, r, t)`: ``z`` ``(B, *D)``, ``r`` and ``t`` ``(B,)`` or numbers."""
        z = _check_batch("z", z)
        if tuple(z.shape[1:]) != self.shape:
            raise ValueError(f"z must have shape (B, *{self.shape}), got {tuple(z.shape)}")
        b = z.shape[0]
        r = torch.as_tensor(r, dtype=z.dtype, device=z.device).expand(b)
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(b)
        h = torch.cat([z.flatten(1), t[:, None], (t - r)[:, None]], 1)  # (B, prod D + 2)
        return self.net(h).view_as(z)

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""The MeanFlow loss on a minibatch of data ``x`` ``(B, *D)``, eq.
        ``eq-fs-meanflow``."""
        x = _check_batch("x", x)
        generator = check_generator(generator)
        b = x.shape[0]
        tt = torch.sigmoid(self.p_mean + self.p_std * randn((2, b), like=x,
                                                            generator=generator))
        t, r = tt.max(0).values, tt.min(0).values
        same = rand((b,), like=x, generator=generator) < self.equal
        r = torch.where(same, t, r)
        eps = randn(x.shape, like=x, generator=generator)
        z = append_dims(1 - t, x.ndim) * x + append_dims(t, x.ndim) * eps
        v = eps - x
        target = meanflow_target(self.average_velocity, z, r, t, v)
        err = (self.average_velocity(z, r, t) - target).flatten(1).square().sum(1)  # (B,)
        if self.adaptive_p > 0:
            err = err / (err.detach() + 1e-3) ** self.adaptive_p
        return err.mean()

    @torch.no_grad()
    def sample(self, n: int, *, steps: int = 1, x: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        r"""``steps`` jumps :math:`z_r = z_t - (t - r)\, u_\theta(z_t, r, t)` on equal
        steps from :math:`t = 1` (noise ``x`` or fresh :math:`\mathcal N(0, I)`) to 0;
        one network call each."""
        n, steps = check_int("n", n), check_int("steps", steps)
        generator = check_generator(generator)
        if x is None:
            p = next(self.parameters())
            x = randn((n, *self.shape), device=p.device, dtype=p.dtype, generator=generator)
        elif x.shape != (n, *self.shape):
            raise ValueError(f"x must have shape {(n, *self.shape)}, got {describe(x)}")
        grid = torch.linspace(1.0, 0.0, steps + 1).tolist()
        for t, r in zip(grid[:-1], grid[1:]):
            x = x - (t - r) * self.average_velocity(x, r, t)
        return x
