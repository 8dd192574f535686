r"""Generative adversarial networks: chapter ``book/beyond/gans.md``.

A GAN (Goodfellow et al., 2014) trains a generator :math:`G_\theta` that maps latent noise
:math:`z \sim \mathcal N(0, I)` to data space against a discriminator (or critic)
:math:`D_\psi` that tells data from generated points. The model has no density: it is
judged by its samples only. This module holds, in the order of the chapter:

- **the game and its optimum**: the discriminator's cross-entropy :func:`d_loss_bce`
  (the value :math:`V(D, G)` of eq. ``eq-gan-value`` with its sign flipped), the
  saturating and non-saturating generator losses :func:`g_loss_saturating` and
  :func:`g_loss_nonsaturating` (eqs. ``eq-gan-saturating``, ``eq-gan-nonsaturating``), the
  optimal discriminator of two known densities :func:`optimal_discriminator`
  (eq. ``eq-gan-optimal-d``), the value at the optimum :func:`gan_value` and the
  Jensen-Shannon divergence of 1-D densities by quadrature :func:`js_divergence`
  (eq. ``eq-gan-js``: :math:`V(D^*, G) = 2\,\mathrm{JS}(p, q) - \log 4`);
- **Wasserstein GANs and Lipschitz control**: the critic and generator losses of the WGAN
  :func:`critic_loss_wgan`, :func:`g_loss_wgan` (eq. ``eq-gan-wgan``), the hinge loss
  :func:`d_loss_hinge` (eq. ``eq-gan-hinge``), weight clipping :func:`clip_weights`
  (eq. ``eq-gan-clip``), the gradient penalty on interpolates :func:`gradient_penalty`
  (eq. ``eq-gan-gp``), the R1 penalty :func:`r1_penalty` (eq. ``eq-gan-r1``), and spectral
  normalization: :func:`power_iteration` (eq. ``eq-gan-power-iteration``), the layer
  :class:`SNLinear` with its persistent vector :math:`u` (eq. ``eq-gan-sn``) and
  :func:`spectral_norm`, which puts it into a network;
- **the Dirac-GAN** (Mescheder, Geiger & Nowozin, 2018): a generator :math:`\delta_\theta`,
  data :math:`\delta_0` and a linear discriminator :math:`D_\psi(x) = \psi x`. Its vector
  field :func:`dirac_field` (eq. ``eq-gan-dirac-field``), Jacobian at the equilibrium
  :func:`dirac_jacobian` and the eigenvalues of the continuous, simultaneous and alternating
  dynamics :func:`dirac_eigenvalues` (eqs. ``eq-gan-dirac-jacobian``,
  ``eq-gan-dirac-updates``), the largest stable step :func:`dirac_max_step`, and the
  iterates :func:`dirac_trajectory`;
- **the model**: :class:`GAN` (generator, discriminator, loss, penalties), trained by
  :func:`train_gan` (alternating updates, ``n_critic`` critic steps per generator step,
  Adam with the betas GANs use, lazy regularization, a linear learning-rate decay, an
  optional :class:`gmbook.train.EMA` of the generator, checkpoints (:class:`Checkpoint`)
  for a training-step slider), a two-network builder :func:`mlp_gan`, and the evaluation
  of mixture toys :func:`mode_coverage` (modes covered and the fraction of samples within
  3 standard deviations of a mode).

References: Goodfellow et al. (2014), *Generative adversarial nets*; Arjovsky, Chintala &
Bottou (2017), *Wasserstein generative adversarial networks*; Gulrajani et al. (2017),
*Improved training of Wasserstein GANs*; Miyato et al. (2018), *Spectral normalization for
generative adversarial networks*; Lim & Ye (2017), *Geometric GAN*; Mescheder, Geiger &
Nowozin (2018), *Which training methods for GANs do actually converge?*; Karras et al.
(2020), *Analyzing and improving the image quality of StyleGAN* (lazy regularization).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gmbook._checks import (check_bool, check_float_tensor, check_generator, check_int,
                            check_nonnegative, check_points, check_positive, check_real,
                            check_shape, describe)
from gmbook._random import rand, randn
from gmbook.nets import MLP
from gmbook.train import EMA, _batch_source, _progress_bar

__all__ = [
    "GAN",
    "GAN_LOSSES",
    "Checkpoint",
    "GANHistory",
    "ModeCoverage",
    "SNLinear",
    "clip_weights",
    "critic_loss_wgan",
    "d_loss_bce",
    "d_loss_hinge",
    "dirac_eigenvalues",
    "dirac_field",
    "dirac_jacobian",
    "dirac_max_step",
    "dirac_trajectory",
    "g_loss_nonsaturating",
    "g_loss_saturating",
    "g_loss_wgan",
    "gan_value",
    "gradient_penalty",
    "js_divergence",
    "mlp_gan",
    "mode_coverage",
    "optimal_discriminator",
    "power_iteration",
    "r1_penalty",
    "spectral_norm",
    "train_gan",
]

GAN_LOSSES = ("nonsaturating", "saturating", "wgan", "hinge")
"""The losses of :class:`GAN`: the discriminator's and the generator's of each family."""


def _logits(name: str, x: object) -> Tensor:
    x = check_float_tensor(name, x)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] != 1) or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B,) or (B, 1) with B >= 1, "
                         f"got {tuple(x.shape)}")
    return x.reshape(-1)


# --------------------------------------------------------------------------- the game


def d_loss_bce(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""The discriminator's binary cross-entropy, :math:`-V(D, G)` of eq. ``eq-gan-value``:

    .. math::

        -\mathbb E_{p}[\log D(x)] - \mathbb E_{q}[\log(1 - D(\tilde x))], \qquad
        D = \operatorname{sigmoid}(\ell),

    computed from the logits :math:`\ell` as
    :math:`\operatorname{softplus}(-\ell_{\mathrm{r}}) + \operatorname{softplus}(\ell_{\mathrm{f}})`
    on data (r) and samples (f), stable for large logits. Its minimum over :math:`D` is
    :math:`\log 4 - 2\,\mathrm{JS}(p, q)` (eq. ``eq-gan-js``).

    Args:
        real_logits: :math:`\ell(x)` on data, shape ``(B,)`` or ``(B, 1)``.
        fake_logits: :math:`\ell(\tilde x)` on generated points, shape ``(M,)`` or ``(M, 1)``.

    Returns:
        The scalar loss (means over each batch).
    """
    r, f = _logits("real_logits", real_logits), _logits("fake_logits", fake_logits)
    return F.softplus(-r).mean() + F.softplus(f).mean()


