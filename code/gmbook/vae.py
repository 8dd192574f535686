r"""The variational autoencoders of the chapter "Variational autoencoders".

Derived in ``book/latent/vae.md``; each object cites the equation or result it implements:

- :func:`kl_standard_normal`, the KL term of the ELBO in closed form (eq. ``eq-vae-kl``);
- :class:`GaussianEncoder` and :class:`LinearGaussianEncoder`, amortised diagonal-Gaussian
  posteriors :math:`q_\phi(z \mid x)`; :class:`GaussianDecoder` and
  :class:`AutoregressiveDecoder`, likelihoods :math:`p_\theta(x \mid z)`;
- :class:`VAE`: the ELBO and its two terms (eqs. ``eq-vae-elbo`` and ``eq-vae-elbo-terms``)
  with the reparameterization trick (eq. ``eq-vae-reparam``), the beta-VAE and free-bits
  objectives (eqs. ``eq-vae-beta`` and ``eq-vae-free-bits``), the importance-weighted bound
  (eq. ``eq-vae-iwae``, :prf:ref:`thm-vae-iwae`) and ancestral sampling;
- :class:`LinearGaussianVAE`, probabilistic PCA as a VAE, with its exact marginal, exact
  posterior and closed-form ELBO (:prf:ref:`prop-vae-linear-posterior`,
  :prf:ref:`prop-vae-linear-tight`, eq. ``eq-vae-linear-elbo``);
- :func:`log_marginal_quadrature`, :math:`\log p_\theta(x)` of a model with a 2-D latent by
  a grid over the latent plane; :func:`optimize_posteriors`, per-point variational
  posteriors for measuring the amortisation gap (eq. ``eq-vae-gaps``);
  :func:`reconstruction_gradients`, the two gradient estimators of the reconstruction term;
- :class:`VectorQuantizer` and :class:`VQVAE`, discrete latents with the straight-through
  estimator (eq. ``eq-vae-vq``).

Every model has the book's verbs ``loss(x)`` and ``sample(n, generator=...)``. A VAE has no
tractable ``log_prob``: :meth:`VAE.iwae_bound` with many samples estimates it from below
(:class:`LinearGaussianVAE` has the exact one).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gmbook._checks import (
    check_float_tensor,
    check_generator,
    check_int,
    check_nonnegative,
    check_positive,
    describe,
)
from gmbook._random import randn
from gmbook.densities import MixtureDensityNetwork, kmeans_plusplus
from gmbook.metrics import Estimate
from gmbook.nets import MLP
from gmbook.probability import mc_estimate, reparam_gradient, score_function_gradient

__all__ = [
    "AutoregressiveDecoder",
    "ELBOTerms",
    "GaussianDecoder",
    "GaussianEncoder",
    "LinearGaussianEncoder",
    "LinearGaussianVAE",
    "RateSplit",
    "VAE",
    "VQVAE",
    "VectorQuantizer",
    "aggregate_log_prob",
    "kl_standard_normal",
    "latent_log_joint_grid",
    "log_marginal_quadrature",
    "optimize_posteriors",
    "rate_split",
    "restart_dead_codes",
    "reconstruction_gradients",
]

_LOG_2PI = math.log(2 * math.pi)


def _normal_log_prob(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    r""":math:`\log \mathcal N(x; \mu, \operatorname{diag} e^{v})` summed over the last dim."""
    return -0.5 * ((x - mean).square() * (-log_var).exp() + log_var + _LOG_2PI).sum(-1)


# --------------------------------------------------------------------------- the KL term


def kl_standard_normal(mean: Tensor, log_var: Tensor) -> Tensor:
    r"""The KL term of the ELBO, from a diagonal Gaussian to the standard normal, per row.

    :math:`\mathrm{KL}\big(\mathcal N(\mu, \operatorname{diag}\sigma^2) \,\|\,
    \mathcal N(0, I)\big)`, eq. ``eq-vae-kl``:

    .. math::

        \tfrac12 \sum_{j=1}^L \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big).

    It is the diagonal case of :func:`gmbook.probability.gaussian_kl` against the standard
    normal, computed without a matrix.

    Args:
        mean: :math:`\mu`, shape ``(*B, L)``.
        log_var: :math:`\log \sigma^2`, shape ``(*B, L)``.

    Returns:
        The divergence in nats, shape ``(*B,)``.

    Example:
        >>> float(kl_standard_normal(torch.tensor([1.0, 0.0]), torch.zeros(2)))
        0.5
    """
    mean, log_var = check_float_tensor("mean", mean), check_float_tensor("log_var", log_var)
    if mean.shape != log_var.shape or mean.ndim == 0:
        raise ValueError(f"mean and log_var must have the same shape (*B, L), got "
                         f"{tuple(mean.shape)} and {tuple(log_var.shape)}")
    return 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(-1)


# --------------------------------------------------------------------------- encoders


class GaussianEncoder(nn.Module):
    r"""An amortised diagonal-Gaussian posterior, computed by one MLP.

    :math:`q_\phi(z \mid x) = \mathcal N\big(\mu_\phi(x), \operatorname{diag}
    \sigma^2_\phi(x)\big)`: one :class:`~gmbook.nets.MLP` maps ``x`` to
    :math:`(\mu, \log\sigma^2)`.

    Args:
        data_dim: :math:`D`, the size of a flattened data point.
        latent_dim: :math:`L`.
        hidden: width of the MLP.
        depth: hidden layers of the MLP.
    """

    def __init__(self, data_dim: int, latent_dim: int, *, hidden: int = 128,
                 depth: int = 2) -> None:
        super().__init__()
        self.data_dim = check_int("data_dim", data_dim)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.net = MLP(self.data_dim, 2 * self.latent_dim, hidden=hidden, depth=depth)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(mean, log_var)``, both ``(B, L)``, for flattened data ``x`` ``(B, D)``."""
        mean, log_var = self.net(x).chunk(2, dim=-1)
        return mean, log_var


