r"""The density models of the chapter "Modeling continuous random variables".

Derived in ``book/foundations/densities.md``; each object cites the equation it implements:

- :func:`log_sum_exp`, the stable log of a sum of exponentials (eq. ``eq-logsumexp``);
- :class:`GaussianMixture`, a mixture of full-covariance Gaussians (eq. ``eq-gmm``) with an
  exact density, a sampler and a loss for gradient descent; :func:`fit_em` fits it by
  expectation-maximization (eqs. ``eq-em-e-step`` and ``eq-em-m-step``);
- :class:`GaussianKDE`, the kernel density estimate (eq. ``eq-kde``), and
  :func:`select_bandwidth` by held-out likelihood;
- :class:`MixtureParams`, :func:`mixture_log_prob` and :func:`mixture_sample`, batches of
  1-D Gaussian mixtures (eq. ``eq-gmm`` with :math:`D = 1`), the one implementation of the
  mixture arithmetic that :class:`MixtureDensityNetwork` and
  :class:`gmbook.sequences.MixtureDensityHead` share;
- :class:`MixtureDensityNetwork` and :class:`Autoregressive`, an exact-likelihood model
  built from one-dimensional conditionals (eq. ``eq-autoregressive``);
- :class:`CouplingMap`, a hand-built invertible map of the plane, with
  :func:`pushforward_log_prob` (the change of variables, eq. ``eq-change-of-variables``)
  and :func:`log_abs_det_autograd` to check any Jacobian determinant;
- :func:`dequantize`, uniform dequantization of discrete data (eq. ``eq-dequantize``).

Every model has the book's verbs: ``log_prob(x)`` ``(B,)``, ``sample(n, generator=...)``
``(n, D)`` and ``loss(x)``, the mean negative log-likelihood.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal

from gmbook._checks import (
    check_bool,
    check_float_tensor,
    check_generator,
    check_int,
    check_nonnegative,
    check_points,
    check_positive,
    check_real,
    describe,
)
from gmbook._random import rand, randn
from gmbook.nets import MLP

__all__ = [
    "Autoregressive",
    "BandwidthSelection",
    "CouplingMap",
    "EMResult",
    "GaussianKDE",
    "GaussianMixture",
    "MixtureDensityNetwork",
    "MixtureParams",
    "dequantize",
    "fit_em",
    "kmeans_plusplus",
    "log_abs_det_autograd",
    "log_sum_exp",
    "mixture_log_prob",
    "mixture_sample",
    "pushforward_log_prob",
    "select_bandwidth",
]

_LOG_2PI = math.log(2 * math.pi)
_BLOCK = 2**18  # entries of a (rows, n) block of the kernel sums (2 MB in float64; the
# log-kernels of H bandwidths are H such blocks). Blocks of 2**22 entries took about twice the
# CPU time in the densities chapter's KDE cells, which give the same values bit for bit.


# --------------------------------------------------------------------------- log-sum-exp


def log_sum_exp(a: Tensor, dim: int = -1) -> Tensor:
    r""":math:`\log \sum_k e^{a_k}` along ``dim``, without overflow or underflow.

    Implements eq. ``eq-logsumexp``: :math:`m + \log \sum_k e^{a_k - m}` with
    :math:`m = \max_k a_k`, so the largest term of the sum is exactly 1. A slice that is
    entirely :math:`-\infty` gives :math:`-\infty` (not NaN). Same values as
    :func:`torch.logsumexp`, which the package uses elsewhere; written out because the
    chapter derives it.

    Args:
        a: any tensor with at least one dimension.
        dim: the dimension to reduce.

    Returns:
        ``a`` with ``dim`` removed.

    Example:
        >>> float(log_sum_exp(torch.tensor([1000.0, 1000.0])))  # naive: inf
        1000.6931...
    """
    if not isinstance(a, Tensor) or a.ndim == 0:
        raise TypeError(f"a must be a tensor with at least one dimension, got {describe(a)}")
    m = a.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf: sum of zeros
    return (m + (a - m).exp().sum(dim=dim, keepdim=True).log()).squeeze(dim)


# --------------------------------------------------------------------------- mixtures


def _tril_param(cov: Tensor) -> tuple[Tensor, Tensor]:
    """Unconstrained ``(log of the diagonal, strictly lower part)`` of ``cholesky(cov)``."""
    L = torch.linalg.cholesky(cov)
    return L.diagonal(dim1=-2, dim2=-1).log(), torch.tril(L, -1)


class GaussianMixture(nn.Module):
    r"""A mixture of ``K`` full-covariance Gaussians in ``D`` dimensions (eq. ``eq-gmm``).

    .. math::

        p_\theta(x) = \sum_{k=1}^K \pi_k\, \mathcal N(x;\, \mu_k, \Sigma_k).

    The parameters are unconstrained, so that gradient descent can train them: weights
    :math:`\pi = \mathrm{softmax}(\text{logits})`, means, and the Cholesky factors
    :math:`\Sigma_k = L_k L_k^\top` with a positive diagonal through ``exp``.
    :meth:`log_prob` combines the components with :func:`log_sum_exp`.

    Args:
        weights: :math:`\pi`, shape ``(K,)``, positive (normalized here).
        means: :math:`\mu_k`, shape ``(K, D)``.
        covariances: :math:`\Sigma_k`, shape ``(K, D, D)``, symmetric positive definite.
    """

    def __init__(self, weights: Tensor, means: Tensor, covariances: Tensor) -> None:
        super().__init__()
        for name, t in (("weights", weights), ("means", means), ("covariances", covariances)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got {describe(t)}")
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        k, d = means.shape
        if weights.shape != (k,) or covariances.shape != (k, d, d):
            raise ValueError(
                f"with means of shape (K, D) = {(k, d)}, weights must be (K,) and covariances "
                f"(K, D, D); got {tuple(weights.shape)} and {tuple(covariances.shape)}"
            )
        if not bool((weights > 0).all()):
            raise ValueError("weights must be positive")
        if not torch.allclose(covariances, covariances.transpose(-1, -2), rtol=1e-5, atol=1e-8):
            raise ValueError("covariances must be symmetric (K, D, D) matrices")
        log_diag, lower = _tril_param(covariances.detach())
        self.logits = nn.Parameter(weights.detach().log() - weights.detach().log().mean())
        self.means = nn.Parameter(means.detach().clone())
        self.log_diag = nn.Parameter(log_diag)  # (K, D)
        self.lower = nn.Parameter(lower)  # (K, D, D), only the strict lower part is used

    @classmethod
    def initialize(
        cls, x: Tensor, components: int, *, generator: torch.Generator | None = None
    ) -> GaussianMixture:
        r"""A starting point for EM or gradient descent: means by :func:`kmeans_plusplus`,
        equal weights, and every covariance the data covariance divided by
        :math:`K^{2/D}` (so that the components together span about the data's volume).

        Args:
            x: training points ``(n, D)``, ``n >= components``.
            components: :math:`K`.
            generator: randomness of the seeding.
        """
        x = check_points("x", x, min_rows=1, rows="n")
        k = check_int("components", components)
        if x.shape[0] < k:
            raise ValueError(f"need at least components = {k} points, got {x.shape[0]}")
        n, d = x.shape
        means = kmeans_plusplus(x, k, generator=generator)
        xc = x - x.mean(0)
        cov = xc.T @ xc / n + 1e-6 * torch.eye(d, dtype=x.dtype, device=x.device)
        covs = (cov / k ** (2 / d)).expand(k, d, d).clone()
        return cls(x.new_full((k,), 1.0 / k), means, covs)

    @property
    def weights(self) -> Tensor:
        r""":math:`\pi`, shape ``(K,)``."""
        return torch.softmax(self.logits, dim=0)

    def scale_tril(self) -> Tensor:
        r"""Cholesky factors :math:`L_k`, shape ``(K, D, D)``."""
        return torch.tril(self.lower, -1) + torch.diag_embed(self.log_diag.exp())

    @property
    def covariances(self) -> Tensor:
        r""":math:`\Sigma_k = L_k L_k^\top`, shape ``(K, D, D)``."""
        L = self.scale_tril()
        return L @ L.transpose(-1, -2)

    def components(self) -> MultivariateNormal:
        r"""The ``K`` Gaussians as one batched :class:`~torch.distributions.MultivariateNormal`."""
        return MultivariateNormal(self.means, scale_tril=self.scale_tril())

    def distribution(self) -> MixtureSameFamily:
        r"""The mixture as a :class:`torch.distributions.MixtureSameFamily`."""
        return MixtureSameFamily(Categorical(logits=self.logits), self.components())

    def joint_log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log \pi_k + \log \mathcal N(x_i; \mu_k, \Sigma_k)`, shape ``(B, K)``."""
        x = check_points("x", x, self.means.shape[1], min_rows=1, rows="n")
        log_w = torch.log_softmax(self.logits, dim=0)
        return log_w + self.components().log_prob(x[:, None, :])

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log p_\theta(x)`, shape ``(B,)`` for ``x`` of shape ``(B, D)``."""
        return log_sum_exp(self.joint_log_prob(x), dim=1)

    def responsibilities(self, x: Tensor) -> Tensor:
        r"""Posterior component probabilities :math:`r_{ik}` (eq. ``eq-em-e-step``), ``(B, K)``."""
        joint = self.joint_log_prob(x)
        return (joint - log_sum_exp(joint, dim=1)[:, None]).exp()

    def loss(self, x: Tensor) -> Tensor:
        r"""Mean negative log-likelihood of a batch ``(B, D)``, a scalar."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` points ``(n, D)``: a component :math:`k \sim \pi`, then
        :math:`\mu_k + L_k \varepsilon` with :math:`\varepsilon \sim \mathcal N(0, I)`."""
        n = check_int("n", n)
        generator = check_generator(generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = randn((n, self.means.shape[1]), like=self.means, generator=generator)
        return self.means[k] + (self.scale_tril()[k] @ eps[:, :, None]).squeeze(-1)

    def extra_repr(self) -> str:
        k, d = self.means.shape
        return f"components={k}, dim={d}"


def kmeans_plusplus(
    x: Tensor, k: int, *, generator: torch.Generator | None = None
) -> Tensor:
    r"""``k`` distinct seed points of ``x`` ``(n, D)`` by k-means++ (Arthur and Vassilvitskii,
    2007): the first uniformly, each next one with probability proportional to its squared
    distance to the nearest seed so far. Returns ``(k, D)``."""
    x = check_points("x", x, min_rows=1, rows="n")
    k = check_int("k", k)
    generator = check_generator(generator)
    n = x.shape[0]
    if k > n:
        raise ValueError(f"cannot choose k = {k} seeds from n = {n} points")
    first = int(torch.randint(n, (), generator=generator, device=x.device))
    seeds = [x[first]]
    d2 = (x - seeds[0]).square().sum(1)  # (n,)
    for _ in range(1, k):
        if float(d2.sum()) <= 0:  # fewer than k distinct points: any point will do
            idx = int(torch.randint(n, (), generator=generator, device=x.device))
        else:
            idx = int(torch.multinomial(d2, 1, generator=generator))
        seeds.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).square().sum(1))
    return torch.stack(seeds)


@dataclasses.dataclass
class EMResult:
    r"""What :func:`fit_em` returns.

    Attributes:
        model: the fitted :class:`GaussianMixture` (in the dtype of the data).
        log_likelihood: the mean log-likelihood of the training data before each M-step
            and after the last one, so ``log_likelihood[t]`` belongs to the parameters after
            ``t`` iterations. Without a covariance floor (``reg=0``) it never decreases
            (:prf:ref:`thm-em-monotone`).
        converged: whether the last improvement fell below ``tol``.
    """

    model: GaussianMixture
    log_likelihood: list[float]
    converged: bool

    @property
    def iterations(self) -> int:
        """The number of EM iterations run."""
        return len(self.log_likelihood) - 1


# The E-step's exponentials: with many components most points are hundreds of nats from most
# of them, and PyTorch's vectorized float64 ``exp`` takes a slow path (three to six times the
# cost per call) for every argument below about -708, whose result is subnormal or 0.
_EXP_FLOOR = -708.0  # exp(-708) = 3.3e-308, just above the smallest normal float64


def _exp_tiny_zero(a: Tensor) -> Tensor:
    r""":math:`e^{a}` with every entry of ``a`` below -708 given 0 instead of a subnormal
    (at most :math:`3.3 \cdot 10^{-308}`). The E-step only sums these numbers with terms of
    at least ``1e-8 n`` (the counts of a living component) or 1 (the largest term of a
    log-sum-exp), far below their half unit in the last place: the sums, and so the fit,
    are bit for bit those of ``a.exp()``; the work is not slowed by the underflow."""
    return a.clamp_min(_EXP_FLOOR).exp_().masked_fill_(a < _EXP_FLOOR, 0.0)


def _em_log_sum_exp(joint: Tensor) -> Tensor:
    """:func:`log_sum_exp` over dim 1 of the finite ``(n, K)`` joint of the E-step, the same
    operations (the row's largest term is exactly 1), with :func:`_exp_tiny_zero`."""
    m = joint.amax(dim=1, keepdim=True)
    return (m + _exp_tiny_zero(joint - m).sum(dim=1, keepdim=True).log()).squeeze(1)


def _em_joint(x: Tensor, w: Tensor, mu: Tensor, cov: Tensor) -> Tensor:
    r""":math:`\log \pi_k + \log \mathcal N(x_i; \mu_k, \Sigma_k)`, ``(n, K)``, for EM's own
    float64 parameters; :func:`fit_em` has checked the data and the M-step keeps every
    covariance symmetric, so the distribution's argument checks (a second Cholesky
    factorization per iteration) are skipped; the values are the same."""
    comp = MultivariateNormal(mu, covariance_matrix=cov, validate_args=False)
    return w.log() + comp.log_prob(x[:, None, :])


def _em_step(
    x: Tensor, w: Tensor, mu: Tensor, cov: Tensor, reg: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""One EM iteration in float64; returns the new ``(w, mu, cov)`` and the mean
    log-likelihood of the *old* parameters (a by-product of the E-step)."""
    n, d = x.shape
    joint = _em_joint(x, w, mu, cov)  # (n, K)
    log_px = _em_log_sum_exp(joint)  # (n,)
    r = _exp_tiny_zero(joint - log_px[:, None])  # (n, K), eq-em-e-step
    nk = r.sum(0)  # (K,) effective counts
    alive = nk > 1e-8 * n
    nk_safe = torch.where(alive, nk, torch.ones_like(nk))
    new_mu = torch.where(alive[:, None], (r.T @ x) / nk_safe[:, None], mu)  # eq-em-m-step
    diff = x[None, :, :] - new_mu[:, None, :]  # (K, n, D)
    new_cov = torch.einsum("nk,kni,knj->kij", r, diff, diff) / nk_safe[:, None, None]
    new_cov = torch.where(alive[:, None, None], new_cov, cov)
    new_cov = 0.5 * (new_cov + new_cov.transpose(-1, -2)) + reg * torch.eye(d, dtype=x.dtype)
    new_w = torch.where(alive, nk / n, torch.zeros_like(nk))
    new_w = new_w.clamp_min(1e-300)
    return new_w / new_w.sum(), new_mu, new_cov, log_px.mean()


def fit_em(
    x: Tensor,
    components: int | GaussianMixture,
    *,
    iterations: int = 500,
    tol: float = 1e-7,
    reg: float = 1e-6,
    generator: torch.Generator | None = None,
) -> EMResult:
    r"""Maximum likelihood for a :class:`GaussianMixture` by expectation-maximization.

    Each iteration computes the responsibilities (E-step, eq. ``eq-em-e-step``), then the
    weighted counts, means and covariances that maximize the expected complete-data
    log-likelihood (M-step, eq. ``eq-em-m-step``). The computation is in float64 on the
    device of ``x``. ``reg`` is added to the diagonal of every covariance after the M-step,
    a floor that keeps a component from collapsing onto a single point (where the
    likelihood is unbounded); with ``reg > 0`` the monotonicity of
    :prf:ref:`thm-em-monotone` can fail by a small amount per step (negligible when ``reg``
    is much smaller than the eigenvalues of the covariances). A component whose
    responsibilities vanish keeps its mean and covariance and gets weight ``1e-300``
    (zero, up to a floor that keeps its logarithm finite).

    Args:
        x: training points ``(n, D)``.
        components: :math:`K` (initialized by :meth:`GaussianMixture.initialize`), or a
            mixture to start from (not modified).
        iterations: the largest number of iterations.
        tol: stop when the mean log-likelihood improves by less than this.
        reg: covariance floor added to the diagonal, ``>= 0``.
        generator: randomness of the initialization.

    Returns:
        An :class:`EMResult`.
    """
    x = check_points("x", x, min_rows=1, rows="n")
    iterations = check_int("iterations", iterations, 0)
    tol = check_nonnegative("tol", tol)
    reg = check_nonnegative("reg", reg)
    if isinstance(components, GaussianMixture):
        start = components
        if start.means.shape[1] != x.shape[1]:
            raise ValueError(
                f"the mixture has dimension {start.means.shape[1]}, the data {x.shape[1]}"
            )
    else:
        start = GaussianMixture.initialize(x, check_int("components", components),
                                           generator=generator)
    x64 = x.detach().double()
    with torch.no_grad():
        w = start.weights.detach().double().to(x.device)
        mu = start.means.detach().double().to(x.device)
        cov = start.covariances.detach().double().to(x.device)
        history: list[float] = []
        converged = False
        for _ in range(iterations):
            w, mu, cov, ll = _em_step(x64, w, mu, cov, reg)
            history.append(float(ll))
            if len(history) > 1 and history[-1] - history[-2] < tol:
                converged = True
                break
        history.append(float(_em_log_sum_exp(_em_joint(x64, w, mu, cov)).mean()))
    model = GaussianMixture(w.to(x.dtype), mu.to(x.dtype), cov.to(x.dtype))
    return EMResult(model, history, converged)


# --------------------------------------------------------------------------- KDE


def _kde_log_probs(
    x: Tensor, data: Tensor, bandwidths: Sequence[float], exclude_self: bool = False
) -> Tensor:
    r""":math:`\log \hat p_h(x_i)` for every bandwidth, shape ``(H, B)``, in blocks."""
    n, d = data.shape
    rows = max(1, _BLOCK // n)
    h = torch.tensor(bandwidths, dtype=torch.float64, device=x.device)  # (H,)
    data64 = data.double()
    out = []
    for i0 in range(0, x.shape[0], rows):
        xb = x[i0 : i0 + rows].double()
        d2 = torch.cdist(xb, data64, compute_mode="donot_use_mm_for_euclid_dist").square()
        logk = -d2[None] / (2 * h[:, None, None] ** 2)  # (H, rows, n)
        if exclude_self:
            r = torch.arange(xb.shape[0], device=x.device)
            logk[:, r, r + i0] = -math.inf
        count = n - 1 if exclude_self else n
        norm = math.log(count) + 0.5 * d * (_LOG_2PI + 2 * h.log())  # (H,)
        out.append(torch.logsumexp(logk, dim=2) - norm[:, None])
    return torch.cat(out, dim=1)


class GaussianKDE(nn.Module):
    r"""Kernel density estimate with an isotropic Gaussian kernel (eq. ``eq-kde``).

    .. math::

        \hat p_h(x) = \frac1n \sum_{i=1}^n \mathcal N(x;\, x_i, h^2 I).

    No parameters are trained: the data are the model. :meth:`log_prob` works in blocks
    (memory stays bounded) and in float64; it returns the dtype of its input.

    Args:
        data: the points ``(n, D)`` (stored as a buffer).
        bandwidth: :math:`h > 0`, in the units of the data.
    """

    def __init__(self, data: Tensor, bandwidth: float) -> None:
        super().__init__()
        data = check_points("data", data, min_rows=1, rows="n")
        self.bandwidth = check_positive("bandwidth", bandwidth)
        self.register_buffer("data", data.detach().clone())

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log \hat p_h(x)`, shape ``(B,)`` for ``x`` of shape ``(B, D)``."""
        x = check_points("x", x, self.data.shape[1], min_rows=1, rows="n")
        return _kde_log_probs(x, self.data, [self.bandwidth])[0].to(x.dtype)

    def loss(self, x: Tensor) -> Tensor:
        r"""Mean negative log-likelihood of ``x`` ``(B, D)``, a scalar."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` points ``(n, D)``: a data point chosen uniformly, plus
        :math:`h\,\varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`."""
        n = check_int("n", n)
        generator = check_generator(generator)
        idx = torch.randint(self.data.shape[0], (n,), generator=generator, device=self.data.device)
        eps = randn((n, self.data.shape[1]), like=self.data, generator=generator)
        return self.data[idx] + self.bandwidth * eps

    def extra_repr(self) -> str:
        return f"n={self.data.shape[0]}, dim={self.data.shape[1]}, bandwidth={self.bandwidth:g}"


@dataclasses.dataclass
class BandwidthSelection:
    r"""What :func:`select_bandwidth` returns.

    Attributes:
        bandwidth: the bandwidth with the lowest held-out NLL.
        bandwidths: the candidates, shape ``(H,)``.
        nll: held-out mean NLL in nats of each candidate, shape ``(H,)``.
        train_nll: leave-one-out NLL on the training points of each candidate, ``(H,)``
            (NaN if not computed).
    """

    bandwidth: float
    bandwidths: Tensor
    nll: Tensor
    train_nll: Tensor


def select_bandwidth(
    train: Tensor,
    valid: Tensor,
    bandwidths: Sequence[float] | Tensor,
    *,
    leave_one_out: bool = True,
) -> BandwidthSelection:
    r"""Choose the KDE bandwidth with the lowest NLL on held-out points.

    The NLL on the training points themselves would always prefer :math:`h \to 0` (every
    point sits on its own kernel); held-out points penalize a bandwidth that is too small
    as well as one that is too large. The leave-one-out NLL on the training set is
    returned too, for comparison (it costs :math:`n^2` kernel evaluations per candidate;
    ``leave_one_out=False`` skips it). All candidates share one computation of the distances.

    Args:
        train: the KDE's points ``(n, D)``, ``n >= 2``.
        valid: held-out points ``(m, D)``.
        bandwidths: positive candidates.
        leave_one_out: also compute the leave-one-out NLL of the training points.

    Returns:
        A :class:`BandwidthSelection` (``train_nll`` is all NaN without
        ``leave_one_out``).
    """
    train = check_points("train", train, min_rows=1, rows="n")
    valid = check_points("valid", valid, train.shape[1], min_rows=1, rows="n")
    if train.shape[0] < 2:
        raise ValueError("train needs at least 2 points (for the leave-one-out NLL)")
    hs = [float(h) for h in (bandwidths.tolist() if isinstance(bandwidths, Tensor) else bandwidths)]
    if not hs or any(not math.isfinite(h) or h <= 0 for h in hs):
        raise ValueError(f"bandwidths must be a non-empty sequence of positive numbers, got {hs}")
    with torch.no_grad():
        nll = -_kde_log_probs(valid, train, hs).mean(1)
        if check_bool("leave_one_out", leave_one_out):
            loo = -_kde_log_probs(train, train, hs, exclude_self=True).mean(1)
        else:
            loo = torch.full((len(hs),), math.nan, dtype=torch.float64)
    best = hs[int(nll.argmin())]
    return BandwidthSelection(best, torch.tensor(hs, dtype=torch.float64), nll.cpu(), loo.cpu())


# --------------------------------------------------------------------------- autoregressive


@dataclasses.dataclass(frozen=True)
class MixtureParams:
    r"""A batch of 1-D Gaussian mixtures: ``logits`` :math:`\ell`, means ``loc`` :math:`m`
    and standard deviations ``scale`` :math:`s`, each ``(*B, K)``; the weights are
    :math:`\pi = \mathrm{softmax}(\ell)`. What a mixture density network outputs
    (:meth:`MixtureDensityNetwork.mixture_params`,
    :class:`gmbook.sequences.MixtureDensityHead`)."""

    logits: Tensor
    loc: Tensor
    scale: Tensor


def _mixture(params: MixtureParams, *, validate: bool | None = None) -> MixtureSameFamily:
    return MixtureSameFamily(Categorical(logits=params.logits, validate_args=validate),
                             Normal(params.loc, params.scale, validate_args=validate),
                             validate_args=validate)


def mixture_log_prob(params: MixtureParams, y: Tensor) -> Tensor:
    r"""The log-density of a batch of 1-D Gaussian mixtures, eq. ``eq-gmm`` with
    :math:`D = 1` and weights :math:`\pi = \mathrm{softmax}(\ell)` (the conditional of a
    mixture density network, Bishop, 1994; eq. ``eq-seq-mdn`` in the sequences chapter):

    .. math::

        \log p(y) = \mathrm{LSE}_k\Big(\log \mathrm{softmax}(\ell)_k
            + \log \mathcal N(y;\, m_k, s_k^2)\Big),

    stable by log-sum-exp (eq. ``eq-logsumexp``). The arithmetic is that of
    :class:`torch.distributions.MixtureSameFamily` of :class:`~torch.distributions.Normal`
    components, without its argument validation (the shapes are checked here).

    Args:
        params: mixtures with parameters ``(*B, K)``.
        y: values ``(*B,)``.

    Returns:
        Log-densities ``(*B,)``.
    """
    if not isinstance(params, MixtureParams):
        raise TypeError(f"params must be MixtureParams, got {describe(params)}")
    y = check_float_tensor("y", y)
    if tuple(y.shape) != tuple(params.loc.shape[:-1]):
        raise ValueError(f"y must have shape {tuple(params.loc.shape[:-1])}, got "
                         f"{tuple(y.shape)}")
    return _mixture(params, validate=False).log_prob(y)


@torch.no_grad()
def mixture_sample(params: MixtureParams, *,
                   generator: torch.Generator | None = None) -> Tensor:
    r"""One draw from each mixture of ``params`` (``(*B, K)``), in the two steps of the
    latent-variable reading of eq. ``eq-gmm``: a component
    :math:`k \sim \mathrm{Categorical}(\mathrm{softmax}(\ell))` (:func:`torch.multinomial`),
    then :math:`m_k + s_k \varepsilon` with :math:`\varepsilon \sim \mathcal N(0, 1)`;
    shape ``(*B,)``."""
    if not isinstance(params, MixtureParams):
        raise TypeError(f"params must be MixtureParams, got {describe(params)}")
    generator = check_generator(generator)
    batch, k = params.loc.shape[:-1], params.loc.shape[-1]
    probs = Categorical(logits=params.logits.reshape(-1, k), validate_args=False).probs
    comp = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)
    eps = randn(comp.shape, like=probs, generator=generator)
    rows = torch.arange(comp.shape[0], device=probs.device)
    loc, scale = params.loc.reshape(-1, k), params.scale.reshape(-1, k)  # (N, K)
    return (loc[rows, comp] + scale[rows, comp] * eps).reshape(batch)


class MixtureDensityNetwork(nn.Module):
    r"""A conditional density of one real variable: a mixture of ``K`` 1-D Gaussians whose
    weights, means and scales are functions of a context :math:`c` (Bishop, 1994).

    .. math::

        p(y \mid c) = \sum_{k=1}^K \pi_k(c)\, \mathcal N\big(y;\, m_k(c), s_k(c)^2\big),

    with the parameters from an :class:`~gmbook.nets.MLP` of ``c`` (``context_dim > 0``),
    or learnable constants (``context_dim = 0``, an unconditional 1-D mixture). Scales are
    ``softplus(.) + min_scale``. The log-density and the sampler are
    :func:`mixture_log_prob` and :func:`mixture_sample`.

    Args:
        context_dim: dimension of :math:`c`, ``>= 0``.
        components: :math:`K`.
        hidden: width of the MLP.
        depth: hidden layers of the MLP.
        min_scale: smallest standard deviation of a component.
    """

    def __init__(
        self,
        context_dim: int,
        components: int = 8,
        *,
        hidden: int = 64,
        depth: int = 2,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        self.context_dim = check_int("context_dim", context_dim, 0)
        self.k = check_int("components", components)
        self.min_scale = check_positive("min_scale", min_scale)
        if self.context_dim == 0:
            g = torch.Generator().manual_seed(0)  # fixed spread of the initial means
            init = torch.cat([torch.zeros(self.k), torch.randn(self.k, generator=g),
                              torch.zeros(self.k)])
            self.params = nn.Parameter(init)
            self.net = None
        else:
            self.net = MLP(self.context_dim, 3 * self.k, hidden=hidden, depth=depth)

    def mixture_params(self, context: Tensor) -> MixtureParams:
        r"""The parameters of :math:`p(\cdot \mid c)` for a batch of contexts ``(B, C)``
        (``(B, 0)`` when ``context_dim = 0``): :class:`MixtureParams` of shape ``(B, K)``."""
        if not isinstance(context, Tensor) or not context.is_floating_point():
            raise TypeError(f"context must be a floating-point tensor, got {describe(context)}")
        if context.ndim != 2 or context.shape[1] != self.context_dim:
            raise ValueError(
                f"context must have shape (B, {self.context_dim}), got {tuple(context.shape)}"
            )
        if self.net is None:
            out = self.params.expand(context.shape[0], 3 * self.k)
        else:
            out = self.net(context)
        logits, loc, raw = out.split(self.k, dim=1)  # (B, K) each
        return MixtureParams(logits, loc, F.softplus(raw) + self.min_scale)

    def distribution(self, context: Tensor) -> MixtureSameFamily:
        r"""The conditional :math:`p(\cdot \mid c)` for a batch of contexts ``(B, C)``
        (``(B, 0)`` when ``context_dim = 0``): a batch of ``B`` 1-D mixtures."""
        return _mixture(self.mixture_params(context))

    def log_prob(self, y: Tensor, context: Tensor) -> Tensor:
        r""":math:`\log p(y \mid c)`, shape ``(B,)`` for ``y`` ``(B,)``
        (:func:`mixture_log_prob`)."""
        if not isinstance(y, Tensor) or not y.is_floating_point():
            raise TypeError(f"y must be a floating-point tensor, got {describe(y)}")
        if y.ndim != 1 or y.shape[0] != getattr(context, "shape", (None,))[0]:
            raise ValueError(
                f"y must have shape (B,) with B = {context.shape[0]}, got {tuple(y.shape)}"
            )
        return mixture_log_prob(self.mixture_params(context), y)

    @torch.no_grad()
    def sample(self, context: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""One draw of :math:`y \sim p(\cdot \mid c)` per context, shape ``(B,)``
        (:func:`mixture_sample`)."""
        return mixture_sample(self.mixture_params(context), generator=generator)


class Autoregressive(nn.Module):
    r"""An autoregressive density of ``D`` real variables from 1-D conditionals.

    Implements eq. ``eq-autoregressive`` in a chosen ``order`` :math:`\sigma`:

    .. math::

        p(x) = \prod_{d=1}^{D} p\big(x_{\sigma(d)} \mid x_{\sigma(1)}, \dots,
        x_{\sigma(d-1)}\big),

    each factor a :class:`MixtureDensityNetwork` (the first one unconditional). The
    likelihood is exact (a sum of ``D`` 1-D log-densities) and sampling is ancestral: ``D``
    sequential draws, each conditioned on the ones before.

    Args:
        dim: :math:`D`.
        order: a permutation of ``range(dim)`` (default: the identity).
        components, hidden, depth: of every conditional.
    """

    def __init__(
        self,
        dim: int,
        *,
        order: Sequence[int] | None = None,
        components: int = 8,
        hidden: int = 64,
        depth: int = 2,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        if order is None:
            order = list(range(self.dim))
        elif isinstance(order, (str, bytes)) or not isinstance(order, Sequence):
            raise TypeError(f"order must be a sequence of ints, got {describe(order)}")
        else:
            order = [check_int("order entry", i, 0) for i in order]
        if sorted(order) != list(range(self.dim)):
            raise ValueError(f"order must be a permutation of range({self.dim}), got {order}")
        self.order = order
        self.conditionals = nn.ModuleList(
            MixtureDensityNetwork(d, components, hidden=hidden, depth=depth)
            for d in range(self.dim)
        )

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log p(x)`, shape ``(B,)`` for ``x`` of shape ``(B, D)``."""
        x = check_points("x", x, self.dim, min_rows=1, rows="n")
        xo = x[:, self.order]
        return sum(
            cond.log_prob(xo[:, d], xo[:, :d]) for d, cond in enumerate(self.conditionals)
        )

    def loss(self, x: Tensor) -> Tensor:
        r"""Mean negative log-likelihood of a batch ``(B, D)``, a scalar."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Ancestral sampling: ``D`` sequential conditional draws, shape ``(n, D)``."""
        n = check_int("n", n)
        generator = check_generator(generator)
        ref = next(self.parameters())
        xo = ref.new_zeros(n, 0)
        for cond in self.conditionals:
            xo = torch.cat([xo, cond.sample(xo, generator=generator)[:, None]], dim=1)
        x = torch.empty_like(xo)
        x[:, self.order] = xo
        return x


# --------------------------------------------------------------------------- change of variables


class CouplingMap(nn.Module):
    r"""A hand-built invertible map of the plane, :math:`y = f(z)`:

    .. math::

        y_1 = z_1, \qquad y_2 = z_2\, e^{a z_1} + b\,(z_1^2 - 1).

    The second coordinate is an affine function of :math:`z_2` whose scale and shift depend
    on :math:`z_1`, which passes through unchanged: an *affine coupling*, the building block
    of the normalizing flows of a later chapter. Its Jacobian is lower triangular with
    diagonal :math:`(1, e^{a z_1})`, so :math:`\log|\det J_f(z)| = a z_1`, and the inverse is
    explicit: :math:`z_1 = y_1`, :math:`z_2 = (y_2 - b (y_1^2 - 1))\, e^{-a y_1}`.

    Args:
        a: log-scale slope :math:`a`.
        b: bend :math:`b`.
    """

    def __init__(self, a: float = 0.5, b: float = 0.8) -> None:
        super().__init__()
        self.a = check_real("a", a)
        self.b = check_real("b", b)

    def forward(self, z: Tensor) -> Tensor:
        r""":math:`f(z)`, shape ``(B, 2)``."""
        z = check_points("z", z, 2, min_rows=1, rows="n")
        z1, z2 = z.unbind(1)
        return torch.stack([z1, z2 * torch.exp(self.a * z1) + self.b * (z1**2 - 1)], dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        r""":math:`f^{-1}(y)`, shape ``(B, 2)``."""
        y = check_points("y", y, 2, min_rows=1, rows="n")
        y1, y2 = y.unbind(1)
        return torch.stack([y1, (y2 - self.b * (y1**2 - 1)) * torch.exp(-self.a * y1)], dim=1)

    def log_abs_det_jacobian(self, z: Tensor) -> Tensor:
        r""":math:`\log|\det J_f(z)| = a z_1`, shape ``(B,)``."""
        z = check_points("z", z, 2, min_rows=1, rows="n")
        return self.a * z[:, 0]

    def extra_repr(self) -> str:
        return f"a={self.a:g}, b={self.b:g}"


def pushforward_log_prob(
    base_log_prob: Callable[[Tensor], Tensor], transform: CouplingMap | nn.Module, y: Tensor
) -> Tensor:
    r"""Log-density of :math:`Y = f(Z)` by the change of variables (eq.
    ``eq-change-of-variables``):

    .. math::

        \log p_Y(y) = \log p_Z\big(f^{-1}(y)\big) - \log\big|\det J_f\big(f^{-1}(y)\big)\big|.

    Args:
        base_log_prob: :math:`\log p_Z`, ``(B, D) -> (B,)``.
        transform: an invertible map with ``inverse(y)`` and ``log_abs_det_jacobian(z)``
            (of the forward map at ``z``), such as :class:`CouplingMap`.
        y: points ``(B, D)``.

    Returns:
        :math:`\log p_Y(y)`, shape ``(B,)``.
    """
    for method in ("inverse", "log_abs_det_jacobian"):
        if not callable(getattr(transform, method, None)):
            raise TypeError(f"transform must have a .{method}() method, got {describe(transform)}")
    y = check_points("y", y, min_rows=1, rows="n")
    z = transform.inverse(y)
    return base_log_prob(z) - transform.log_abs_det_jacobian(z)


def log_abs_det_autograd(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    r""":math:`\log|\det J_f(z_i)|` for each row of ``z`` ``(B, D)`` from the full Jacobian
    computed by automatic differentiation: :math:`O(D)` backward passes and an
    :math:`O(D^3)` determinant per point, the cost that normalizing flows are designed to
    avoid. ``f`` must map a batch ``(B, D)`` to ``(B, D)`` row by row. Returns ``(B,)``."""
    z = check_points("z", z, min_rows=1, rows="n")
    jac = torch.func.vmap(torch.func.jacrev(lambda v: f(v[None])[0]))(z)  # (B, D, D)
    return torch.linalg.slogdet(jac).logabsdet


# --------------------------------------------------------------------------- discrete data


def dequantize(
    x: Tensor, bin_width: float, *, generator: torch.Generator | None = None
) -> Tensor:
    r"""Uniform dequantization (eq. ``eq-dequantize``): :math:`x + \Delta\, v` with
    :math:`v \sim \mathcal U[-\tfrac12, \tfrac12)^D`, so each level of spacing
    :math:`\Delta` becomes a bin of width :math:`\Delta` centred on it.

    Args:
        x: discrete data on a grid of spacing ``bin_width``, any shape.
        bin_width: :math:`\Delta > 0` (``2 / 16`` for :func:`gmbook.data.digits`).
        generator: randomness of the noise.

    Returns:
        A tensor of the shape and dtype of ``x``.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {describe(x)}")
    delta = check_positive("bin_width", bin_width)
    generator = check_generator(generator)
    v = rand(x.shape, like=x, generator=generator) - 0.5
    # Rounding can land x + delta * v on the upper edge x + delta / 2, which belongs to the
    # next bin: keep the result strictly below it.
    upper = torch.nextafter(x + delta / 2, torch.full_like(x, -math.inf))
    return torch.minimum(x + delta * v, upper)