def gan_value(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""The value of the game, eq. ``eq-gan-value``,
    :math:`V(D, G) = \mathbb E_p[\log D(x)] + \mathbb E_q[\log(1 - D(\tilde x))]`, by Monte
    Carlo from the logits (the negative of :func:`d_loss_bce`). At the optimal discriminator
    it is :math:`2\,\mathrm{JS}(p, q) - \log 4` (eq. ``eq-gan-js``)."""
    return -d_loss_bce(real_logits, fake_logits)


def g_loss_saturating(fake_logits: Tensor) -> Tensor:
    r"""The generator's loss of the minimax game, eq. ``eq-gan-saturating``:
    :math:`\mathbb E_q[\log(1 - D(\tilde x))] = -\mathbb E_q[\operatorname{softplus}(\ell)]`,
    minimised by the generator. Its gradient vanishes where the discriminator confidently
    rejects the samples (:math:`D \to 0`): it *saturates*.

    Args:
        fake_logits: :math:`\ell(G(z))`, shape ``(M,)`` or ``(M, 1)``.
    """
    return -F.softplus(_logits("fake_logits", fake_logits)).mean()


def g_loss_nonsaturating(fake_logits: Tensor) -> Tensor:
    r"""The non-saturating generator loss, eq. ``eq-gan-nonsaturating``:
    :math:`-\mathbb E_q[\log D(\tilde x)] = \mathbb E_q[\operatorname{softplus}(-\ell)]`,
    which pushes each sample in the same direction as :func:`g_loss_saturating` (with weight
    :math:`1 - D` instead of :math:`D`) and shares the game's equilibrium :math:`q = p`,
    :math:`D \equiv 1/2`, but has strong gradients where :math:`D \to 0` (Goodfellow et al.,
    2014, Sec. 3).

    Args:
        fake_logits: :math:`\ell(G(z))`, shape ``(M,)`` or ``(M, 1)``.
    """
    return F.softplus(-_logits("fake_logits", fake_logits)).mean()


def optimal_discriminator(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""The optimal discriminator of data density :math:`p` against generator density
    :math:`q`, eq. ``eq-gan-optimal-d``:

    .. math::

        D^*(x) = \frac{p(x)}{p(x) + q(x)} = \operatorname{sigmoid}\big(\log p(x) - \log q(x)\big),

    the pointwise maximiser of :math:`p \log D + q \log(1 - D)`. Its logit is the log
    density ratio :math:`\log p - \log q`.

    Args:
        log_p, log_q: the two log-densities at the same points, equal shapes ``(*B,)``.

    Returns:
        :math:`D^*` at the points, shape ``(*B,)``, in :math:`[0, 1]`.
    """
    log_p, log_q = check_float_tensor("log_p", log_p), check_float_tensor("log_q", log_q)
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p and log_q must have the same shape, got {tuple(log_p.shape)} "
                         f"and {tuple(log_q.shape)}")
    return torch.sigmoid(log_p - log_q)