class LinearGaussianEncoder(nn.Module):
    r"""A linear encoder with constant variances, the one probabilistic PCA needs.

    :math:`q(z \mid x) = \mathcal N\big(V x + c, \operatorname{diag} \sigma^2\big)`, whose
    variances do not depend on ``x``: the family that contains the exact posterior of
    probabilistic PCA at its optimum (:prf:ref:`prop-vae-linear-tight`).

    Args:
        data_dim: :math:`D`.
        latent_dim: :math:`L`.
    """

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.data_dim = check_int("data_dim", data_dim)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.linear = nn.Linear(self.data_dim, self.latent_dim)
        self.log_var = nn.Parameter(torch.zeros(self.latent_dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(mean, log_var)``, both ``(B, L)``, for flattened data ``x`` ``(B, D)``."""
        mean = self.linear(x)
        return mean, self.log_var.expand_as(mean)


# --------------------------------------------------------------------------- decoders


class GaussianDecoder(nn.Module):
    r"""A Gaussian decoder whose standard deviation is learned but does not depend on ``z``.

    :math:`p_\theta(x \mid z) = \mathcal N\big(f_\theta(z), \operatorname{diag}\sigma^2\big)`,
    with :math:`f_\theta` an MLP (or a linear map) and :math:`\sigma` a parameter.

    Args:
        latent_dim: :math:`L`.
        data_dim: :math:`D`.
        hidden: width of the MLP :math:`f_\theta`.
        depth: hidden layers of the MLP.
        linear: make :math:`f_\theta(z) = W z + b` (probabilistic PCA) instead of an MLP.
        std: ``"diagonal"`` (one learned :math:`\sigma_d` per coordinate) or
            ``"isotropic"`` (one learned :math:`\sigma` shared by all coordinates).
        init_std: the initial :math:`\sigma`.
    """

    def __init__(self, latent_dim: int, data_dim: int, *, hidden: int = 128, depth: int = 2,
                 linear: bool = False, std: str = "diagonal", init_std: float = 1.0) -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.data_dim = check_int("data_dim", data_dim)
        if std not in ("diagonal", "isotropic"):
            raise ValueError(f"std must be 'diagonal' or 'isotropic', got {std!r}")
        init_std = check_positive("init_std", init_std)
        self.linear = bool(linear)
        self.net: nn.Module = (nn.Linear(self.latent_dim, self.data_dim) if self.linear else
                               MLP(self.latent_dim, self.data_dim, hidden=hidden, depth=depth))
        size = self.data_dim if std == "diagonal" else 1
        self.log_std = nn.Parameter(torch.full((size,), math.log(init_std)))

    @property
    def std(self) -> Tensor:
        r""":math:`\sigma`, shape ``(D,)``."""
        return self.log_std.exp().expand(self.data_dim)

    def mean(self, z: Tensor) -> Tensor:
        r""":math:`f_\theta(z)`, shape ``(*S, D)`` for latents ``(*S, L)``."""
        lead = z.shape[:-1]
        return self.net(z.reshape(-1, self.latent_dim)).reshape(*lead, self.data_dim)

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\log p_\theta(x \mid z)`, shape ``(*S, B)``, for data ``(B, D)`` and
        latents ``(*S, B, L)`` (``S`` samples per point, e.g. for the IWAE bound)."""
        log_var = (2 * self.log_std).expand(self.data_dim)
        return _normal_log_prob(x, self.mean(z), log_var)

    def log_prob_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\log p_\theta(x_b \mid z_s)` for every pair, shape ``(B, S)``, for data
        ``(B, D)`` and latents ``(S, L)``; :math:`f_\theta` is evaluated once per latent."""
        f = self.mean(z) / self.std  # (S, D)
        xs = x / self.std  # (B, D)
        d2 = (xs.square().sum(1, keepdim=True) - 2 * xs @ f.T
              + f.square().sum(1)).clamp_min(0)  # (B, S)
        return -0.5 * d2 - self.log_std.expand(self.data_dim).sum() - 0.5 * self.data_dim * _LOG_2PI

    def sample(self, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""One draw :math:`x \sim p_\theta(\cdot \mid z)` per latent, shape ``(B, D)``."""
        mean = self.mean(z)
        return mean + self.std * randn(mean.shape, like=mean, generator=generator)


class AutoregressiveDecoder(nn.Module):
    r"""A decoder powerful enough to ignore its latent: autoregressive, given ``z``.

    :math:`p_\theta(x \mid z) = \prod_{d=1}^D p_\theta(x_d \mid x_{<d}, z)`, each factor a
    1-D mixture of Gaussians
    computed by a :class:`~gmbook.densities.MixtureDensityNetwork` from
    :math:`(z, x_{<d})`. With :math:`z` ignored it is the autoregressive model of the
    densities chapter, which models two moons on its own; the chapter uses it to make
    posterior collapse happen.

    Args:
        latent_dim: :math:`L`.
        data_dim: :math:`D`.
        components: mixture components of every conditional.
        hidden: width of every conditional's MLP.
        depth: hidden layers of every conditional's MLP.
    """

    def __init__(self, latent_dim: int, data_dim: int, *, components: int = 8,
                 hidden: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.data_dim = check_int("data_dim", data_dim)
        self.conditionals = nn.ModuleList(
            MixtureDensityNetwork(self.latent_dim + d, components, hidden=hidden, depth=depth)
            for d in range(self.data_dim))

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\log p_\theta(x \mid z)`, shape ``(*S, B)``, for data ``(B, D)`` and
        latents ``(*S, B, L)``."""
        lead = z.shape[:-1]
        zf = z.reshape(-1, self.latent_dim)  # (S * B, L)
        xf = x.expand(*lead, self.data_dim).reshape(-1, self.data_dim)  # (S * B, D)
        total = zf.new_zeros(zf.shape[0])
        for d, cond in enumerate(self.conditionals):
            context = torch.cat([zf, xf[:, :d]], dim=1)  # (S * B, L + d)
            total = total + cond.log_prob(xf[:, d], context)
        return total.reshape(lead)

    def log_prob_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\log p_\theta(x_b \mid z_s)` for every pair, shape ``(B, S)``."""
        b, s = x.shape[0], z.shape[0]
        zz = z[None].expand(b, s, self.latent_dim).transpose(0, 1)  # (S, B, L)
        return self.log_prob(x, zz).T

    @torch.no_grad()
    def sample(self, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""One ancestral draw :math:`x \sim p_\theta(\cdot \mid z)` per latent ``(B, L)``,
        shape ``(B, D)``."""
        x = z.new_zeros(z.shape[0], self.data_dim)
        for d, cond in enumerate(self.conditionals):
            x[:, d] = cond.sample(torch.cat([z, x[:, :d]], dim=1), generator=generator)
        return x


# --------------------------------------------------------------------------- the VAE


@dataclasses.dataclass(frozen=True)
class ELBOTerms:
    r"""The two terms of the ELBO of a batch, eq. ``eq-vae-elbo-terms``.

    Attributes:
        reconstruction: Monte Carlo estimate of :math:`\mathbb E_{q}[\log p_\theta(x \mid
            z)]`, shape ``(B,)``; its negative is the *distortion*.
        kl_per_dim: :math:`\mathrm{KL}(q_\phi(z_j \mid x) \,\|\, \mathcal N(0, 1))` of each
            latent coordinate in closed form, shape ``(B, L)``.
    """

    reconstruction: Tensor
    kl_per_dim: Tensor

    @property
    def kl(self) -> Tensor:
        r""":math:`\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))`, the *rate*, shape ``(B,)``."""
        return self.kl_per_dim.sum(-1)

    @property
    def elbo(self) -> Tensor:
        r"""The ELBO, reconstruction minus KL, shape ``(B,)``."""
        return self.reconstruction - self.kl


class VAE(nn.Module):
    r"""A variational autoencoder with a standard normal prior
    :math:`p(z) = \mathcal N(0, I_L)` (Kingma and Welling, 2014; Rezende et al., 2014).

    Trained by maximising the ELBO, eq. ``eq-vae-elbo-terms``,

    .. math::

        \mathcal L(x) = \mathbb E_{q_\phi(z \mid x)}[\log p_\theta(x \mid z)]
        - \beta\, \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big),

    with one reparameterized draw :math:`z = \mu + \sigma \odot \varepsilon` (eq.
    ``eq-vae-reparam``) and the KL in closed form (eq. ``eq-vae-kl``). ``beta`` is the
    beta-VAE weight (eq. ``eq-vae-beta``; 1 is the ELBO), ``free_bits`` the free-bits floor
    :math:`\lambda` of eq. ``eq-vae-free-bits``, and ``k > 1`` trains the importance-weighted
    bound (eq. ``eq-vae-iwae``) instead.

    Args:
        encoder: maps flattened data ``(B, D)`` to ``(mean, log_var)``, both ``(B, L)``,
            and has ``latent_dim``, e.g. a :class:`GaussianEncoder`.
        decoder: has ``log_prob(x, z)``, ``sample(z, generator=...)`` and ``latent_dim``,
            e.g. a :class:`GaussianDecoder`.
        shape: the shape :math:`(*D)` of one data point, e.g. ``(2,)`` or ``(1, 8, 8)``.
        beta: weight of the KL term, ``>= 0``.
        free_bits: :math:`\lambda \ge 0`, nats per latent coordinate (0 disables it).
        k: importance samples of the training objective (1 is the ELBO).

    Example:
        >>> vae = VAE(GaussianEncoder(2, 2, hidden=16), GaussianDecoder(2, 2, hidden=16),
        ...           shape=(2,))
        >>> vae.loss(torch.randn(8, 2)).shape, vae.sample(3).shape
        (torch.Size([]), torch.Size([3, 2]))
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, shape: Sequence[int],
                 beta: float = 1.0, free_bits: float = 0.0, k: int = 1) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
            raise TypeError("encoder and decoder must be nn.Modules")
        if isinstance(shape, int) or not isinstance(shape, Sequence) or not shape:
            raise TypeError(f"shape must be a non-empty sequence of ints, got {describe(shape)}")
        self.shape = tuple(check_int("shape entry", s) for s in shape)
        self.data_dim = math.prod(self.shape)
        self.latent_dim = check_int("encoder.latent_dim", getattr(encoder, "latent_dim", None))
        if getattr(decoder, "latent_dim", None) != self.latent_dim:
            raise ValueError(f"decoder.latent_dim must equal encoder.latent_dim = "
                             f"{self.latent_dim}, got {getattr(decoder, 'latent_dim', None)}")
        self.encoder, self.decoder = encoder, decoder
        self.beta = check_nonnegative("beta", beta)
        self.free_bits = check_nonnegative("free_bits", free_bits)
        self.k = check_int("k", k)

    # -- shapes --------------------------------------------------------------------------

    def _flat(self, x: object) -> Tensor:
        x = check_float_tensor("x", x)
        if x.ndim != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape or not len(x):
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.shape))}) "
                             f"with B >= 1, got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.data_dim)  # (B, D)

    def _posterior(self, x: Tensor, posterior: tuple[Tensor, Tensor] | None
                   ) -> tuple[Tensor, Tensor]:
        if posterior is None:
            return self.encoder(x)
        mean, log_var = posterior
        want = (x.shape[0], self.latent_dim)
        if tuple(mean.shape) != want or tuple(log_var.shape) != want:
            raise ValueError(f"posterior must be (mean, log_var) of shape {want}, got "
                             f"{tuple(mean.shape)} and {tuple(log_var.shape)}")
        return mean, log_var

    # -- inference -----------------------------------------------------------------------

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The posterior :math:`q_\phi(z \mid x)`: ``(mean, log_var)``, both ``(B, L)``."""
        return self.encoder(self._flat(x))

    def elbo_terms(self, x: Tensor, *, samples: int = 1,
                   posterior: tuple[Tensor, Tensor] | None = None,
                   generator: torch.Generator | None = None) -> ELBOTerms:
        r"""The reconstruction and KL terms of the ELBO (eq. ``eq-vae-elbo-terms``).

        The reconstruction term is averaged over ``samples`` reparameterized draws
        :math:`z = \mu + \sigma \odot \varepsilon` (eq. ``eq-vae-reparam``), so gradients
        flow to the encoder; the KL term is exact (eq. ``eq-vae-kl``).

        Args:
            x: data ``(B, *D)``.
            samples: draws of :math:`z` per point.
            posterior: ``(mean, log_var)`` ``(B, L)`` of another diagonal Gaussian
                :math:`q(z)` to use instead of the encoder's (for the amortisation gap).
            generator: randomness of :math:`\varepsilon`.

        Returns:
            :class:`ELBOTerms` of shapes ``(B,)`` and ``(B, L)``.
        """
        samples = check_int("samples", samples)
        generator = check_generator(generator)
        xf = self._flat(x)
        mean, log_var = self._posterior(xf, posterior)
        eps = randn((samples, *mean.shape), like=mean, generator=generator)  # (S, B, L)
        z = mean + (0.5 * log_var).exp() * eps
        reconstruction = self.decoder.log_prob(xf, z).mean(0)  # (B,)
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var)  # (B, L), eq-vae-kl
        return ELBOTerms(reconstruction, kl)

    def elbo(self, x: Tensor, *, samples: int = 1,
             generator: torch.Generator | None = None) -> Tensor:
        r"""The ELBO of each point, eq. ``eq-vae-elbo-terms``, shape ``(B,)`` (an unbiased
        estimate from ``samples`` draws)."""
        return self.elbo_terms(x, samples=samples, generator=generator).elbo

    def log_weights(self, x: Tensor, k: int, *,
                    posterior: tuple[Tensor, Tensor] | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
        r"""Log importance weights of ``k`` draws of the posterior, shape ``(K, B)``.

        :math:`\log w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x)` for draws
        :math:`z_k \sim q_\phi(\cdot \mid x)`; :math:`\mathbb E[w_k] = p_\theta(x)`.
        """
        k = check_int("k", k)
        generator = check_generator(generator)
        xf = self._flat(x)
        mean, log_var = self._posterior(xf, posterior)
        eps = randn((k, *mean.shape), like=mean, generator=generator)  # (K, B, L)
        z = mean + (0.5 * log_var).exp() * eps
        log_q = -0.5 * (eps.square() + log_var + _LOG_2PI).sum(-1)  # (K, B)
        log_prior = -0.5 * (z.square() + _LOG_2PI).sum(-1)
        return self.decoder.log_prob(xf, z) + log_prior - log_q

    def iwae_bound(self, x: Tensor, k: int, *, chunk: int | None = None,
                   posterior: tuple[Tensor, Tensor] | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
        r"""The importance-weighted bound :math:`\mathcal L_K(x) = \log \frac1K \sum_k w_k`
        of eq. ``eq-vae-iwae``, shape ``(B,)``.

        :math:`\mathcal L_1` is the ELBO; :math:`\mathbb E[\mathcal L_K]` does not decrease
        with :math:`K` and tends to :math:`\log p_\theta(x)` (:prf:ref:`thm-vae-iwae`), so
        with a large ``k`` it is the chapter's estimate of the log-likelihood.

        Args:
            x: data ``(B, *D)``.
            k: importance samples :math:`K`.
            chunk: draw the samples in chunks of at most this many (to bound memory; the
                result is the same function of the draws).
            posterior: ``(mean, log_var)`` of another proposal, as in :meth:`elbo_terms`.
            generator: randomness of the draws.
        """
        k = check_int("k", k)
        chunk = k if chunk is None else check_int("chunk", chunk)
        parts, left = [], k
        while left > 0:
            m = min(chunk, left)
            lw = self.log_weights(x, m, posterior=posterior, generator=generator)
            parts.append(torch.logsumexp(lw, dim=0))  # (B,)
            left -= m
        return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)

    # -- training ------------------------------------------------------------------------

    def loss(self, x: Tensor) -> Tensor:
        r"""The training loss of a batch ``(B, *D)``, a scalar: minus the beta-weighted ELBO
        with free bits (eqs. ``eq-vae-beta``, ``eq-vae-free-bits``), or minus the IWAE
        bound when ``k > 1``.

        With free bits :math:`\lambda`, the KL of coordinate :math:`j`, averaged over the
        batch, enters as :math:`\max(\lambda, \overline{\mathrm{KL}}_j)`: below
        :math:`\lambda` nats it costs nothing, so the encoder is not pushed to give it up.
        """
        if self.k > 1:
            return -self.iwae_bound(x, self.k).mean()
        terms = self.elbo_terms(x)
        kl = terms.kl_per_dim.mean(0)  # (L,)
        if self.free_bits > 0:
            kl = kl.clamp_min(self.free_bits)  # eq-vae-free-bits
        return -(terms.reconstruction.mean() - self.beta * kl.sum())

    # -- generation ----------------------------------------------------------------------

    def decode_mean(self, z: Tensor) -> Tensor:
        r"""The decoder mean :math:`f_\theta(z)` of latents ``(B, L)``, shape ``(B, *D)``
        (Gaussian decoders only)."""
        mean = getattr(self.decoder, "mean", None)
        if not callable(mean):
            raise TypeError("decode_mean needs a decoder with a mean(z) method")
        return mean(z).reshape(z.shape[0], *self.shape)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None,
               noise: bool = True) -> Tensor:
        r"""``n`` ancestral samples: :math:`z \sim \mathcal N(0, I)`, then
        :math:`x \sim p_\theta(\cdot \mid z)`; shape ``(n, *D)``.

        Args:
            n: number of samples.
            generator: randomness of :math:`z` and of the decoder's noise.
            noise: draw from :math:`p_\theta(x \mid z)`; ``False`` returns the decoder
                means :math:`f_\theta(z)` (Gaussian decoders only), the usual images.
        """
        n = check_int("n", n)
        generator = check_generator(generator)
        ref = next(self.parameters())
        z = randn((n, self.latent_dim), like=ref, generator=generator)
        if not noise:
            return self.decode_mean(z)
        return self.decoder.sample(z, generator=generator).reshape(n, *self.shape)

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, latent_dim={self.latent_dim}, beta={self.beta}, "
                f"free_bits={self.free_bits}, k={self.k}")


# --------------------------------------------------------------------------- PPCA


class LinearGaussianVAE(VAE):
    r"""Probabilistic PCA as a VAE (Tipping and Bishop, 1999): the linear-Gaussian model

    .. math::

        z \sim \mathcal N(0, I_L), \qquad x \mid z \sim \mathcal N(W z + b, \sigma^2 I_D),

    with a :class:`LinearGaussianEncoder`. Everything is exact here
    (:prf:ref:`prop-vae-linear-posterior`): the marginal :math:`\mathcal N(b, W W^\top +
    \sigma^2 I)` (:meth:`log_prob`), the posterior (:meth:`posterior`) and the ELBO of any
    Gaussian :math:`q` (:meth:`elbo_exact`, eq. ``eq-vae-linear-elbo``).

    Args:
        data_dim: :math:`D`.
        latent_dim: :math:`L`.
        shape: the shape of a data point (default ``(data_dim,)``).
    """

    def __init__(self, data_dim: int, latent_dim: int, *,
                 shape: Sequence[int] | None = None) -> None:
        data_dim, latent_dim = check_int("data_dim", data_dim), check_int("latent_dim", latent_dim)
        super().__init__(LinearGaussianEncoder(data_dim, latent_dim),
                         GaussianDecoder(latent_dim, data_dim, linear=True, std="isotropic"),
                         shape=(data_dim,) if shape is None else shape)
        if self.data_dim != data_dim:
            raise ValueError(f"shape {tuple(shape)} does not have data_dim = {data_dim} entries")

    @property
    def W(self) -> Tensor:
        r"""The loading matrix :math:`W`, ``(D, L)``."""
        return self.decoder.net.weight

    @property
    def b(self) -> Tensor:
        r"""The offset :math:`b`, ``(D,)``."""
        return self.decoder.net.bias

    @property
    def noise_var(self) -> Tensor:
        r""":math:`\sigma^2`, a 0-dim tensor."""
        return (2 * self.decoder.log_std[0]).exp()

    def marginal(self) -> tuple[Tensor, Tensor]:
        r"""The exact marginal :math:`p(x) = \mathcal N(b, W W^\top + \sigma^2 I)`:
        ``(mean (D,), cov (D, D))``."""
        eye = torch.eye(self.data_dim, dtype=self.W.dtype, device=self.W.device)
        return self.b, self.W @ self.W.T + self.noise_var * eye

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log p(x)`, shape ``(B,)``, eq. ``eq-vae-linear-marginal``."""
        mean, cov = self.marginal()
        return torch.distributions.MultivariateNormal(mean, cov).log_prob(self._flat(x))

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The exact posterior: ``(mean (B, L), cov (L, L))``.

        :math:`p(z \mid x) = \mathcal N\big(M^{-1} W^\top (x - b), \sigma^2 M^{-1}\big)`
        with :math:`M = W^\top W + \sigma^2 I` (eq. ``eq-vae-linear-posterior``).
        """
        xf = self._flat(x)
        s2 = self.noise_var
        m = self.W.T @ self.W + s2 * torch.eye(self.latent_dim, dtype=xf.dtype, device=xf.device)
        mean = torch.linalg.solve(m, self.W.T @ (xf - self.b).T).T  # (B, L)
        cov = s2 * torch.linalg.inv(m)
        return mean, 0.5 * (cov + cov.T)

    def elbo_exact(self, x: Tensor, q_mean: Tensor | None = None,
                   q_cov: Tensor | None = None) -> Tensor:
        r"""The ELBO in closed form for a Gaussian :math:`q(z) = \mathcal N(m, S)`,
        eq. ``eq-vae-linear-elbo``, shape ``(B,)``:

        .. math::

            -\tfrac D2 \log 2\pi\sigma^2 - \frac{\lVert x - b - W m \rVert^2
            + \operatorname{tr}(W S W^\top)}{2 \sigma^2}
            - \mathrm{KL}\big(\mathcal N(m, S) \,\|\, \mathcal N(0, I)\big).

        Args:
            x: data ``(B, *D)``.
            q_mean: :math:`m`, ``(B, L)``; default: the encoder's mean.
            q_cov: :math:`S`, ``(L, L)`` (shared) or ``(B, L, L)``; default: the encoder's
                diagonal covariance.
        """
        xf = self._flat(x)
        if (q_mean is None) != (q_cov is None):
            raise ValueError("give both q_mean and q_cov, or neither")
        lat = self.latent_dim
        if q_mean is None:  # the encoder's diagonal q: no matrices needed
            q_mean, log_var = self.encoder(xf)
            trace = log_var.exp() @ self.W.square().sum(0)  # sum_j S_jj |W_:j|^2, (B,)
            trace_s, logdet = log_var.exp().sum(-1), log_var.sum(-1)
        else:
            q_mean = check_float_tensor("q_mean", q_mean)
            q_cov = check_float_tensor("q_cov", q_cov)
            if tuple(q_mean.shape) != (xf.shape[0], lat) or q_cov.shape[-2:] != (lat, lat):
                raise ValueError(f"q_mean must be (B, {lat}) and q_cov ({lat}, {lat}) or "
                                 f"(B, {lat}, {lat}), got {tuple(q_mean.shape)} and "
                                 f"{tuple(q_cov.shape)}")
            trace = (self.W @ q_cov @ self.W.T).diagonal(dim1=-2, dim2=-1).sum(-1)
            trace_s = q_cov.diagonal(dim1=-2, dim2=-1).sum(-1)
            logdet = torch.linalg.slogdet(q_cov)[1]  # () or (B,)
        s2 = self.noise_var
        resid = xf - self.b - q_mean @ self.W.T  # (B, D)
        rec = (-0.5 * self.data_dim * torch.log(2 * math.pi * s2)
               - (resid.square().sum(1) + trace) / (2 * s2))
        kl = 0.5 * (trace_s + q_mean.square().sum(1) - lat - logdet)  # eq-vae-kl, full S
        return rec - kl

    def best_diagonal_posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The diagonal Gaussian closest to the exact posterior in
        :math:`\mathrm{KL}(q \,\|\, p(z \mid x))`: the posterior mean and the variances
        :math:`\sigma^2 / M_{jj}` (:prf:ref:`prop-vae-linear-tight`).

        Returns:
            ``(mean, log_var)``, both ``(B, L)``.
        """
        mean, _ = self.posterior(x)
        m_diag = self.W.square().sum(0) + self.noise_var  # diag(W^T W + s2 I), (L,)
        return mean, (self.noise_var / m_diag).log().expand_as(mean)

    def diagonal_gap(self) -> Tensor:
        r"""The gap :math:`\log p(x) - \mathrm{ELBO}` of :meth:`best_diagonal_posterior`,
        the same for every ``x`` (eq. ``eq-vae-diagonal-gap``): with
        :math:`M = W^\top W + \sigma^2 I`, :math:`\tfrac12 \big(\sum_j \log M_{jj} -
        \log\det M\big) \ge 0`, zero exactly when :math:`W^\top W` is diagonal. A 0-dim
        tensor."""
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype, device=self.W.device)
        m = self.W.T @ self.W + self.noise_var * eye
        return 0.5 * (m.diagonal().log().sum() - torch.linalg.slogdet(m)[1])

    @classmethod
    def ppca(cls, x: Tensor, latent_dim: int) -> LinearGaussianVAE:
        r"""The maximum-likelihood probabilistic PCA of data ``x`` ``(n, *D)`` in closed
        form (Tipping and Bishop, 1999), with the encoder set to the exact posterior.

        With the eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_D` of the biased sample
        covariance and their eigenvectors :math:`U_L`: :math:`b = \bar x`,
        :math:`\sigma^2 = \frac1{D - L} \sum_{j > L} \lambda_j` and
        :math:`W = U_L (\Lambda_L - \sigma^2 I)^{1/2}`, whose orthogonal columns make the
        posterior covariance diagonal (:prf:ref:`prop-vae-linear-tight`).
        """
        x = check_float_tensor("x", x)
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(f"x must have shape (n, *D) with n >= 2, got {tuple(x.shape)}")
        n, shape = x.shape[0], tuple(x.shape[1:])
        xf = x.reshape(n, -1)
        d = xf.shape[1]
        latent_dim = check_int("latent_dim", latent_dim)
        if latent_dim >= d:
            raise ValueError(f"latent_dim must be < D = {d}, got {latent_dim}")
        x64 = xf.double()
        mean = x64.mean(0)
        cov = (x64 - mean).T @ (x64 - mean) / n
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        s2 = evals[latent_dim:].mean()
        w = evecs[:, :latent_dim] * (evals[:latent_dim] - s2).clamp_min(0).sqrt()
        model = cls(d, latent_dim, shape=shape).to(xf.dtype)
        with torch.no_grad():
            model.decoder.net.weight.copy_(w)
            model.decoder.net.bias.copy_(mean)
            model.decoder.log_std.fill_(0.5 * float(s2.log()))
            m = w.T @ w + s2 * torch.eye(latent_dim, dtype=torch.float64)
            v = torch.linalg.solve(m, w.T)  # (L, D): posterior mean M^-1 W^T (x - b)
            model.encoder.linear.weight.copy_(v)
            model.encoder.linear.bias.copy_(-v @ mean)
            model.encoder.log_var.copy_((s2 / m.diagonal()).log())
        return model.to(x.device)


