r"""Data sets of the book: six 2-D toy distributions and the 8x8 digits.

Every chapter trains its models on the same few data sets, and this module holds them all;
it is introduced on the page ``book/foundations/problem.md`` (Chapter 1, "The generative
modeling problem"). The 2-D toys (:class:`TwoMoons`, :class:`EightGaussians`,
:class:`GaussianGrid`, :class:`Checkerboard`, :class:`Banana`, :class:`Spirals`) are small
classes with the same verbs as the book's models, ``sample(n)`` and, where the density is tractable,
``log_prob(x)``, so that a learned density can be compared with the exact one. By default
they are standardized per axis by a fixed :class:`Standardizer`. The digits
(:func:`digits`, :func:`digits_split`) are the 1797 images of scikit-learn's bundled copy
of the UCI handwritten digits, scaled to :math:`[-1, 1]`. Nothing is downloaded.

Example:
    >>> import torch
    >>> from gmbook.data import two_moons, toy
    >>> x = two_moons(256, generator=torch.Generator().manual_seed(0))
    >>> x.shape, x.dtype
    (torch.Size([256, 2]), torch.float32)
    >>> toy("eight_gaussians").log_prob(x).shape
    torch.Size([256])
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from gmbook._checks import check_bool as _check_bool
from gmbook._checks import check_points
from gmbook._checks import check_int as _check_int
from gmbook._checks import check_nonnegative as _check_nonnegative
from gmbook._checks import check_positive as _check_positive
from gmbook._checks import check_real as _check_real
from gmbook._random import rand, randn

__all__ = [
    "DIGIT_LEVELS",
    "TOYS",
    "Banana",
    "Checkerboard",
    "ClassConditional",
    "EightGaussians",
    "GaussianGrid",
    "IsotropicMixture",
    "Spirals",
    "Standardizer",
    "Toy2D",
    "TwoMoons",
    "digits",
    "digits_split",
    "toy",
    "two_moons",
]

DIGIT_LEVELS = 17
r"""How many discrete pixel levels the digits have. The raw pixels are the integers
:math:`0, 1, \dots, 16`, which :func:`digits` maps to :math:`k / 8 - 1`, a grid of step
:math:`1/8` on :math:`[-1, 1]`. Continuous density models need these levels dequantized
(uniform noise of one level's width added) before a density on :math:`\mathbb{R}^D` makes
sense; the chapters on flows and on likelihoods use this constant for that."""

_REFERENCE_SEED = 20240517  # the private seed of every toy's reference sample
_REFERENCE_SIZE = 2**17  # points in the reference sample that fixes a toy's Standardizer
_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- validation


def _check_float_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


# --------------------------------------------------------------------------- Standardizer


@dataclasses.dataclass(frozen=True, eq=False)
class Standardizer:
    r"""The per-axis affine map :math:`T(x) = (x - \mu) / \sigma`.

    It brings data to zero mean and unit variance on every axis. Being an explicit
    invertible map, it keeps densities exact: if :math:`z = T(x)` then, by the change of
    variables,

    .. math::

        \log p_Z(z) = \log p_X(x) - \log\left|\det \frac{\partial T}{\partial x}\right|
                    = \log p_X(T^{-1}(z)) + \sum_{d} \log \sigma_d ,

    with :attr:`log_abs_det_jacobian` :math:`= -\sum_d \log \sigma_d`.

    The statistics are kept as given; :meth:`transform` and :meth:`inverse` move and cast
    them to the device and dtype of their input.

    Attributes:
        mean: per-axis mean :math:`\mu`, shape ``(D,)``.
        std: per-axis standard deviation :math:`\sigma > 0`, shape ``(D,)``.

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [2.0, 5.0]])
        >>> s = Standardizer.fit(x)
        >>> s.transform(x)
        tensor([[-1., -1.],
                [ 1.,  1.]])
        >>> s.log_abs_det_jacobian  # -log(1) - log(2)
        tensor(-0.6931)
    """

    mean: Tensor
    std: Tensor

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"{name} must be a floating-point torch.Tensor, got {value!r}")
            if value.ndim != 1:
                raise ValueError(f"{name} must have shape (D,), got {tuple(value.shape)}")
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"mean and std must have the same shape (D,), got {tuple(self.mean.shape)} "
                f"and {tuple(self.std.shape)}"
            )
        if not bool(torch.isfinite(self.mean).all()):
            raise ValueError("mean must be finite")
        if not bool((torch.isfinite(self.std) & (self.std > 0)).all()):
            raise ValueError(f"std must be finite and > 0 on every axis, got {self.std}")

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        r"""Fit the per-axis mean and population standard deviation of a sample.

        Args:
            x: data, shape ``(n, D)`` with ``n >= 2``.

        Returns:
            The :class:`Standardizer` with ``mean = x.mean(0)`` and
            ``std = x.std(0, unbiased=False)``, in the device and dtype of ``x``.

        Raises:
            ValueError: if ``n < 2``, if ``x`` is not finite, or if an axis is constant.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point torch.Tensor, got {x!r}")
        if x.ndim != 2:
            raise ValueError(f"x must have shape (n, D), got {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise ValueError(f"need at least n >= 2 points to fit, got n = {x.shape[0]}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x must be finite to fit a Standardizer")
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        constant = (std == 0).nonzero().flatten().tolist()
        if constant:
            raise ValueError(f"cannot standardize: axes {constant} have zero std (constant)")
        return cls(mean=mean, std=std)

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = check_points("x", x, self.mean.shape[0], batch_dims=True)
        return (
            self.mean.to(device=x.device, dtype=x.dtype),
            self.std.to(device=x.device, dtype=x.dtype),
        )

    def transform(self, x: Tensor) -> Tensor:
        r"""Apply :math:`z = (x - \mu) / \sigma`.

        Args:
            x: points, shape ``(B, D)`` (any leading batch shape).

        Returns:
            ``z``, same shape, device and dtype as ``x``.
        """
        mean, std = self._stats(x)
        return (x - mean) / std

    def inverse(self, z: Tensor) -> Tensor:
        r"""Apply :math:`x = \mu + \sigma z`, the inverse of :meth:`transform`.

        Args:
            z: standardized points, shape ``(B, D)`` (any leading batch shape).

        Returns:
            ``x``, same shape, device and dtype as ``z``.
        """
        mean, std = self._stats(z)
        return mean + std * z

    @property
    def log_abs_det_jacobian(self) -> Tensor:
        r"""The constant :math:`\log|\det \partial T / \partial x| = -\sum_d \log \sigma_d`.

        This is the log-det of :meth:`transform` (data to standardized space), so
        ``log p_z(z) = log p_x(inverse(z)) - log_abs_det_jacobian``. A scalar tensor in the
        device and dtype of :attr:`std`.
        """
        return -torch.log(self.std).sum()


# --------------------------------------------------------------------------- 2-D toys


@functools.lru_cache(maxsize=64)
def _reference_standardizer(raw: Toy2D) -> Standardizer:
    # `raw` is the toy with standardize=False; frozen dataclasses hash on their parameters,
    # so the cache is keyed on (class, parameters). Float64 on the CPU, whatever the
    # default device, with a private generator: the result never depends on global state.
    generator = torch.Generator(device="cpu").manual_seed(_REFERENCE_SEED)
    x, _ = raw._sample_raw(_REFERENCE_SIZE, generator, torch.device("cpu"), torch.float64)
    return Standardizer.fit(x)


class Toy2D:
    r"""Shared code of the 2-D toy distributions (not instantiated directly).

    A subclass is a frozen dataclass of its parameters, ending with ``standardize: bool``,
    and implements ``_sample_raw`` (and ``_log_prob_raw`` where the density is tractable)
    in the raw, unstandardized coordinates. This class adds the public verbs.

    **Standardization.** With ``standardize=True`` (the default) samples are returned as
    :math:`z = (x - \mu) / \sigma`, where :attr:`standardizer` is fitted once on a large
    reference sample (:math:`2^{17}` points, float64) drawn with a private generator of
    fixed seed, and cached per set of parameters. So every fresh batch is mapped by the
    *same* known affine map, and :meth:`log_prob` stays exact by the change of variables.
    The book standardizes the 2-D toys per axis, to zero mean and unit variance, so that
    the :math:`\mathcal{N}(0, I)` prior of the models and the data share a scale: the same
    learning rates, step sizes and noise schedules then work on every toy.
    """

    standardize: bool
    #: Number of mixture components; ``sample_with_labels`` returns labels in ``[0, k)``.
    components: ClassVar[int] = 1

    def _sample_raw(
        self,
        n: int,
        generator: torch.Generator | None,
        device: torch.device | None,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _log_prob_raw(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError(
            f"{type(self).__name__}.log_prob: this density has no closed form here"
        )

    @property
    def standardizer(self) -> Standardizer:
        r"""The fixed :class:`Standardizer` of this distribution (float64, on the CPU).

        Fitted on the reference sample of the *raw* distribution; it is the same object for
        every instance with the same parameters, and it is defined even when
        ``standardize=False`` (it is then simply not applied).
        """
        return _reference_standardizer(dataclasses.replace(self, standardize=False))

    def sample_with_labels(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, Tensor]:
        r"""Draw ``n`` iid points together with the mixture component of each.

        Args:
            n: number of points, a positive int.
            generator: source of randomness; ``None`` uses the global RNG.
            device: device of the result; ``None`` means the generator's device if one is
                given, else PyTorch's default device.
            dtype: floating-point dtype of the points.

        Returns:
            ``(x, labels)``: points of shape ``(n, 2)`` and int64 component indices in
            ``[0, components)`` of shape ``(n,)``.
        """
        n = _check_int("n", n)
        dtype = _check_float_dtype(dtype)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
        if device is None and generator is not None:
            device = generator.device
        device = None if device is None else torch.device(device)
        work = torch.promote_types(dtype, torch.float32)  # half precision: sample in float32
        x, labels = self._sample_raw(n, generator, device, work)
        if self.standardize:
            x = self.standardizer.transform(x)
        return x.to(dtype), labels

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        r"""Draw ``n`` iid points.

        Args:
            n: number of points, a positive int.
            generator: source of randomness; ``None`` uses the global RNG.
            device: device of the result; ``None`` means the generator's device if one is
                given, else PyTorch's default device.
            dtype: floating-point dtype of the result.

        Returns:
            Points of shape ``(n, 2)``, standardized if ``self.standardize``.
        """
        return self.sample_with_labels(n, generator=generator, device=device, dtype=dtype)[0]

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Exact log-density (natural log) at ``x``, in the space :meth:`sample` returns.

        With ``standardize=True`` the density of :math:`z = T(x)` is
        :math:`\log p_Z(z) = \log p_X(T^{-1}(z)) + \sum_d \log\sigma_d` (see
        :class:`Standardizer`). Computed in float64 on the device of ``x`` (on a device
        without float64, such as Apple's MPS, move ``x`` to the CPU first).

        Args:
            x: points, shape ``(B, 2)`` (any leading batch shape ``(*B, 2)``).

        Returns:
            Log-densities of shape ``(B,)``, in the device and dtype of ``x``; ``-inf``
            outside the support.
        """
        x = check_points("x", x, 2, batch_dims=True)
        x64 = x.to(torch.float64)
        if self.standardize:
            standardizer = self.standardizer
            logp = self._log_prob_raw(standardizer.inverse(x64))
            logp = logp - standardizer.log_abs_det_jacobian.to(logp.device)
        else:
            logp = self._log_prob_raw(x64)
        return logp.to(x.dtype)


def _uniform(n: int, generator, device, dtype) -> Tensor:
    return rand((n,), device=device, dtype=dtype, generator=generator)


def _uniform_points(shape: tuple[int, ...], generator, device, dtype) -> Tensor:
    return rand(shape, device=device, dtype=dtype, generator=generator)


def _normal(shape: tuple[int, ...], generator, device, dtype) -> Tensor:
    return randn(shape, device=device, dtype=dtype, generator=generator)


def _gaussian_log_kernel(d2: Tensor, var: float) -> Tensor:
    # log N(x; c, var I) in 2-D from the squared distance d2 = |x - c|^2
    return -0.5 * d2 / var - _LOG_2PI - math.log(var)


@functools.lru_cache(maxsize=16)
def _arc_quadrature(noise: float, nodes: int = 32) -> tuple[np.ndarray, np.ndarray]:
    # Composite Gauss-Legendre rule on [0, pi], normalized to average over it:
    # (1/pi) int_0^pi f(s) ds ~ sum_k w_k f(s_k), sum_k w_k = 1. The integrand
    # exp(-|x - c(s)|^2 / (2 noise^2)) is a bump of width ~noise in s (|c'(s)| = 1), so the
    # panels are at most 8 noise wide; and where the nearest arc point of x is an end of the
    # arc, it decays from that end over a length ~noise^2 / |x - c|, so the two end panels
    # are graded geometrically (ratio 8) down to a width noise^2 / 12.
    m = max(4, math.ceil(math.pi / (8 * noise)))
    width = math.pi / m
    levels = max(0, math.ceil(math.log(12 * width / noise**2, 8)))
    graded = [width * 8.0**-k for k in range(levels, 0, -1)]  # increasing, all < width
    edges = np.array(
        [0.0, *graded, *np.linspace(width, math.pi - width, m - 1)]
        + [math.pi - e for e in reversed(graded)]
        + [math.pi]
    )
    t, w = np.polynomial.legendre.leggauss(nodes)
    half = np.diff(edges)[:, None] / 2  # (panels, 1)
    s = (edges[:-1, None] + half * (t[None, :] + 1)).ravel()  # (panels * nodes,)
    weights = (half * w[None, :]).ravel() / math.pi
    return s, weights


@dataclasses.dataclass(frozen=True)
class TwoMoons(Toy2D):
    r"""Two interleaving half circles ("two moons"), sampled iid.

    A point is drawn as follows: a moon label :math:`y \in \{0, 1\}` (the upper moon, 0, with
    probability ``upper``, by default 1/2), an arc
    position :math:`s \sim \mathcal{U}(0, \pi)`, the centre

    .. math::

        c_0(s) = (\cos s, \sin s), \qquad c_1(s) = (1 - \cos s, \tfrac12 - \sin s),

    (the geometry of :func:`sklearn.datasets.make_moons`) and
    :math:`x = c_y(s) + \varepsilon` with :math:`\varepsilon \sim \mathcal{N}(0,
    \text{noise}^2 I)`. Unlike ``make_moons``, which puts exactly ``n // 2`` points per moon
    at *evenly spaced* positions, the points here are iid draws from one fixed density, so
    :meth:`log_prob` is the density they follow:

    .. math::

        p(x) = \sum_{y=0}^{1} w_y \frac1\pi \int_0^\pi
            \mathcal{N}(x; c_y(s), \text{noise}^2 I)\, ds ,
        \qquad w_0 = \text{upper},\ w_1 = 1 - \text{upper},

    computed in float64 by composite Gauss-Legendre quadrature in :math:`s` with a
    log-sum-exp: 32 nodes on each panel, panels at most :math:`8\,\text{noise}` wide (the
    integrand is a bump of width about ``noise``) and the two end panels graded
    geometrically towards the ends of the arcs (where the integrand of a far point decays
    over a length about :math:`\text{noise}^2`). That is 512 nodes for the default noise.
    Against a rule with panels 32 times narrower, the log-density agrees to
    :math:`10^{-10}` on :math:`[-2, 3] \times [-1.5, 2.5]` for noise from 0.002 to 0.3.

    Args:
        noise: standard deviation of the isotropic Gaussian noise, ``> 0``. :meth:`log_prob`
            needs ``noise >= 1e-4`` (finer noise would need too many nodes).
        upper: probability of the upper moon, in :math:`(0, 1)`; the mixture weights of
            the density are ``upper`` and ``1 - upper``. Unequal weights show that a score
            alone cannot tell how much mass each moon carries (the score chapter).
        standardize: map the samples by the fixed :attr:`standardizer`.

    Example:
        >>> moons = TwoMoons(noise=0.1)
        >>> x, y = moons.sample_with_labels(4, generator=torch.Generator().manual_seed(0))
        >>> x.shape, y.shape
        (torch.Size([4, 2]), torch.Size([4]))
        >>> bool(torch.isfinite(moons.log_prob(x)).all())
        True
    """

    noise: float = 0.05
    upper: float = 0.5
    standardize: bool = True
    components: ClassVar[int] = 2
    _MIN_LOG_PROB_NOISE: ClassVar[float] = 1e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise", _check_positive("noise", self.noise))
        upper = self.upper
        if isinstance(upper, bool) or not isinstance(upper, (int, float)) or not 0 < upper < 1:
            raise ValueError(f"upper must be a probability in (0, 1), got {upper!r}")
        object.__setattr__(self, "upper", float(upper))
        _check_bool("standardize", self.standardize)

    def _moon_weights(self) -> tuple[float, float]:
        return self.upper, 1.0 - self.upper

    def _sample_raw(self, n, generator, device, dtype):
        if self.upper == 0.5:  # the historical stream: every chapter's numbers stay the same
            y = torch.randint(0, 2, (n,), generator=generator, device=device)
        else:
            y = (_uniform(n, generator, device, torch.float64) >= self.upper).long()
        s = math.pi * _uniform(n, generator, device, dtype)
        lower = y == 1
        x1 = torch.where(lower, 1 - torch.cos(s), torch.cos(s))
        x2 = torch.where(lower, 0.5 - torch.sin(s), torch.sin(s))
        x = torch.stack([x1, x2], dim=-1)  # (n, 2)
        return x + self.noise * _normal((n, 2), generator, device, dtype), y

    def nearest_moon(self, x: Tensor) -> Tensor:
        r"""The moon whose arc is nearer to each point: 0 (upper) or 1 (lower).

        The labels of :meth:`gmbook.data.Toy2D.sample_with_labels` for points near the
        arcs; computed in the raw coordinates against 512 points per arc.

        Args:
            x: points in the space of :meth:`gmbook.data.Toy2D.sample`, shape ``(*B, 2)``.

        Returns:
            int64 labels of shape ``(*B,)``.
        """
        x = check_points("x", x, 2, batch_dims=True)
        flat = x.detach().reshape(-1, 2).to(torch.float64)
        raw = self.standardizer.inverse(flat.cpu()) if self.standardize else flat.cpu()
        s = torch.linspace(0, math.pi, 512, dtype=torch.float64)
        arcs = torch.cat([torch.stack([s.cos(), s.sin()], -1),
                          torch.stack([1 - s.cos(), 0.5 - s.sin()], -1)])  # (1024, 2)
        lower = torch.cdist(raw, arcs).argmin(-1) >= 512
        return lower.long().reshape(x.shape[:-1]).to(x.device)

    def mixture(self) -> tuple[Tensor, Tensor, Tensor]:
        r"""The density of :meth:`log_prob` as an explicit mixture of axis-aligned Gaussians.

        The quadrature above turns the integral over the arcs into a finite mixture: one
        Gaussian per node, centred on the node's point of an arc, with the node's weight
        (halved, one half per moon). With ``standardize=True`` the centres go through the
        :attr:`standardizer` and the variances are divided by the squared scales, so that
        the mixture is the density of :meth:`gmbook.data.Toy2D.sample` exactly (up to
        quadrature error).
        The score chapter uses it for exact scores of noised data: adding
        :math:`\mathcal N(0, \sigma^2 I)` noise adds :math:`\sigma^2` to every variance.

        Returns:
            The triple ``(weights, means, variances)``, float64 on the CPU, of shapes
            ``(K,)``, ``(K, 2)`` and ``(K, 2)`` with ``K`` twice the number of nodes; the
            weights sum to 1 (up to rounding).

        Example:
            >>> w, mu, var = TwoMoons().mixture()
            >>> w.shape, mu.shape, var.shape
            (torch.Size([1024]), torch.Size([1024, 2]), torch.Size([1024, 2]))
        """
        if self.noise < self._MIN_LOG_PROB_NOISE:
            raise ValueError(
                f"TwoMoons.mixture needs noise >= {self._MIN_LOG_PROB_NOISE} for its "
                f"quadrature, got noise = {self.noise}"
            )
        s_np, w_np = _arc_quadrature(self.noise)
        s = torch.as_tensor(s_np)  # (K/2,)
        w = torch.as_tensor(w_np)  # quadrature weights of one moon, summing to 1
        w_up, w_low = self._moon_weights()
        upper = torch.stack([torch.cos(s), torch.sin(s)], -1)
        lower = torch.stack([1 - torch.cos(s), 0.5 - torch.sin(s)], -1)
        means = torch.cat([upper, lower])  # (K, 2)
        var = torch.full_like(means, self.noise**2)  # (K, 2)
        if self.standardize:
            st = self.standardizer
            means = st.transform(means)
            var = var / st.std.to(var) ** 2
        return torch.cat([w_up * w, w_low * w]), means, var

    def _log_prob_raw(self, x: Tensor) -> Tensor:
        if self.noise < self._MIN_LOG_PROB_NOISE:
            raise ValueError(
                f"TwoMoons.log_prob needs noise >= {self._MIN_LOG_PROB_NOISE} for its "
                f"quadrature, got noise = {self.noise}"
            )
        s_np, w_np = _arc_quadrature(self.noise)
        s = torch.as_tensor(s_np, device=x.device)  # (K,)
        log_w = torch.as_tensor(np.log(w_np), device=x.device)  # one moon's nodes
        c1 = torch.cat([torch.cos(s), 1 - torch.cos(s)])  # (2K,) both moons' centres
        c2 = torch.cat([torch.sin(s), 0.5 - torch.sin(s)])  # (2K,)
        w_up, w_low = self._moon_weights()
        log_w = torch.cat([log_w + math.log(w_up), log_w + math.log(w_low)])  # (2K,)
        var = self.noise**2
        batch_shape = x.shape[:-1]
        flat = x.reshape(-1, 2)  # (B, 2)
        logp = _ArcMixtureLogSumExp.apply(flat, c1, c2, log_w, var)  # (B,)
        return (logp - _LOG_2PI - math.log(var)).reshape(batch_shape)


class _ArcMixtureLogSumExp(torch.autograd.Function):
    r""":math:`\log \sum_k w_k \exp(-|x - c_k|^2 / 2\sigma^2)` over the quadrature nodes of
    :meth:`TwoMoons.log_prob`, with its gradient in closed form.

    The gradient is :math:`-(x - \sum_k \pi_k c_k) / \sigma^2` with :math:`\pi` the softmax of
    the exponents: one matrix product with the node weights that the forward pass keeps,
    instead of automatic differentiation through the ``(B, 2K)`` array (a third of the cost of
    ``log_prob`` with its gradient, the inner loop of the samplers run on two moons). Only
    first derivatives: a second derivative raises an error rather than a wrong value.
    """

    @staticmethod
    def forward(ctx, x: Tensor, c1: Tensor, c2: Tensor, log_w: Tensor, var: float) -> Tensor:
        keep = ctx.needs_input_grad[0]
        chunk = max(1, 2**22 // c1.shape[0])  # bound the (chunk, 2K) work array
        out, means = [], []
        for xb in x.split(chunk):
            dx, dy = xb[:, :1] - c1, xb[:, 1:] - c2  # (chunk, 2K) each
            # log_w - (dx^2 + dy^2) / (2 var), op by op in place in dx: the same numbers as
            # the expression, 40% faster (no new (chunk, 2K) arrays to allocate and fault in)
            d2 = dx.mul_(dx).add_(dy.mul_(dy))
            logits = torch.sub(log_w, d2.mul_(0.5 / var), out=d2)
            if not keep:
                out.append(torch.logsumexp(logits, dim=-1))
                continue
            # (chunk, 1); the clamp keeps a point at infinity at -inf (not NaN)
            top = logits.amax(-1, keepdim=True).clamp_min(torch.finfo(logits.dtype).min)
            e = torch.exp(logits - top)
            total = e.sum(-1)
            out.append(top[:, 0] + torch.log(total))  # = logsumexp, sharing the exp
            # the posterior mean of the node, sum_k pi_k c_k, (chunk, 2)
            means.append(torch.stack([e @ c1, e @ c2], dim=-1) / total[:, None])
        if keep:
            ctx.save_for_backward(x, torch.cat(means) if means else x.new_empty(0, 2))
            ctx.var = var
        return torch.cat(out) if out else x.new_empty(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, mean = ctx.saved_tensors
        return -grad[:, None] * (x - mean) / ctx.var, None, None, None, None


class IsotropicMixture(Toy2D):
    """Base class of the toys that are an equal mixture of isotropic Gaussians
    (:class:`EightGaussians`, :class:`GaussianGrid`): a subclass gives the standard
    deviation ``std`` and the centres ``_centres(device, dtype)``, ``(K, 2)`` with ``K`` its
    ``components``; the sampler, the density and :meth:`mixture` are shared. A component's
    label is its row of the centres."""

    def _centres(self, device, dtype) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def _sample_raw(self, n, generator, device, dtype):
        k = torch.randint(0, self.components, (n,), generator=generator, device=device)
        x = self._centres(device, dtype)[k] + self.std * _normal((n, 2), generator, device, dtype)
        return x, k

    def _log_prob_raw(self, x: Tensor) -> Tensor:
        d2 = ((x[..., None, :] - self._centres(x.device, x.dtype)) ** 2).sum(-1)  # (*B, K)
        log_kernel = _gaussian_log_kernel(d2, self.std**2)
        return torch.logsumexp(log_kernel, dim=-1) - math.log(self.components)

    def mixture(self) -> tuple[Tensor, Tensor, Tensor]:
        r"""The density as ``(weights, means, variances)`` in the space of
        :meth:`gmbook.data.Toy2D.sample` (the centres through the :attr:`standardizer`, the
        variances divided by its squared scales), float64 on the CPU, shapes ``(K,)``,
        ``(K, 2)``, ``(K, 2)``, ``K`` the number of components, in the order of the labels."""
        means = self._centres(torch.device("cpu"), torch.float64)
        var = torch.full_like(means, self.std**2)
        if self.standardize:
            st = self.standardizer
            means, var = st.transform(means), var / st.std.to(var) ** 2
        k = self.components
        return torch.full((k,), 1 / k, dtype=torch.float64), means, var


@dataclasses.dataclass(frozen=True)
class EightGaussians(IsotropicMixture):
    r"""Equal mixture of 8 isotropic Gaussians evenly spaced on a circle.

    .. math::

        p(x) = \frac18 \sum_{k=0}^{7} \mathcal{N}\!\left(x;\; r(\cos\tfrac{k\pi}{4},
        \sin\tfrac{k\pi}{4}),\; \text{std}^2 I\right).

    Args:
        radius: radius :math:`r > 0` of the circle of centres.
        std: standard deviation of each component, ``> 0``.
        standardize: map the samples by the fixed :attr:`standardizer`.
    """

    radius: float = 2.0
    std: float = 0.1
    standardize: bool = True
    components: ClassVar[int] = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius", _check_positive("radius", self.radius))
        object.__setattr__(self, "std", _check_positive("std", self.std))
        _check_bool("standardize", self.standardize)

    def _centres(self, device, dtype) -> Tensor:
        angle = torch.arange(8, device=device, dtype=dtype) * (math.pi / 4)
        return self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)  # (8, 2)



@dataclasses.dataclass(frozen=True)
class GaussianGrid(IsotropicMixture):
    r"""Equal mixture of ``side x side`` isotropic Gaussians on a square grid.

    .. math::

        p(x) = \frac{1}{m^2} \sum_{i, j = 0}^{m - 1} \mathcal{N}\!\left(x;\;
        h\,\big(i - \tfrac{m - 1}{2},\, j - \tfrac{m - 1}{2}\big),\;
        \text{std}^2 I\right),

    with :math:`m` = ``side`` and :math:`h` = ``spacing``. With the defaults, the 25 modes
    of the 5x5 grid on :math:`\{-2, \dots, 2\}^2`, each of std 0.05 (a twentieth of the
    spacing): the GAN chapter counts the modes a generator covers. A component's label is
    ``i * side + j`` (column :math:`i`, row :math:`j`).

    Args:
        side: modes per axis, an int ``>= 2``.
        spacing: distance :math:`h > 0` between neighbouring modes.
        std: standard deviation of each component, ``> 0``.
        standardize: map the samples by the fixed :attr:`standardizer`.
    """

    side: int = 5
    spacing: float = 1.0
    std: float = 0.05
    standardize: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.side, bool) or not isinstance(self.side, numbers.Integral):
            raise TypeError(f"side must be an int >= 2, got {self.side!r}")
        if self.side < 2:
            raise ValueError(f"side must be an int >= 2, got {self.side}")
        object.__setattr__(self, "side", int(self.side))
        object.__setattr__(self, "spacing", _check_positive("spacing", self.spacing))
        object.__setattr__(self, "std", _check_positive("std", self.std))
        _check_bool("standardize", self.standardize)

    @property
    def components(self) -> int:  # type: ignore[override]
        """Number of modes, ``side**2``; labels index them."""
        return self.side**2

    def _centres(self, device, dtype) -> Tensor:
        line = (torch.arange(self.side, device=device, dtype=dtype) - (self.side - 1) / 2)
        return self.spacing * torch.cartesian_prod(line, line)  # (side**2, 2)



@dataclasses.dataclass(frozen=True)
class Checkerboard(Toy2D):
    r"""Uniform distribution on the dark squares of a checkerboard.

    The board is ``squares x squares`` cells of side :math:`h = 2\,\text{half\_width} /
    \text{squares}` covering :math:`[-\text{half\_width}, \text{half\_width}]^2`; cell
    :math:`(i, j)` (column :math:`i`, row :math:`j`, from the lower left) is dark when
    :math:`i + j` is even. With the defaults this is the usual toy: the 8 dark unit squares
    of a 4x4 board on :math:`[-2, 2]^2`, density :math:`1/8` on them and 0 elsewhere
    (``log_prob`` is ``-inf`` off the support).

    Args:
        squares: cells per side, an int ``>= 2``.
        half_width: half the side of the board, ``> 0``.
        standardize: map the samples by the fixed :attr:`standardizer`.
    """

    squares: int = 4
    half_width: float = 2.0
    standardize: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.squares, bool) or not isinstance(self.squares, numbers.Integral):
            raise TypeError(f"squares must be an int >= 2, got {self.squares!r}")
        if self.squares < 2:
            raise ValueError(f"squares must be an int >= 2, got {self.squares}")
        object.__setattr__(self, "squares", int(self.squares))
        object.__setattr__(self, "half_width", _check_positive("half_width", self.half_width))
        _check_bool("standardize", self.standardize)

    @property
    def components(self) -> int:  # type: ignore[override]
        """Number of dark cells, ``ceil(squares**2 / 2)``; labels index them."""
        return (self.squares**2 + 1) // 2

    @property
    def _side(self) -> float:
        return 2 * self.half_width / self.squares

    def _sample_raw(self, n, generator, device, dtype):
        m = self.squares
        dark = [(i, j) for j in range(m) for i in range(m) if (i + j) % 2 == 0]
        dark = torch.tensor(dark, device=device, dtype=dtype)  # (components, 2): (i, j)
        cell = torch.randint(0, len(dark), (n,), generator=generator, device=device)
        offset = _uniform_points((n, 2), generator, device, dtype)
        corner = dark[cell] * self._side - self.half_width  # (n, 2) lower-left corners
        return corner + offset * self._side, cell

    def _log_prob_raw(self, x: Tensor) -> Tensor:
        inside = ((x >= -self.half_width) & (x <= self.half_width)).all(-1)
        ij = torch.floor((x + self.half_width) / self._side).clamp(0, self.squares - 1)
        dark = ij.sum(-1).remainder(2) == 0
        log_density = -math.log(self.components * self._side**2)
        logp = torch.full(x.shape[:-1], -math.inf, device=x.device, dtype=x.dtype)
        return logp.masked_fill(inside & dark, log_density)


@dataclasses.dataclass(frozen=True)
class Banana(Toy2D):
    r"""A Rosenbrock-like banana: a Gaussian bent along a parabola.

    .. math::

        x_1 \sim \mathcal{N}(0, 1), \qquad
        x_2 \mid x_1 \sim \mathcal{N}\!\left(b\,(x_1^2 - 1),\; \sigma^2\right),

    with :math:`b` = ``curvature`` and :math:`\sigma` = ``std``. The shift :math:`-1` makes
    the raw mean exactly zero; the raw variances are :math:`1` and :math:`2b^2 + \sigma^2`.
    The density is the product of the two Gaussian factors.

    Args:
        curvature: :math:`b`, any finite real (0 gives a Gaussian; negative flips it).
        std: :math:`\sigma > 0`, the spread of :math:`x_2` about the parabola.
        standardize: map the samples by the fixed :attr:`standardizer`.
    """

    curvature: float = 1.0
    std: float = 0.5
    standardize: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "curvature", _check_real("curvature", self.curvature))
        object.__setattr__(self, "std", _check_positive("std", self.std))
        _check_bool("standardize", self.standardize)

    def _sample_raw(self, n, generator, device, dtype):
        eps = _normal((n, 2), generator, device, dtype)
        x1 = eps[:, 0]
        x2 = self.curvature * (x1**2 - 1) + self.std * eps[:, 1]
        return torch.stack([x1, x2], dim=-1), torch.zeros(n, dtype=torch.long, device=device)

    def _log_prob_raw(self, x: Tensor) -> Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        r = (x2 - self.curvature * (x1**2 - 1)) / self.std
        return -0.5 * (x1**2 + r**2) - _LOG_2PI - math.log(self.std)


@dataclasses.dataclass(frozen=True)
class Spirals(Toy2D):
    r"""Two interleaved Archimedean spirals with Gaussian noise.

    Arm :math:`y \sim \mathrm{Bernoulli}(1/2)`, angle :math:`\theta = 2\pi\,\text{turns}
    \sqrt{u}` with :math:`u \sim \mathcal{U}(0, 1)` (the square root spreads the points
    roughly evenly along the arc, whose length grows like :math:`\theta^2`), and

    .. math::

        x = (-1)^y \, \frac{\theta}{\pi} (\cos\theta, \sin\theta) + \varepsilon, \qquad
        \varepsilon \sim \mathcal{N}(0, \text{noise}^2 I),

    so the second arm is the first one rotated by :math:`\pi`. The density is a line
    integral along the spiral with no closed form here, so :meth:`log_prob` raises
    :class:`NotImplementedError`: use this toy for sampling-only models.

    Args:
        turns: number of turns of each arm, ``> 0``.
        noise: standard deviation of the Gaussian noise, ``>= 0``.
        standardize: map the samples by the fixed :attr:`standardizer`.
    """

    turns: float = 1.5
    noise: float = 0.1
    standardize: bool = True
    components: ClassVar[int] = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", _check_positive("turns", self.turns))
        object.__setattr__(self, "noise", _check_nonnegative("noise", self.noise))
        _check_bool("standardize", self.standardize)

    def _sample_raw(self, n, generator, device, dtype):
        y = torch.randint(0, 2, (n,), generator=generator, device=device)
        theta = 2 * math.pi * self.turns * torch.sqrt(_uniform(n, generator, device, dtype))
        sign = 1 - 2 * y.to(dtype)  # +1 for arm 0, -1 for arm 1
        r = sign * theta / math.pi
        x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)  # (n, 2)
        return x + self.noise * _normal((n, 2), generator, device, dtype), y

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Not available: the spirals' density has no closed form here.

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError(
            "Spirals.log_prob: the density of the noisy spirals has no closed form here "
            "(it is a line integral along the arms); use a toy with an exact log_prob, e.g. "
            "TwoMoons, EightGaussians, Checkerboard or Banana"
        )


@dataclasses.dataclass(frozen=True)
class ClassConditional(Toy2D):
    r"""One class of a labelled toy: the distribution of its points with a given label.

    For :class:`TwoMoons` the class is a moon (0 the upper, 1 the lower: the labels of
    :meth:`Toy2D.sample_with_labels`), drawn as that moon's arc position, centre and noise;
    for :class:`EightGaussians` it is one component. Samples are standardized by the *whole*
    toy's :attr:`standardizer` (a class is then not centred: the lower moon's mean is about
    :math:`(0.57, -0.77)`), so that they live in the space of the toy's samples. The
    guidance chapter scores class-conditional models against it; as a frozen dataclass of
    this module, its scorecard floors can be shipped (:mod:`gmbook.metrics.floors`).

    Args:
        toy: a :class:`TwoMoons` or :class:`EightGaussians`.
        label: the class, in ``[0, toy.components)``.

    Example:
        >>> lower = ClassConditional(TwoMoons(), 1)
        >>> x = lower.sample(500, generator=torch.Generator().manual_seed(0))
        >>> bool((TwoMoons().nearest_moon(x) == 1).float().mean() > 0.99)
        True
    """

    toy: Toy2D = TwoMoons()
    label: int = 0
    components: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if not isinstance(self.toy, (TwoMoons, EightGaussians)):
            raise TypeError(f"toy must be a TwoMoons or EightGaussians, got {self.toy!r}")
        k = type(self.toy).components
        if isinstance(self.label, bool) or not isinstance(self.label, int) or \
                not 0 <= self.label < k:
            raise ValueError(f"label must be an int in [0, {k}), got {self.label!r}")

    @property
    def standardize(self) -> bool:  # type: ignore[override]
        """Whether points are standardized, as the whole toy is (its standardizer)."""
        return self.toy.standardize

    @property
    def standardizer(self) -> Standardizer:
        """The whole toy's :class:`Standardizer` (not one fitted to the class)."""
        return self.toy.standardizer

    def _sample_raw(self, n, generator, device, dtype):
        toy, y = self.toy, self.label
        if isinstance(toy, TwoMoons):
            s = math.pi * _uniform(n, generator, device, dtype)
            c = torch.stack([1 - torch.cos(s), 0.5 - torch.sin(s)] if y == 1
                            else [torch.cos(s), torch.sin(s)], dim=-1)     # (n, 2)
            noise = toy.noise
        else:
            c = toy._centres(device, dtype)[y].expand(n, 2)
            noise = toy.std
        x = c + noise * _normal((n, 2), generator, device, dtype)
        return x, torch.full((n,), y, dtype=torch.long, device=x.device)


TOYS: dict[str, type[Toy2D]] = {
    "two_moons": TwoMoons,
    "eight_gaussians": EightGaussians,
    "checkerboard": Checkerboard,
    "banana": Banana,
    "spirals": Spirals,
    "gaussian_grid": GaussianGrid,
}
"""The 2-D toys by name, for :func:`toy`."""


def toy(name: str, **kwargs: object) -> Toy2D:
    r"""Build a 2-D toy distribution by name.

    Args:
        name: one of the keys of :data:`TOYS`: ``"two_moons"``, ``"eight_gaussians"``,
            ``"checkerboard"``, ``"banana"``, ``"spirals"``, ``"gaussian_grid"``.
        **kwargs: parameters of that class, e.g. ``noise=0.1`` or ``standardize=False``.

    Returns:
        The distribution instance.

    Example:
        >>> toy("banana", curvature=0.5)
        Banana(curvature=0.5, std=0.5, standardize=True)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; expected one of {sorted(TOYS)}")
    return TOYS[name](**kwargs)


def two_moons(
    n: int,
    *,
    noise: float = 0.05,
    standardize: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Draw ``n`` iid points of :class:`TwoMoons`.

    Args:
        n: number of points, a positive int.
        noise: standard deviation of the Gaussian noise, ``> 0``.
        standardize: map the samples by the fixed ``TwoMoons(noise).standardizer``.
        generator: source of randomness; ``None`` uses the global RNG.
        device: device of the result (default: the generator's, else PyTorch's default).
        dtype: floating-point dtype of the result.

    Returns:
        Points of shape ``(n, 2)``.
    """
    return TwoMoons(noise=noise, standardize=standardize).sample(
        n, generator=generator, device=device, dtype=dtype
    )


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    return bunch.images.astype(np.float64), bunch.target.astype(np.int64)


def digits(
    *, return_labels: bool = False, dtype: torch.dtype = torch.float32
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The 1797 handwritten 8x8 digits bundled with scikit-learn, scaled to :math:`[-1, 1]`.

    The raw pixels are integers :math:`k \in \{0, \dots, 16\}` (:data:`DIGIT_LEVELS`
    levels); they are mapped to :math:`k / 8 - 1`. The tensors are on the CPU (move them
    with ``.to(device)``) and are fresh copies on every call.

    Args:
        return_labels: also return the digit classes.
        dtype: floating-point dtype of the images.

    Returns:
        Images of shape ``(1797, 1, 8, 8)``, or ``(images, labels)`` with int64 labels in
        ``0..9`` of shape ``(1797,)`` if ``return_labels``.

    Example:
        >>> x = digits()
        >>> x.shape, float(x.min()), float(x.max())
        (torch.Size([1797, 1, 8, 8]), -1.0, 1.0)
    """
    _check_bool("return_labels", return_labels)
    dtype = _check_float_dtype(dtype)
    images, labels = _load_digits()
    x = torch.tensor(images / 8 - 1, dtype=dtype).unsqueeze(1)  # (N, 8, 8) -> (N, 1, 8, 8)
    if return_labels:
        return x, torch.tensor(labels)
    return x


def digits_split(
    test_fraction: float = 0.2,
    *,
    seed: int = 0,
    return_labels: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor] | tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    r"""A deterministic random train/test split of :func:`digits`.

    The images are shuffled by ``torch.randperm`` with a private ``torch.Generator`` seeded
    with ``seed`` (the global RNG is neither used nor changed), and the first
    :math:`\lceil \text{test\_fraction} \cdot 1797 \rceil` go to the test set (as
    scikit-learn's ``train_test_split`` rounds). The same ``seed`` gives the same split
    on every call (for a given PyTorch version).

    Args:
        test_fraction: share of the images in the test set, in ``(0, 1)``.
        seed: seed of the private generator, an int.
        return_labels: also return the labels of each part.
        dtype: floating-point dtype of the images.

    Returns:
        ``(train, test)`` images of shapes ``(N_train, 1, 8, 8)`` and ``(N_test, 1, 8, 8)``;
        with ``return_labels``, ``((x_train, y_train), (x_test, y_test))``.

    Example:
        >>> train, test = digits_split()
        >>> len(train), len(test)
        (1437, 360)
    """
    test_fraction = _check_real("test_fraction", test_fraction)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    _check_bool("return_labels", return_labels)
    x, y = digits(return_labels=True, dtype=dtype)
    n = x.shape[0]
    n_test = math.ceil(test_fraction * n)
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction = {test_fraction} leaves an empty train or test set")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator, device="cpu")
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    if return_labels:
        return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
    return x[train_idx], x[test_idx]
