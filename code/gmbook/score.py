r"""Score matching: the chapter *Score matching and denoising* (``book/diffusion/score_matching.md``).

The score of a density is :math:`s(x) = \nabla_x \log p(x)` (eq. ``eq-sm-score``); it does not
depend on the normalising constant, and Langevin dynamics needs nothing else
(eq. ``eq-sm-langevin``). This module fits a network :math:`s_\theta` to the score of data:

- objectives: the explicit score matching loss (the Fisher divergence, eq. ``eq-sm-esm``),
  which needs the true score; implicit score matching (eq. ``eq-sm-ism``,
  :prf:ref:`thm-sm-ism`) with its exact Jacobian trace; sliced score matching with random
  projections (eq. ``eq-sm-ssm``, ``eq-sm-ssm-vr``); denoising score matching (eq. ``eq-sm-dsm``,
  :prf:ref:`thm-sm-dsm`);
- Tweedie's formula (eq. ``eq-sm-tweedie``): the posterior mean of clean data given a noisy
  point is one score step away from it;
- exact references for the experiments: the score of a Gaussian mixture and of its
  noised versions, and its exact posterior mean (:func:`mixture_score`,
  :func:`noised_mixture`, :func:`mixture_posterior_mean`);
- noise-conditional score networks (:class:`NCSN`): one network for a geometric ladder of
  noise levels (eq. ``eq-sm-ladder``), trained with the weighted DSM loss
  (eq. ``eq-sm-ncsn-loss``) and sampled by annealed Langevin dynamics
  (:func:`gmbook.samplers.annealed_langevin`, eq. ``eq-sm-annealed``; :func:`annealed_langevin`
  is its form for a score given per level).

A *score function* here is any callable ``(B, D) -> (B, D)``, for instance an
:class:`gmbook.nets.MLP` with ``out_dim = in_dim``.

Example:
    >>> net = MLP(2, hidden=32, depth=2)
    >>> x = torch.randn(64, 2)
    >>> implicit_score_matching(net, x).shape
    torch.Size([])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gmbook._checks import check_generator, check_int, check_positive, describe
from gmbook._random import randn
from gmbook.densities import GaussianMixture
from gmbook.mcmc import langevin_step
from gmbook.nets import MLP, append_dims
from gmbook.samplers import Prediction, SamplePath, VEPath
from gmbook.samplers import annealed_langevin as _annealed_sampler

__all__ = [
    "NCSN",
    "annealed_langevin",
    "denoising_score_matching",
    "divergence",
    "explicit_score_matching",
    "geometric_sigmas",
    "implicit_score_matching",
    "langevin",
    "mixture_posterior_mean",
    "mixture_score",
    "noised_mixture",
    "sliced_score_matching",
    "tweedie",
]

Score = Callable[[Tensor], Tensor]
LevelScore = Callable[[Tensor, int], Tensor]


# --------------------------------------------------------------------------- checks


def _check_points(x: object, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor of shape (B, D), got {describe(x)}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, D) with B, D >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _check_score(score: object, name: str = "score") -> None:
    if not callable(score):
        raise TypeError(f"{name} must be a callable (B, D) -> (B, D), got {describe(score)}")


def _call_score(score: Score, x: Tensor) -> Tensor:
    s = score(x)
    if not isinstance(s, Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, Tensor) else describe(s)
        raise ValueError(f"score must map (B, D) = {tuple(x.shape)} to the same shape, got {got}")
    return s


def _check_sigma(sigma: object, x: Tensor) -> Tensor:
    r"""A noise scale: a positive number, or a tensor of shape ``(B,)``; returns ``(B, 1)``."""
    if isinstance(sigma, Tensor):
        if sigma.shape not in ((), (x.shape[0],)):
            raise ValueError(
                f"sigma must be a number or a tensor of shape (B,) = ({x.shape[0]},), "
                f"got shape {tuple(sigma.shape)}"
            )
        if not bool((sigma > 0).all()):
            raise ValueError("sigma must be positive")
        return append_dims(sigma.to(x).expand(x.shape[0]), x.ndim)
    return x.new_full((x.shape[0], 1), check_positive("sigma", sigma))


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return randn(x.shape, like=x, generator=generator)


# ------------------------------------------------------------------ score matching losses


def explicit_score_matching(score: Score, x: Tensor, true_score: Score) -> Tensor:
    r"""Explicit score matching, the Fisher divergence (eq. ``eq-sm-esm``).

    .. math::

        J_{\mathrm{ESM}}(\theta) = \tfrac12\, \mathbb E_{p}\,
        \big\| s_\theta(x) - \nabla_x \log p(x) \big\|^2 ,

    estimated by the mean over the batch. It needs the true score, so it serves as an exact
    measure of error on toy data whose density is known, and as a training loss only there.

    Args:
        score: :math:`s_\theta`, ``(B, D) -> (B, D)``.
        x: points drawn from :math:`p`, shape ``(B, D)``.
        true_score: :math:`\nabla \log p`, ``(B, D) -> (B, D)``.

    Returns:
        The scalar estimate (differentiable in the parameters of ``score``).
    """
    x = _check_points(x)
    _check_score(score)
    _check_score(true_score, "true_score")
    diff = _call_score(score, x) - _call_score(true_score, x).detach()
    return 0.5 * diff.pow(2).sum(-1).mean()


def divergence(s: Tensor, x: Tensor, *, create_graph: bool = True) -> Tensor:
    r"""The exact divergence :math:`\operatorname{tr} \nabla_x s(x)` per point, by ``D``
    backward passes (one per diagonal entry of the Jacobian).

    Used by :func:`implicit_score_matching` (eq. ``eq-sm-ism``) and by the likelihood of
    flow matching (the instantaneous change of variables).

    Args:
        s: the field's values, shape ``(B, D)``, computed from ``x`` with a graph.
        x: the points, shape ``(B, D)``, with ``requires_grad``.
        create_graph: keep the graph of the result (needed to train through it).

    Returns:
        The divergences, shape ``(B,)``.
    """
    if s.ndim != 2 or s.shape != x.shape:
        raise ValueError(f"s and x must have the same shape (B, D), got {tuple(s.shape)} "
                         f"and {tuple(x.shape)}")
    d = x.shape[1]
    div = torch.zeros(x.shape[0], dtype=s.dtype, device=s.device)
    for i in range(d):
        (g,) = torch.autograd.grad(s[:, i].sum(), x, create_graph=create_graph,
                                   retain_graph=create_graph or i < d - 1)
        div = div + g[:, i]
    return div


def implicit_score_matching(score: Score, x: Tensor) -> Tensor:
    r"""Implicit score matching, Hyvarinen's objective (eq. ``eq-sm-ism``).

    .. math::

        J_{\mathrm{ISM}}(\theta) = \mathbb E_{p}\Big[ \operatorname{tr} \nabla_x s_\theta(x)
        + \tfrac12 \| s_\theta(x) \|^2 \Big]
        = J_{\mathrm{ESM}}(\theta) - \tfrac12\, \mathbb E_p \|\nabla \log p\|^2 ,

    the second equality being :prf:ref:`thm-sm-ism` (integration by parts).

    The trace of the Jacobian is computed exactly with ``D`` backward passes (one per
    diagonal entry), the cost that :func:`sliced_score_matching` avoids.

    Args:
        score: :math:`s_\theta`, ``(B, D) -> (B, D)``, differentiable in its input.
        x: points drawn from :math:`p`, shape ``(B, D)``.

    Returns:
        The scalar estimate, with a graph to the parameters of ``score``.
    """
    x = _check_points(x)
    _check_score(score)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = _call_score(score, x)
        return (divergence(s, x) + 0.5 * s.pow(2).sum(-1)).mean()


def sliced_score_matching(
    score: Score,
    x: Tensor,
    *,
    projections: int = 1,
    distribution: str = "gaussian",
    variance_reduction: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Sliced score matching (eq. ``eq-sm-ssm``), Song et al. (2019).

    The trace of :func:`implicit_score_matching` is replaced by Hutchinson's estimator
    :math:`v^\top \nabla_x s_\theta(x)\, v` with random directions :math:`v`,
    :math:`\mathbb E[v v^\top] = I` (eq. ``eq-sm-hutchinson``), which costs one
    backward pass per direction whatever ``D``:

    .. math::

        J_{\mathrm{SSM}}(\theta) = \mathbb E_{p}\, \mathbb E_{v} \Big[ v^\top \nabla_x
        s_\theta(x)\, v + \tfrac12 \big(v^\top s_\theta(x)\big)^2 \Big].

    This is the basic objective of Song et al. (2019). With ``variance_reduction`` (their
    SSM-VR, eq. ``eq-sm-ssm-vr``, the default) the second term is replaced by its expectation
    over :math:`v`, :math:`\tfrac12 \|s_\theta(x)\|^2`, exact for Gaussian and Rademacher
    directions. Either way the estimate is unbiased for :math:`J_{\mathrm{ISM}}`.

    Args:
        score: :math:`s_\theta`, ``(B, D) -> (B, D)``, differentiable in its input.
        x: points drawn from :math:`p`, shape ``(B, D)``.
        projections: directions :math:`M` per point.
        distribution: ``"gaussian"`` (:math:`v \sim \mathcal N(0, I)`) or ``"rademacher"``
            (independent signs).
        variance_reduction: use :math:`\tfrac12\|s\|^2` for the second term (SSM-VR)
            instead of :math:`\tfrac12 (v^\top s)^2` (SSM).
        generator: source of the directions.

    Returns:
        The scalar estimate, with a graph to the parameters of ``score``.
    """
    x = _check_points(x)
    _check_score(score)
    m = check_int("projections", projections)
    if distribution not in ("gaussian", "rademacher"):
        raise ValueError(f"distribution must be 'gaussian' or 'rademacher', got {distribution!r}")
    generator = check_generator(generator)
    v = randn((m, *x.shape), like=x, generator=generator)
    if distribution == "rademacher":
        v = v.sign()
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = _call_score(score, x)  # (B, D)
        total = 0.5 * s.pow(2).sum(-1) if variance_reduction else 0.0
        for vm in v:  # vm: (B, D)
            vs = (vm * s).sum(-1)  # (B,)
            (g,) = torch.autograd.grad(vs.sum(), x, create_graph=True)  # (B, D) = J^T v
            total = total + (g * vm).sum(-1) / m
            if not variance_reduction:
                total = total + 0.5 * vs.pow(2) / m
        return total.mean()