# --------------------------------------------------------------------------- 2-D latents


def _latent_grid(lims: float, n: int, like: Tensor) -> tuple[Tensor, float]:
    t = torch.linspace(-lims, lims, n, device=like.device, dtype=like.dtype)
    zz = torch.cartesian_prod(t, t)  # (n * n, 2), the first coordinate varies slowest
    return zz, 2 * math.log(2 * lims / (n - 1))


@torch.no_grad()
def latent_log_joint_grid(model: VAE, x: Tensor, *, lims: float = 4.0, n: int = 201,
                          center: Tensor | None = None) -> tuple[Tensor, Tensor, float]:
    r""":math:`\log p_\theta(x, z)` on a square grid of the latent plane, for a model with a
    2-D latent and a decoder with ``log_prob_matrix`` (the posterior up to a constant).

    Args:
        model: a :class:`VAE` with ``latent_dim == 2``.
        x: data ``(B, *D)``.
        lims: the grid covers :math:`c + [-\text{lims}, \text{lims}]^2`.
        n: grid points per axis.
        center: the centre :math:`c`, shape ``(2,)`` (default: the origin).

    Returns:
        ``(z, log_joint, log_cell)``: the grid points ``(n * n, 2)`` (the first coordinate
        varies slowest, so ``reshape(n, n)`` indexes ``[i_1, i_2]``), :math:`\log p(x_b,
        z_s)` of shape ``(B, n * n)``, and the log-area of a grid cell.
    """
    if not isinstance(model, VAE) or model.latent_dim != 2:
        raise ValueError("latent_log_joint_grid needs a VAE with a 2-D latent")
    lims, n = check_positive("lims", lims), check_int("n", n, 2)
    xf = model._flat(x)
    z, log_cell = _latent_grid(lims, n, xf)
    if center is not None:
        center = check_float_tensor("center", center)
        if tuple(center.shape) != (2,):
            raise ValueError(f"center must have shape (2,), got {tuple(center.shape)}")
        z = z + center.to(z)
    log_prior = -0.5 * z.square().sum(1) - _LOG_2PI  # (S,)
    return z, model.decoder.log_prob_matrix(xf, z) + log_prior, log_cell


