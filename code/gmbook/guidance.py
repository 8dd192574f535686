r"""Guidance and conditional generation: chapter ``book/diffusion/guidance.md``.

A conditional diffusion model learns the noised conditional scores
:math:`\nabla \log p_t(x \mid c)`; guidance changes what it samples. On the labelled toys of
:mod:`gmbook.data` (the two moons split by moon, the eight Gaussians by component) every
noised quantity is known exactly, because each class is itself a mixture of Gaussians, so
that what a guided sampler is *supposed* to hit and what it *does* hit can both be measured.
The module holds

- the exact conditional structure (:class:`LabelledMixture`): the class-conditional mixtures
  (eq. ``eq-guid-cond-mixture``), their exact noised denoisers and scores at every noise
  level (:meth:`LabelledMixture.prediction`, through
  :func:`gmbook.samplers.mixture_prediction`), the exact noised classifier
  :math:`p_t(c \mid x)` (eq. ``eq-guid-classifier``) and its gradient, which links the two
  by Bayes' rule for scores (eq. ``eq-guid-bayes-score``);
- guidance as a :class:`gmbook.samplers.Prediction` on the package's one sampler interface:
  classifier-free guidance (:func:`cfg`, eq. ``eq-guid-cfg``; Ho & Salimans, 2021),
  classifier guidance (:func:`classifier_guidance`, eq. ``eq-guid-classifier-guidance``;
  Dhariwal & Nichol, 2021), guidance limited to an interval of noise levels
  (:func:`guidance_interval`, eq. ``eq-guid-interval``; Kynkäänniemi et al., 2024) and
  autoguidance (:func:`autoguidance`, eq. ``eq-guid-auto``; Karras et al., 2024);
- the tilted target :math:`p(x \mid c)^w p(x)^{1-w}` normalised on a 2-D grid
  (:func:`tilted_density`, eq. ``eq-guid-tilted``, a :class:`GridDensity` that samples and
  can be handed to :func:`gmbook.metrics.scorecard` as the data set) and a histogram KL
  against it (:func:`histogram_kl`);
- a class-conditional EDM (:class:`ConditionalEDM`, on a :class:`LabelledMLP`), trained with
  label dropout so that one network gives both the conditional and the unconditional
  denoiser (Ho & Salimans, 2021);
- conditioning without retraining: the exact posterior of one observed coordinate of a toy
  (:meth:`LabelledMixture.slice_posterior`, eq. ``eq-guid-slice-posterior``), inpainting by
  replacement (:func:`replacement`, eq. ``eq-guid-replacement``), RePaint
  (:func:`repaint`, eq. ``eq-guid-repaint``; Lugmayr et al., 2022), which adds resampling
  by the path's forward transition (:func:`renoise`, eq. ``eq-guid-renoise``), and diffusion
  posterior sampling (:func:`dps`, eq. ``eq-guid-dps``; Chung et al., 2023) for a linear
  observation, optionally with Tweedie's covariance (exact on a Gaussian prior).

**The convention for the guidance weight.** Here :math:`w = 0` is the unconditional model,
:math:`w = 1` the plain conditional model, and :math:`w > 1` extrapolates past it:

.. math::

    D_w(x; t, c) = D(x; t) + w\, \big(D(x; t, c) - D(x; t)\big),

the same affine combination for the denoiser, the noise, the score and the velocity. Ho &
Salimans (2021) write :math:`(1 + w')\, \varepsilon(x, c) - w'\, \varepsilon(x)`: their
:math:`w'` is :math:`w - 1` here (their :math:`w' = 0` is the conditional model). The
"guidance scale" of most code bases (diffusers' ``guidance_scale``, Karras et al. 2024's
:math:`w`) is the :math:`w` here; the papers that write the weight as ":math:`1 + w`" mean
Ho & Salimans' :math:`w'`. With exact scores, :math:`w` times the classifier's gradient
(:func:`classifier_guidance`) is the same field as CFG with weight :math:`w` (Bayes' rule).

References: Ho & Salimans (2021), *Classifier-free diffusion guidance*; Dhariwal & Nichol
(2021), *Diffusion models beat GANs on image synthesis*; Kynkäänniemi et al. (2024),
*Applying guidance in a limited interval improves sample and distribution quality in
diffusion models*; Karras et al. (2024), *Guiding a diffusion model with a bad version of
itself*; Chung et al. (2023), *Diffusion posterior sampling for general noisy inverse
problems*; Lugmayr et al. (2022), *RePaint: inpainting using denoising diffusion
probabilistic models*; Song et al. (2023), *Pseudoinverse-guided diffusion models for
inverse problems*.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gmbook import samplers
from gmbook._checks import (check_generator, check_int, check_nonnegative, check_points,
                            check_positive, check_real, describe)
from gmbook._random import rand, randn
from gmbook.nets import FOLD_CHUNK, MLP, append_dims
from gmbook.sde import EDM

__all__ = [
    "ConditionalEDM",
    "GridDensity",
    "LabelledMLP",
    "LabelledMixture",
    "autoguidance",
    "cfg",
    "classifier_guidance",
    "dps",
    "guidance_interval",
    "guided_gaussian_mean",
    "histogram_kl",
    "renoise",
    "repaint",
    "replacement",
    "tilted_density",
]


# --------------------------------------------------------------------------- exact structure


def _time_coefficients(path: samplers.GaussianPath | None, t: float | Tensor
                       ) -> tuple[float, float]:
    """``(alpha_t, sigma_t)`` as floats for one time (the data, ``(1, 0)``, without a path)."""
    if path is None:
        if float(torch.as_tensor(t)) != 0:
            raise ValueError("a time t != 0 needs a path (a gmbook.samplers.GaussianPath)")
        return 1.0, 0.0
    if not isinstance(path, samplers.GaussianPath):
        raise TypeError(f"path must be a gmbook.samplers.GaussianPath, got {describe(path)}")
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.numel() != 1:
        raise ValueError(f"t must be one time (a number or a 1-element tensor), got {t.numel()}")
    t = t.reshape(())
    return float(path.alpha(t)), float(path.sigma(t))


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledMixture:
    r"""A mixture of axis-aligned Gaussians whose components carry class labels.

    The data density and its classes are

    .. math::

        p(x) &= \sum_k w_k\, \mathcal N(x; \mu_k, \operatorname{diag} v_k), \qquad
        \pi_c = \sum_{k : y_k = c} w_k , \\
        p(x \mid c) &= \frac{1}{\pi_c} \sum_{k : y_k = c} w_k\,
        \mathcal N(x; \mu_k, \operatorname{diag} v_k) ,

    eq. ``eq-guid-cond-mixture``: each class is a mixture, so under a Gaussian path
    :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon` its noised density is the mixture with
    means :math:`\alpha_t \mu_k` and variances :math:`\alpha_t^2 v_k + \sigma_t^2`, and its
    exact denoiser is :func:`gmbook.samplers.mixture_prediction` on its components. Build it
    from a labelled toy with :meth:`from_toy`. It has ``sample(n, generator=...)``, so a
    class (:meth:`restrict`) is a data set for :func:`gmbook.metrics.scorecard` (its floor is
    then computed on first use and kept in memory for this object).

    Attributes:
        weights: :math:`w`, shape ``(K,)``, float64, summing to 1.
        means: :math:`\mu`, shape ``(K, D)``, float64.
        variances: :math:`v`, shape ``(K, D)``, float64, positive.
        labels: :math:`y_k`, shape ``(K,)``, int64 in ``[0, classes)``.
        classes: the number of classes :math:`C`.
        name: a description (the ``repr``).
    """

    weights: Tensor
    means: Tensor
    variances: Tensor
    labels: Tensor
    classes: int
    name: str = "LabelledMixture"

    def __post_init__(self) -> None:
        for f in ("weights", "means", "variances"):
            v = getattr(self, f)
            if not isinstance(v, Tensor) or not v.is_floating_point():
                raise TypeError(f"{f} must be a floating-point tensor, got {describe(v)}")
        if not isinstance(self.labels, Tensor) or self.labels.dtype != torch.int64:
            raise TypeError(f"labels must be an int64 tensor, got {describe(self.labels)}")
        classes = check_int("classes", self.classes)
        if self.means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(self.means.shape)}")
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.variances.shape != (k, d) or \
                self.labels.shape != (k,):
            raise ValueError(f"with means (K, D) = {(k, d)} the weights and labels must be "
                             "(K,) and the variances (K, D)")
        w = self.weights.detach().to(torch.float64)
        if bool((w < 0).any()) or not float(w.sum()) > 0 or \
                not bool((self.variances > 0).all()):
            raise ValueError("weights must be nonnegative with a positive sum and variances "
                             "positive")
        if bool((self.labels < 0).any()) or bool((self.labels >= classes).any()):
            raise ValueError(f"labels must lie in [0, classes) = [0, {classes})")
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "means", self.means.detach().to(torch.float64))
        object.__setattr__(self, "variances", self.variances.detach().to(torch.float64))

    def __repr__(self) -> str:
        return self.name

    @classmethod
    def from_toy(cls, toy: object) -> LabelledMixture:
        r"""The labelled mixture of a toy of :mod:`gmbook.data`, in its sampling space.

        :class:`gmbook.data.TwoMoons`: the 1024 Gaussians of
        :meth:`gmbook.data.TwoMoons.mixture` (quadrature nodes on the arcs), labelled by
        moon (0 the upper, the first half of the nodes; 1 the lower), the labels of
        :meth:`gmbook.data.Toy2D.sample_with_labels`. :class:`gmbook.data.EightGaussians`:
        its 8 components, labelled 0 to 7 by angle :math:`k\pi/4` as it labels its
        samples.
        """
        from gmbook.data import EightGaussians, TwoMoons

        if isinstance(toy, TwoMoons):
            w, mu, var = toy.mixture()
            k = len(w)
            labels = (torch.arange(k) >= k // 2).long()
            return cls(w, mu, var, labels, 2, f"LabelledMixture({toy!r})")
        if isinstance(toy, EightGaussians):
            angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
            mu = toy.radius * torch.stack([angle.cos(), angle.sin()], -1)   # (8, 2)
            var = torch.full_like(mu, toy.std**2)
            if toy.standardize:
                st = toy.standardizer
                mu, var = st.transform(mu), var / st.std.to(var) ** 2
            return cls(torch.full((8,), 1 / 8, dtype=torch.float64), mu, var,
                       torch.arange(8), 8, f"LabelledMixture({toy!r})")
        raise TypeError(f"toy must be a gmbook.data.TwoMoons or EightGaussians, got "
                        f"{describe(toy)}")

    @property
    def dim(self) -> int:
        """The dimension :math:`D`."""
        return self.means.shape[1]

    def _check_label(self, label: object) -> int:
        if isinstance(label, bool) or not isinstance(label, int) or \
                not 0 <= label < self.classes:
            raise ValueError(f"label must be an int in [0, {self.classes}), got {label!r}")
        return label

    def class_weights(self) -> Tensor:
        r"""The class probabilities :math:`\pi_c`, shape ``(C,)``, float64."""
        return torch.zeros(self.classes, dtype=torch.float64).index_add_(
            0, self.labels, self.weights)

    def restrict(self, label: int) -> LabelledMixture:
        r"""The class-conditional mixture :math:`p(x \mid c)`, eq. ``eq-guid-cond-mixture``
        (its components, their weights renormalised; cached per class, so that a
        scorecard's floor computed for it is reused)."""
        label = self._check_label(label)
        cache = self.__dict__.setdefault("_restricted", {})
        if label not in cache:
            keep = self.labels == label
            cache[label] = LabelledMixture(
                self.weights[keep], self.means[keep], self.variances[keep],
                self.labels[keep], self.classes, f"{self.name}.restrict({label})")
        return cache[label]

    def sample_with_labels(self, n: int, *, generator: torch.Generator | None = None,
                           dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``n`` iid points ``(n, D)`` and their class labels ``(n,)`` (int64)."""
        n = check_int("n", n)
        generator = check_generator(generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = randn((n, self.dim), dtype=torch.float64, generator=generator)
        x = self.means[k] + self.variances[k].sqrt() * z
        return x.to(dtype), self.labels[k]

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` iid points, shape ``(n, D)``."""
        return self.sample_with_labels(n, generator=generator, dtype=dtype)[0]

    def _component_log_probs(self, x: Tensor, a: float, s: float) -> Tensor:
        r""":math:`\log w_k + \log \mathcal N(x; a\mu_k, a^2 v_k + s^2)`, ``(B, K)``, float64,
        with the squared distances expanded into matrix products."""
        c = a * a * self.variances + s * s                         # (K, D)
        ic = 1 / c
        const = self.weights.log() - 0.5 * (c.log().sum(1) + (a * a * self.means**2 * ic
                                                               ).sum(1)
                                            + self.dim * math.log(2 * math.pi))   # (K,)
        return (-0.5 * (x * x) @ ic.T + x @ (a * self.means * ic).T) + const  # (B, K)

    def _points(self, x: object) -> Tensor:
        return check_points("x", x, self.dim)

    def log_prob(self, x: Tensor, t: float | Tensor = 0.0,
                 path: samplers.GaussianPath | None = None, *,
                 label: int | None = None) -> Tensor:
        r"""The log-density of the noised mixture :math:`\log p_t(x)` (or
        :math:`\log p_t(x \mid c)` with ``label``), eq. ``eq-guid-cond-mixture``.

        Args:
            x: points, shape ``(B, D)``.
            t: one time of ``path`` (0 without a path: the data).
            path: the :class:`gmbook.samplers.GaussianPath`, or ``None`` for the data.
            label: a class :math:`c`, or ``None`` for the marginal.

        Returns:
            Log-densities ``(B,)`` in the dtype of ``x`` (differentiable in ``x``).
        """
        x = self._points(x)
        a, s = _time_coefficients(path, t)
        mix = self if label is None else self.restrict(label)
        return torch.logsumexp(mix._component_log_probs(x.to(torch.float64), a, s), 1
                               ).to(x.dtype)

    def class_log_probs(self, x: Tensor, t: float | Tensor = 0.0,
                        path: samplers.GaussianPath | None = None) -> Tensor:
        r"""The exact noised classifier :math:`\log p_t(c \mid x)` for every class,
        eq. ``eq-guid-classifier``:

        .. math::

            p_t(c \mid x) = \frac{\pi_c\, p_t(x \mid c)}{p_t(x)}
            = \frac{\sum_{k: y_k = c} w_k\, \mathcal N(x; \alpha_t \mu_k,
            \alpha_t^2 v_k + \sigma_t^2)}{\sum_k w_k\, \mathcal N(x; \alpha_t \mu_k,
            \alpha_t^2 v_k + \sigma_t^2)} .

        At :math:`t = 0` (no path) its argmax is the Bayes classifier (:meth:`classify`).

        Args:
            x: points ``(B, D)``; t, path: as in :meth:`log_prob`.

        Returns:
            ``(B, C)`` log-probabilities in the dtype of ``x`` (differentiable in ``x``),
            computed in float64 with one log-sum-exp per class.
        """
        x = self._points(x)
        a, s = _time_coefficients(path, t)
        lp = self._component_log_probs(x.to(torch.float64), a, s)      # (B, K)
        # one log-sum-exp per class (no underflow far from a class, where p_t(c | x) is tiny)
        per = torch.stack([torch.logsumexp(lp[:, self.labels == c], 1)
                           for c in range(self.classes)], 1)           # (B, C)
        return (per - torch.logsumexp(lp, 1, keepdim=True)).to(x.dtype)

    def classifier_grad(self, x: Tensor, label: int, t: float | Tensor = 0.0,
                        path: samplers.GaussianPath | None = None) -> Tensor:
        r""":math:`\nabla_x \log p_t(c \mid x)`, the gradient of :meth:`class_log_probs`
        (by automatic differentiation), the term of Bayes' rule for scores,
        eq. ``eq-guid-bayes-score``:
        :math:`\nabla \log p_t(x \mid c) = \nabla \log p_t(x) + \nabla \log p_t(c \mid x)`.

        Returns:
            ``(B, D)`` in the dtype of ``x``.
        """
        x = self._points(x)
        label = self._check_label(label)
        with torch.enable_grad():
            z = x.detach().to(torch.float64).requires_grad_(True)
            lp = self.class_log_probs(z, t, path)[:, label].sum()
            (g,) = torch.autograd.grad(lp, z)
        return g.to(x.dtype)

    def classify(self, x: Tensor) -> Tensor:
        r"""The Bayes classifier :math:`\arg\max_c p(c \mid x)` of the data (``t = 0``):
        labels ``(B,)``, int64."""
        return self.class_log_probs(x).argmax(1)

    def slice_posterior(self, coord: int, value: float) -> LabelledMixture:
        r"""The exact posterior of the other coordinates given one observed coordinate,
        :math:`p(x_{-d} \mid x_d = y)`, eq. ``eq-guid-slice-posterior``: the 1-D slice of
        the mixture (for :math:`D = 2`), renormalised,

        .. math::

            p(x_{-d} \mid x_d = y) = \sum_k \tilde w_k\, \mathcal N(x_{-d}; \mu_{k,-d},
            \operatorname{diag} v_{k,-d}), \qquad \tilde w_k \propto w_k\,
            \mathcal N(y; \mu_{kd}, v_{kd}),

        since each component is axis-aligned (its coordinates independent). The target of
        inpainting by replacement, RePaint and diffusion posterior sampling on the 2-D toys.

        Args:
            coord: the observed coordinate :math:`d` in ``[0, D)``; ``D >= 2``.
            value: the observed value :math:`y`.

        Returns:
            A :class:`LabelledMixture` of dimension :math:`D - 1` (labels kept).
        """
        if self.dim < 2:
            raise ValueError("slice_posterior needs D >= 2")
        if isinstance(coord, bool) or not isinstance(coord, int) or not 0 <= coord < self.dim:
            raise ValueError(f"coord must be an int in [0, {self.dim}), got {coord!r}")
        y = check_real("value", value)
        mu, v = self.means[:, coord], self.variances[:, coord]
        logw = self.weights.log() - 0.5 * ((y - mu) ** 2 / v + v.log())
        if not bool(torch.isfinite(logw).any()):
            raise ValueError(f"the observation {y} has zero likelihood under every component")
        keep = [d for d in range(self.dim) if d != coord]
        return LabelledMixture((logw - logw.max()).exp(), self.means[:, keep],
                               self.variances[:, keep], self.labels, self.classes,
                               f"{self.name}.slice_posterior({coord}, {y:g})")

    def prediction(self, path: samplers.GaussianPath, label: int | None = None, *,
                   differentiable: bool = False) -> samplers.Prediction:
        r"""The exact denoiser :math:`\mathbb E[x_0 \mid x_t]` of the marginal (or of class
        ``label``, :math:`\mathbb E[x_0 \mid x_t, c]`) as an ``"x0"``
        :class:`gmbook.samplers.Prediction` (:func:`gmbook.samplers.mixture_prediction`
        on the class's components); its ``score`` is the exact noised score. With
        ``differentiable`` the denoiser is Tweedie's :math:`(x + \sigma_t^2 \nabla \log
        p_t(x)) / \alpha_t`, computed as the same posterior mean in differentiable operations,
        :math:`\sum_k r_k(x) (\mu_k + \frac{\alpha v_k}{c_k}(x - \alpha\mu_k))` with the
        responsibilities :math:`r = \operatorname{softmax}_k` of :meth:`log_prob`'s terms
        (slower than the plain denoiser; for :func:`dps`, which differentiates through it
        once, or twice with Tweedie's covariance)."""
        mix = self if label is None else self.restrict(label)
        if not differentiable:
            return samplers.mixture_prediction(mix.weights, mix.means, mix.variances, path)
        if not isinstance(path, samplers.GaussianPath):
            raise TypeError(f"path must be a gmbook.samplers.GaussianPath, got {describe(path)}")

        def fn(x: Tensor, t: Tensor) -> Tensor:
            tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
            if not bool((tt == tt[0]).all()):
                raise ValueError("the differentiable denoiser takes one time per batch")
            a, s = _time_coefficients(path, tt[0])
            z = x.to(torch.float64)
            gain = a * mix.variances / (a * a * mix.variances + s * s)        # (K, D)
            r = torch.softmax(mix._component_log_probs(z, a, s), 1)           # (B, K)
            x0 = r @ (mix.means * (1 - a * gain)) + z * (r @ gain)            # (B, D)
            return x0.to(x.dtype)

        return samplers.Prediction(fn, "x0", path)


# --------------------------------------------------------------------------- guidance


def _check_pred(name: str, pred: object) -> samplers.Prediction:
    if not isinstance(pred, samplers.Prediction):
        raise TypeError(f"{name} must be a gmbook.samplers.Prediction, got {describe(pred)}")
    return pred


def _same_path(a: samplers.Prediction, b: samplers.Prediction) -> samplers.GaussianPath:
    pa, pb = a.path, b.path
    if pa is not pb:
        probe = torch.tensor([0.05, 0.3, 0.7], dtype=torch.float64) * min(pa.t_max, pb.t_max)
        if type(pa) is not type(pb) or not (
                torch.allclose(pa.alpha(probe), pb.alpha(probe))
                and torch.allclose(pa.sigma(probe), pb.sigma(probe))):
            raise ValueError("the two predictions must be on the same Gaussian path, got "
                             f"{describe(pa)} and {describe(pb)}")
    return pa


def _check_weight(w: object) -> float:
    return check_real("w", w)


def cfg(uncond: samplers.Prediction, cond: samplers.Prediction, w: float
        ) -> samplers.Prediction:
    r"""Classifier-free guidance (Ho & Salimans, 2021) as a prediction,
    eq. ``eq-guid-cfg``:

    .. math::

        \hat x_0^{(w)}(x, t) = \hat x_0(x, t) + w\, \big(\hat x_0(x, t \mid c) -
        \hat x_0(x, t)\big),

    so :math:`w = 0` is the unconditional model, :math:`w = 1` the conditional one (the
    module's convention; Ho & Salimans' weight is :math:`w - 1`). The combination has
    weights summing to 1, so it is the same for :math:`\hat\varepsilon`, the score and the
    velocity: the guided score is :math:`(1 - w) \nabla \log p_t(x) + w \nabla \log p_t(x
    \mid c)`, the score of :math:`p_t(x)^{1-w} p_t(x \mid c)^w` at every :math:`t` (which is
    *not* the noised version of the tilted target :func:`tilted_density`).

    Args:
        uncond: the unconditional prediction (any kind).
        cond: the conditional prediction on the same path (any kind).
        w: the guidance weight (any real; :math:`w > 1` extrapolates).

    Returns:
        An ``"x0"`` :class:`gmbook.samplers.Prediction` on ``cond``'s path. Each of its calls
        makes one call of each prediction (a sampler's ``nfe`` counts the guided calls, half
        the network evaluations), except at :math:`w = 0` and :math:`w = 1`, where it calls
        only the prediction that the combination reduces to (the unconditional one, exactly;
        the conditional one, equal to the combination up to rounding).
    """
    uncond, cond = _check_pred("uncond", uncond), _check_pred("cond", cond)
    path = _same_path(uncond, cond)
    w = _check_weight(w)
    if w in (0.0, 1.0):  # the combination is one of the two: skip the other's calls
        only = uncond if w == 0 else cond
        return samplers.Prediction(lambda x, t: only.x0_eps(x, t)[0], "x0", path)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        x_u = uncond.x0_eps(x, t)[0]
        x_c = cond.x0_eps(x, t)[0]
        return x_u + w * (x_c - x_u)

    return samplers.Prediction(fn, "x0", path)


def guided_gaussian_mean(a: float, b: float, mu: float, w: float, eta: float = 0.0, *,
                          points: int = 200_001) -> float:
    r"""Where a guided sampler ends, in mean, on the Gaussian example of
    ``prop-guid-not-tilted``: eq. ``eq-guid-overshoot`` by quadrature.

    With :math:`p(x) = \mathcal N(0, a^2)`, :math:`p(x \mid c) = \mathcal N(\mu, b^2)` in
    1-D on the VE path, classifier-free guidance with exact scores (eq. ``eq-guid-cfg``)
    at weight :math:`w` run by the member :math:`\eta` of the family of samplers
    (eq. ``eq-sde-family``; :math:`\eta = 0` the probability-flow ODE, :math:`\eta = 1` the
    reverse SDE) from a law of mean 0 at :math:`\sigma_{\max} \to \infty` ends at the mean

    .. math::

        \bar\mu_\eta = \int_0^\infty \kappa\, e^{-\kappa \Lambda(\tau)}\,
        \lambda_{\sqrt\tau}\, m_{\sqrt\tau}\, \mathrm d\tau, \qquad
        \kappa = \tfrac{1 + \eta^2}{2},\ \Lambda(\tau) = \int_0^\tau \lambda_{\sqrt v}\,
        \mathrm dv,

    with :math:`\lambda_\sigma, m_\sigma` of eq. ``eq-guid-guided-gaussian`` (the form
    :math:`\int \kappa e^{-\kappa u} \tilde m(u)\, \mathrm du` after :math:`u =
    \Lambda(\tau)`). The integral is a Riemann sum on ``points`` log-spaced values of
    :math:`\tau = \sigma^2` in :math:`[10^{-8}, 10^8]`, in float64 (relative error about
    :math:`10^{-4}` for the book's parameters).

    Args:
        a: the data's standard deviation, positive.
        b: the class's standard deviation, in ``(0, a)``.
        mu: the class's mean.
        w: the guidance weight, at least 1.
        eta: the sampler's noise level, nonnegative.
        points: quadrature points, at least 1000.

    Returns:
        :math:`\bar\mu_\eta` (a float).
    """
    a, b = check_positive("a", a), check_positive("b", b)
    if not b < a:
        raise ValueError(f"b must be smaller than a, got a = {a}, b = {b}")
    mu, w = check_real("mu", mu), check_real("w", w)
    if w < 1:
        raise ValueError(f"w must be at least 1, got {w}")
    eta = check_nonnegative("eta", eta)
    points = check_int("points", points, minimum=1000)
    kappa = (1 + eta * eta) / 2
    tau = torch.logspace(-8, 8, points, dtype=torch.float64)
    lam = (1 - w) / (a * a + tau) + w / (b * b + tau)        # lambda_sigma, sigma^2 = tau
    m = w * mu / ((b * b + tau) * lam)                         # m_sigma
    du = kappa * lam * torch.gradient(tau)[0]                  # kappa dLambda
    return float((du * torch.exp(-torch.cumsum(du, 0)) * m).sum())


def autoguidance(model: samplers.Prediction, weak: samplers.Prediction, w: float
                 ) -> samplers.Prediction:
    r"""Autoguidance (Karras et al., 2024), eq. ``eq-guid-auto``: guide a model with a
    weaker version of itself,

    .. math::

        \hat x_0^{(w)} = \hat x_0^{\mathrm{weak}} + w\, \big(\hat x_0 -
        \hat x_0^{\mathrm{weak}}\big),

    :func:`cfg` with the weak model (same conditioning) in the place of the unconditional
    one; :math:`w = 1` is the model itself.

    Args:
        model: the (conditional) model's prediction.
        weak: the weaker model's prediction (e.g. less trained or smaller), same path.
        w: the guidance weight.
    """
    return cfg(_check_pred("weak", weak), _check_pred("model", model), w)


def guidance_interval(uncond: samplers.Prediction, cond: samplers.Prediction, w: float, *,
                      lo: float, hi: float) -> samplers.Prediction:
    r"""Classifier-free guidance limited to an interval of noise levels (Kynkäänniemi et al.,
    2024), eq. ``eq-guid-interval``:

    .. math::

        \hat x_0^{(w)}(x, t) = \begin{cases} \text{eq. cfg with weight } w &
        \text{if } \sigma_t / \alpha_t \in [\sigma_{\mathrm{lo}}, \sigma_{\mathrm{hi}}], \\
        \hat x_0(x, t \mid c) & \text{otherwise,} \end{cases}

    with the noise level measured as EDM's :math:`\sigma = \sigma_t / \alpha_t` (on
    :class:`gmbook.samplers.VEPath` the time itself). Outside the interval only the
    conditional model is called.

    Args:
        uncond, cond: as in :func:`cfg`.
        w: the guidance weight inside the interval.
        lo, hi: the interval of noise levels, :math:`0 \le` ``lo`` :math:`<` ``hi``
            (``hi`` may be ``math.inf``).
    """
    uncond, cond = _check_pred("uncond", uncond), _check_pred("cond", cond)
    path = _same_path(uncond, cond)
    w = _check_weight(w)
    lo = check_nonnegative("lo", lo)
    if isinstance(hi, bool) or not isinstance(hi, (int, float)) or math.isnan(hi) or \
            not hi > lo:
        raise ValueError(f"hi must be a number > lo = {lo}, got {hi!r}")
    guided = cfg(uncond, cond, w)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        level = path.sigma(tt) / path.alpha(tt)                      # (B,) or (1,)
        inside = (level >= lo) & (level <= hi)
        if bool(inside.all()):
            return guided.x0_eps(x, t)[0]
        if not bool(inside.any()):
            return cond.x0_eps(x, t)[0]
        x_c = cond.x0_eps(x, t)[0]
        x_u = uncond.x0_eps(x, t)[0]
        return torch.where(append_dims(inside.to(x.device), x.ndim), x_u + w * (x_c - x_u),
                           x_c)

    return samplers.Prediction(fn, "x0", path)


def classifier_guidance(pred: samplers.Prediction,
                        grad_log_classifier: Callable[[Tensor, Tensor], Tensor], w: float
                        ) -> samplers.Prediction:
    r"""Classifier guidance (Dhariwal & Nichol, 2021, Algorithm 1, in score form),
    eq. ``eq-guid-classifier-guidance``: the score of a noised classifier added to a
    diffusion model's score,

    .. math::

        s^{(w)}(x, t) = s(x, t) + w\, \nabla_x \log p_t(c \mid x), \qquad
        \hat x_0^{(w)} = \hat x_0 + w\, \frac{\sigma_t^2}{\alpha_t}\,
        \nabla_x \log p_t(c \mid x)

    (Tweedie: :math:`\hat x_0 = (x + \sigma_t^2 s) / \alpha_t`). On an unconditional model
    with the exact classifier, this is :func:`cfg` with the same :math:`w` (Bayes' rule,
    eq. ``eq-guid-bayes-score``); Dhariwal & Nichol add it to a conditional model, where
    their scale :math:`s` corresponds to :math:`w = 1 + s` only with exact scores.

    Args:
        pred: the diffusion model's prediction (any kind).
        grad_log_classifier: ``g(x, t)`` with ``x`` ``(B, *D)``, ``t`` ``(B,)``, returning
            :math:`\nabla_x \log p_t(c \mid x)` ``(B, *D)`` for the wanted class (e.g.
            ``lambda x, t: mix.classifier_grad(x, c, t[0], path)`` for the exact one).
        w: the guidance weight.
    """
    pred = _check_pred("pred", pred)
    if not callable(grad_log_classifier):
        raise TypeError("grad_log_classifier must be callable as g(x, t), got "
                        f"{describe(grad_log_classifier)}")
    w = _check_weight(w)
    path = pred.path

    def fn(x: Tensor, t: Tensor) -> Tensor:
        x0 = pred.x0_eps(x, t)[0]
        tt = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        a = append_dims(path.alpha(tt).to(x), x.ndim)
        s = append_dims(path.sigma(tt).to(x), x.ndim)
        g = grad_log_classifier(x, tt.to(x.dtype))
        if not isinstance(g, Tensor) or g.shape != x.shape:
            raise ValueError(f"grad_log_classifier must return a tensor of shape "
                             f"{tuple(x.shape)}, got {describe(g)}")
        return x0 + w * s * s / a * g

    return samplers.Prediction(fn, "x0", path)


def replacement(pred: samplers.Prediction, mask: Tensor, y: Tensor) -> samplers.Prediction:
    r"""Inpainting by replacement as a prediction, eq. ``eq-guid-replacement``: the known
    coordinates of the denoised estimate are replaced by the observation,

    .. math::

        \hat x_0'(x, t) = m \odot y + (1 - m) \odot \hat x_0(x, t),

    so that a deterministic sampler moves the known coordinates to :math:`y` (on the
    path :math:`\alpha_t y + \sigma_t \hat\varepsilon`) while the unknown ones follow
    the *unconditional* denoiser at the partly constrained state: the observation reaches
    them only through :math:`x_t`, not through :math:`\nabla \log p_t(y \mid x_t)`. A
    variant in the denoised estimate of the replacement of Song et al. (2021, imputation)
    and of RePaint's known-region step (Lugmayr et al., 2022), which replace the known
    coordinates of the noisy state by a freshly noised copy of :math:`y` (RePaint adds
    resampling: :func:`repaint`). Exact when the known and unknown coordinates are
    independent under the prior; biased otherwise.

    Args:
        pred: the prior's prediction.
        mask: ``(*D)`` with 1 on the known coordinates and 0 elsewhere (floating).
        y: the known values, ``(*D)`` (read where ``mask`` is 1).

    Returns:
        An ``"x0"`` :class:`gmbook.samplers.Prediction`.
    """
    pred = _check_pred("pred", pred)
    _check_mask_y(mask, y)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        m = mask.to(x)
        return m * y.to(x) + (1 - m) * pred.x0_eps(x, t)[0]

    return samplers.Prediction(fn, "x0", pred.path)


def renoise(path: samplers.GaussianPath, x: Tensor, s: float, t: float, *,
            generator: torch.Generator | None = None) -> Tensor:
    r"""The forward transition of a Gaussian path from time ``s`` to a noisier time ``t``,
    eq. ``eq-guid-renoise``: a draw of

    .. math::

        x_t \mid x_s \sim \mathcal N\Big(\frac{\alpha_t}{\alpha_s}\, x_s,\
        \Big(\sigma_t^2 - \frac{\alpha_t^2}{\alpha_s^2}\, \sigma_s^2\Big) I\Big),

    the law of :math:`x_t` given :math:`x_s` under the Markov forward process whose
    marginals are the path's :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon` (on
    :class:`gmbook.samplers.VEPath`, :math:`x_t = x_s + \sqrt{\sigma_t^2 - \sigma_s^2}\, z`;
    on a discrete VP path from one step to the next, DDPM's :math:`\mathcal N(\sqrt{1 -
    \beta_t}\, x_{t-1}, \beta_t I)`). RePaint's "jump back" (:func:`repaint`).

    Args:
        path: the :class:`gmbook.samplers.GaussianPath`.
        x: states at time ``s``, ``(B, *D)`` (floating).
        s, t: times of the path with ``s <= t`` (``s`` may be 0, the data).
        generator: the noise's source.

    Returns:
        The states at time ``t``, ``(B, *D)``.
    """
    if not isinstance(path, samplers.GaussianPath):
        raise TypeError(f"path must be a gmbook.samplers.GaussianPath, got {describe(path)}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {describe(x)}")
    s, t = check_nonnegative("s", s), check_nonnegative("t", t)
    if not s <= t:
        raise ValueError(f"renoise goes towards more noise: need s <= t, got s = {s}, t = {t}")
    generator = check_generator(generator)
    a_s, s_s = _time_coefficients(path, s)
    a_t, s_t = _time_coefficients(path, t)
    r = a_t / a_s
    var = s_t * s_t - r * r * s_s * s_s
    if var < -1e-12 * max(s_t * s_t, 1e-300):
        raise ValueError(f"the path's noise-to-signal ratio decreases from s = {s} to t = {t}")
    return r * x + math.sqrt(max(var, 0.0)) * randn(x.shape, like=x, generator=generator)


def _check_mask_y(mask: object, y: object) -> None:
    for name, v in (("mask", mask), ("y", y)):
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {describe(v)}")
    if mask.shape != y.shape or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold 0s and 1s and have the shape of y")


@torch.no_grad()
def repaint(pred: samplers.Prediction, x: Tensor, grid: Tensor, *, mask: Tensor, y: Tensor,
            resample: int = 10, jump: int = 1,
            sampler: Callable[..., samplers.SamplePath] | None = None,
            generator: torch.Generator | None = None, return_path: bool = False,
            **options) -> samplers.SamplePath:
    r"""RePaint (Lugmayr et al., 2022): inpainting by replacement in the noisy state, with
    resampling, eq. ``eq-guid-repaint``; a sampler of the package's signature.

    Each step from :math:`t_k` to :math:`t_{k+1}` runs one step of ``sampler`` on the
    unconditional prediction and replaces the known coordinates (``mask`` 1) by a freshly
    noised copy of the observation,

    .. math::

        x_{t_{k+1}} = m \odot \big(\alpha_{t_{k+1}} y + \sigma_{t_{k+1}} \xi\big)
        + (1 - m) \odot \mathrm{step}(x_{t_k}), \qquad \xi \sim \mathcal N(0, I)

    (RePaint's known-region step). The steps come in blocks of ``jump`` steps: after a block
    from :math:`t_i` to :math:`t_{i+j}`, the state jumps back to :math:`t_i` by the path's
    forward transition (:func:`renoise`, eq. ``eq-guid-renoise``) and the block is run
    again, ``resample`` times in all; the last step of the grid is run once (Lugmayr et
    al.'s Algorithm 1 is ``jump = 1`` on DDPM's steps, with ``sampler`` the ancestral step,
    :func:`gmbook.samplers.ddim` with ``eta=1``; the blocks here start at the noisy end of
    the grid, while the schedule of their released code aligns blocks of ``jump > 1`` at
    :math:`t = 0` and runs the noisiest block once, so its call counts differ slightly for
    ``jump > 1``). The re-noising lets the unknown
    coordinates, which see the observation only through the state, move towards it again.

    With ``resample = 1`` a step differs from :func:`replacement` run by the same
    ``sampler`` only in the known coordinates: the unknown ones are the same function of the
    state and of the step's noise (drawn first), while the known ones are a fresh draw
    :math:`\alpha_t y + \sigma_t \xi` here and carry the previous step's noise there (both
    have the law of :math:`x_t` given :math:`x_0 = y` on those coordinates).

    Args:
        pred: the prior's prediction (unconditional).
        x: the starting points at ``grid[0]``, ``(B, *D)``.
        grid: decreasing times ``(K + 1,)`` (noise first).
        mask: ``(*D)`` with 1 on the known coordinates and 0 elsewhere (floating), or
            ``(B, *D)``: one mask per point.
        y: the known values ``(*D)`` (read where ``mask`` is 1), or ``(B, *D)``: one
            observation per point (e.g. a batch of half-masked images), with ``mask`` of
            the same shape.
        resample: :math:`U \ge 1`, the passes through each block (1: no resampling).
        jump: :math:`j \ge 1`, the steps per block (the jump length).
        sampler: one step's sampler, called on two-point grids (default
            :func:`gmbook.samplers.ddim` with ``eta=1``: ancestral sampling); ``options``
            are passed to it.
        generator: the noise's source (the step's noise, then the fresh noise of the known
            coordinates, then the re-noising).
        return_path: keep the states of the last pass at the grid times.

    Returns:
        A :class:`gmbook.samplers.SamplePath`; its ``nfe`` counts every pass:
        :math:`U (K - 1) + 1` calls for a step of one call (a block shorter than ``jump`` at
        the end is also run ``resample`` times).
    """
    pred = _check_pred("pred", pred)
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor (B, *D), got {describe(x)}")
    _check_mask_y(mask, y)
    if tuple(mask.shape) not in (tuple(x.shape[1:]), tuple(x.shape)):
        raise ValueError(f"mask and y must have the shape of one point {tuple(x.shape[1:])} "
                         f"(one observation for all) or of x {tuple(x.shape)} (one per "
                         f"point), got {tuple(mask.shape)}")
    grid = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    if len(grid) < 2 or not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("grid must hold at least 2 strictly decreasing times (noise first)")
    resample = check_int("resample", resample)
    jump = check_int("jump", jump)
    generator = check_generator(generator)
    if sampler is None:
        sampler = samplers.ddim
        options.setdefault("eta", 1.0)
    if not callable(sampler):
        raise TypeError(f"sampler must be a sampler of gmbook.samplers, got {describe(sampler)}")
    path = pred.path
    m, yy = mask.to(x), y.to(x)
    times = grid.tolist()
    steps = len(times) - 1
    nfe, states, x0s = 0, [x], []

    def one_step(x: Tensor, k: int) -> Tensor:
        nonlocal nfe
        out = sampler(pred, x, grid[k:k + 2], generator=generator, return_path=return_path,
                      **options)
        nfe += out.nfe
        a, s = _time_coefficients(path, times[k + 1])
        known = a * yy + s * randn(x.shape, like=x, generator=generator)
        if return_path and out.x0_preds is not None:
            x0s.append(out.x0_preds[0])
        return m * known + (1 - m) * out.samples

    # blocks of `jump` steps over the first K - 1 steps; the last step once
    starts = list(range(0, steps - 1, jump))
    for i in starts:
        end = min(i + jump, steps - 1)
        for u in range(resample):
            mark = len(states), len(x0s)
            for k in range(i, end):
                x = one_step(x, k)
                states.append(x)
            if u < resample - 1:
                x = renoise(path, x, times[end], times[i], generator=generator)
                del states[mark[0]:], x0s[mark[1]:]
    x = one_step(x, steps - 1)
    states.append(x)
    if not return_path:
        return samplers.SamplePath(x, grid, nfe)
    return samplers.SamplePath(x, grid, nfe, torch.stack(states),
                               torch.stack(x0s) if len(x0s) == steps else None)


def dps(pred: samplers.Prediction, A: Tensor, y: Tensor, noise_std: float, *,
        scale: float = 1.0, tweedie: bool = False) -> samplers.Prediction:
    r"""Diffusion posterior sampling (Chung et al., 2023) for a linear observation
    :math:`y = A x_0 + \sigma_y \eta`, :math:`\eta \sim \mathcal N(0, I)`, as a
    prediction, eq. ``eq-guid-dps``:

    .. math::

        \nabla \log p_t(x \mid y) &\approx \nabla \log p_t(x) + \zeta\,
        \nabla_x \log \mathcal N\big(y;\, A \hat x_0(x, t),\, \Sigma_t\big), \\
        \Sigma_t &= \sigma_y^2 I \ \text{(DPS)} \quad\text{or}\quad
        \sigma_y^2 I + \frac{\sigma_t^2}{\alpha_t} A \frac{\partial \hat x_0}{\partial x}
        A^\top \ \text{(with ``tweedie``)},

    the gradient taken through the denoiser by automatic differentiation. DPS replaces
    :math:`p_t(y \mid x_t) = \int p(y \mid x_0)\, p(x_0 \mid x_t)\, \mathrm d x_0` by
    :math:`p(y \mid \hat x_0(x_t))`, ignoring the spread of :math:`x_0` given :math:`x_t`;
    ``tweedie`` adds that spread's covariance, :math:`\operatorname{Cov}[x_0 \mid x_t] =
    \frac{\sigma_t^2}{\alpha_t} \partial \hat x_0 / \partial x` (Tweedie's second-order
    formula, as in Boys et al., 2023; Song et al.'s pseudoinverse-guided variant, 2023,
    uses a scalar :math:`r_t^2 I` instead). Only the diagonal of :math:`A J A^\top` is kept
    (exact for ``m = 1``), and :math:`\Sigma_t` is not differentiated in :math:`x`; both
    are exact when the prior is Gaussian (then :math:`\hat x_0` is affine and the
    covariance constant), which makes the guidance exact there. Chung et al. scale the gradient by
    :math:`\zeta / \lVert y - A \hat x_0 \rVert` instead of :math:`1/\sigma_y^2`; here
    ``scale`` :math:`= \zeta` multiplies the principled term.

    Args:
        pred: the prior's prediction; its ``fn`` must be differentiable in ``x`` (e.g.
            :meth:`ConditionalEDM.prediction` or :meth:`LabelledMixture.prediction` with
            ``differentiable=True``).
        A: the observation matrix ``(m, D)`` (flattened data).
        y: the observation ``(m,)``, the same for every sample, or one per sample
            ``(B, m)`` (the batch of the sampler's points).
        noise_std: :math:`\sigma_y > 0`.
        scale: :math:`\zeta \ge 0`.
        tweedie: add the covariance of :math:`x_0` given :math:`x_t` (one backward pass per
            row of ``A``).

    Returns:
        An ``"x0"`` :class:`gmbook.samplers.Prediction`:
        :math:`\hat x_0 + \zeta \frac{\sigma_t^2}{\alpha_t} \nabla_x \log \mathcal N`.
    """
    pred = _check_pred("pred", pred)
    if not isinstance(A, Tensor) or A.ndim != 2 or not A.is_floating_point():
        raise TypeError(f"A must be a floating-point matrix (m, D), got {describe(A)}")
    if not isinstance(y, Tensor) or y.ndim not in (1, 2) or y.shape[-1] != A.shape[0]:
        raise ValueError(f"y must have shape (m,) or (B, m), m = {A.shape[0]}, got "
                         f"{describe(y)}")
    sy = check_positive("noise_std", noise_std)
    scale = check_nonnegative("scale", scale)
    path = pred.path

    def fn(x: Tensor, t: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        a = append_dims(path.alpha(tt).to(x), x.ndim)
        s2 = append_dims(path.sigma(tt).to(x) ** 2, x.ndim)
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            x0 = pred.x0_eps(z, t)[0]
            Az = x0.flatten(1) @ A.to(x).T                                   # (B, m)
            if y.ndim == 2 and y.shape[0] != Az.shape[0]:
                raise ValueError(f"y has {y.shape[0]} rows for a batch of {Az.shape[0]}")
            var = torch.full_like(Az, sy * sy)
            if tweedie:   # diag of A J A^T, J = d x0 / d x, row by row of A
                rows = []
                for i in range(A.shape[0]):
                    (gi,) = torch.autograd.grad(Az[:, i].sum(), z, retain_graph=True)
                    rows.append((gi.flatten(1) * A[i].to(x)).sum(1))
                var = var + (s2.flatten() / a.flatten())[:, None] * torch.stack(rows, 1
                                                                                ).detach()
            loglik = -0.5 * ((y.to(x) - Az) ** 2 / var).sum()
            (g,) = torch.autograd.grad(loglik, z)
        return x0.detach() + scale * s2 / a * g

    return samplers.Prediction(fn, "x0", path)


# --------------------------------------------------------------------------- tilted target


@dataclasses.dataclass(frozen=True, eq=False)
class GridDensity:
    r"""A 2-D density normalised on a regular grid: piecewise constant on its cells.

    Attributes:
        lo, hi: the corners of the box, ``(x_lo, y_lo)`` and ``(x_hi, y_hi)``.
        log_mass: ``(bins_x, bins_y)`` float64 log-probabilities of the cells (their
            exponentials sum to 1); the density in a cell is its mass over the cell's area.
        name: a description (the ``repr``).
    """

    lo: tuple[float, float]
    hi: tuple[float, float]
    log_mass: Tensor
    name: str = "GridDensity"

    def __repr__(self) -> str:
        return self.name

    @property
    def bins(self) -> tuple[int, int]:
        return tuple(self.log_mass.shape)

    @property
    def cell_area(self) -> float:
        bx, by = self.bins
        return (self.hi[0] - self.lo[0]) / bx * (self.hi[1] - self.lo[1]) / by

    def centres(self) -> Tensor:
        """The cell centres, ``(bins_x, bins_y, 2)``, float64."""
        bx, by = self.bins
        gx = self.lo[0] + (torch.arange(bx, dtype=torch.float64) + 0.5) * \
            (self.hi[0] - self.lo[0]) / bx
        gy = self.lo[1] + (torch.arange(by, dtype=torch.float64) + 0.5) * \
            (self.hi[1] - self.lo[1]) / by
        return torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1)

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        """The mean ``(2,)`` and covariance ``(2, 2)`` of the gridded density (float64; each
        cell's mass at its centre, plus the uniform spread within a cell)."""
        p = self.log_mass.exp().reshape(-1)
        c = self.centres().reshape(-1, 2)
        m = p @ c
        d = c - m
        cov = (d * p[:, None]).T @ d
        bx, by = self.bins
        hx, hy = (self.hi[0] - self.lo[0]) / bx, (self.hi[1] - self.lo[1]) / by
        return m, cov + torch.diag(torch.tensor([hx * hx, hy * hy], dtype=torch.float64)) / 12

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` iid points: a cell by its mass, then uniform in the cell; ``(n, 2)``."""
        n = check_int("n", n)
        generator = check_generator(generator)
        bx, by = self.bins
        idx = torch.multinomial(self.log_mass.exp().reshape(-1), n, replacement=True,
                                generator=generator)
        u = rand((n, 2), dtype=torch.float64, generator=generator)
        ij = torch.stack([idx // by, idx % by], -1).to(torch.float64)
        lo = torch.tensor(self.lo, dtype=torch.float64)
        size = (torch.tensor(self.hi, dtype=torch.float64) - lo) / torch.tensor(
            [bx, by], dtype=torch.float64)
        return (lo + (ij + u) * size).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """The log-density at ``x`` ``(B, 2)`` (``-inf`` outside the box), ``(B,)``."""
        x = check_points("x", x, 2)
        i, j, inside = self._cells(x)
        out = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
        out[inside] = self.log_mass[i[inside], j[inside]] - math.log(self.cell_area)
        return out.to(x.dtype)

    def _cells(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        bx, by = self.bins
        xd = x.detach().to(torch.float64).cpu()
        fx = (xd[:, 0] - self.lo[0]) / (self.hi[0] - self.lo[0]) * bx
        fy = (xd[:, 1] - self.lo[1]) / (self.hi[1] - self.lo[1]) * by
        inside = (fx >= 0) & (fx < bx) & (fy >= 0) & (fy < by)
        return fx.floor().long().clamp(0, bx - 1), fy.floor().long().clamp(0, by - 1), inside


def _check_box(lo: object, hi: object) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        lo_t = tuple(float(v) for v in lo)   # type: ignore[union-attr]
        hi_t = tuple(float(v) for v in hi)   # type: ignore[union-attr]
    except TypeError:
        raise TypeError(f"lo and hi must be pairs of numbers, got {lo!r} and {hi!r}") from None
    if len(lo_t) != 2 or len(hi_t) != 2 or not all(math.isfinite(v) for v in lo_t + hi_t) \
            or not (hi_t[0] > lo_t[0] and hi_t[1] > lo_t[1]):
        raise ValueError(f"need finite pairs lo < hi, got lo = {lo!r}, hi = {hi!r}")
    return lo_t, hi_t  # type: ignore[return-value]


def tilted_density(log_cond: Callable[[Tensor], Tensor], log_uncond: Callable[[Tensor], Tensor],
                   w: float | list[float], *, lo: tuple[float, float] = (-3.0, -3.0),
                   hi: tuple[float, float] = (3.0, 3.0), bins: int = 400
                   ) -> GridDensity | list[GridDensity]:
    r"""The tilted target of guidance normalised on a grid, eq. ``eq-guid-tilted``:

    .. math::

        p_w(x \mid c) = \frac{p(x \mid c)^w\, p(x)^{1 - w}}{Z_w}, \qquad
        Z_w = \int p(x \mid c)^w\, p(x)^{1-w}\, \mathrm d x ,

    equivalently :math:`p_w(x \mid c) \propto p(x)\, p(c \mid x)^w`: :math:`w = 0` is the
    data, :math:`w = 1` the class, and :math:`w > 1` sharpens the class towards the points
    the classifier is surest of. The log-densities are evaluated at the cell centres of a
    ``bins`` x ``bins`` grid on the box ``[lo, hi]`` and normalised there (the mass outside
    the box is ignored: choose a box that holds the target).

    Args:
        log_cond: :math:`x \mapsto \log p(x \mid c)`, for ``x`` ``(B, 2)`` float64.
        log_uncond: :math:`x \mapsto \log p(x)`.
        w: the weight (any real), or a list of weights (the log-densities are then
            evaluated once for all: on the two moons' 1024 components that is most of the
            cost, about 3 s of CPU for a 250 x 250 grid).
        lo, hi: the corners of the box.
        bins: cells per axis (at least 2).

    Returns:
        The :class:`GridDensity`, or a list of them for a list of weights.
    """
    if not callable(log_cond) or not callable(log_uncond):
        raise TypeError("log_cond and log_uncond must be callables x -> log-density")
    many = isinstance(w, (list, tuple))
    weights = [_check_weight(v) for v in (w if many else [w])]
    lo, hi = _check_box(lo, hi)
    bins = check_int("bins", bins, 2)
    empty = GridDensity(lo, hi, torch.zeros(bins, bins, dtype=torch.float64))
    x = empty.centres().reshape(-1, 2)
    lc = torch.as_tensor(log_cond(x), dtype=torch.float64).reshape(-1)
    lu = torch.as_tensor(log_uncond(x), dtype=torch.float64).reshape(-1)
    if lc.shape != (len(x),) or lu.shape != (len(x),):
        raise ValueError("log_cond and log_uncond must return one value per point")
    out = []
    for w in weights:
        # w lc + (1 - w) lu, with 0 * (-inf) = 0 at w = 0 or 1
        logit = (w * lc if w != 0 else 0 * lu) + ((1 - w) * lu if w != 1 else 0 * lc)
        logit = torch.nan_to_num(logit, nan=-math.inf)
        if not bool(torch.isfinite(logit).any()):
            raise ValueError(f"the tilted density (w = {w:g}) is zero on the whole grid")
        log_mass = (logit - torch.logsumexp(logit, 0)).reshape(bins, bins)
        out.append(GridDensity(lo, hi, log_mass, f"GridDensity(tilted, w={w:g})"))
    return out if many else out[0]


def histogram_kl(x: Tensor, density: GridDensity, *, coarsen: int = 10) -> float:
    r"""The KL divergence :math:`\mathrm{KL}(\hat q \,\|\, p)` of the histogram
    :math:`\hat q` of a sample against a :class:`GridDensity` :math:`p`, both on the
    density's grid coarsened by ``coarsen`` cells per axis:

    .. math::

        \mathrm{KL}(\hat q \,\|\, p) = \sum_{j : \hat q_j > 0} \hat q_j
        \log \frac{\hat q_j}{p_j} .

    A plug-in estimate, biased upwards at finite :math:`n` by about (occupied cells - 1)
    / (2n): compare with the same number for a sample of ``density`` itself (its floor).
    Points outside the box count in a cell of their own where :math:`p = 0` (then the KL is
    infinite).

    Args:
        x: points ``(n, 2)``.
        density: the target.
        coarsen: cells of the density per histogram cell and axis (must divide its bins).

    Returns:
        The KL in nats (a float; ``inf`` if a sample point has :math:`p = 0`).
    """
    x = check_points("x", x, 2, min_rows=1)
    if not isinstance(density, GridDensity):
        raise TypeError(f"density must be a GridDensity, got {describe(density)}")
    coarsen = check_int("coarsen", coarsen)
    bx, by = density.bins
    if bx % coarsen or by % coarsen:
        raise ValueError(f"coarsen = {coarsen} must divide the bins {density.bins}")
    i, j, inside = density._cells(x)
    n = x.shape[0]
    if not bool(inside.all()):
        return math.inf
    cx, cy = bx // coarsen, by // coarsen
    p = density.log_mass.exp().reshape(cx, coarsen, cy, coarsen).sum((1, 3))   # (cx, cy)
    q = torch.zeros(cx * cy, dtype=torch.float64).index_add_(
        0, (i // coarsen) * cy + j // coarsen, torch.ones(n, dtype=torch.float64)) / n
    p = p.reshape(-1)
    keep = q > 0
    if bool((p[keep] <= 0).any()):
        return math.inf
    return float((q[keep] * (q[keep].log() - p[keep].log())).sum())


# --------------------------------------------------------------------------- the model


class LabelledMLP(nn.Module):
    r"""A time- and label-conditioned MLP: :class:`gmbook.nets.MLP`'s layers, with a learned
    embedding of the label added to every hidden layer beside the time's,

    .. math::

        h_\ell = \sigma\big(W_\ell h_{\ell-1} + b_\ell + V_\ell\, \tau(t) + e_\ell(c)\big),

    where :math:`e_\ell(c) \in \mathbb R^{\mathrm{hidden}}` is a table lookup (one row per
    class, and one more, the label ``classes``, for "no label": the unconditional model of
    classifier-free guidance).

    Args:
        in_dim: input (and output) size.
        classes: the number of classes :math:`C`; labels are in ``[0, C]``, ``C`` the null.
        hidden, depth, time_dim, time_scale: as in :class:`gmbook.nets.MLP`
            (``time_dim > 0``); an EDM network takes :math:`c_{\mathrm{noise}} =
            \ln(\sigma)/4` and wants ``time_scale=1.0``, as in the SDE chapter.

    Example:
        >>> net = LabelledMLP(2, 2, hidden=16, time_dim=8)
        >>> net(torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 2, 0, 1])).shape
        torch.Size([5, 2])
    """

    def __init__(self, in_dim: int, classes: int, *, hidden: int = 128, depth: int = 3,
                 time_dim: int = 32, time_scale: float = 1000.0) -> None:
        super().__init__()
        self.classes = check_int("classes", classes)
        check_int("time_dim", time_dim)
        self.mlp = MLP(in_dim, hidden=hidden, depth=depth, time_dim=time_dim,
                       time_scale=time_scale)
        self.label_embed = nn.ModuleList(nn.Embedding(self.classes + 1, hidden)
                                         for _ in range(depth))
        for e in self.label_embed:
            nn.init.normal_(e.weight, std=0.1)

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor) -> Tensor:
        r"""``x`` ``(B, in_dim)``, ``t`` ``(B,)`` or a number, ``labels`` ``(B,)`` int64 in
        ``[0, classes]`` (or one label, 0-dim); returns ``(B, in_dim)``."""
        m = self.mlp
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != m.in_dim:
            raise ValueError(f"x must have shape (B, {m.in_dim}), got {describe(x)}")
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or \
                labels.ndim > 1 or (labels.ndim == 1 and labels.shape[0] != x.shape[0]):
            raise ValueError(f"labels must be int64 of shape (B,) or (), got {describe(labels)}")
        if bool((labels < 0).any()) or bool((labels > self.classes).any()):
            raise ValueError(f"labels must lie in [0, {self.classes}] ({self.classes}: none)")
        times = m._batch_times(t, x)
        lab = labels.reshape(-1)
        if times.shape[0] == 1:  # one time (a sampler's call): fold the branches into biases
            return self._forward_folded(x, times, lab)
        tau = m.time_embed(times)                             # (B, hidden)
        h = x
        for layer, act, proj, emb in zip(m.layers, m.acts, m.time_proj, self.label_embed):
            h = act(layer(h) + proj(tau) + emb(lab))          # (B, hidden)
        return m.out(h)

    def _forward_folded(self, x: Tensor, times: Tensor, lab: Tensor) -> Tensor:
        """The same function for one time (``times`` of shape ``(1,)``), faster: as
        :class:`gmbook.nets.MLP` does for a sampler's calls, the time branch runs once and
        its projections, with the label embeddings, are folded into the hidden layers'
        biases; the rows go in chunks of :data:`gmbook.nets.FOLD_CHUNK`, and the activations
        are applied in place when autograd is off."""
        m = self.mlp
        tau = m.time_embed(times)                             # (1, hidden)
        biases = [layer.bias + proj(tau)[0] for layer, proj in zip(m.layers, m.time_proj)]
        if lab.numel() == 1:  # one label for the batch: one bias row per layer
            biases = [b + e(lab) for b, e in zip(biases, self.label_embed)]   # (1, hidden)
        inplace = not torch.is_grad_enabled()
        outs = []
        for start in range(0, x.shape[0], FOLD_CHUNK):
            h = x[start:start + FOLD_CHUNK]
            rows = None if lab.numel() == 1 else lab[start:start + FOLD_CHUNK]
            for layer, act, bias, e in zip(m.layers, m.acts, biases, self.label_embed):
                b = bias if rows is None else bias + e(rows)  # (1 or rows, hidden)
                h = torch.addmm(b, h, layer.weight.t())
                h = nn.functional.silu(h, inplace=True) if inplace and isinstance(
                    act, nn.SiLU) else act(h)
            outs.append(m.out(h))
        return torch.cat(outs) if len(outs) > 1 else outs[0]


class ConditionalEDM(EDM):
    r"""A class-conditional EDM (:class:`gmbook.sde.EDM`) trained with label dropout, so
    that one network is both the conditional denoiser :math:`D_\theta(x; \sigma, c)` and
    the unconditional :math:`D_\theta(x; \sigma, \varnothing)` of classifier-free guidance
    (Ho & Salimans, 2021, Algorithm 1).

    The loss is EDM's, eq. ``eq-sde-edm-loss``, with the label of each training point
    replaced by the null label :math:`\varnothing` (``classes``) with probability
    ``p_uncond``; the preconditioning, grid, prior and default sampler are EDM's, except
    that the default :math:`\sigma_{\max}` is 80 (EDM's own for images) instead of the
    3 that :class:`gmbook.sde.EDM` calibrated for the whole two moons: the prior
    :math:`\mathcal N(0, (\sigma_{\max}^2 + \sigma_d^2) I)` has the data's mean, 0, but a
    class has its own mean, an offset that is small against the prior's spread only when
    :math:`\sigma_{\max}` is large.

    The recipe of the guidance chapter (section "A conditional model trained with label
    dropout"), which measures what it gives: ``LabelledMLP(2, 2, hidden=128, depth=3,
    time_dim=32, time_scale=1.0)`` (:math:`c_{\mathrm{noise}} = \ln(\sigma)/4` without the
    factor 1000, as in EDM), ``p_uncond=0.2``, 3000 Adam steps of 256 points (learning rate
    :math:`3 \times 10^{-3}`, cosine decay after 100 warm-up steps, EMA 0.998), sampled by
    :func:`gmbook.samplers.euler_maruyama` on ``grid(256)``. The unconditional model sees
    only the fraction ``p_uncond`` of the batches, and classifier-free guidance amplifies
    its errors at large weights.

    Args:
        net: a network called as ``net(x, c_noise, labels)``, e.g. :class:`LabelledMLP`;
            it must have an attribute ``classes``.
        p_uncond: the label-dropout probability in :math:`[0, 1)`.
        **kwargs: those of :class:`gmbook.sde.EDM`.

    Example:
        >>> model = ConditionalEDM(LabelledMLP(2, 2, hidden=16, time_dim=8))
        >>> model.loss(torch.randn(8, 2), torch.randint(0, 2, (8,))).shape
        torch.Size([])
    """

    def __init__(self, net: nn.Module, *, p_uncond: float = 0.2, **kwargs) -> None:
        kwargs.setdefault("sigma_max", 80.0)
        super().__init__(net, **kwargs)
        classes = getattr(net, "classes", None)
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise TypeError("net must have an int attribute classes >= 1 (e.g. LabelledMLP)")
        self.classes = classes
        self.p_uncond = check_nonnegative("p_uncond", p_uncond)
        if not self.p_uncond < 1:
            raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")

    def _labels(self, labels: Tensor | int | None, n: int, device: torch.device) -> Tensor:
        if labels is None:
            return torch.tensor(self.classes, device=device)
        labels = torch.as_tensor(labels, device=device)
        if labels.dtype != torch.int64 or labels.ndim > 1 or \
                (labels.ndim == 1 and labels.shape[0] != n):
            raise ValueError(f"labels must be an int, None, or int64 of shape ({n},), got "
                             f"{describe(labels)}")
        if bool((labels < 0).any()) or bool((labels >= self.classes).any()):
            raise ValueError(f"labels must lie in [0, {self.classes}) (None: unconditional)")
        return labels

    def denoise(self, x: Tensor, sigma: Tensor | float,
                labels: Tensor | int | None = None) -> Tensor:
        r""":math:`D_\theta(x; \sigma, c) = c_{\mathrm{skip}} x + c_{\mathrm{out}}
        F_\theta(c_{\mathrm{in}} x; c_{\mathrm{noise}}, c)`, eq. ``eq-sde-edm-precond``;
        ``labels`` an int, ``(B,)`` int64, or ``None`` for the unconditional denoiser."""
        x = self._check_batch(x)
        return super().denoise(x, sigma, self._labels(labels, x.shape[0], x.device))

    def loss(self, x: Tensor, labels: Tensor, *,
             generator: torch.Generator | None = None) -> Tensor:
        r"""EDM's loss, eq. ``eq-sde-edm-loss`` (:meth:`gmbook.sde.EDM.loss`), with label
        dropout: each label is replaced by the null label with probability ``p_uncond``.

        Args:
            x: clean data ``(B, *D)``.
            labels: their classes ``(B,)``, int64 in ``[0, classes)``.
            generator: randomness of the dropout (drawn first), the noise levels and the
                noise.
        """
        x = self._check_batch(x)
        labels = self._labels(labels, x.shape[0], x.device)
        if labels.ndim != 1:
            raise ValueError("labels must have shape (B,)")
        generator = check_generator(generator)
        drop = rand((x.shape[0],), like=x, generator=generator) < self.p_uncond
        lab = torch.where(drop, torch.full_like(labels, self.classes), labels)
        return super().loss(x, cond=lab, generator=generator)

    def prediction(self, label: int | None = None) -> samplers.Prediction:
        r"""The denoiser of class ``label`` (``None``: unconditional) as an ``"x0"``
        :class:`gmbook.samplers.Prediction` on :meth:`gmbook.sde.EDM.path`."""
        if label is not None:
            self._labels(label, 1, torch.device("cpu"))
        return samplers.Prediction(lambda x, t: self.denoise(x, t, label), "x0", self.path())

    @torch.no_grad()
    def sample(self, n: int, *, label: int | None = None, w: float = 1.0, steps: int = 16,
               sampler: Callable[..., samplers.SamplePath] | None = None,
               grid: Tensor | None = None, generator: torch.Generator | None = None,
               **options) -> Tensor:
        r"""Samples of class ``label`` with classifier-free guidance weight ``w``
        (:func:`cfg`; ``w = 1``: the conditional model, one network call per step) or, with
        ``label=None``, of the unconditional model; by default DPM-Solver++(2M) on EDM's
        grid (:meth:`gmbook.sde.EDM.sample`'s defaults)."""
        n = check_int("n", n)
        generator = check_generator(generator)
        w = _check_weight(w)
        if label is None:
            pred = self.prediction()
        elif w == 1:
            pred = self.prediction(label)
        else:
            pred = cfg(self.prediction(), self.prediction(label), w)
        grid = self.grid(steps) if grid is None else \
            torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
        x = self.prior(n, sigma=float(grid[0]), generator=generator)
        sampler = samplers.dpm_solver_pp_2m if sampler is None else sampler
        return sampler(pred, x, grid, generator=generator, **options).samples
