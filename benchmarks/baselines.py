r"""The two baselines every model family is measured against.

* ``gaussian``: one Gaussian fitted by maximum likelihood, i.e. the sample mean and the
  biased (divide by :math:`N`) sample covariance of the training points.
* ``gaussian_mixture``: a mixture of :data:`COMPONENTS` full-covariance Gaussians fitted by
  maximum likelihood with EM (:class:`sklearn.mixture.GaussianMixture`, best of
  :data:`N_INIT` k-means initializations), then wrapped as a torch model.

Both have an exact ``log_prob`` and a closed-form sampler (``nfe = 0``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.registry import register, seed_from
from gmbook.data import Toy2D

__all__ = ["COMPONENTS", "N_INIT", "N_TRAIN", "GaussianMixtureModel"]

N_TRAIN = 20_000
"""Training points drawn by each baseline."""
COMPONENTS = 8
"""Mixture components of the ``gaussian_mixture`` baseline (on every data set)."""
N_INIT = 3
"""EM restarts of the ``gaussian_mixture`` baseline; the best likelihood is kept."""
CHAPTER = "book/foundations/evaluation.md"


class GaussianMixtureModel(nn.Module):
    r"""A mixture of full-covariance Gaussians with exact density and sampler.

    .. math::

        q(x) = \sum_{k=1}^{K} \pi_k\, \mathcal{N}(x;\, \mu_k, \Sigma_k).

    Parameters are float64 buffers; :meth:`log_prob` computes in float64 and returns the
    dtype of its input. A single Gaussian is the case :math:`K = 1`.

    Args:
        weights: mixture weights :math:`\pi`, shape ``(K,)``, positive, summing to 1.
        means: component means :math:`\mu_k`, shape ``(K, D)``.
        covariances: component covariances :math:`\Sigma_k`, shape ``(K, D, D)``,
            symmetric positive definite.
        n_train: training points used (recorded by the benchmark).
    """

    nfe = 0

    def __init__(
        self, weights: Tensor, means: Tensor, covariances: Tensor, *, n_train: int | None = None
    ) -> None:
        super().__init__()
        weights, means, covariances = (
            torch.as_tensor(t, dtype=torch.float64) for t in (weights, means, covariances)
        )
        k, d = means.shape
        if weights.shape != (k,) or covariances.shape != (k, d, d):
            raise ValueError(
                f"shapes must be (K,), (K, D), (K, D, D); got {tuple(weights.shape)}, "
                f"{tuple(means.shape)}, {tuple(covariances.shape)}"
            )
        if not (bool((weights > 0).all()) and math.isclose(float(weights.sum()), 1, abs_tol=1e-9)):
            raise ValueError(f"weights must be positive and sum to 1, got {weights}")
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means)
        self.register_buffer("covariances", covariances)
        self.register_buffer("scale_tril", torch.linalg.cholesky(covariances))  # (K, D, D)
        self.n_train = n_train

    @classmethod
    def fit_gaussian(cls, x: Tensor) -> GaussianMixtureModel:
        r"""The maximum-likelihood Gaussian: sample mean and biased sample covariance.

        Args:
            x: training points, shape ``(N, D)``.
        """
        x = x.to(torch.float64)
        mean = x.mean(0)  # (D,)
        centred = x - mean
        cov = centred.T @ centred / x.shape[0]  # (D, D), divides by N: the MLE
        return cls(x.new_ones(1), mean[None], cov[None], n_train=x.shape[0])

    @classmethod
    def fit_em(
        cls, x: Tensor, components: int, *, n_init: int = 1, random_state: int = 0
    ) -> GaussianMixtureModel:
        r"""Maximum likelihood by EM (scikit-learn), full covariances.

        Args:
            x: training points, shape ``(N, D)``.
            components: number of components :math:`K`.
            n_init: EM runs from different k-means initializations; the best is kept.
            random_state: seed of scikit-learn's initialization.
        """
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits

        # One BLAS/OpenMP thread: EM on a few thousand 2-D points is tiny, and on a busy
        # 2-core machine more threads make it several times slower, not faster.
        with threadpool_limits(limits=1):
            gm = GaussianMixture(
                n_components=components,
                covariance_type="full",
                n_init=n_init,
                max_iter=500,
                tol=1e-4,
                random_state=random_state,
            ).fit(x.detach().cpu().numpy().astype(np.float64))
        if not gm.converged_:
            raise RuntimeError(f"EM did not converge in {gm.max_iter} iterations")
        return cls(
            torch.from_numpy(gm.weights_),
            torch.from_numpy(gm.means_),
            torch.from_numpy(gm.covariances_),
            n_train=x.shape[0],
        )

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log q(x)`, shape ``(B,)`` for ``x`` of shape ``(B, D)``."""
        x64 = x.to(device=self.means.device, dtype=torch.float64)
        diff = x64[:, None, :] - self.means  # (B, K, D)
        # Solve L y = diff for every component: y = L^{-1} (x - mu), |y|^2 the Mahalanobis term.
        y = torch.linalg.solve_triangular(
            self.scale_tril, diff.transpose(0, 1).transpose(1, 2), upper=False
        )  # (K, D, B)
        maha = (y**2).sum(1).T  # (B, K)
        d = self.means.shape[1]
        log_det = 2 * torch.log(torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        log_comp = -0.5 * (maha + log_det + d * math.log(2 * math.pi))  # (B, K)
        logp = torch.logsumexp(torch.log(self.weights) + log_comp, dim=-1)
        return logp.to(device=x.device, dtype=x.dtype)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` points, shape ``(n, D)``, float32: a component, then its Gaussian."""
        device = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.means.shape[1], generator=generator, device=device,
                        dtype=torch.float64)
        x = self.means[k] + (self.scale_tril[k] @ z[:, :, None]).squeeze(-1)  # (n, D)
        return x.to(torch.float32)



@register(
    name="gaussian",
    family="baseline",
    chapter=CHAPTER,
    description=f"one Gaussian, maximum likelihood (sample moments) on {N_TRAIN} points",
)
def train_gaussian(dataset: Toy2D, generator: torch.Generator) -> GaussianMixtureModel:
    r"""Fit one Gaussian to :data:`N_TRAIN` fresh points by maximum likelihood."""
    return GaussianMixtureModel.fit_gaussian(dataset.sample(N_TRAIN, generator=generator))


@register(
    name="gaussian_mixture",
    family="baseline",
    chapter=CHAPTER,
    description=(
        f"{COMPONENTS}-component full-covariance Gaussian mixture, maximum likelihood by EM "
        f"(best of {N_INIT}) on {N_TRAIN} points"
    ),
)
def train_gaussian_mixture(dataset: Toy2D, generator: torch.Generator) -> GaussianMixtureModel:
    r"""Fit a :data:`COMPONENTS`-component mixture to :data:`N_TRAIN` fresh points by EM."""
    x = dataset.sample(N_TRAIN, generator=generator)
    return GaussianMixtureModel.fit_em(
        x, COMPONENTS, n_init=N_INIT, random_state=seed_from(generator)
    )