def log_marginal_quadrature(model: VAE, x: Tensor, *, lims: float = 4.0, n: int = 201,
                            batch_size: int = 256) -> Tensor:
    r""":math:`\log p_\theta(x) = \log \int p_\theta(x \mid z)\, p(z)\, dz` (eq.
    ``eq-vae-marginal``) by the midpoint rule on a grid of the latent plane, shape ``(B,)``.

    Accurate when the grid covers the posterior's mass and resolves its width: check by
    refining ``n`` and widening ``lims``. Only for 2-D latents (the grid has :math:`n^2`
    points).

    Args:
        model: a :class:`VAE` with ``latent_dim == 2``.
        x: data ``(B, *D)``.
        lims: half-width of the grid.
        n: grid points per axis.
        batch_size: data points per block.
    """
    batch_size = check_int("batch_size", batch_size)
    out = []
    for xb in x.split(batch_size):
        _, log_joint, log_cell = latent_log_joint_grid(model, xb, lims=lims, n=n)
        out.append(torch.logsumexp(log_joint, dim=1) + log_cell)
    return torch.cat(out)


# --------------------------------------------------------------------------- aggregate posterior


@dataclasses.dataclass(frozen=True)
class RateSplit:
    r"""The rate split into mutual information and prior mismatch, eq. ``eq-vae-rate-split``.

    :math:`R = I_q(x; z) + \mathrm{KL}(q(z) \,\|\, p(z))`, for the aggregate posterior of
    ``n`` points.

    Attributes:
        rate: :math:`R`, the mean of the closed-form KL terms.
        aggregate_kl: the :class:`~gmbook.metrics.Estimate` of
            :math:`\mathrm{KL}(q(z) \,\|\, p(z))` by Monte Carlo.
        mutual_information: :math:`R - \mathrm{KL}(q(z) \,\|\, p(z))`, the information the
            latent carries about the point, at most :math:`\log n`.
    """

    rate: float
    aggregate_kl: Estimate
    mutual_information: float