def js_divergence(log_p: Callable[[Tensor], Tensor], log_q: Callable[[Tensor], Tensor],
                  low: float, high: float, *, nodes: int = 20_001) -> float:
    r"""The Jensen-Shannon divergence of two 1-D densities by quadrature, eq. ``eq-gan-js``:

    .. math::

        \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p \,\|\, m) + \tfrac12 \mathrm{KL}(q \,\|\, m),
        \qquad m = \tfrac12 (p + q),

    in nats, between 0 (equal densities) and :math:`\log 2` (disjoint supports). Composite
    Simpson's rule on ``nodes`` equally spaced points of ``[low, high]`` in float64, with
    :math:`0 \log 0 = 0`; the interval must hold all but a negligible mass of both.

    Args:
        log_p, log_q: callables mapping points ``(N,)`` (float64) to log-densities ``(N,)``.
        low, high: the interval of integration, ``low < high``.
        nodes: an odd number of nodes, at least 3.

    Returns:
        :math:`\mathrm{JS}(p, q)`, a float.
    """
    low, high = check_real("low", low), check_real("high", high)
    if not low < high:
        raise ValueError(f"need low < high, got {low} and {high}")
    nodes = check_int("nodes", nodes, 3)
    if nodes % 2 == 0:
        raise ValueError(f"nodes must be odd (Simpson's rule), got {nodes}")
    for name, f in (("log_p", log_p), ("log_q", log_q)):
        if not callable(f):
            raise TypeError(f"{name} must be callable, got {describe(f)}")
    x = torch.linspace(low, high, nodes, dtype=torch.float64)
    lp, lq = log_p(x).to(torch.float64), log_q(x).to(torch.float64)
    lm = torch.logaddexp(lp, lq) - math.log(2)
    zero = torch.zeros_like(x)
    integrand = 0.5 * (torch.where(lp > -math.inf, lp.exp() * (lp - lm), zero)
                       + torch.where(lq > -math.inf, lq.exp() * (lq - lm), zero))
    w = torch.ones(nodes, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return float((w * integrand).sum() * (high - low) / (nodes - 1) / 3)


# --------------------------------------------------------------------------- Wasserstein


def critic_loss_wgan(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    r"""The WGAN critic's loss, eq. ``eq-gan-wgan``:
    :math:`\mathbb E_q[f(\tilde x)] - \mathbb E_p[f(x)]`. Minimised over 1-Lipschitz critics
    :math:`f`, it is :math:`-W_1(p, q)` by Kantorovich-Rubinstein duality (Arjovsky et al.,
    2017); the Lipschitz constraint comes from :func:`clip_weights`,
    :func:`gradient_penalty` or :func:`spectral_norm`.

    Args:
        real_scores, fake_scores: critic outputs, shapes ``(B,)``/``(B, 1)`` and
            ``(M,)``/``(M, 1)``.
    """
    return _logits("fake_scores", fake_scores).mean() - _logits("real_scores", real_scores).mean()


def g_loss_wgan(fake_scores: Tensor) -> Tensor:
    r"""The generator's loss of the WGAN (and of the hinge GAN), eq. ``eq-gan-wgan``:
    :math:`-\mathbb E_q[f(\tilde x)]`."""
    return -_logits("fake_scores", fake_scores).mean()


def d_loss_hinge(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    r"""The hinge loss of the discriminator, eq. ``eq-gan-hinge`` (Lim & Ye, 2017; Miyato et
    al., 2018): :math:`\mathbb E_p[\max(0, 1 - f(x))] + \mathbb E_q[\max(0, 1 + f(\tilde
    x))]`; the generator minimises :func:`g_loss_wgan`.

    Args:
        real_scores, fake_scores: discriminator outputs, shapes ``(B,)``/``(B, 1)`` and
            ``(M,)``/``(M, 1)``.
    """
    r, f = _logits("real_scores", real_scores), _logits("fake_scores", fake_scores)
    return F.relu(1 - r).mean() + F.relu(1 + f).mean()


def _input_gradient(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """:math:`\\nabla_x f(x)` row by row, kept in the graph (for a penalty to train on)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = critic(x)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1)  # (B, prod D)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *,
                     generator: torch.Generator | None = None) -> Tensor:
    r"""The gradient penalty of WGAN-GP (Gulrajani et al., 2017), eq. ``eq-gan-gp``:

    .. math::

        \mathbb E_{\hat x}\big[(\|\nabla_{\hat x} f(\hat x)\|_2 - 1)^2\big], \qquad
        \hat x = \epsilon x + (1 - \epsilon)\tilde x,\ \epsilon \sim \mathcal U(0, 1),

    on random interpolates of paired data and generated points. For a linear critic
    :math:`f(x) = w^\top x + b` it is :math:`(\|w\| - 1)^2` exactly.

    Args:
        critic: ``(B, *D) -> (B,)`` or ``(B, 1)``.
        real, fake: batches of the same shape ``(B, *D)``.
        generator: source of :math:`\epsilon`.

    Returns:
        The scalar penalty, differentiable in the critic's parameters.
    """
    real, fake = check_float_tensor("real", real), check_float_tensor("fake", fake)
    if real.shape != fake.shape or real.ndim < 2:
        raise ValueError(f"real and fake must have the same shape (B, *D), got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")
    eps = rand((real.shape[0],) + (1,) * (real.ndim - 1), like=real,
               generator=check_generator(generator))
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()  # (B, *D)
    grad = _input_gradient(critic, x_hat)
    return ((grad.norm(dim=1) - 1) ** 2).mean()


def r1_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    r"""The R1 penalty (Mescheder et al., 2018), eq. ``eq-gan-r1``:
    :math:`\mathbb E_p\big[\|\nabla_x D(x)\|_2^2\big]` on data only (the loss adds it with
    weight :math:`\gamma / 2`). It vanishes at the equilibrium :math:`q = p`,
    :math:`D` constant, which it makes locally attractive.

    Args:
        discriminator: ``(B, *D) -> (B,)`` or ``(B, 1)`` (logits).
        real: data, shape ``(B, *D)``.

    Returns:
        The scalar penalty, differentiable in the discriminator's parameters.
    """
    real = check_float_tensor("real", real)
    if real.ndim < 2:
        raise ValueError(f"real must have shape (B, *D), got {tuple(real.shape)}")
    return _input_gradient(discriminator, real).square().sum(1).mean()


@torch.no_grad()
def clip_weights(module: nn.Module, c: float) -> None:
    r"""Clip every parameter of ``module`` to :math:`[-c, c]` in place, eq. ``eq-gan-clip``:
    the original WGAN's crude way to keep the critic Lipschitz (Arjovsky et al., 2017,
    Algorithm 1, :math:`c = 0.01`)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {describe(module)}")
    c = check_positive("c", c)
    for p in module.parameters():
        p.clamp_(-c, c)


# --------------------------------------------------------------------------- spectral norm


def power_iteration(weight: Tensor, u: Tensor, iterations: int = 1
                    ) -> tuple[Tensor, Tensor, Tensor]:
    r"""Power iteration for the largest singular value of a matrix, eq.
    ``eq-gan-power-iteration``:

    .. math::

        v \leftarrow \frac{W^\top u}{\|W^\top u\|}, \qquad
        u \leftarrow \frac{W v}{\|W v\|}, \qquad \hat\sigma = u^\top W v = \|W v\|,

    repeated ``iterations`` times. :math:`\hat\sigma \le \sigma_1` always, and if :math:`u`
    starts with a component along the top left singular vector the error shrinks
    geometrically: :math:`\sigma_1^2 - \hat\sigma_k^2 \propto (\sigma_2/\sigma_1)^{4k - 2}`
    after :math:`k` iterations. Spectral normalization keeps :math:`u` from one training step
    to the next, so that one iteration per step tracks a slowly changing :math:`W`
    (Miyato et al., 2018, Algorithm 1).

    Args:
        weight: :math:`W`, shape ``(m, n)``.
        u: the starting vector, shape ``(m,)`` (need not be normalized, must not be 0).
        iterations: :math:`k \ge 1`.

    Returns:
        ``(sigma, u, v)``: :math:`\hat\sigma` (0-dim), and the unit vectors of shapes
        ``(m,)`` and ``(n,)``. Computed without gradients: differentiate
        ``u @ weight @ v`` for a :math:`\hat\sigma` that carries them (as :class:`SNLinear`
        does).
    """
    weight = check_float_tensor("weight", weight)
    if weight.ndim != 2:
        raise ValueError(f"weight must have shape (m, n), got {tuple(weight.shape)}")
    u = check_float_tensor("u", u)
    if u.shape != weight.shape[:1]:
        raise ValueError(f"u must have shape ({weight.shape[0]},), got {tuple(u.shape)}")
    iterations = check_int("iterations", iterations)
    with torch.no_grad():
        w = weight.detach()
        u = F.normalize(u.detach(), dim=0)
        for _ in range(iterations):
            v = F.normalize(w.t() @ u, dim=0)  # (n,)
            u = F.normalize(w @ v, dim=0)  # (m,)
        return u @ w @ v, u, v


class SNLinear(nn.Module):
    r"""A linear layer with spectral normalization, eq. ``eq-gan-sn`` (Miyato et al., 2018):

    .. math::

        y = \frac{W}{\hat\sigma(W)}\, x + b, \qquad \hat\sigma(W) = u^\top W v,

    with :math:`u, v` from :func:`power_iteration`. In training mode each forward pass
    runs ``iterations`` power iterations from the stored :math:`u` (a buffer, persistent
    across steps) and stores the new :math:`u, v`; in eval mode it reuses them. The gradient
    flows through :math:`W` in :math:`u^\top W v`, not through :math:`u, v`. The normalized
    map has spectral norm :math:`\sigma_1(W) / \hat\sigma \ge 1`, tending to 1 as the
    iteration converges; with 1-Lipschitz activations (ReLU, leaky ReLU) a network of such
    layers is then about 1-Lipschitz.

    Args:
        in_features, out_features: as :class:`torch.nn.Linear`.
        bias: add a bias.
        iterations: power iterations per training forward pass.
        generator: source of the random starting :math:`u`.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 iterations: int = 1, generator: torch.Generator | None = None) -> None:
        super().__init__()
        in_features, out_features = check_int("in_features", in_features), \
            check_int("out_features", out_features)
        self.iterations = check_int("iterations", iterations)
        check_bool("bias", bias)
        linear = nn.Linear(in_features, out_features, bias=bias)
        self.weight = linear.weight  # (out, in)
        self.bias = linear.bias
        u = randn((out_features,), dtype=self.weight.dtype, generator=check_generator(generator))
        self.register_buffer("u", F.normalize(u, dim=0))
        self.register_buffer("v", torch.zeros(in_features, dtype=self.weight.dtype))
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, iterations: int = 1,
                    generator: torch.Generator | None = None) -> SNLinear:
        """An :class:`SNLinear` with the weights of ``linear`` (copied), on its device."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {describe(linear)}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    iterations=iterations, generator=generator)
        layer = layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def sigma(self) -> Tensor:
        r""":math:`\hat\sigma = u^\top W v` with the stored vectors (differentiable in
        :math:`W`); before the first training pass, one power iteration is run."""
        if not bool(self.v.any()):
            self._iterate(1)
        # clones: a later training pass updates the buffers in place, and this graph must
        # keep the vectors it was computed with
        return self.u.clone() @ self.weight @ self.v.clone()

    def _iterate(self, k: int) -> None:
        _, u, v = power_iteration(self.weight, self.u, k)
        self.u.copy_(u)
        self.v.copy_(v)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self._iterate(self.iterations)
        return F.linear(x, self.weight / self.sigma(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, iterations={self.iterations}")


def spectral_norm(module: nn.Module, *, iterations: int = 1,
                  generator: torch.Generator | None = None) -> nn.Module:
    r"""Replace every :class:`torch.nn.Linear` inside ``module`` by an :class:`SNLinear`
    with the same weights (eq. ``eq-gan-sn``), in place; returns ``module`` (a bare
    ``nn.Linear`` is returned converted).

    Args:
        module: e.g. a :class:`gmbook.nets.MLP` discriminator.
        iterations: power iterations per training forward pass of each layer.
        generator: source of the starting vectors :math:`u`.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {describe(module)}")
    check_generator(generator)
    if isinstance(module, nn.Linear):
        return SNLinear.from_linear(module, iterations=iterations, generator=generator)
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, SNLinear.from_linear(child, iterations=iterations,
                                                       generator=generator))
        else:
            spectral_norm(child, iterations=iterations, generator=generator)
    return module


# --------------------------------------------------------------------------- Dirac-GAN


_DIRAC_LOSSES = ("gan", "wgan")


def _dirac_slope(loss: str) -> float:
    """f'(0) of the Dirac-GAN's f: 1/2 for f(t) = -log(1 + e^{-t}), 1 for f(t) = t."""
    if loss not in _DIRAC_LOSSES:
        raise ValueError(f"loss must be one of {_DIRAC_LOSSES}, got {loss!r}")
    return 0.5 if loss == "gan" else 1.0


def dirac_field(theta: Tensor, psi: Tensor, *, loss: str = "gan", gamma: float = 0.0
                ) -> tuple[Tensor, Tensor]:
    r"""The gradient vector field of the Dirac-GAN, eq. ``eq-gan-dirac-field``
    (Mescheder et al., 2018, Sec. 2.2).

    Generator :math:`p_\theta = \delta_\theta`, data :math:`\delta_0`, discriminator
    :math:`D_\psi(x) = \psi x`, and the game
    :math:`L(\theta, \psi) = f(\psi\theta) + f(0)`, maximised by the discriminator and
    minimised by the generator, with :math:`f(t) = -\log(1 + e^{-t})` (``"gan"``) or
    :math:`f(t) = t` (``"wgan"``). The sign follows Mescheder et al.: the logit
    :math:`\psi x` scores a point as *generated*; in the convention of ``eq-gan-value`` and of
    :func:`d_loss_bce` (a logit that scores data) the logit is :math:`-\psi x`, which flips
    the sign of :math:`\psi` and changes no eigenvalue. With the R1 penalty
    :math:`\tfrac\gamma2 \psi^2` on the discriminator (its gradient at the data point is
    :math:`\psi`),

    .. math::

        v(\theta, \psi) = \big(-\psi f'(\psi\theta),\; \theta f'(\psi\theta) - \gamma\psi\big).

    The equilibrium is :math:`(0, 0)`.

    Args:
        theta, psi: tensors of one shape (any), the generator's and the discriminator's
            parameters.
        loss: ``"gan"`` or ``"wgan"``.
        gamma: the R1 weight :math:`\gamma \ge 0`.

    Returns:
        ``(v_theta, v_psi)``, each of the shape of ``theta``.
    """
    theta, psi = check_float_tensor("theta", theta), check_float_tensor("psi", psi)
    if theta.shape != psi.shape:
        raise ValueError(f"theta and psi must have the same shape, got {tuple(theta.shape)} "
                         f"and {tuple(psi.shape)}")
    _dirac_slope(loss)
    gamma = check_nonnegative("gamma", gamma)
    t = psi * theta
    fprime = torch.sigmoid(-t) if loss == "gan" else torch.ones_like(t)
    return -psi * fprime, theta * fprime - gamma * psi


def dirac_jacobian(*, loss: str = "gan", gamma: float = 0.0) -> Tensor:
    r"""The Jacobian of :func:`dirac_field` at the equilibrium, eq. ``eq-gan-dirac-jacobian``:

    .. math::

        J = \begin{pmatrix} 0 & -f'(0) \\ f'(0) & -\gamma \end{pmatrix},

    with :math:`f'(0) = 1/2` (``"gan"``) or 1 (``"wgan"``); float64, shape ``(2, 2)``, rows
    :math:`(v_\theta, v_\psi)`, columns :math:`(\theta, \psi)`."""
    a, gamma = _dirac_slope(loss), check_nonnegative("gamma", gamma)
    return torch.tensor([[0.0, -a], [a, -gamma]], dtype=torch.float64)


def dirac_eigenvalues(*, loss: str = "gan", gamma: float = 0.0, scheme: str = "continuous",
                      h: float | None = None) -> Tensor:
    r"""Eigenvalues of the linearised Dirac-GAN dynamics at the equilibrium, in closed
    form, eq. ``eq-gan-dirac-updates``; with :math:`a = f'(0)`:

    - ``"continuous"`` (the gradient flow :math:`\dot w = v(w)`): the eigenvalues of
      :func:`dirac_jacobian`, :math:`\lambda_\pm = \tfrac12\big(-\gamma \pm
      \sqrt{\gamma^2 - 4a^2}\big)`; purely imaginary :math:`\pm i a` without R1 (the flow
      circles the equilibrium), negative real parts with it;
    - ``"simultaneous"`` (both players step from the same point, step :math:`h`): the
      update :math:`w \leftarrow w + h\, v(w)` has eigenvalues :math:`1 + h\lambda_\pm`,
      of modulus :math:`\sqrt{1 + h^2 a^2} > 1` without R1: it diverges for every :math:`h`;
    - ``"alternating"`` (the generator steps, then the discriminator from the new
      :math:`\theta`): the roots of :math:`\mu^2 - (2 - h\gamma - h^2a^2)\mu + (1 - h\gamma)
      = 0`. Without R1 their product is 1: for :math:`ha < 2` both lie on the unit circle,
      and the iterates circle forever, neither converging nor diverging.

    The iteration converges locally if and only if both have modulus below 1.

    Args:
        loss: ``"gan"`` or ``"wgan"``.
        gamma: the R1 weight :math:`\gamma \ge 0`.
        scheme: ``"continuous"``, ``"simultaneous"`` or ``"alternating"``.
        h: the step size (required for the two discrete schemes).

    Returns:
        The two eigenvalues, complex128, shape ``(2,)`` (the ``+`` root first).
    """
    a, gamma = _dirac_slope(loss), check_nonnegative("gamma", gamma)
    if scheme not in ("continuous", "simultaneous", "alternating"):
        raise ValueError(f"scheme must be 'continuous', 'simultaneous' or 'alternating', "
                         f"got {scheme!r}")
    if scheme != "continuous":
        if h is None:
            raise ValueError(f"the {scheme} scheme needs a step size h")
        h = check_positive("h", h)
    if scheme == "alternating":
        tr, det = 2 - h * gamma - h**2 * a**2, 1 - h * gamma
        root = complex(tr**2 - 4 * det) ** 0.5
        return torch.tensor([(tr + root) / 2, (tr - root) / 2], dtype=torch.complex128)
    root = complex(gamma**2 - 4 * a**2) ** 0.5
    lam = torch.tensor([(-gamma + root) / 2, (-gamma - root) / 2], dtype=torch.complex128)
    return lam if scheme == "continuous" else 1 + h * lam


def dirac_max_step(*, loss: str = "gan", gamma: float) -> float:
    r"""The largest step :math:`h` for which simultaneous gradient play with R1 converges
    locally on the Dirac-GAN: :math:`|1 + h\lambda| < 1` for both eigenvalues of
    :func:`dirac_eigenvalues` iff :math:`h < 2\,\mathrm{Re}(-\lambda) / |\lambda|^2`, which is
    :math:`\gamma / a^2` for :math:`\gamma < 2a` (complex :math:`\lambda`, of modulus
    :math:`a`) and :math:`2 / |\lambda_-| = 4 / (\gamma + \sqrt{\gamma^2 - 4a^2})`
    otherwise. Without R1 (:math:`\gamma = 0`) it is 0: no step converges."""
    a, gamma = _dirac_slope(loss), check_nonnegative("gamma", gamma)
    if gamma < 2 * a:
        return gamma / a**2
    return 4 / (gamma + math.sqrt(gamma**2 - 4 * a**2))


def dirac_trajectory(theta0: float, psi0: float, *, h: float, steps: int,
                     scheme: str = "simultaneous", loss: str = "gan", gamma: float = 0.0
                     ) -> Tensor:
    r"""The iterates of gradient play on the Dirac-GAN (the nonlinear updates, not their
    linearisation), eq. ``eq-gan-dirac-updates``.

    ``"simultaneous"``: :math:`w_{k+1} = w_k + h\, v(w_k)`; ``"alternating"``: the generator
    steps first, :math:`\theta_{k+1} = \theta_k + h\, v_\theta(\theta_k, \psi_k)`, then the
    discriminator from the new point, :math:`\psi_{k+1} = \psi_k + h\, v_\psi(\theta_{k+1},
    \psi_k)` (:func:`dirac_field`).

    Args:
        theta0, psi0: the starting point.
        h: step size, ``> 0``.
        steps: number of updates.
        scheme: ``"simultaneous"`` or ``"alternating"``.
        loss, gamma: as in :func:`dirac_field`.

    Returns:
        The iterates :math:`(\theta_k, \psi_k)`, float64, shape ``(steps + 1, 2)``.
    """
    h, steps = check_positive("h", h), check_int("steps", steps, 0)
    if scheme not in ("simultaneous", "alternating"):
        raise ValueError(f"scheme must be 'simultaneous' or 'alternating', got {scheme!r}")
    theta = torch.tensor(check_real("theta0", theta0), dtype=torch.float64)
    psi = torch.tensor(check_real("psi0", psi0), dtype=torch.float64)
    out = [torch.stack([theta, psi])]
    for _ in range(steps):
        v_theta, v_psi = dirac_field(theta, psi, loss=loss, gamma=gamma)
        if scheme == "simultaneous":
            theta, psi = theta + h * v_theta, psi + h * v_psi
        else:
            theta = theta + h * v_theta
            psi = psi + h * dirac_field(theta, psi, loss=loss, gamma=gamma)[1]
        out.append(torch.stack([theta, psi]))
    return torch.stack(out)


# --------------------------------------------------------------------------- the model


class GAN(nn.Module):
    r"""A generative adversarial network: a generator, a discriminator and their losses.

    The generator maps latent noise :math:`z \sim \mathcal N(0, I_{d_z})` to points,
    :math:`\tilde x = G_\theta(z)` (:meth:`sample`: one network call per sample). The
    discriminator :math:`D_\psi` outputs a logit (a score for the WGAN and hinge losses).
    The losses (``loss``, one of :data:`GAN_LOSSES`):

    ====================  ===========================  ================================
    ``loss``              discriminator                generator
    ====================  ===========================  ================================
    ``"nonsaturating"``   :func:`d_loss_bce`           :func:`g_loss_nonsaturating`
    ``"saturating"``      :func:`d_loss_bce`           :func:`g_loss_saturating`
    ``"wgan"``            :func:`critic_loss_wgan`     :func:`g_loss_wgan`
    ``"hinge"``           :func:`d_loss_hinge`         :func:`g_loss_wgan`
    ====================  ===========================  ================================

    to which the discriminator's loss adds ``gp_weight`` times :func:`gradient_penalty`
    (WGAN-GP: ``loss="wgan", gp_weight=10``) and ``r1_weight / 2`` times
    :func:`r1_penalty` (:math:`\gamma/2` in eq. ``eq-gan-r1``). Spectral normalization is a
    property of the discriminator's layers (:func:`spectral_norm`, or ``mlp_gan(...,
    spectral=True)``), weight clipping a step of :func:`train_gan` (``clip``).

    Args:
        generator: ``(B, latent_dim) -> (B, *shape)``.
        discriminator: ``(B, *shape) -> (B, 1)`` or ``(B,)``.
        latent_dim: :math:`d_z`.
        shape: the shape of a point.
        loss: one of :data:`GAN_LOSSES`.
        gp_weight: weight of the gradient penalty, ``>= 0``.
        r1_weight: :math:`\gamma \ge 0` of the R1 penalty.

    Example:
        >>> gan = mlp_gan(latent_dim=4, hidden=16, depth=2)
        >>> x = torch.randn(8, 2)
        >>> gan.discriminator_loss(x).shape, gan.generator_loss(8).shape
        (torch.Size([]), torch.Size([]))
        >>> gan.sample(5).shape
        torch.Size([5, 2])
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, latent_dim: int,
                 shape: tuple[int, ...] = (2,), loss: str = "nonsaturating",
                 gp_weight: float = 0.0, r1_weight: float = 0.0) -> None:
        super().__init__()
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(net, nn.Module):
                raise TypeError(f"GAN: {name} must be an nn.Module, got {describe(net)}")
        if loss not in GAN_LOSSES:
            raise ValueError(f"GAN: loss must be one of {GAN_LOSSES}, got {loss!r}")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.shape = check_shape("GAN: shape", shape)
        self.loss_name = loss
        self.gp_weight = check_nonnegative("gp_weight", gp_weight)
        self.r1_weight = check_nonnegative("r1_weight", r1_weight)

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, shape={self.shape}, loss={self.loss_name!r}, "
                f"gp_weight={self.gp_weight}, r1_weight={self.r1_weight}")

    def _param(self) -> Tensor:
        return next(self.generator.parameters())

    def prior(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Latent noise :math:`z \sim \mathcal N(0, I)`, shape ``(n, latent_dim)``."""
        p = self._param()
        return randn((check_int("n", n), self.latent_dim), device=p.device, dtype=p.dtype,
                     generator=check_generator(generator))

    def forward(self, z: Tensor) -> Tensor:
        r""":math:`G_\theta(z)`: latents ``(B, latent_dim)`` to points ``(B, *shape)``."""
        z = check_points("z", z, self.latent_dim)
        return self.generator(z).reshape(z.shape[0], *self.shape)

    def score(self, x: Tensor) -> Tensor:
        r"""The discriminator's output :math:`D_\psi(x)` (a logit or a critic score),
        shape ``(B,)``, for points ``(B, *shape)``."""
        x = check_float_tensor("x", x)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, *{self.shape}), got {tuple(x.shape)}")
        return self.discriminator(x).reshape(x.shape[0])

    @torch.no_grad()
    def sample(self, n: int, *, z: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` samples :math:`G_\theta(z)`, one network call each, shape ``(n, *shape)``.

        Args:
            n: number of samples.
            z: the latents ``(n, latent_dim)``, else fresh :math:`\mathcal N(0, I)` draws.
            generator: source of the latents.
        """
        n = check_int("n", n)
        if z is None:
            z = self.prior(n, generator=generator)
        elif not isinstance(z, Tensor) or z.shape != (n, self.latent_dim):
            raise ValueError(f"z must have shape ({n}, {self.latent_dim}), got {describe(z)}")
        return self(z)

    def discriminator_loss(self, x: Tensor, *, generator: torch.Generator | None = None,
                           penalty_scale: float = 1.0) -> Tensor:
        r"""The discriminator's loss on a data batch ``x`` ``(B, *shape)`` against ``B``
        fresh generated points (the generator is not trained by it: its output is
        detached), both scored in one call of the discriminator on the ``2B`` points (a
        discriminator with batch statistics would mix the two), with the penalties of the
        model multiplied by ``penalty_scale`` (0 leaves them out; :func:`train_gan` uses it
        for lazy regularization)."""
        x = check_float_tensor("x", x)
        penalty_scale = check_nonnegative("penalty_scale", penalty_scale)
        with torch.no_grad():
            fake = self(self.prior(x.shape[0], generator=generator))
        # one pass over data and samples together (half the calls of two passes; a
        # spectrally normalized layer then runs its power iteration once per update)
        scores = self.score(torch.cat([x, fake.to(x.dtype)]))  # (2B,)
        real_s, fake_s = scores[:x.shape[0]], scores[x.shape[0]:]
        if self.loss_name in ("nonsaturating", "saturating"):
            loss = d_loss_bce(real_s, fake_s)
        elif self.loss_name == "wgan":
            loss = critic_loss_wgan(real_s, fake_s)
        else:
            loss = d_loss_hinge(real_s, fake_s)
        if self.gp_weight > 0 and penalty_scale > 0:
            loss = loss + penalty_scale * self.gp_weight * gradient_penalty(
                self.score, x, fake, generator=generator)
        if self.r1_weight > 0 and penalty_scale > 0:
            loss = loss + penalty_scale * 0.5 * self.r1_weight * r1_penalty(self.score, x)
        return loss

    def generator_loss(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""The generator's loss on ``n`` fresh generated points (the gradient reaches the
        discriminator's parameters too: train only the generator's on it)."""
        fake_s = self.score(self(self.prior(n, generator=generator)))
        if self.loss_name == "nonsaturating":
            return g_loss_nonsaturating(fake_s)
        if self.loss_name == "saturating":
            return g_loss_saturating(fake_s)
        return g_loss_wgan(fake_s)


def mlp_gan(*, dim: int = 2, latent_dim: int = 8, hidden: int = 128, depth: int = 3,
            d_hidden: int | None = None, d_depth: int | None = None, loss: str = "nonsaturating",
            spectral: bool = False, gp_weight: float = 0.0, r1_weight: float = 0.0,
            tanh: bool = False, generator: torch.Generator | None = None) -> GAN:
    r"""A :class:`GAN` of two MLPs (:class:`gmbook.nets.MLP`) for ``dim``-dimensional points.

    The generator is ``MLP(latent_dim, dim, hidden=hidden, depth=depth)`` with ReLU; the
    discriminator ``MLP(dim, 1, hidden=d_hidden, depth=d_depth)`` with leaky ReLU (slope
    0.2, 1-Lipschitz, so that spectral normalization bounds its Lipschitz constant),
    spectrally normalized if ``spectral``. Weights are drawn from the global RNG (seed it,
    or build inside ``torch.random.fork_rng``); ``generator`` draws the spectral-norm
    vectors only.

    Args:
        dim: dimension of a point.
        latent_dim: :math:`d_z`.
        hidden, depth: the generator's width and number of hidden layers.
        d_hidden, d_depth: the discriminator's (default: the generator's).
        loss, gp_weight, r1_weight: as in :class:`GAN`.
        spectral: spectral normalization of every discriminator layer.
        tanh: end the generator with :math:`\tanh`, so that samples lie in
            :math:`(-1, 1)^{\text{dim}}`, for data scaled to :math:`[-1, 1]` such as
            :func:`gmbook.data.digits` (the output layer of DCGAN, Radford et al., 2016).
        generator: source of the spectral-norm starting vectors.
    """
    check_bool("spectral", spectral)
    check_bool("tanh", tanh)
    d_hidden = hidden if d_hidden is None else d_hidden
    d_depth = depth if d_depth is None else d_depth
    g_net: nn.Module = MLP(latent_dim, dim, hidden=hidden, depth=depth, activation=nn.ReLU)
    if tanh:
        g_net = nn.Sequential(g_net, nn.Tanh())
    d_net = MLP(dim, 1, hidden=d_hidden, depth=d_depth, activation=_LeakyReLU)
    if spectral:
        spectral_norm(d_net, generator=generator)
    return GAN(g_net, d_net, latent_dim=latent_dim, shape=(dim,), loss=loss,
               gp_weight=gp_weight, r1_weight=r1_weight)


class _LeakyReLU(nn.LeakyReLU):
    """Leaky ReLU of slope 0.2 (the MLP builds activations by calling a class)."""

    def __init__(self) -> None:
        super().__init__(0.2)


# --------------------------------------------------------------------------- training


@dataclasses.dataclass
class Checkpoint:
    r"""The two networks' weights after ``step`` generator updates (copies, on the CPU).

    Attributes:
        step: generator updates done (0 is the initialisation).
        generator: the generator's ``state_dict`` (the EMA's average if :func:`train_gan`
            had one).
        discriminator: the discriminator's ``state_dict`` (with the spectral-norm vectors).
    """

    step: int
    generator: dict[str, Tensor]
    discriminator: dict[str, Tensor]

    def load_into(self, gan: GAN) -> GAN:
        """Load both networks' weights into ``gan`` (returned), e.g. to draw the samples
        and discriminator contours of a slider position."""
        if not isinstance(gan, GAN):
            raise TypeError(f"gan must be a GAN, got {describe(gan)}")
        gan.generator.load_state_dict(self.generator)
        gan.discriminator.load_state_dict(self.discriminator)
        return gan


@dataclasses.dataclass(repr=False)
class GANHistory:
    r"""What :func:`train_gan` returns.

    Attributes:
        d_losses: the discriminator's loss of every critic update (``steps * n_critic``).
        g_losses: the generator's loss of every generator update (``steps``).
        steps: generator updates done.
        cpu_seconds: CPU time of the loop (``time.process_time``: all threads of this
            process), checkpoints included.
        checkpoints: the checkpoints asked for (:class:`Checkpoint`), in order of ``step``.
    """

    d_losses: list[float]
    g_losses: list[float]
    steps: int
    cpu_seconds: float
    checkpoints: list[Checkpoint] = dataclasses.field(default_factory=list)

    def __repr__(self) -> str:
        return (f"GANHistory(steps={self.steps}, checkpoints={len(self.checkpoints)}, "
                f"cpu_seconds={self.cpu_seconds:.2f})")


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _adam(params: list[Tensor], lr: float, betas: tuple[float, float]
          ) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per parameter where PyTorch has that for the device
    (about a third of the CPU time of the multi-tensor version for these small networks;
    the two differ in rounding only), else multi-tensor."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


def train_gan(gan: GAN, data: Callable[[int], Tensor] | Tensor, *, steps: int,
              batch_size: int = 256, lr: float = 2e-4, lr_d: float | None = None,
              betas: tuple[float, float] = (0.5, 0.999), n_critic: int = 1,
              schedule: str = "constant", lazy: int = 1, clip: float | None = None,
              ema: EMA | None = None,
              checkpoints: Iterable[int] = (), seed: int | None = None,
              generator: torch.Generator | None = None, progress: bool | None = None,
              callback: Callable[[int, float, float], None] | None = None) -> GANHistory:
    r"""Train a :class:`GAN` by alternating updates: the two-player counterpart of
    :func:`gmbook.train.fit`, with its conventions for ``data``, ``seed``, ``generator`` and
    ``progress``.

    Each of the ``steps`` generator updates is preceded by ``n_critic`` discriminator
    updates, each on a fresh data batch and fresh generated points
    (:meth:`GAN.discriminator_loss`), then clipped to ``[-clip, clip]`` if ``clip``
    (:func:`clip_weights`); the generator then takes one step on
    :meth:`GAN.generator_loss` of ``batch_size`` fresh points (gradients in the
    generator's parameters only). Both players use Adam (PyTorch's fused kernel where the
    device has one) with ``betas``: GANs use a small :math:`\beta_1` (0.5 in DCGAN,
    Radford et al., 2016; 0 with :math:`\beta_2 = 0.9` in WGAN-GP and SN-GAN), since
    momentum accumulated against a moving opponent overshoots.

    Args:
        gan: the model, trained in place.
        data: a sampler ``n -> (n, *D)`` or a dataset tensor ``(N, *D)``
            (epoch-shuffled minibatches, as in :func:`gmbook.train.fit`).
        steps: generator updates (0 trains nothing).
        batch_size: data points per discriminator update, generated points per update.
        lr: the generator's learning rate (and the discriminator's unless ``lr_d``).
        lr_d: the discriminator's learning rate.
        betas: Adam's :math:`(\beta_1, \beta_2)` for both.
        n_critic: discriminator updates per generator update.
        schedule: ``"constant"``, or ``"linear"``: both learning rates decay linearly to 0,
            :math:`\eta_i = \eta\,(1 - i / S)` at generator step :math:`i` of :math:`S`
            (the last steps then move the generator little: the samples settle).
        lazy: lazy regularization (Karras et al., 2020, Sec. 3.1): the penalties of the
            model (gradient penalty, R1) enter only every ``lazy``-th discriminator update,
            multiplied by ``lazy`` (the same weight on average, at a fraction of the cost
            of their double back-propagation).
        clip: weight clipping of the discriminator (the original WGAN), or ``None``.
        ema: a :class:`gmbook.train.EMA` of ``gan.generator``, updated after every
            generator step; sample from it with ``ema.swap()``.
        checkpoints: generator steps (``0..steps``) after which to keep a :class:`Checkpoint`.
        seed: run inside ``torch.random.fork_rng`` seeded with it (reproducible, the
            caller's global state untouched).
        generator: instead of ``seed``, a generator to draw the run's seed from.
        progress: a progress bar, as in :func:`gmbook.train.fit`.
        callback: ``callback(step, d_loss, g_loss)`` after every generator step.

    Returns:
        A :class:`GANHistory`.
    """
    if not isinstance(gan, GAN):
        raise TypeError(f"gan must be a GAN, got {describe(gan)}")
    steps, batch_size = check_int("steps", steps, 0), check_int("batch_size", batch_size)
    n_critic, lazy = check_int("n_critic", n_critic), check_int("lazy", lazy)
    lr = check_positive("lr", lr)
    lr_d = lr if lr_d is None else check_positive("lr_d", lr_d)
    if (not isinstance(betas, tuple) or len(betas) != 2
            or not all(0 <= check_real("betas", b) < 1 for b in betas)):
        raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
    if schedule not in ("constant", "linear"):
        raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    clip = None if clip is None else check_positive("clip", clip)
    if ema is not None and (not isinstance(ema, EMA) or ema.model is not gan.generator):
        raise TypeError("ema must be a gmbook.train.EMA of gan.generator")
    marks = sorted({check_int("checkpoint", s, 0) for s in checkpoints})
    if marks and marks[-1] > steps:
        raise ValueError(f"checkpoints must be in [0, steps = {steps}], got {marks[-1]}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {describe(seed)}")
    if check_generator(generator) is not None:
        if seed is not None:
            raise ValueError("give seed or generator, not both")
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(step, d_loss, g_loss)")
    if not isinstance(data, Tensor) and not callable(data):
        raise TypeError(f"data must be a sampler n -> (n, *D) or a tensor (N, *D), "
                        f"got {describe(data)}")

    device = gan._param().device
    g_params = [p for p in gan.generator.parameters() if p.requires_grad]
    opt_g = _adam(g_params, lr, betas)
    opt_d = _adam(list(gan.discriminator.parameters()), lr_d, betas)
    d_losses: list[float] = []
    g_losses: list[float] = []
    kept: list[Checkpoint] = []

    def keep(step: int) -> None:
        if ema is not None:
            with ema.swap():
                g_state = _state(gan.generator)
        else:
            g_state = _state(gan.generator)
        kept.append(Checkpoint(step, g_state, _state(gan.discriminator)))

    # ema.update() with the tensors looked up once (the same arithmetic)
    ema_update = ema._updater() if ema is not None else None
    mode = gan.training
    start = time.process_time()
    rng = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        draw = _batch_source(data, batch_size, device)
        gan.train()
        if 0 in marks:
            keep(0)
        bar = _progress_bar(steps, progress)
        try:
            for i in bar:
                if schedule == "linear":
                    for opt, base in ((opt_g, lr), (opt_d, lr_d)):
                        for group in opt.param_groups:
                            group["lr"] = base * (1 - i / steps)
                for _ in range(n_critic):
                    scale = float(lazy) if len(d_losses) % lazy == 0 else 0.0
                    d_loss = gan.discriminator_loss(draw(batch_size).to(device),
                                                    penalty_scale=scale)
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                    if clip is not None:
                        clip_weights(gan.discriminator, clip)
                    d_losses.append(d_loss.item())
                g_loss = gan.generator_loss(batch_size)
                # the generator's gradients only: the discriminator's weight gradients of
                # this loss would be computed and then discarded (its next update zeroes
                # them), so they are not computed at all
                for p, grad in zip(g_params, torch.autograd.grad(g_loss, g_params,
                                                                 allow_unused=True)):
                    p.grad = grad
                opt_g.step()
                value = g_loss.item()
                if not (math.isfinite(value) and math.isfinite(d_losses[-1])):
                    raise FloatingPointError(
                        f"train_gan: a loss became non-finite at step {i + 1} of {steps} "
                        f"(d: {d_losses[-1]}, g: {value}); try a lower lr or a penalty")
                g_losses.append(value)
                if ema_update is not None:
                    ema_update()
                if i + 1 in marks:
                    keep(i + 1)
                if callback is not None:
                    callback(i + 1, d_losses[-1], value)
        finally:
            close = getattr(bar, "close", None)
            if close is not None:
                close()
            gan.train(mode)
    return GANHistory(d_losses, g_losses, len(g_losses), time.process_time() - start, kept)


# --------------------------------------------------------------------------- evaluation


@dataclasses.dataclass(frozen=True)
class ModeCoverage:
    r"""What :func:`mode_coverage` returns.

    Attributes:
        covered: modes with at least ``min_count`` high-quality samples.
        modes: number of modes :math:`K`.
        high_quality: fraction of the samples within ``sigmas`` standard deviations of
            their nearest mode.
        counts: high-quality samples per mode, int64, shape ``(K,)``.
        min_count: the count that makes a mode covered.
    """

    covered: int
    modes: int
    high_quality: float
    counts: Tensor
    min_count: int


def mode_coverage(samples: Tensor, means: Tensor, variances: Tensor, *,
                  sigmas: float = 3.0, min_fraction: float = 0.2) -> ModeCoverage:
    r"""Modes covered and the fraction of high-quality samples, for a Gaussian-mixture toy.

    Each sample goes to the mode nearest in units of that mode's standard deviations,
    :math:`d_k(x) = \|(x - \mu_k) / s_k\|` (per axis), and is *high-quality* if
    :math:`d_k(x) \le` ``sigmas``; a mode is *covered* if at least ``min_fraction`` of
    its expected share of the samples, :math:`\lceil \text{min\_fraction} \cdot n / K
    \rceil`, are high-quality samples of it. Data from the mixture itself are high-quality
    with probability :math:`1 - e^{-9/2} \approx 0.989` in 2-D for 3 standard deviations.

    Args:
        samples: model samples, shape ``(n, D)``.
        means: the modes :math:`\mu_k`, shape ``(K, D)`` (e.g. ``GaussianGrid().mixture()[1]``).
        variances: per-axis variances :math:`s_k^2`, shape ``(K, D)``.
        sigmas: the radius, in standard deviations, ``> 0``.
        min_fraction: share of the expected count that covers a mode, in ``(0, 1]``.

    Returns:
        A :class:`ModeCoverage`.
    """
    samples = check_points("samples", samples, min_rows=1)
    d = samples.shape[1]
    means = check_points("means", means, d, min_rows=1)
    variances = check_points("variances", variances, d)
    if variances.shape != means.shape or bool((variances <= 0).any()):
        raise ValueError("variances must be positive, of the shape of means (K, D)")
    sigmas = check_positive("sigmas", sigmas)
    min_fraction = check_real("min_fraction", min_fraction)
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    x = samples.detach().to(torch.float64).cpu()
    mu, sd = means.to(torch.float64).cpu(), variances.to(torch.float64).cpu().sqrt()
    dist = ((x[:, None, :] - mu) / sd).square().sum(-1).sqrt()  # (n, K)
    nearest = dist.min(-1)
    good = nearest.values <= sigmas
    k = mu.shape[0]
    counts = torch.bincount(nearest.indices[good], minlength=k)
    min_count = max(1, math.ceil(min_fraction * x.shape[0] / k))
    return ModeCoverage(int((counts >= min_count).sum()), k, float(good.double().mean()),
                        counts, min_count)