def denoising_score_matching(
    score: Score,
    x: Tensor,
    sigma: float | Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Denoising score matching (eq. ``eq-sm-dsm``), Vincent (2011).

    With :math:`\tilde x = x + \sigma \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`,
    the score of the noising kernel is
    :math:`\nabla_{\tilde x} \log q_\sigma(\tilde x \mid x) = -\varepsilon / \sigma`, and

    .. math::

        J_{\mathrm{DSM}}(\theta) = \tfrac12\, \mathbb E\, \big\| s_\theta(\tilde x)
        + \varepsilon / \sigma \big\|^2 ,

    which differs from the explicit score matching loss on the *noised* density
    :math:`p_\sigma = p * \mathcal N(0, \sigma^2 I)` by a constant
    (:prf:ref:`thm-sm-dsm`).

    Args:
        score: :math:`s_\theta`, ``(B, D) -> (B, D)``.
        x: clean points, shape ``(B, D)``.
        sigma: the noise scale, a positive number or one per point, shape ``(B,)``.
        generator: source of the noise :math:`\varepsilon`.

    Returns:
        The scalar estimate.
    """
    x = _check_points(x)
    _check_score(score)
    sig = _check_sigma(sigma, x)  # (B, 1)
    eps = _randn_like(x, check_generator(generator))
    s = _call_score(score, x + sig * eps)
    return 0.5 * (s + eps / sig).pow(2).sum(-1).mean()


def tweedie(x_noisy: Tensor, score: Tensor, sigma: float | Tensor) -> Tensor:
    r"""Tweedie's formula (eq. ``eq-sm-tweedie``): the posterior mean of clean data.

    For :math:`\tilde x = x + \sigma \varepsilon`,

    .. math::

        \mathbb E[x \mid \tilde x] = \tilde x + \sigma^2 \nabla \log p_\sigma(\tilde x),

    where :math:`p_\sigma` is the density of :math:`\tilde x`. With a learned score in place
    of the true one this is the denoiser that score matching implicitly trains.

    Args:
        x_noisy: :math:`\tilde x`, shape ``(B, D)``.
        score: :math:`\nabla \log p_\sigma(\tilde x)`, shape ``(B, D)``.
        sigma: the noise scale, a positive number or one per point ``(B,)``.

    Returns:
        The posterior means, shape ``(B, D)``.
    """
    x_noisy = _check_points(x_noisy, "x_noisy")
    if not isinstance(score, Tensor) or score.shape != x_noisy.shape:
        raise ValueError(f"score must be a tensor of shape {tuple(x_noisy.shape)}")
    return x_noisy + _check_sigma(sigma, x_noisy) ** 2 * score


# ----------------------------------------------------------- exact Gaussian-mixture scores


def _check_mixture(gmm: object) -> GaussianMixture:
    if not isinstance(gmm, GaussianMixture):
        raise TypeError(f"expected a gmbook.densities.GaussianMixture, got {describe(gmm)}")
    return gmm


def noised_mixture(gmm: GaussianMixture, sigma: float) -> GaussianMixture:
    r"""The mixture convolved with :math:`\mathcal N(0, \sigma^2 I)`: every covariance grows by
    :math:`\sigma^2 I`, i.e. the density :math:`p_\sigma` of :math:`x + \sigma\varepsilon`.

    Args:
        gmm: the clean mixture.
        sigma: noise scale :math:`\sigma \ge 0` (0 returns an equal copy).

    Returns:
        A new :class:`gmbook.densities.GaussianMixture` (no gradients to ``gmm``).
    """
    gmm = _check_mixture(gmm)
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or sigma < 0:
        raise ValueError(f"sigma must be a number >= 0, got {sigma!r}")
    with torch.no_grad():
        cov = gmm.covariances
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        return GaussianMixture(gmm.weights, gmm.means, cov + sigma**2 * eye)


def _responsibilities(gmm: GaussianMixture, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Responsibilities ``(B, K)`` and precisions ``(K, D, D)``, without batched solves."""
    cov = gmm.covariances.detach()
    prec = torch.linalg.inv(cov)  # (K, D, D)
    dev = x[:, None] - gmm.means.detach()[None]  # (B, K, D)
    maha = (torch.einsum("bki,kij->bkj", dev, prec) * dev).sum(-1)  # (B, K)
    log_joint = torch.log_softmax(gmm.logits.detach(), 0) - 0.5 * (maha + torch.logdet(cov))
    return torch.softmax(log_joint, dim=1), prec


def mixture_score(gmm: GaussianMixture, x: Tensor) -> Tensor:
    r"""The exact score of a Gaussian mixture (eq. ``eq-sm-mixture-score``).

    .. math::

        \nabla \log p(x) = \sum_k r_k(x)\, \Sigma_k^{-1} (\mu_k - x),
        \qquad r_k(x) = \frac{\pi_k \mathcal N(x; \mu_k, \Sigma_k)}{p(x)} ,

    a responsibility-weighted average of the components' scores.

    Args:
        gmm: the mixture, ``K`` components in ``D`` dimensions.
        x: points, shape ``(B, D)``.

    Returns:
        Scores of shape ``(B, D)``, in the dtype of the mixture.
    """
    gmm = _check_mixture(gmm)
    x = _check_points(x).to(gmm.means)
    with torch.no_grad():
        r, prec = _responsibilities(gmm, x)  # (B, K), (K, D, D)
        comp = torch.einsum("kij,bkj->bki", prec, gmm.means[None] - x[:, None])  # (B, K, D)
        return (r[..., None] * comp).sum(1)


def mixture_posterior_mean(gmm: GaussianMixture, x_noisy: Tensor, sigma: float) -> Tensor:
    r"""The exact :math:`\mathbb E[x \mid \tilde x]` for :math:`x \sim` ``gmm`` and
    :math:`\tilde x = x + \sigma \varepsilon`, by Bayes' rule on each component:

    .. math::

        \mathbb E[x \mid \tilde x] = \sum_k \tilde r_k(\tilde x) \big(\mu_k
        + \Sigma_k (\Sigma_k + \sigma^2 I)^{-1} (\tilde x - \mu_k)\big),

    with :math:`\tilde r_k` the responsibilities of the noised mixture. Tweedie's formula
    (:func:`tweedie`) must give the same answer; the tests check it.

    Args:
        gmm: the clean mixture.
        x_noisy: noisy points, shape ``(B, D)``.
        sigma: the noise scale.

    Returns:
        Posterior means, shape ``(B, D)``, in the dtype of the mixture.
    """
    noisy = noised_mixture(gmm, sigma)
    x_noisy = _check_points(x_noisy, "x_noisy").to(gmm.means)
    with torch.no_grad():
        r, noisy_prec = _responsibilities(noisy, x_noisy)  # (B, K), (K, D, D)
        gain = gmm.covariances @ noisy_prec  # (K, D, D)
        dev = x_noisy[:, None] - gmm.means[None]  # (B, K, D)
        comp = gmm.means[None] + torch.einsum("kij,bkj->bki", gain, dev)  # (B, K, D)
        return (r[..., None] * comp).sum(1)


# -------------------------------------------------------------------------- Langevin


def langevin(
    score: Score,
    x0: Tensor,
    steps: int,
    step_size: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Langevin dynamics driven by a score (eq. ``eq-sm-langevin``).

    :math:`x \leftarrow x + h\, s(x) + \sqrt{2h}\, \xi`, :math:`\xi \sim \mathcal N(0, I)`,
    ``steps`` times: the unadjusted Langevin algorithm of the sampling chapter
    (:func:`gmbook.mcmc.ula`), with the score given directly instead of a log-density.

    Args:
        score: :math:`s`, ``(B, D) -> (B, D)``.
        x0: starting points, shape ``(B, D)``.
        steps: number of steps (0 returns ``x0``).
        step_size: :math:`h > 0`.
        generator: source of the noise.

    Returns:
        The final points, shape ``(B, D)``, detached.
    """
    _check_score(score)
    x = _check_points(x0, "x0").detach()
    steps = check_int("steps", steps, minimum=0)
    h = check_positive("step_size", step_size)
    generator = check_generator(generator)
    with torch.no_grad():
        for _ in range(steps):
            x = langevin_step(x, _call_score(score, x), h, generator=generator)
    return x


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> Tensor:
    r"""A geometric ladder of noise levels, largest first (eq. ``eq-sm-ladder``).

    :math:`\sigma_i = \sigma_{\max} (\sigma_{\min} / \sigma_{\max})^{(i - 1)/(L - 1)}`,
    :math:`i = 1, \dots, L`: consecutive levels have the constant ratio
    :math:`\gamma = \sigma_i / \sigma_{i+1}`, as in Song & Ermon (2019).

    Args:
        sigma_max: :math:`\sigma_1`.
        sigma_min: :math:`\sigma_L`, with :math:`0 < \sigma_L < \sigma_1`.
        levels: :math:`L \ge 2`.

    Returns:
        The levels, float64, shape ``(L,)``, decreasing.
    """
    hi = check_positive("sigma_max", sigma_max)
    lo = check_positive("sigma_min", sigma_min)
    n = check_int("levels", levels, minimum=2)
    if not lo < hi:
        raise ValueError(f"need sigma_min < sigma_max, got {lo} and {hi}")
    return torch.logspace(math.log10(hi), math.log10(lo), n, dtype=torch.float64)


def annealed_langevin(
    score: LevelScore,
    x0: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    steps_per_level: int = 100,
    eps: float = 1e-3,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    return_path: bool = False,
) -> Tensor | SamplePath:
    r"""Annealed Langevin dynamics (eq. ``eq-sm-annealed``) for a score given per level.

    The level-indexed form of :func:`gmbook.samplers.annealed_langevin` (Song & Ermon, 2019,
    Algorithm 1), for a score known at the levels only, such as the exact scores of a
    mixture noised at each :math:`\sigma_i`: it wraps ``score`` as the score prediction of
    a variance-exploding path (:class:`gmbook.samplers.VEPath`, time :math:`t = \sigma`)
    and calls the sampler. For each level :math:`i = 1, \dots, L` (largest first),
    ``steps_per_level`` Langevin steps on :math:`p_{\sigma_i}` with step size
    :math:`\alpha_i = \epsilon\, \sigma_i^2 / \sigma_L^2`,

    .. math::

        x \leftarrow x + \alpha_i\, s(x, i) + \sqrt{2 \alpha_i}\, \xi ;

    with ``denoise``, a last Tweedie step :math:`x + \sigma_L^2 s(x, L)` (eq.
    ``eq-sm-tweedie``; Jolicoeur-Martineau et al., 2021).

    Args:
        score: ``score(x, i)``, the score of :math:`p_{\sigma_i}` at ``x`` of shape
            ``(B, D)``, for the level index ``i`` (0-based).
        x0: starting points, shape ``(B, D)``.
        sigmas: the decreasing noise levels, ``(L,)``.
        steps_per_level: :math:`T` Langevin steps per level.
        eps: :math:`\epsilon`, the step size at the last level.
        denoise: finish with the Tweedie step.
        generator: source of the noise.
        return_path: return the :class:`gmbook.samplers.SamplePath` (states at the end of
            every level) instead of the samples.

    Returns:
        The samples ``(B, D)``, or the :class:`gmbook.samplers.SamplePath`.
    """
    if not callable(score):
        raise TypeError(f"score must be a callable (x, level) -> (B, D), got {describe(score)}")
    x = _check_points(x0, "x0").detach()
    sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if len(sig) < 2 or not bool((sig > 0).all()) or not bool((sig[1:] < sig[:-1]).all()):
        raise ValueError(f"sigmas must hold at least 2 positive, strictly decreasing levels, "
                         f"got {sig.tolist()}")
    log_sig = sig.log()

    def level_score(z: Tensor, t: Tensor) -> Tensor:  # t: (B,), one level per call
        i = int(torch.argmin((log_sig - t[0].double().log()).abs()))  # t is float32-rounded
        return _call_score(lambda y: score(y, i), z)

    pred = Prediction(level_score, "score", VEPath(float(sig[0])))
    path = _annealed_sampler(pred, x, sig, steps_per_level=steps_per_level, eps=eps,
                             denoise=denoise, generator=generator, return_path=return_path)
    return path if return_path else path.samples


# ------------------------------------------------------------------------------ NCSN


class NCSN(nn.Module):
    r"""A noise-conditional score network (Song & Ermon, 2019) on a ladder of noise levels.

    The network :math:`f_\theta(x, t)` (an :class:`gmbook.nets.MLP` with a time input)
    sees the level through :math:`t = \log(\sigma_1 / \sigma) / \log(\sigma_1 / \sigma_L)
    \in [0, 1]` and predicts :math:`-\varepsilon`; the score is its output divided by
    :math:`\sigma` (Song & Ermon, 2020), :math:`s_\theta(x, \sigma) = f_\theta(x, t) /
    \sigma`. The loss is denoising score matching at a random level per point, weighted by
    :math:`\lambda(\sigma) = \sigma^2` (eq. ``eq-sm-ncsn-loss``):

    .. math::

        \mathcal L(\theta) = \tfrac12\, \mathbb E_{i, x, \varepsilon}\,
        \big\| f_\theta(x + \sigma_i \varepsilon, t_i) + \varepsilon \big\|^2 ,

    which gives every level the same scale.

    Args:
        net: :math:`f_\theta`, called as ``net(x, t)`` with ``x`` of shape ``(B, D)`` and
            ``t`` of shape ``(B,)``; returns ``(B, D)``.
        sigmas: the decreasing noise levels, shape ``(L,)`` (e.g. :func:`geometric_sigmas`).
        dim: the data dimension :math:`D`.

    Example:
        >>> model = NCSN(MLP(2, hidden=32, time_dim=16), geometric_sigmas(3.0, 0.05, 8), dim=2)
        >>> model.loss(torch.randn(16, 2)).shape
        torch.Size([])
        >>> model.sample(4, steps_per_level=2).shape
        torch.Size([4, 2])
    """

    sigmas: Tensor

    def __init__(self, net: nn.Module, sigmas: Sequence[float] | Tensor, *, dim: int) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a module (x, t) -> (B, D), got {describe(net)}")
        sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        if len(sig) < 2 or not bool((sig > 0).all()) or not bool((sig[1:] < sig[:-1]).all()):
            raise ValueError("sigmas must hold at least 2 positive, strictly decreasing levels")
        self.net = net
        self.dim = check_int("dim", dim)
        self.register_buffer("sigmas", sig.to(torch.get_default_dtype()))

    @property
    def levels(self) -> int:
        r"""The number :math:`L` of noise levels."""
        return len(self.sigmas)

    def _time(self, sigma: Tensor) -> Tensor:
        top, bottom = self.sigmas[0], self.sigmas[-1]
        return torch.log(top / sigma) / torch.log(top / bottom)

    def score(self, x: Tensor, level: int | Tensor) -> Tensor:
        r"""The score :math:`s_\theta(x, \sigma_i)` of the noised data at level ``i``.

        Args:
            x: points, shape ``(B, D)``.
            level: the level index ``i`` (0-based), an int or one per point ``(B,)``.

        Returns:
            Scores of shape ``(B, D)``.
        """
        x = _check_points(x)
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if isinstance(level, int) and not isinstance(level, bool):
            sigma = self.sigmas[level].to(x.dtype)  # one level: a scalar time, computed once
            return self.net(x, self._time(sigma)) / sigma
        idx = torch.as_tensor(level, device=x.device).expand(x.shape[0])
        sigma = self.sigmas[idx].to(x.dtype)  # (B,)
        return self.net(x, self._time(sigma)) / sigma[:, None]

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""The weighted DSM loss (eq. ``eq-sm-ncsn-loss``) of a batch ``(B, D)``, a scalar.

        Args:
            x: clean points, shape ``(B, D)``.
            generator: source of the levels and the noise (the global RNG if ``None``).
        """
        x = _check_points(x)
        generator = check_generator(generator)
        if generator is None:
            i = torch.randint(0, self.levels, (x.shape[0],), device=x.device)
        else:  # drawn on the generator's device, then moved (as gmbook._random does)
            i = torch.randint(0, self.levels, (x.shape[0],), generator=generator,
                              device=generator.device).to(x.device)
        sigma = self.sigmas[i].to(x.dtype)[:, None]  # (B, 1)
        eps = _randn_like(x, generator)
        out = self.net(x + sigma * eps, self._time(sigma[:, 0]))
        return 0.5 * (out + eps).pow(2).sum(-1).mean()

    def prediction(self) -> Prediction:
        r"""The network as a noise prediction on the variance-exploding path.

        On :class:`gmbook.samplers.VEPath` the time is the noise level, :math:`t = \sigma`,
        and :math:`x_t = x_0 + \sigma \varepsilon`; the network predicts
        :math:`-\varepsilon`, so the prediction is :math:`\hat\varepsilon = -f_\theta(x,
        t(\sigma))` and its score :math:`-\hat\varepsilon / \sigma` is :meth:`score`. Any
        sampler of :mod:`gmbook.samplers` can then run on the model; the network is trained
        at the levels of the ladder only, so times between them are interpolations.

        Returns:
            A :class:`gmbook.samplers.Prediction` of kind ``"eps"``.
        """

        def eps_hat(x: Tensor, t: Tensor) -> Tensor:  # t = sigma, shape (B,)
            return -self.net(x, self._time(t.to(x.dtype)))

        return Prediction(eps_hat, "eps", VEPath(float(self.sigmas[0])))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        steps_per_level: int = 100,
        eps: float = 2e-5,
        denoise: bool = True,
        generator: torch.Generator | None = None,
        return_path: bool = False,
    ) -> Tensor | SamplePath:
        r"""Draw ``n`` points ``(n, D)`` by :func:`gmbook.samplers.annealed_langevin` on the
        ladder (eq. ``eq-sm-annealed``), with :meth:`prediction`.

        Chains start from :math:`\mathcal N(0, (1 + \sigma_1^2) I)`, the Gaussian with the
        variance of standardized data noised at the top level.

        Args:
            n: number of samples.
            steps_per_level: Langevin steps per level.
            eps: step size at the last level.
            denoise: finish with a Tweedie step.
            generator: source of randomness.
            return_path: return the :class:`gmbook.samplers.SamplePath` (the states at the
                end of every level) instead of the samples.
        """
        n = check_int("n", n)
        generator = check_generator(generator)
        p = self.sigmas
        x0 = randn((n, self.dim), like=p, generator=generator)
        x0 = x0 * math.sqrt(1 + float(p[0]) ** 2)
        path = _annealed_sampler(self.prediction(), x0, p, steps_per_level=steps_per_level,
                                 eps=eps, denoise=denoise, generator=generator,
                                 return_path=return_path)
        return path if return_path else path.samples

    def extra_repr(self) -> str:
        s = self.sigmas
        return f"levels={self.levels}, sigma_max={float(s[0]):g}, sigma_min={float(s[-1]):g}"