def aggregate_log_prob(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    r"""The log-density of the aggregate posterior of ``n`` diagonal Gaussians.

    :math:`\log q(z)` for :math:`q(z) = \frac1n \sum_i \mathcal N(z; \mu_i,
    \operatorname{diag}\sigma_i^2)` (eq. ``eq-vae-aggregate``), shape ``(S,)`` for points
    ``z`` ``(S, L)`` and posteriors ``(n, L)``.
    """
    z = check_float_tensor("z", z)
    if mean.shape != log_var.shape or mean.ndim != 2 or z.ndim != 2 or \
            z.shape[1] != mean.shape[1]:
        raise ValueError(f"z must be (S, L) and mean, log_var (n, L), got {tuple(z.shape)}, "
                         f"{tuple(mean.shape)} and {tuple(log_var.shape)}")
    parts = []
    for zb in z.split(max(1, 2**22 // (mean.shape[0] * mean.shape[1]))):
        lp = _normal_log_prob(zb[:, None, :], mean[None], log_var[None])  # (s, n)
        parts.append(torch.logsumexp(lp, dim=1) - math.log(mean.shape[0]))
    return torch.cat(parts)


@torch.no_grad()
def rate_split(mean: Tensor, log_var: Tensor, *, samples: int = 10_000,
               generator: torch.Generator | None = None) -> RateSplit:
    r"""Split the rate of ``n`` posteriors :math:`q(z \mid x_i)` into the mutual information
    and the KL from the aggregate posterior to the prior (eq. ``eq-vae-rate-split``,
    :prf:ref:`prop-vae-rate-split`).

    :math:`\mathrm{KL}(q(z) \,\|\, p(z)) = \mathbb E_{q(z)}[\log q(z) - \log p(z)]` is
    estimated from ``samples`` draws of the aggregate posterior (a point :math:`i` uniformly,
    then :math:`z \sim q(z \mid x_i)`), with :math:`\log q(z)` exact for the ``n``-point
    mixture (:func:`aggregate_log_prob`).

    Args:
        mean: posterior means :math:`\mu_i`, ``(n, L)``.
        log_var: posterior log-variances, ``(n, L)``.
        samples: draws from :math:`q(z)`.
        generator: randomness of the draws.
    """
    mean, log_var = check_float_tensor("mean", mean), check_float_tensor("log_var", log_var)
    samples = check_int("samples", samples)
    generator = check_generator(generator)
    if mean.shape != log_var.shape or mean.ndim != 2:
        raise ValueError(f"mean and log_var must both be (n, L), got {tuple(mean.shape)} and "
                         f"{tuple(log_var.shape)}")
    n = mean.shape[0]
    i = torch.randint(n, (samples,), generator=generator, device=mean.device)
    z = mean[i] + (0.5 * log_var[i]).exp() * randn(
        (samples, mean.shape[1]), like=mean, generator=generator)
    log_p = -0.5 * (z.square() + _LOG_2PI).sum(1)
    kl = mc_estimate(aggregate_log_prob(z, mean, log_var) - log_p)
    rate = float(kl_standard_normal(mean, log_var).mean())
    return RateSplit(rate, kl, rate - kl.mean)


# --------------------------------------------------------------------------- gaps, gradients


def optimize_posteriors(model: VAE, x: Tensor, *, steps: int = 300, lr: float = 0.05,
                        samples: int = 16, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor]:
    r"""Per-point diagonal Gaussians that maximise each point's ELBO, the model fixed.

    :math:`q_i = \mathcal N(m_i, \operatorname{diag} s_i^2)`, starting from the encoder's
    output (Cremer et al., 2018).

    The ELBO of :math:`q_i` minus the encoder's is the *amortisation gap* of eq.
    ``eq-vae-gaps``. Each step is an Adam step on the reparameterized ELBO with ``samples``
    fresh draws per point (fixed draws would be overfitted: the optimum of a sample average
    over a few draws can be a poor posterior), with a cosine-decaying learning rate; the
    model's parameters receive no gradient. Evaluate the result on independent draws.

    Args:
        model: a trained :class:`VAE`.
        x: data ``(B, *D)``.
        steps: Adam steps.
        lr: initial learning rate.
        samples: draws of :math:`\varepsilon` per point.
        generator: randomness of the draws.

    Returns:
        ``(mean, log_var)``, both ``(B, L)``, detached.
    """
    steps, samples = check_int("steps", steps, 0), check_int("samples", samples)
    lr = check_positive("lr", lr)
    generator = check_generator(generator)
    xf = model._flat(x)
    with torch.no_grad():
        mean, log_var = model.encoder(xf)
    mean = mean.detach().clone().requires_grad_(True)
    log_var = log_var.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mean, log_var], lr=lr)
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * i / steps))
        eps = randn((samples, *mean.shape), like=mean, generator=generator)  # (S, B, L)
        with torch.enable_grad():
            z = mean + (0.5 * log_var).exp() * eps
            elbo = model.decoder.log_prob(xf, z).mean(0) - kl_standard_normal(mean, log_var)
            grads = torch.autograd.grad(-elbo.sum(), [mean, log_var])
        mean.grad, log_var.grad = grads
        opt.step()
    return mean.detach(), log_var.detach()


