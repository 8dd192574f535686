r"""The probability tools of Appendix A, "Probability theory".

Derived in ``book/appendix/probability.md`` and used by the chapters that lean on it:

- **Gaussian algebra**: the KL divergence between two multivariate Gaussians
  (:func:`gaussian_kl`, eq. ``eq-app-prob-kl-gaussians``), the marginal and the
  conditional of a joint Gaussian (:func:`gaussian_marginal`, :func:`gaussian_conditional`,
  :prf:ref:`thm-app-prob-gaussian-conditional`) and the product of two Gaussian densities
  (:func:`gaussian_product`, :prf:ref:`prop-app-prob-gaussian-product`);
- **Monte Carlo**: an average with its standard error (:func:`mc_estimate`,
  eqs. ``eq-app-prob-mc`` and ``eq-app-prob-mc-se``), plain and self-normalized importance
  sampling (:func:`importance_estimate`, eqs. ``eq-app-prob-is`` and ``eq-app-prob-snis``)
  and the effective sample size of importance weights (:func:`effective_sample_size`,
  eq. ``eq-app-prob-ess``);
- **the delta method**: the standard error of a smooth function of an estimate
  (:func:`delta_method`, :prf:ref:`thm-app-prob-delta`), e.g. of a ratio of two means;
- **gradient estimators** of :math:`\nabla \mathbb E_{q}[f(X)]` for a diagonal Gaussian
  :math:`q = \mathcal N(\mu, \operatorname{diag}\sigma^2)`: the reparameterization
  (pathwise) estimator :func:`reparam_gradient` (eq. ``eq-app-prob-reparam``) and the
  score-function (log-derivative, REINFORCE) estimator :func:`score_function_gradient`
  (eq. ``eq-app-prob-score-function``).

A Gaussian is passed as its mean ``(D,)`` and covariance ``(D, D)``; a Monte Carlo result
is a :class:`gmbook.metrics.Estimate` (mean, standard error, number of points).

Example:
    >>> mean = torch.zeros(2, dtype=torch.float64)
    >>> cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    >>> m, c = gaussian_conditional(mean, cov, [1], torch.tensor([1.0]))
    >>> [round(v, 2) for v in (m.item(), c.item())]
    [0.8, 0.36]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal

from gmbook._checks import check_float_tensor, check_real, describe
from gmbook.metrics import Estimate

__all__ = [
    "GaussianProduct",
    "effective_sample_size",
    "gaussian_conditional",
    "gaussian_kl",
    "gaussian_marginal",
    "gaussian_product",
    "importance_estimate",
    "mc_estimate",
    "delta_method",
    "reparam_gradient",
    "score_function_gradient",
]


# --------------------------------------------------------------------------- checks


def _check_gaussian(mean: object, cov: object, suffix: str = "") -> tuple[Tensor, Tensor]:
    """A mean ``(*B, D)`` and a covariance ``(*B, D, D)`` with matching ``D``."""
    m = check_float_tensor(f"mean{suffix}", mean)
    c = check_float_tensor(f"cov{suffix}", cov)
    if m.ndim < 1 or m.shape[-1] < 1:
        raise ValueError(f"mean{suffix} must have shape (*B, D) with D >= 1, got "
                         f"{tuple(m.shape)}")
    d = m.shape[-1]
    if c.ndim < 2 or c.shape[-2:] != (d, d):
        raise ValueError(f"cov{suffix} must have shape (*B, {d}, {d}) to match mean{suffix} "
                         f"of shape {tuple(m.shape)}, got {tuple(c.shape)}")
    return m, c


def _cholesky(cov: Tensor, name: str) -> Tensor:
    """The Cholesky factor of ``cov``, or a ValueError if it is not positive definite."""
    scale = cov.diagonal(dim1=-2, dim2=-1).abs().amax().clamp_min(1e-300)
    if not torch.allclose(cov, cov.mT, rtol=1e-5, atol=1e-6 * float(scale)):
        raise ValueError(f"{name} must be symmetric")
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(f"{name} must be positive definite (its Cholesky factorization "
                         "failed)")
    return L


def _check_index(name: str, idx: object, d: int) -> list[int]:
    if isinstance(idx, Tensor):
        idx = idx.tolist()
    if isinstance(idx, (str, bytes)) or not isinstance(idx, (Sequence, range)):
        raise TypeError(f"{name} must be a sequence of ints, got {describe(idx)}")
    out = []
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"{name} must contain ints, got {describe(i)}")
        if not -d <= i < d:
            raise ValueError(f"{name} has index {i}, out of range for D = {d}")
        out.append(i % d)
    if not out:
        raise ValueError(f"{name} must name at least one coordinate")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated indices: {list(idx)}")
    return out


# --------------------------------------------------------------------------- Gaussians


def gaussian_kl(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    r"""KL divergence :math:`\mathrm{KL}(p \,\|\, q)` between two multivariate Gaussians.

    Implements eq. ``eq-app-prob-kl-gaussians``
    (:prf:ref:`prop-app-prob-kl-gaussians`) for :math:`p = \mathcal N(\mu_p, \Sigma_p)` and
    :math:`q = \mathcal N(\mu_q, \Sigma_q)`:

    .. math::

        \tfrac12 \left( \operatorname{tr}(\Sigma_q^{-1}\Sigma_p)
        + (\mu_q - \mu_p)^\top \Sigma_q^{-1} (\mu_q - \mu_p) - D
        + \log\det\Sigma_q - \log\det\Sigma_p \right),

    computed from Cholesky factors (no explicit inverse). Batch dimensions broadcast.

    Args:
        mean_p: mean :math:`\mu_p` of :math:`p`, shape ``(*B, D)``.
        cov_p: covariance :math:`\Sigma_p` of :math:`p`, shape ``(*B, D, D)``.
        mean_q: mean :math:`\mu_q` of :math:`q`, shape ``(*B, D)``.
        cov_q: covariance :math:`\Sigma_q` of :math:`q`, shape ``(*B, D, D)``.

    Returns:
        The divergence in nats, shape ``(*B,)`` (0-dim without batch dimensions).

    Raises:
        TypeError: for arguments that are not floating-point tensors.
        ValueError: for mismatched shapes or a covariance that is not symmetric positive
            definite.

    Example:
        >>> eye = torch.eye(2, dtype=torch.float64)
        >>> kl = gaussian_kl(torch.zeros(2, dtype=torch.float64), eye,
        ...                  torch.ones(2, dtype=torch.float64), eye)
        >>> round(kl.item(), 6)   # |mu_q - mu_p|^2 / 2
        1.0
    """
    mean_p, cov_p = _check_gaussian(mean_p, cov_p, "_p")
    mean_q, cov_q = _check_gaussian(mean_q, cov_q, "_q")
    if mean_p.shape[-1] != mean_q.shape[-1]:
        raise ValueError(f"p and q must have the same dimension D, got {mean_p.shape[-1]} "
                         f"and {mean_q.shape[-1]}")
    d = mean_p.shape[-1]
    L_p, L_q = _cholesky(cov_p, "cov_p"), _cholesky(cov_q, "cov_q")
    batch = torch.broadcast_shapes(mean_p.shape[:-1], cov_p.shape[:-2],
                                   mean_q.shape[:-1], cov_q.shape[:-2])
    L_p, L_q = L_p.expand(*batch, d, d), L_q.expand(*batch, d, d)
    diff = (mean_q - mean_p).expand(*batch, d).unsqueeze(-1)  # (*B, D, 1)
    # tr(Sq^-1 Sp) = |Lq^-1 Lp|_F^2; the Mahalanobis term is |Lq^-1 (mu_q - mu_p)|^2
    trace = torch.linalg.solve_triangular(L_q, L_p, upper=False).pow(2).sum((-2, -1))
    maha = torch.linalg.solve_triangular(L_q, diff, upper=False).pow(2).sum((-2, -1))
    logdet_p = 2 * L_p.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_q = 2 * L_q.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + maha - d + logdet_q - logdet_p)


def gaussian_marginal(mean: Tensor, cov: Tensor, keep: Sequence[int]) -> tuple[Tensor, Tensor]:
    r"""The marginal of :math:`\mathcal N(\mu, \Sigma)` on the coordinates ``keep``.

    The marginal of a Gaussian vector on a block :math:`a` of its coordinates is
    :math:`\mathcal N(\mu_a, \Sigma_{aa})` (:prf:ref:`thm-app-prob-gaussian-conditional`):
    keep the entries, drop the rest.

    Args:
        mean: mean ``(D,)``.
        cov: covariance ``(D, D)``.
        keep: indices of the ``k`` coordinates to keep, in the order wanted.

    Returns:
        ``(mean_a, cov_a)`` of shapes ``(k,)`` and ``(k, k)``.

    Example:
        >>> cov = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 3.0]])
        >>> gaussian_marginal(torch.arange(3.0), cov, [2, 0])[1]
        tensor([[3., 0.],
                [0., 1.]])
    """
    mean, cov = _check_gaussian(mean, cov)
    if mean.ndim != 1:
        raise ValueError(f"mean must have shape (D,), got {tuple(mean.shape)}")
    a = _check_index("keep", keep, mean.shape[0])
    return mean[a], cov[a][:, a]


def gaussian_conditional(
    mean: Tensor, cov: Tensor, observed: Sequence[int], value: Tensor
) -> tuple[Tensor, Tensor]:
    r"""The conditional of a joint Gaussian given some of its coordinates.

    With the coordinates split into the free block :math:`a` and the observed block
    :math:`b`, implements eq. ``eq-app-prob-gaussian-conditional``
    (:prf:ref:`thm-app-prob-gaussian-conditional`):

    .. math::

        X_a \mid X_b = x_b \ \sim\ \mathcal N\!\left(\mu_a + \Sigma_{ab}\Sigma_{bb}^{-1}
        (x_b - \mu_b),\ \Sigma_{aa} - \Sigma_{ab}\Sigma_{bb}^{-1}\Sigma_{ba}\right).

    The conditional covariance (a Schur complement) does not depend on :math:`x_b`.

    Args:
        mean: mean ``(D,)`` of the joint Gaussian.
        cov: covariance ``(D, D)``, with :math:`\Sigma_{bb}` positive definite.
        observed: indices of the ``m`` observed coordinates (block :math:`b`), with
            ``m < D``; the others, in increasing order, form block :math:`a`.
        value: the observed values :math:`x_b`, shape ``(m,)``, or ``(B, m)`` for a batch.

    Returns:
        ``(mean_a, cov_a)``: the conditional mean, ``(k,)`` or ``(B, k)`` with
        ``k = D - m``, and the conditional covariance ``(k, k)``.

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: for mismatched shapes, bad indices or a singular :math:`\Sigma_{bb}`.
    """
    mean, cov = _check_gaussian(mean, cov)
    if mean.ndim != 1:
        raise ValueError(f"mean must have shape (D,), got {tuple(mean.shape)}")
    d = mean.shape[0]
    b = _check_index("observed", observed, d)
    if len(b) == d:
        raise ValueError("observed must leave at least one coordinate free (m < D)")
    value = check_float_tensor("value", value)
    if value.ndim not in (1, 2) or value.shape[-1] != len(b):
        raise ValueError(f"value must have shape ({len(b)},) or (B, {len(b)}) for "
                         f"{len(b)} observed coordinates, got {tuple(value.shape)}")
    value = value.to(mean.dtype)
    a = [i for i in range(d) if i not in set(b)]
    L_bb = _cholesky(cov[b][:, b], "the observed block of cov")
    cov_ab = cov[a][:, b]  # (k, m)
    # the gain K = Sigma_ab Sigma_bb^-1, from K^T = Sigma_bb^-1 Sigma_ba
    gain = torch.cholesky_solve(cov_ab.T, L_bb).T  # (k, m)
    mean_a = mean[a] + (value - mean[b]) @ gain.T  # (k,) or (B, k)
    cov_a = cov[a][:, a] - gain @ cov_ab.T  # (k, k), the Schur complement
    return mean_a, 0.5 * (cov_a + cov_a.T)


@dataclass(frozen=True)
class GaussianProduct:
    r"""The product of two Gaussian densities, :func:`gaussian_product`.

    :math:`\mathcal N(x; \mu_1, \Sigma_1)\, \mathcal N(x; \mu_2, \Sigma_2)
    = e^{s}\, \mathcal N(x; \mu, \Sigma)`, with :math:`\mu` = ``mean``,
    :math:`\Sigma` = ``cov`` and :math:`s` = ``log_scale``.

    Attributes:
        mean: mean ``(D,)`` of the normalised product.
        cov: covariance ``(D, D)`` of the normalised product.
        log_scale: the log of its normalising constant,
            :math:`\log \mathcal N(\mu_1; \mu_2, \Sigma_1 + \Sigma_2)`, a 0-dim tensor.
    """

    mean: Tensor
    cov: Tensor
    log_scale: Tensor

    def distribution(self) -> MultivariateNormal:
        """The normalised product as a ``torch.distributions.MultivariateNormal``."""
        return MultivariateNormal(self.mean, covariance_matrix=self.cov)


def gaussian_product(
    mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor
) -> GaussianProduct:
    r"""The product of two Gaussian densities is a scaled Gaussian density.

    Implements eq. ``eq-app-prob-gaussian-product``
    (:prf:ref:`prop-app-prob-gaussian-product`): with :math:`C = \Sigma_1 + \Sigma_2`,

    .. math::

        \Sigma = \Sigma_1 - \Sigma_1 C^{-1} \Sigma_1, \qquad
        \mu = \mu_1 + \Sigma_1 C^{-1} (\mu_2 - \mu_1), \qquad
        \text{scale} = \mathcal N(\mu_1; \mu_2, C),

    which equals :math:`(\Sigma_1^{-1} + \Sigma_2^{-1})^{-1}` and
    :math:`\Sigma(\Sigma_1^{-1}\mu_1 + \Sigma_2^{-1}\mu_2)` without inverting either
    covariance. This is Bayes' rule for a Gaussian prior and a Gaussian likelihood.

    Args:
        mean1: mean :math:`\mu_1` of the first Gaussian, shape ``(D,)``.
        cov1: covariance :math:`\Sigma_1` of the first Gaussian, shape ``(D, D)``.
        mean2: mean :math:`\mu_2` of the second Gaussian, shape ``(D,)``.
        cov2: covariance :math:`\Sigma_2` of the second Gaussian, shape ``(D, D)``.

    Returns:
        A :class:`GaussianProduct` with ``mean``, ``cov`` and ``log_scale``.

    Example:
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> prod = gaussian_product(torch.zeros(1, dtype=torch.float64), one,
        ...                         torch.full((1,), 2.0, dtype=torch.float64), one)
        >>> round(prod.mean.item(), 6), round(prod.cov.item(), 6)
        (1.0, 0.5)
    """
    mean1, cov1 = _check_gaussian(mean1, cov1, "1")
    mean2, cov2 = _check_gaussian(mean2, cov2, "2")
    for name, m in (("mean1", mean1), ("mean2", mean2)):
        if m.ndim != 1:
            raise ValueError(f"{name} must have shape (D,), got {tuple(m.shape)}")
    if mean1.shape != mean2.shape:
        raise ValueError(f"the two Gaussians must have the same dimension, got "
                         f"{tuple(mean1.shape)} and {tuple(mean2.shape)}")
    _cholesky(cov1, "cov1")
    _cholesky(cov2, "cov2")
    L_c = _cholesky(cov1 + cov2, "cov1 + cov2")
    gain = torch.cholesky_solve(cov1, L_c).T  # Sigma_1 C^-1, (D, D)
    cov = cov1 - gain @ cov1
    mean = mean1 + gain @ (mean2 - mean1)
    log_scale = MultivariateNormal(mean2, scale_tril=L_c).log_prob(mean1)
    return GaussianProduct(mean, 0.5 * (cov + cov.T), log_scale)


# --------------------------------------------------------------------------- Monte Carlo


def _check_values(name: str, values: object) -> Tensor:
    v = check_float_tensor(name, values)
    if v.ndim != 1 or v.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n,) with n >= 1, got {tuple(v.shape)}")
    return v


def mc_estimate(values: Tensor) -> Estimate:
    r"""The Monte Carlo average of ``values`` and its standard error.

    Implements eqs. ``eq-app-prob-mc`` and ``eq-app-prob-mc-se``: for values
    :math:`f(X_i)` of i.i.d. draws, the mean :math:`\hat I_n = \frac1n \sum_i f(X_i)` and
    the standard error :math:`\hat\sigma / \sqrt n`, with :math:`\hat\sigma` the sample
    standard deviation (divided by :math:`n - 1`). Computed in float64.

    Args:
        values: the :math:`f(X_i)`, shape ``(n,)``; ``n = 1`` gives a ``nan`` error.

    Returns:
        An :class:`~gmbook.metrics.Estimate` (``mean``, ``se``, ``n``).

    Example:
        >>> e = mc_estimate(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        >>> f"{e:.3f}"
        '2.500 ± 0.645'
    """
    v = _check_values("values", values).detach().to(torch.float64)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("values must be finite (found nan or inf)")
    n = v.shape[0]
    se = float(v.std()) / math.sqrt(n) if n > 1 else math.nan
    return Estimate(float(v.mean()), se, n)


def delta_method(
    g: Callable[[Tensor], Tensor], theta: Tensor, cov: Tensor, *, n: int = 1
) -> Estimate:
    r"""A smooth function of an estimate and its standard error by the delta method.

    Implements eq. ``eq-app-prob-delta`` (:prf:ref:`thm-app-prob-delta`): if the estimate
    :math:`\hat\theta` of :math:`\theta \in \mathbb R^k` is approximately
    :math:`\mathcal N(\theta, C)` and :math:`g` is differentiable at :math:`\theta`, then
    :math:`g(\hat\theta)` is approximately normal with standard error
    :math:`\sqrt{\nabla g(\hat\theta)^\top C\, \nabla g(\hat\theta)}`. The gradient comes
    from autograd, in float64. For a mean of ``n`` i.i.d. vectors with covariance
    :math:`\Sigma`, pass ``cov`` :math:`= \hat\Sigma / n`; for independent estimates,
    a block-diagonal ``cov``.

    Args:
        g: maps ``theta`` ``(k,)`` to a scalar tensor, differentiable (torch operations).
        theta: the estimate :math:`\hat\theta`, shape ``(k,)``.
        cov: the covariance :math:`C` of the estimate (not of one draw), shape ``(k, k)``,
            symmetric with a nonnegative diagonal.
        n: the number of draws behind ``theta``, only reported in the result.

    Returns:
        An :class:`~gmbook.metrics.Estimate`: ``mean`` :math:`g(\hat\theta)`, ``se`` as above,
        and ``n``.

    Example:
        >>> theta = torch.tensor([2.0, 4.0], dtype=torch.float64)  # two independent means
        >>> cov = torch.diag(torch.tensor([0.01, 0.04], dtype=torch.float64))
        >>> e = delta_method(lambda v: v[0] / v[1], theta, cov)
        >>> round(e.mean, 3), round(e.se, 4)
        (0.5, 0.0354)
    """
    if not callable(g):
        raise TypeError(f"g must be callable as g(theta), got {describe(g)}")
    th = check_float_tensor("theta", theta)
    c = check_float_tensor("cov", cov)
    if th.ndim != 1 or th.shape[0] < 1:
        raise ValueError(f"theta must have shape (k,) with k >= 1, got {tuple(th.shape)}")
    k = th.shape[0]
    if c.shape != (k, k):
        raise ValueError(f"cov must have shape ({k}, {k}) to match theta, got {tuple(c.shape)}")
    c = c.detach().to(torch.float64)
    if not torch.allclose(c, c.T, rtol=1e-6, atol=1e-12) or bool((c.diagonal() < 0).any()):
        raise ValueError("cov must be symmetric with a nonnegative diagonal")
    th = th.detach().to(torch.float64).requires_grad_(True)
    with torch.enable_grad():
        value = g(th)
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ValueError(f"g must return a scalar tensor, got {describe(value)}")
        (grad,) = torch.autograd.grad(value.reshape(()), th, allow_unused=True)
    grad = torch.zeros_like(th) if grad is None else grad  # g does not depend on theta
    if not (bool(torch.isfinite(value.detach())) and bool(torch.isfinite(grad).all())):
        raise ValueError("g or its gradient is not finite at theta")
    var = float(grad @ c @ grad)
    return Estimate(float(value.detach()), math.sqrt(max(var, 0.0)), n)


def effective_sample_size(log_w: Tensor) -> float:
    r"""The effective sample size of importance weights, eq. ``eq-app-prob-ess``.

    :math:`\mathrm{ESS} = (\sum_i w_i)^2 / \sum_i w_i^2`, between 1 (one weight carries
    everything) and :math:`n` (equal weights). Computed from the log-weights in float64
    with log-sum-exp, so weights of any scale (and any normalisation) are fine.

    Args:
        log_w: log importance weights :math:`\log w_i`, shape ``(n,)``, up to an additive
            constant; ``-inf`` is a zero weight (not all may be ``-inf``).

    Returns:
        The effective sample size, a float in ``[1, n]``.

    Example:
        >>> round(effective_sample_size(torch.zeros(100)), 6)
        100.0
        >>> round(effective_sample_size(torch.tensor([0.0, -50.0, -50.0])), 6)
        1.0
    """
    lw = _check_values("log_w", log_w).detach().to(torch.float64)
    if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
        raise ValueError("log_w must not contain nan or +inf")
    if bool((lw == -math.inf).all()):
        raise ValueError("log_w is -inf everywhere: every weight is zero")
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))


def importance_estimate(
    fx: Tensor, log_w: Tensor, *, self_normalized: bool = False
) -> Estimate:
    r"""Importance-sampling estimate of :math:`\mathbb E_p[f(X)]` from draws of :math:`q`.

    With :math:`X_i \sim q` and :math:`w_i = p(X_i) / q(X_i)`:

    - plain (``self_normalized=False``), eq. ``eq-app-prob-is``: the average of
      :math:`w_i f(X_i)`, unbiased; ``log_w`` must use the *normalised* :math:`\log p`.
      Its standard error is that of :func:`mc_estimate`.
    - self-normalized, eq. ``eq-app-prob-snis``:
      :math:`\sum_i w_i f(X_i) / \sum_i w_i`, which needs :math:`p` only up to a
      constant; consistent but biased at finite :math:`n`. Its standard error is the
      delta-method one, :math:`\big(\sum_i \bar w_i^2 (f(X_i) - \hat I)^2\big)^{1/2}`
      with normalised weights :math:`\bar w_i = w_i / \sum_j w_j`.

    Args:
        fx: the values :math:`f(X_i)`, shape ``(n,)``.
        log_w: the log-weights :math:`\log p(X_i) - \log q(X_i)`, shape ``(n,)``.
        self_normalized: use the self-normalized estimator.

    Returns:
        An :class:`~gmbook.metrics.Estimate`.

    Example:
        >>> fx, log_w = torch.tensor([1.0, 3.0]), torch.log(torch.tensor([1.0, 3.0]))
        >>> round(importance_estimate(fx, log_w, self_normalized=True).mean, 6)
        2.5
    """
    fx = _check_values("fx", fx).detach().to(torch.float64)
    lw = _check_values("log_w", log_w).detach().to(torch.float64)
    if fx.shape != lw.shape:
        raise ValueError(f"fx and log_w must have the same shape (n,), got "
                         f"{tuple(fx.shape)} and {tuple(lw.shape)}")
    if not isinstance(self_normalized, bool):
        raise TypeError(f"self_normalized must be a bool, got {describe(self_normalized)}")
    if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
        raise ValueError("log_w must not contain nan or +inf")
    if not self_normalized:
        return mc_estimate(lw.exp() * fx)
    if bool((lw == -math.inf).all()):
        raise ValueError("log_w is -inf everywhere: every weight is zero")
    w = torch.softmax(lw, 0)  # normalised weights, sum to 1
    estimate = (w * fx).sum()
    se = torch.sqrt((w.pow(2) * (fx - estimate).pow(2)).sum())
    return Estimate(float(estimate), float(se), fx.shape[0])


# --------------------------------------------------------------------------- gradients


def _check_family(f: object, mean: object, std: object, eps: object) -> tuple[Tensor, ...]:
    if not callable(f):
        raise TypeError(f"f must be callable, mapping (n, D) to (n,), got {describe(f)}")
    mean, std, eps = (check_float_tensor(n, v) for n, v in
                      (("mean", mean), ("std", std), ("eps", eps)))
    if mean.ndim != 1 or std.shape != mean.shape:
        raise ValueError(f"mean and std must both have shape (D,), got {tuple(mean.shape)} "
                         f"and {tuple(std.shape)}")
    if not bool((std > 0).all()):
        raise ValueError("std must be > 0 in every coordinate")
    if eps.ndim != 2 or eps.shape[1] != mean.shape[0]:
        raise ValueError(f"eps must have shape (n, {mean.shape[0]}), got {tuple(eps.shape)}")
    return mean.detach(), std.detach(), eps.detach()


def _per_sample(mean: Tensor, std: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """One leaf copy of the parameters per sample, so autograd gives per-sample grads."""
    return (mean.expand(n, -1).clone().requires_grad_(True),
            std.expand(n, -1).clone().requires_grad_(True))


def _call(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    out = f(x)
    if not isinstance(out, Tensor) or out.shape != (x.shape[0],):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"f must map points (n, D) to values (n,), got {shape} for "
                         f"n = {x.shape[0]}")
    return out


def reparam_gradient(
    f: Callable[[Tensor], Tensor], mean: Tensor, std: Tensor, eps: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Per-sample reparameterization gradients of :math:`\mathbb E_q[f(X)]`.

    For :math:`q = \mathcal N(\mu, \operatorname{diag}\sigma^2)` write
    :math:`X = \mu + \sigma \odot \varepsilon` with :math:`\varepsilon \sim \mathcal N(0, I)`
    and differentiate through the sample (eq. ``eq-app-prob-reparam``): the estimate
    from draw :math:`i` is :math:`\nabla_{(\mu, \sigma)} f(\mu + \sigma \odot
    \varepsilon_i)`, that is :math:`\nabla f(x_i)` for :math:`\mu` and
    :math:`\nabla f(x_i) \odot \varepsilon_i` for :math:`\sigma`. Each is unbiased
    (:prf:ref:`prop-app-prob-gradient-estimators`); their average over the draws is the
    usual estimator, and their spread measures its variance.

    Args:
        f: a function differentiable in ``x``, mapping points ``(n, D)`` to values ``(n,)``.
        mean: :math:`\mu`, shape ``(D,)``.
        std: :math:`\sigma > 0`, shape ``(D,)``.
        eps: standard normal draws :math:`\varepsilon_i`, shape ``(n, D)``.

    Returns:
        ``(grad_mean, grad_std)``, the per-sample estimates, both ``(n, D)``.

    Example:
        >>> f = lambda x: (x**2).sum(dim=1)   # E f = |mu|^2 + |sigma|^2
        >>> g_mean, g_std = reparam_gradient(f, torch.ones(2), torch.ones(2),
        ...                                  torch.zeros(1, 2))
        >>> g_mean
        tensor([[2., 2.]])
    """
    mean, std, eps = _check_family(f, mean, std, eps)
    mu, sigma = _per_sample(mean, std, eps.shape[0])
    with torch.enable_grad():
        values = _call(f, mu + sigma * eps)  # x_i = mu + sigma * eps_i, (n, D)
        grad_mean, grad_std = torch.autograd.grad(values.sum(), (mu, sigma))
    return grad_mean, grad_std


def score_function_gradient(
    f: Callable[[Tensor], Tensor],
    mean: Tensor,
    std: Tensor,
    eps: Tensor,
    *,
    baseline: float = 0.0,
) -> tuple[Tensor, Tensor]:
    r"""Per-sample score-function (log-derivative, REINFORCE) gradients of
    :math:`\mathbb E_q[f(X)]`.

    For :math:`q = \mathcal N(\mu, \operatorname{diag}\sigma^2)` and
    :math:`x_i = \mu + \sigma \odot \varepsilon_i`, the estimate from draw :math:`i` is
    :math:`(f(x_i) - b)\, \nabla_{(\mu, \sigma)} \log q(x_i)` (eq.
    ``eq-app-prob-score-function``), that is
    :math:`(f(x_i) - b)\, \varepsilon_i / \sigma` for :math:`\mu` and
    :math:`(f(x_i) - b)\, (\varepsilon_i^2 - 1) / \sigma` for :math:`\sigma`. It needs only
    values of :math:`f`, never its gradient; :math:`f` is not differentiated. A constant
    baseline :math:`b` keeps it unbiased, because :math:`\mathbb E_q[\nabla \log q] = 0`
    (:prf:ref:`prop-app-prob-gradient-estimators`).

    Args:
        f: any function mapping points ``(n, D)`` to values ``(n,)``.
        mean: :math:`\mu`, shape ``(D,)``.
        std: :math:`\sigma > 0`, shape ``(D,)``.
        eps: standard normal draws :math:`\varepsilon_i`, shape ``(n, D)``.
        baseline: the constant :math:`b` subtracted from :math:`f`.

    Returns:
        ``(grad_mean, grad_std)``, the per-sample estimates, both ``(n, D)``.

    Example:
        >>> f = lambda x: (x**2).sum(dim=1)
        >>> eps = torch.tensor([[1.0, 0.0]])     # x = (2, 1), f(x) = 5
        >>> score_function_gradient(f, torch.ones(2), torch.ones(2), eps)[0]
        tensor([[5., 0.]])
    """
    mean, std, eps = _check_family(f, mean, std, eps)
    baseline = check_real("baseline", baseline)
    mu, sigma = _per_sample(mean, std, eps.shape[0])
    with torch.no_grad():
        x = mean + std * eps  # (n, D), a sample: no gradient flows through it
        values = _call(f, x).detach()
    with torch.enable_grad():
        log_q = Normal(mu, sigma).log_prob(x).sum(dim=1)  # (n,)
        surrogate = ((values - baseline) * log_q).sum()
        grad_mean, grad_std = torch.autograd.grad(surrogate, (mu, sigma))
    return grad_mean, grad_std