def reconstruction_gradients(model: VAE, x: Tensor, eps: Tensor, *,
                             estimator: str = "reparam", baseline: float = 0.0
                             ) -> tuple[Tensor, Tensor]:
    r"""Per-draw estimates of the gradient of the reconstruction term
    :math:`\mathbb E_{q}[\log p_\theta(x \mid z)]` with respect to the encoder's output
    :math:`(\mu, \sigma)` at one data point.

    ``estimator="reparam"`` differentiates :math:`\log p_\theta(x \mid \mu + \sigma \odot
    \varepsilon)` (eq. ``eq-vae-reparam``); ``"score"`` multiplies
    :math:`\log p_\theta(x \mid z) - b` by :math:`\nabla \log q(z)` (the score-function
    estimator, eq. ``eq-vae-score-function``). Both are unbiased; their spread over the
    draws is what the chapter compares. Implemented with
    :func:`gmbook.probability.reparam_gradient` and
    :func:`gmbook.probability.score_function_gradient`.

    Args:
        model: a :class:`VAE`.
        x: one data point, shape ``(1, *D)``.
        eps: standard normal draws :math:`\varepsilon_i`, shape ``(n, L)``.
        estimator: ``"reparam"`` or ``"score"``.
        baseline: the constant :math:`b` of the score-function estimator.

    Returns:
        ``(grad_mean, grad_std)``, both ``(n, L)``.
    """
    xf = model._flat(x)
    if xf.shape[0] != 1:
        raise ValueError(f"x must be one data point of shape (1, *D), got {tuple(x.shape)}")
    if estimator not in ("reparam", "score"):
        raise ValueError(f"estimator must be 'reparam' or 'score', got {estimator!r}")
    with torch.no_grad():
        mean, log_var = model.encoder(xf)

    def f(z: Tensor) -> Tensor:  # (n, L) -> (n,)
        return model.decoder.log_prob(xf.expand(z.shape[0], -1), z)

    std = (0.5 * log_var[0]).exp()
    if estimator == "reparam":
        return reparam_gradient(f, mean[0], std, eps)
    return score_function_gradient(f, mean[0], std, eps, baseline=baseline)


# --------------------------------------------------------------------------- VQ-VAE


class VectorQuantizer(nn.Module):
    r"""Vector quantisation with a learned codebook and the straight-through estimator
    (van den Oord et al., 2017; Bengio et al., 2013).

    Each vector :math:`z_e` is replaced by its nearest code :math:`e_k`,
    :math:`k = \arg\min_j \lVert z_e - e_j \rVert`. The forward pass outputs
    :math:`e_k`; the backward pass copies the gradient of :math:`e_k` to :math:`z_e`
    (``z_e + (e_k - z_e).detach()``), since the argmin has no useful derivative. The
    codebook and commitment terms of eq. ``eq-vae-vq`` train the codes and keep the encoder
    close to them.

    Args:
        codes: codebook size :math:`K`.
        code_dim: dimension of a code.
    """

    def __init__(self, codes: int, code_dim: int) -> None:
        super().__init__()
        self.codes, self.code_dim = check_int("codes", codes), check_int("code_dim", code_dim)
        self.codebook = nn.Parameter(torch.randn(self.codes, self.code_dim))

    def nearest(self, z_e: Tensor) -> Tensor:
        r"""Index of the nearest code of each vector ``(*B, d)``, int64 ``(*B,)``."""
        z_e = check_float_tensor("z_e", z_e)
        if z_e.ndim == 0 or z_e.shape[-1] != self.code_dim:
            raise ValueError(f"z_e must have shape (*B, {self.code_dim}), got {tuple(z_e.shape)}")
        flat = z_e.reshape(-1, self.code_dim)
        d2 = (flat.square().sum(1, keepdim=True) - 2 * flat @ self.codebook.T
              + self.codebook.square().sum(1))  # (N, K)
        return d2.argmin(1).reshape(z_e.shape[:-1])

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Quantise ``z_e`` ``(*B, d)``.

        Returns:
            ``(z_q, indices, codebook_loss, commitment_loss)``: the straight-through output
            ``(*B, d)``, the code indices ``(*B,)``, and the two losses of eq. ``eq-vae-vq``
            (mean over the batch of the squared distances summed over the other dims).
        """
        idx = self.nearest(z_e)
        e = self.codebook[idx]  # (*B, d)
        b = z_e.shape[0]
        codebook_loss = (z_e.detach() - e).square().reshape(b, -1).sum(1).mean()
        commitment_loss = (z_e - e.detach()).square().reshape(b, -1).sum(1).mean()
        z_q = z_e + (e - z_e).detach()  # straight-through: forward e, backward identity
        return z_q, idx, codebook_loss, commitment_loss


class VQVAE(nn.Module):
    r"""A VQ-VAE (van den Oord et al., 2017): an MLP encoder maps a data point to ``positions``
    vectors of size ``code_dim``, each is quantised to one of ``codes`` codebook vectors,
    and an MLP decoder maps the quantised vectors back. The loss is eq. ``eq-vae-vq``,

    .. math::

        \lVert x - \hat x \rVert^2 + \lVert \mathrm{sg}[z_e] - e \rVert^2
        + \beta_c \lVert z_e - \mathrm{sg}[e] \rVert^2 ,

    with the straight-through estimator through the quantiser. A data point becomes a
    sequence of ``positions`` integer tokens (:meth:`encode`). The prior over tokens is
    fitted after training (:meth:`fit_prior`): here independent categorical distributions
    per position, the crudest prior, which :meth:`sample` draws from.

    Args:
        shape: shape of a data point.
        positions: :math:`M`, tokens per data point.
        codes: :math:`K`, codebook size.
        code_dim: dimension of a code.
        hidden: width of the MLPs.
        depth: hidden layers of the MLPs.
        commitment: :math:`\beta_c`.
    """

    def __init__(self, shape: Sequence[int], *, positions: int = 4, codes: int = 32,
                 code_dim: int = 4, hidden: int = 256, depth: int = 2,
                 commitment: float = 0.25) -> None:
        super().__init__()
        if isinstance(shape, int) or not isinstance(shape, Sequence) or not shape:
            raise TypeError(f"shape must be a non-empty sequence of ints, got {describe(shape)}")
        self.shape = tuple(check_int("shape entry", s) for s in shape)
        self.data_dim = math.prod(self.shape)
        self.positions = check_int("positions", positions)
        self.commitment = check_nonnegative("commitment", commitment)
        self.quantizer = VectorQuantizer(codes, code_dim)
        width = self.positions * code_dim
        self.encoder = MLP(self.data_dim, width, hidden=hidden, depth=depth)
        self.decoder = MLP(width, self.data_dim, hidden=hidden, depth=depth)
        self.register_buffer("prior_logits", torch.zeros(self.positions, codes))

    def _flat(self, x: object) -> Tensor:
        x = check_float_tensor("x", x)
        if x.ndim != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape or not len(x):
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.shape))}) "
                             f"with B >= 1, got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.data_dim)

    def _z_e(self, x: Tensor) -> Tensor:
        xf = self._flat(x)
        return self.encoder(xf).reshape(xf.shape[0], self.positions, -1)  # (B, M, d)

    @torch.no_grad()
    def init_codebook(self, x: Tensor, *, generator: torch.Generator | None = None) -> None:
        r"""Put the codes on encoder outputs of data ``x`` chosen by k-means++ (a common
        remedy against codes that are never used)."""
        z = self._z_e(x).reshape(-1, self.quantizer.code_dim)
        self.quantizer.codebook.copy_(kmeans_plusplus(z, self.quantizer.codes,
                                                      generator=check_generator(generator)))

    def encode(self, x: Tensor) -> Tensor:
        r"""The tokens of ``x`` ``(B, *D)``: int64 ``(B, M)``."""
        return self.quantizer.nearest(self._z_e(x))

    def decode(self, indices: Tensor) -> Tensor:
        r"""Decode tokens ``(B, M)`` to data ``(B, *D)``."""
        if not isinstance(indices, Tensor) or indices.dtype != torch.int64 or \
                indices.ndim != 2 or indices.shape[1] != self.positions:
            raise ValueError(f"indices must be an int64 tensor (B, {self.positions}), got "
                             f"{describe(indices)}")
        e = self.quantizer.codebook[indices].reshape(indices.shape[0], -1)
        return self.decoder(e).reshape(indices.shape[0], *self.shape)

    def reconstruct(self, x: Tensor) -> Tensor:
        r"""Encode, quantise and decode ``x`` ``(B, *D)``."""
        return self.decode(self.encode(x))

    def loss(self, x: Tensor) -> Tensor:
        r"""The VQ-VAE loss of eq. ``eq-vae-vq`` on a batch ``(B, *D)``, a scalar."""
        xf = self._flat(x)
        z_q, _, codebook_loss, commitment_loss = self.quantizer(self._z_e(x))
        x_hat = self.decoder(z_q.reshape(xf.shape[0], -1))
        distortion = (xf - x_hat).square().sum(1).mean()
        return distortion + codebook_loss + self.commitment * commitment_loss

    @torch.no_grad()
    def fit_prior(self, x: Tensor, *, smoothing: float = 1.0) -> Tensor:
        r"""Fit independent categorical priors over the tokens of each position to the
        tokens of ``x`` (counts plus ``smoothing``); returns the usage of each code,
        shape ``(K,)``, a distribution."""
        smoothing = check_nonnegative("smoothing", smoothing)
        idx = self.encode(x)  # (B, M)
        counts = F.one_hot(idx, self.quantizer.codes).sum(0).to(self.prior_logits.dtype)
        self.prior_logits.copy_((counts + smoothing).log())
        usage = counts.sum(0)
        return usage / usage.sum()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` samples ``(n, *D)``: tokens from the fitted prior, then decoded."""
        n = check_int("n", n)
        generator = check_generator(generator)
        probs = torch.softmax(self.prior_logits, dim=1)  # (M, K)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator).T  # (n, M)
        return self.decode(idx.contiguous())


@torch.no_grad()
def restart_dead_codes(vq: nn.Module, x: Tensor, *,
                       generator: torch.Generator | None = None) -> int:
    r"""Move every code of a :class:`VQVAE` that no vector of ``x`` uses to an
    encoder output of ``x`` drawn at random (without replacement): the usual remedy against
    codebook collapse (dead codes get no gradient from the codebook loss and never move),
    called every few hundred steps during training (e.g. from the ``callback`` of
    :func:`gmbook.train.fit`).

    Args:
        vq: the VQ-VAE.
        x: data ``(B, *D)`` (windows for a series tokenizer), at least as many encoder outputs
            as dead codes.
        generator: source of randomness.

    Returns:
        The number of codes restarted.
    """
    if not hasattr(vq, "quantizer") or not hasattr(vq, "_z_e"):
        raise TypeError(f"vq must be a gmbook.vae.VQVAE, got {type(vq).__name__}")
    generator = check_generator(generator)
    z = vq._z_e(x).reshape(-1, vq.quantizer.code_dim)  # (N, d)
    used = torch.bincount(vq.quantizer.nearest(z).flatten(), minlength=vq.quantizer.codes) > 0
    dead = torch.nonzero(~used).flatten()
    if len(dead):
        if len(dead) > z.shape[0]:
            raise ValueError(f"x gives {z.shape[0]} encoder outputs for {len(dead)} dead codes")
        pick = torch.randperm(z.shape[0], generator=generator, device="cpu")[:len(dead)]
        vq.quantizer.codebook[dead] = z[pick.to(z.device)]
    return len(dead)
