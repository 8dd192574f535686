r"""Evaluation of generative models: likelihoods, sample metrics and their noise floors.

Every chapter scores its models with this module; the chapter "Evaluating generative
models" (``book/foundations/evaluation.md``, Part I) derives what each number means. There
are three groups.

**Likelihood** (models with a tractable ``log_prob``). :func:`nll` gives the held-out
negative log-likelihood in nats as an :class:`Estimate` (mean and standard error over the
points); :func:`bits_per_dim` converts it, including the dequantization bound for discrete
data (Theis et al., 2016); :func:`entropy` (Monte Carlo) and :func:`entropy_quadrature`
(a 2-D grid) give the entropy :math:`H(p)` of a toy, the smallest NLL any model can reach;
:func:`paired_kl` estimates the gap :math:`\mathrm{KL}(p \,\|\, q) = \mathrm{NLL}(q) - H(p)`
on the *same* points, with a far smaller error bar than the difference of two estimates;
:func:`nll_report` puts NLL, entropy and gap on one line.

**Sample metrics** between two sample sets ``x`` ``(n, D)`` and ``y`` ``(m, D)``, vectorised
in torch on the inputs' device and dtype: :func:`mmd2` (Gretton et al., 2012),
:func:`energy_distance`, :func:`sliced_wasserstein2`, the exact :func:`wasserstein2` (an
optimal-transport solver, POT), :func:`frechet_distance` (the FID formula of Heusel et al.,
2017, on raw coordinates), :func:`precision_recall` (Kynkäänniemi et al., 2019),
:func:`density_coverage` (Naeem et al., 2020) and the permutation test
:func:`two_sample_test`. On features of a classifier: :func:`kid` (the Kernel Inception
Distance of Bińkowski et al., 2018, an unbiased MMD² with a cubic kernel) and, from its
class probabilities, :func:`inception_score` (Salimans et al., 2016).
The torch metrics (:func:`mmd2`, :func:`energy_distance`,
:func:`sliced_wasserstein2`) return 0-dim tensors, differentiable where the formula is; the
solver-based and float64 ones (:func:`wasserstein2`, :func:`frechet_distance`) return
Python floats.

**Noise floors.** Every sample metric except the unbiased U-statistics (:func:`mmd2` with
``unbiased=True``, :func:`kid`) is biased upwards at finite ``n``: two independent
samples of the *same* distribution are at a positive distance. :func:`scorecard` therefore
reports each metric next to its *floor* (two true sample sets of the same size) and its
*ceiling* (:math:`\mathcal N(0, I)` against the data), and the ratio model/floor: a ratio
near 1 means the metric cannot tell the model from the data at this ``n``.

Example:
    >>> import torch
    >>> from gmbook.data import EightGaussians
    >>> g = torch.Generator().manual_seed(0)
    >>> data = EightGaussians()
    >>> x, y = data.sample(500, generator=g), data.sample(500, generator=g)
    >>> bool(mmd2(x, y + 0.5) > mmd2(x, y))
    True
    >>> round(wasserstein2(x, x), 6)
    0.0
"""

from __future__ import annotations

import collections
import dataclasses
import html
import math
import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gmbook._checks import check_bool as _check_bool
from gmbook._checks import check_generator as _check_generator
from gmbook._checks import check_int as _check_int
from gmbook._checks import check_nonnegative as _check_nonnegative
from gmbook._checks import check_positive as _check_positive
from gmbook._checks import describe as _describe

__all__ = [
    "DEFAULT_BANDWIDTHS",
    "SCORECARD_METRICS",
    "W2_MAX_N",
    "Estimate",
    "NLLReport",
    "Scorecard",
    "ScorecardRow",
    "TestResult",
    "bits_per_dim",
    "density_coverage",
    "energy_distance",
    "entropy",
    "entropy_quadrature",
    "frechet_distance",
    "frechet_gaussians",
    "inception_score",
    "kid",
    "mmd2",
    "nll",
    "nll_report",
    "paired_kl",
    "precision_recall",
    "scorecard",
    "sliced_wasserstein2",
    "two_sample_test",
    "wasserstein2",
]

DEFAULT_BANDWIDTHS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
r"""Bandwidths :math:`s` of the RBF mixture kernel of :func:`mmd2`, in standardized units.

The 2-D toys are standardized (unit variance per axis), and their structure spans the
scales from about 0.06 (the noise of two moons, 0.05 in raw units, and the components of
the eight Gaussians, 0.1 raw, are 0.06 to 0.1 wide once standardized) to about 2 (the extent
of the whole set). A Gaussian kernel of bandwidth :math:`s` compares the two distributions
smoothed at length scale :math:`s`, so the mixture spans that range: 0.05 sees a blurred
or sharpened ridge, 2.0 a wrong mean or variance. At ``n = 2000`` a two-moons point's
nearest neighbour is typically 0.02 away and its fifth 0.045, so even the smallest
bandwidth averages over several neighbours. A wide mixture is dominated by its large
bandwidths and is blind to fine errors of good models, which is why :func:`scorecard` also
reports MMD per bandwidth. For data of dimension :math:`D` (e.g. the digits,
:math:`D = 64`), typical distances grow like :math:`\sqrt{D}`: scale the bandwidths
accordingly."""

SCORECARD_METRICS: tuple[str, ...] = ("w2", "energy", "sw2", "mmd")
"""The metrics :func:`scorecard` computes by default: exact W2, energy distance, sliced W2
and MMD^2 (to which the scorecard adds one row per bandwidth)."""

W2_MAX_N = 2000
"""Largest sample size :func:`wasserstein2` accepts unless ``max_n`` is raised. The exact
solver takes, between two samples of two moons on the book's 2-core CPU, about 0.015 s at
n = 500, 0.06 s at n = 1000 and 0.35 s at n = 2000 (0.5 s for N(0, I) against two moons);
its 32 MB cost matrix then no longer fits in the CPU caches."""

_LN2 = math.log(2.0)
_Z95 = 1.959963984540054  # the 97.5% quantile of N(0, 1)
_BLOCK = 2**22  # entries of the largest (rows, m) work array of the pairwise sums
_EXP_FLOOR = -80.0  # exp() arguments are clamped here (see _pair_sums)


# --------------------------------------------------------------------------- validation


def _check_samples(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n, D) with n, D >= 1, got {tuple(x.shape)}")
    bad = int((~torch.isfinite(x)).any(dim=1).sum())
    if bad:
        raise ValueError(
            f"{name} has {bad} of {x.shape[0]} points with non-finite (nan/inf) coordinates"
        )
    return x


def _check_pair(x: object, y: object, min_n: int = 1) -> tuple[Tensor, Tensor]:
    """Validate two sample sets; return them in a common dtype of at least float32."""
    x = _check_samples(x, "x")
    y = _check_samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension D, got {x.shape[1]} and {y.shape[1]}"
        )
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    for name, t in (("x", x), ("y", y)):
        if t.shape[0] < min_n:
            raise ValueError(f"{name} needs at least {min_n} points here, got {t.shape[0]}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    return x.to(dtype), y.to(dtype)


def _check_bandwidths(bandwidths: object) -> tuple[float, ...]:
    if isinstance(bandwidths, (str, bytes)) or not isinstance(bandwidths, Sequence):
        got = _describe(bandwidths)
        raise TypeError(f"bandwidths must be a sequence of positive numbers, got {got}")
    if len(bandwidths) == 0:
        raise ValueError("bandwidths must not be empty")
    return tuple(_check_positive("each bandwidth", s) for s in bandwidths)


def _as_log_prob(f: object, name: str) -> Callable[[Tensor], Tensor]:
    """A model or distribution with ``.log_prob``, or a plain callable."""
    method = getattr(f, "log_prob", None)
    if callable(method):
        return method
    if callable(f):
        return f
    raise TypeError(
        f"{name} must be a callable x -> log p(x) or have a .log_prob method, got {_describe(f)}"
    )


def _random_directions(
    count: int, dim: int, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """``count`` directions uniform on the unit sphere of R^dim, shape ``(count, dim)``."""
    device = generator.device if generator is not None else like.device
    theta = torch.randn(count, dim, generator=generator, device=device, dtype=like.dtype)
    return (theta / theta.norm(dim=1, keepdim=True)).to(like.device)


# --------------------------------------------------------------------------- likelihood


@dataclasses.dataclass(frozen=True)
class Estimate:
    r"""A Monte Carlo estimate: its mean, standard error and number of points.

    Formatting applies the format spec to both numbers, so ``f"{e:.3f}"`` gives
    ``"1.234 ± 0.005"``; ``str(e)`` uses four significant digits for the mean.

    Attributes:
        mean: the estimate.
        se: its standard error, :math:`\hat\sigma / \sqrt{n}` (``nan`` if undefined).
        n: the number of points averaged.

    Example:
        >>> e = Estimate(1.23449, 0.0051, 10_000)
        >>> f"{e:.3f}"
        '1.234 ± 0.005'
        >>> [round(v, 4) for v in e.ci95()]
        [1.2245, 1.2445]
    """

    mean: float
    se: float
    n: int

    def __post_init__(self) -> None:
        for name in ("mean", "se"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"Estimate.{name} must be a real number, got {_describe(value)}")
            object.__setattr__(self, name, float(value))
        if self.se < 0:
            raise ValueError(f"Estimate.se must be >= 0 (or nan), got {self.se}")
        object.__setattr__(self, "n", _check_int("Estimate.n", self.n, 1))

    def ci95(self) -> tuple[float, float]:
        r"""The normal-approximation 95% interval :math:`\text{mean} \pm 1.96\,\text{se}`."""
        return (self.mean - _Z95 * self.se, self.mean + _Z95 * self.se)

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(self)
        return f"{format(self.mean, spec)} ± {format(self.se, spec)}"

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.se:.2g}"


def _log_probs(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    """``fn`` on ``x`` in batches, without gradients, as a float64 tensor ``(N,)``."""
    out = []
    with torch.no_grad():
        for xb in x.split(batch_size):
            lp = fn(xb)
            if not isinstance(lp, Tensor) or lp.shape != (xb.shape[0],):
                shape = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
                raise ValueError(
                    f"log_prob must map a batch of B points to a tensor of shape (B,), got "
                    f"{shape} for B = {xb.shape[0]}"
                )
            out.append(lp.detach().to(torch.float64))
    return torch.cat(out)


def _mean_estimate(v: Tensor) -> Estimate:
    """Mean and standard error of the float64 values ``v`` ``(N,)``."""
    n = v.shape[0]
    mean = float(v.mean())
    se = float(v.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
    return Estimate(mean, se, n)


def _check_points(x: object, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {_describe(x)}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, *D) with N >= 1, got {tuple(x.shape)}")
    return x


def nll(
    log_prob: Callable[[Tensor], Tensor] | Any, x: Tensor, *, batch_size: int = 8192
) -> Estimate:
    r"""Held-out negative log-likelihood in nats, with its standard error.

    .. math::

        \widehat{\mathrm{NLL}} = -\frac1N \sum_{i=1}^N \log q(x_i), \qquad
        \mathrm{se} = \frac{\hat\sigma}{\sqrt N},

    where :math:`\hat\sigma` is the sample standard deviation of :math:`\log q(x_i)`. The
    points must be held out (not trained on) for this to estimate the cross-entropy
    :math:`\mathbb E_p[-\log q] = H(p) + \mathrm{KL}(p \,\|\, q)`.

    Args:
        log_prob: the model: a callable ``(B, *D) -> (B,)`` of natural-log densities, or an
            object with such a ``.log_prob`` method (a model, a toy distribution). Evaluated
            under ``torch.no_grad()``.
        x: held-out points, shape ``(N, *D)``, on the model's device.
        batch_size: points per call of ``log_prob``.

    Returns:
        The :class:`Estimate` in nats. If the model gives density zero (``log_prob = -inf``)
        to a point, the NLL is ``inf`` (with ``se = nan``): that is the honest value.

    Raises:
        ValueError: if ``log_prob`` returns nan or ``+inf``, or the wrong shape.

    Example:
        >>> from gmbook.data import Banana
        >>> x = Banana().sample(1000, generator=torch.Generator().manual_seed(0))
        >>> e = nll(Banana(), x)
        >>> e.n, 1.6 < e.mean < 1.9
        (1000, True)
    """
    fn = _as_log_prob(log_prob, "log_prob")
    x = _check_points(x)
    batch_size = _check_int("batch_size", batch_size, 1)
    lp = _log_probs(fn, x, batch_size)
    if bool(torch.isnan(lp).any() | (lp == math.inf).any()):
        raise ValueError("log_prob returned nan or +inf at some points")
    if bool((lp == -math.inf).any()):
        return Estimate(math.inf, math.nan, lp.shape[0])
    return _mean_estimate(-lp)


def bits_per_dim(
    nll_nats: float | Estimate, dim: int, *, bin_width: float | None = None
) -> float | Estimate:
    r"""Convert an NLL in nats per example to bits per dimension.

    **Continuous data:** :math:`\mathrm{bpd} = \mathrm{NLL} / (D \ln 2)`.

    **Discrete data, dequantized.** Let the data live on a grid of bin width :math:`\Delta`,
    the spacing of its levels in the model's coordinates (the digits: 17 levels
    :math:`k/8 - 1` on :math:`[-1, 1]`, so :math:`\Delta = 2/16`; 8-bit images scaled to
    :math:`[-1, 1]` as in Ho et al. (2020, Sec. 3.3): :math:`\Delta = 2/255`), and let the
    continuous model :math:`p` be trained and evaluated on :math:`u = x + \Delta\,v`,
    :math:`v \sim \mathcal U[-\tfrac12, \tfrac12)^D`. The model's probability of the bin of
    :math:`x` is :math:`P(x) = \int_{\text{bin}(x)} p(u)\,du = \Delta^D\,
    \mathbb E_v[p(x + \Delta v)]`, so by Jensen's inequality

    .. math::

        \log P(x) \;\ge\; \mathbb E_v[\log p(x + \Delta v)] + D \log \Delta ,

    the dequantization bound of Theis et al. (2016). Averaging over the data, the discrete
    NLL is at most :math:`\mathrm{NLL}_{\text{cont}} - D \ln \Delta`, and

    .. math::

        \mathrm{bpd} = \frac{\mathrm{NLL}_{\text{cont}} - D \ln \Delta}{D \ln 2}

    is an upper bound on the model's discrete NLL in bits per (discrete) dimension, the
    quantity the literature reports. It does not depend on how the levels were scaled: an
    affine rescaling shifts :math:`\mathrm{NLL}_{\text{cont}}` and :math:`D \ln \Delta` by
    the same amount (8-bit data on :math:`[0, 1]` with :math:`\Delta = 1/256` gives the
    familiar "+8 bits"). The bound is tight for the model that spreads each level's
    probability uniformly over its bin, whose bpd is the discrete entropy in bits per
    dimension; a model uniform over :math:`L` levels has :math:`\mathrm{bpd} = \log_2 L`.

    Args:
        nll_nats: NLL per example in nats (a float or an :class:`Estimate` from :func:`nll`
            on dequantized data).
        dim: number of dimensions :math:`D` per example (64 for the 8x8 digits).
        bin_width: :math:`\Delta` for dequantized discrete data; ``None`` for continuous
            data.

    Returns:
        The bits per dimension, a float, or an :class:`Estimate` (mean and se converted) if
        ``nll_nats`` is one.

    Example:
        >>> from gmbook.data import DIGIT_LEVELS
        >>> width = 2 / (DIGIT_LEVELS - 1)
        >>> nll_uniform = 64 * math.log(DIGIT_LEVELS * width)  # uniform over the 17 bins
        >>> round(bits_per_dim(nll_uniform, 64, bin_width=width), 6) == round(math.log2(17), 6)
        True
    """
    dim = _check_int("dim", dim, 1)
    shift = 0.0 if bin_width is None else -dim * math.log(_check_positive("bin_width", bin_width))
    scale = 1.0 / (dim * _LN2)
    if isinstance(nll_nats, Estimate):
        return Estimate((nll_nats.mean + shift) * scale, nll_nats.se * scale, nll_nats.n)
    if isinstance(nll_nats, bool) or not isinstance(nll_nats, numbers.Real):
        raise TypeError(f"nll_nats must be a real number or an Estimate, got {_describe(nll_nats)}")
    return (float(nll_nats) + shift) * scale


def paired_kl(
    log_q: Callable[[Tensor], Tensor] | Any,
    log_p: Callable[[Tensor], Tensor] | Any,
    x_from_p: Tensor,
    *,
    batch_size: int = 8192,
) -> Estimate:
    r"""Paired Monte Carlo estimate of :math:`\mathrm{KL}(p \,\|\, q)`: the NLL gap to the truth.

    .. math::

        \mathrm{KL}(p \,\|\, q) = \mathbb E_{x \sim p}[\log p(x) - \log q(x)]
        \approx \frac1N \sum_i \big(\log p(x_i) - \log q(x_i)\big),

    with the standard error of the per-point differences. Both densities are evaluated on
    the *same* points, so the large point-to-point variation of :math:`\log p(x_i)` (the
    spread that makes an NLL's error bar) cancels in the difference: the error bar is that of
    :math:`\log p - \log q`, which shrinks to 0 as :math:`q` approaches :math:`p`, while the
    error bar of ``nll(q) - entropy(p)`` from independent samples stays near
    :math:`\sqrt 2\, \mathrm{sd}(\log p) / \sqrt N`. For a 2-D Gaussian model at
    :math:`\mathrm{KL} \approx 0.015` nats it is already about 8 times smaller (the tests check
    this); for a good model it is the only way to resolve the gap.

    Args:
        log_q: the model, as in :func:`nll`.
        log_p: the true density (e.g. a toy of :mod:`gmbook.data`), as in :func:`nll`.
        x_from_p: points drawn from :math:`p`, shape ``(N, *D)``.
        batch_size: points per call of each density.

    Returns:
        The :class:`Estimate` of the KL in nats (``inf`` if ``q`` is zero at some point).

    Raises:
        ValueError: if ``log_p`` is ``-inf`` at a point (it is then not from :math:`p`), or
            either density returns nan.
    """
    fq = _as_log_prob(log_q, "log_q")
    fp = _as_log_prob(log_p, "log_p")
    x = _check_points(x_from_p, "x_from_p")
    batch_size = _check_int("batch_size", batch_size, 1)
    lq = _log_probs(fq, x, batch_size)
    lp = _log_probs(fp, x, batch_size)
    if bool(torch.isnan(lq).any() | torch.isnan(lp).any()):
        raise ValueError("log_q or log_p returned nan")
    if bool((~torch.isfinite(lp)).any()):
        raise ValueError("log_p is not finite at some points of x_from_p: are they samples of p?")
    if bool((lq == math.inf).any()):
        raise ValueError("log_q returned +inf")
    if bool((lq == -math.inf).any()):
        return Estimate(math.inf, math.nan, lp.shape[0])
    return _mean_estimate(lp - lq)


def entropy(
    dist: Any,
    *,
    n: int = 200_000,
    generator: torch.Generator | None = None,
    batch_size: int = 8192,
) -> Estimate:
    r"""Monte Carlo entropy :math:`H(p) = -\mathbb E_p[\log p(X)]` in nats.

    Draws ``n`` points with ``dist.sample`` and returns :func:`nll` of ``dist`` on them: the
    entropy is the smallest cross-entropy (NLL) any model can reach on data from :math:`p`.

    Args:
        dist: an object with ``.sample(n, generator=...)`` and ``.log_prob(x)``, such as a
            toy of :mod:`gmbook.data` (TwoMoons' quadrature ``log_prob`` evaluates about
            50 000 points per second, so the default ``n`` takes about 4 s for it).
        n: number of points.
        generator: source of randomness; ``None`` uses the global RNG.
        batch_size: points per call of ``sample`` and ``log_prob``.

    Returns:
        The :class:`Estimate` of :math:`H(p)`.

    Example:
        >>> from gmbook.data import Banana
        >>> h = entropy(Banana(), n=20_000, generator=torch.Generator().manual_seed(0))
        >>> abs(h.mean - 1.7282) < 4 * h.se  # closed form: log(2 pi e) + log 0.5 - log|det S|
        True
    """
    n = _check_int("n", n, 2)
    generator = _check_generator(generator)
    batch_size = _check_int("batch_size", batch_size, 1)
    sample = getattr(dist, "sample", None)
    if not callable(sample):
        raise TypeError(
            f"dist must have .sample(n, generator=...) and .log_prob(x), got {_describe(dist)}"
        )
    fn = _as_log_prob(dist, "dist")
    values = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            xb = sample(min(batch_size, n - start), generator=generator)
            values.append(_log_probs(fn, xb, batch_size))
    lp = torch.cat(values)
    if not bool(torch.isfinite(lp).all()):
        raise ValueError("dist.log_prob is not finite at some of its own samples")
    return _mean_estimate(-lp)


def _check_lims(lims: object) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        if len(lims) == 2 and all(isinstance(v, numbers.Real) for v in lims):  # (lo, hi)
            lims = (tuple(lims), tuple(lims))
        (a, b), (c, d) = lims
    except (TypeError, ValueError):
        raise TypeError(
            f"lims must be (lo, hi) or ((x_lo, x_hi), (y_lo, y_hi)), got {lims!r}"
        ) from None
    out = []
    for lo, hi in ((a, b), (c, d)):
        if isinstance(lo, bool) or isinstance(hi, bool) or not all(
            isinstance(v, numbers.Real) for v in (lo, hi)
        ):
            raise TypeError(f"lims must hold real numbers, got {lims!r}")
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"each range of lims must be finite with hi > lo, got {lims!r}")
        out.append((lo, hi))
    return out[0], out[1]


def entropy_quadrature(
    log_prob: Callable[[Tensor], Tensor] | Any,
    *,
    lims: tuple[float, float] | tuple[tuple[float, float], tuple[float, float]],
    n: int = 256,
    batch_size: int = 65536,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> float:
    r"""Entropy :math:`H(p) = -\int p \log p` of a 2-D density by the midpoint rule on a grid.

    .. math::

        H(p) \approx -\sum_{g} p(g) \log p(g)\, \Delta A

    over the centres :math:`g` of an ``n`` by ``n`` grid of cells of area :math:`\Delta A`
    covering the box ``lims`` (points where :math:`p = 0` contribute 0). For a smooth density
    that decays inside the box the midpoint rule converges faster than any power of the cell
    width :math:`h`, roughly like :math:`e^{-2\pi^2\sigma^2/h^2}` for features of width
    :math:`\sigma`, so a cell a little narrower than the thinnest feature is enough. Measured
    on the standardized toys (float64): two moons, the most peaked (ridge width about 0.06),
    on ``lims=(-3, 3)``: the error against ``n = 1024`` is :math:`5 \cdot 10^{-3}` at
    ``n = 48`` (cell 0.125), :math:`1.5 \cdot 10^{-4}` at 64, :math:`7 \cdot 10^{-9}` at 96,
    and below :math:`10^{-11}` from 128 on (256, 512 and 1024 agree). Eight Gaussians on
    ``(-2, 2)`` and the banana on ``((-7, 7), (-3, 30))`` agree with their closed forms to
    :math:`10^{-12}` and :math:`3 \cdot 10^{-10}` (the box's cut-off tail). A density
    with jumps (the checkerboard) converges only like :math:`O(h)` unless the grid lines fall
    on the jumps. The cost is ``n**2`` evaluations of ``log_prob`` (two moons: about 1 s at
    ``n = 256``, 20 s at ``n = 1024``).

    Args:
        log_prob: the density, as in :func:`nll`, for points of shape ``(B, 2)``.
        lims: the box, ``(lo, hi)`` for both axes or ``((x_lo, x_hi), (y_lo, y_hi))``. It
            must hold essentially all the mass. A :class:`RuntimeWarning` is issued if the
            grid sum of :math:`p\,\Delta A` differs from 1 by more than :math:`10^{-6}`:
            mass outside the box, or cells too coarse for the density.
        n: cells per axis.
        batch_size: grid points per call of ``log_prob``.
        device: device of the grid (``None``: PyTorch's default device); the model's.
        dtype: dtype of the grid points (the sums are in float64).

    Returns:
        :math:`H(p)` in nats, a float.

    Example:
        >>> from gmbook.data import EightGaussians
        >>> round(entropy_quadrature(EightGaussians(), lims=(-2, 2), n=128), 6)
        -0.386256
    """
    fn = _as_log_prob(log_prob, "log_prob")
    (a, b), (c, d) = _check_lims(lims)
    n = _check_int("n", n, 2)
    batch_size = _check_int("batch_size", batch_size, 1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    hx, hy = (b - a) / n, (d - c) / n
    idx = torch.arange(n, dtype=torch.float64, device=device) + 0.5
    gx, gy = torch.meshgrid(a + hx * idx, c + hy * idx, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(dtype)  # (n * n, 2)
    lp = _log_probs(fn, grid, batch_size)
    if bool(torch.isnan(lp).any() | (lp == math.inf).any()):
        raise ValueError("log_prob returned nan or +inf on the grid")
    p = lp.exp()
    plogp = torch.where(p > 0, p * lp, torch.zeros_like(p))
    mass = float(p.sum()) * hx * hy
    if abs(mass - 1) > 1e-6:
        warnings.warn(
            f"the grid sum of p dA is {mass:.8f}, not 1: widen lims={lims} if mass lies "
            f"outside, or refine n={n} if the cells are wider than the density's finest "
            "features (or the density is not normalised); the entropy is inaccurate",
            RuntimeWarning,
            stacklevel=2,
        )
    return -float(plogp.sum()) * hx * hy


@dataclasses.dataclass(frozen=True)
class NLLReport:
    r"""A model's NLL next to the entropy of the data: the gap is :math:`\mathrm{KL}(p\,\|\,q)`.

    Attributes:
        nll: the model's held-out NLL (nats).
        entropy: :math:`H(p)` (nats).
        entropy_se: its standard error (0 for a quadrature value).
        gap: ``nll - entropy`` with the two errors added in quadrature (independent
            estimates). On the same points, :func:`paired_kl` gives a much smaller error.
    """

    nll: Estimate
    entropy: float
    entropy_se: float
    gap: Estimate

    def __str__(self) -> str:  # plain ASCII: it is printed in the PDF too
        return (
            f"NLL {self.nll.mean:.4f} +- {self.nll.se:.4f} nats, entropy {self.entropy:.4f} "
            f"+- {self.entropy_se:.4f}, gap {self.gap.mean:.4f} +- {self.gap.se:.4f} nats"
        )


def nll_report(model_nll: Estimate, entropy: Estimate | float) -> NLLReport:
    r"""The gap :math:`\mathrm{NLL}(q) - H(p) = \mathrm{KL}(p \,\|\, q)` with its error bar.

    Args:
        model_nll: the model's :func:`nll` on held-out data.
        entropy: :math:`H(p)` from :func:`entropy` (an :class:`Estimate`, assumed independent
            of ``model_nll``) or :func:`entropy_quadrature` (a float, error 0).

    Returns:
        The :class:`NLLReport`; ``str()`` of it is one line.

    Example:
        >>> print(nll_report(Estimate(1.30, 0.02, 5000), 1.1307))
        NLL 1.3000 +- 0.0200 nats, entropy 1.1307 +- 0.0000, gap 0.1693 +- 0.0200 nats
    """
    if not isinstance(model_nll, Estimate):
        raise TypeError(f"model_nll must be an Estimate (from nll), got {_describe(model_nll)}")
    if isinstance(entropy, Estimate):
        h, h_se = entropy.mean, entropy.se
    elif isinstance(entropy, numbers.Real) and not isinstance(entropy, bool):
        h, h_se = float(entropy), 0.0
    else:
        raise TypeError(f"entropy must be an Estimate or a float, got {_describe(entropy)}")
    gap = Estimate(model_nll.mean - h, math.hypot(model_nll.se, h_se), model_nll.n)
    return NLLReport(nll=model_nll, entropy=h, entropy_se=h_se, gap=gap)


# --------------------------------------------------------------------------- pairwise sums


def _pair_sums(
    a: Tensor, b: Tensor, scales: Sequence[float] | None, *, dist: bool, same: bool
) -> tuple[Tensor | None, Tensor | None]:
    r"""Sums over all pairs ``(i, j)`` of :math:`|a_i - b_j|` and of each RBF kernel.

    Squared distances come from :math:`|a|^2 + |b|^2 - 2 a \cdot b` (one ``addmm``), so the
    inputs should be centred first (:func:`_centred`) to avoid cancellation. Rows are
    processed in blocks of at most ``_BLOCK`` entries. With ``same=True`` (``a is b``) the
    diagonal distances are set to exactly 0. Kernel arguments are clamped at -80 before
    ``exp``: below about :math:`e^{-87}` float32 results are subnormal, which made the
    kernel sums several times slower here; the error is below
    :math:`e^{-80} \approx 2 \cdot 10^{-35}` per pair.

    Each row is summed in the dtype of the inputs, the row sums in float64 (as accurate as
    a float64 sum to about :math:`10^{-10}` relative, at the speed of a float32 one).

    Returns:
        ``(sum of distances or None, (S,) kernel sums per bandwidth or None)``, float64.
    """
    n, m = a.shape[0], b.shape[0]
    rows = max(1, _BLOCK // max(m, 1))
    b2 = b.square().sum(1)  # (m,)
    coeffs = [] if scales is None else [-0.5 / s**2 for s in scales]
    # Without autograd, work in place in one buffer: 3 times faster (no 16 MB allocations).
    track = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    total = lambda t: t.sum(1).double().sum()  # noqa: E731 - rows in t's dtype, then float64
    dsum = a.new_zeros((), dtype=torch.float64)
    ksum = [a.new_zeros((), dtype=torch.float64) for _ in coeffs]
    for i0 in range(0, n, rows):
        ab = a[i0 : i0 + rows]
        d2 = torch.addmm(ab.square().sum(1, keepdim=True) + b2, ab, b.T, alpha=-2)  # (rows, m)
        r = torch.arange(ab.shape[0], device=a.device)
        if track:
            d2 = d2.clamp_min(0)
            if same:
                d2 = d2.index_put((r, r + i0), d2.new_zeros(()))
            if dist:
                dsum = dsum + total(d2.sqrt())
            for j, c in enumerate(coeffs):
                ksum[j] = ksum[j] + total((d2 * c).clamp_min(_EXP_FLOOR).exp())
        else:
            d2.clamp_(min=0)
            if same:
                d2[r, r + i0] = 0
            buf = torch.empty_like(d2)
            if dist:
                dsum += total(torch.sqrt(d2, out=buf))
            for j, c in enumerate(coeffs):
                torch.mul(d2, c, out=buf)
                ksum[j] += total(buf.clamp_(min=_EXP_FLOOR).exp_())
    return (dsum if dist else None), (torch.stack(ksum) if scales is not None else None)


def _centred(*sets: Tensor) -> list[Tensor]:
    """Shift all sets by the mean of their means (distances are unchanged)."""
    c = torch.stack([s.detach().mean(0) for s in sets]).mean(0)
    return [s - c for s in sets]


def _sq_dists64(x: Tensor, y: Tensor) -> np.ndarray:
    """Squared distances ``(n, m)`` in float64 as a C-contiguous numpy array on the CPU."""
    x64, y64 = _centred(x.detach().to(torch.float64), y.detach().to(torch.float64))
    c = torch.addmm(x64.square().sum(1, keepdim=True) + y64.square().sum(1), x64, y64.T, alpha=-2)
    return c.clamp_min_(0).cpu().numpy()


# --------------------------------------------------------------------------- sample metrics


def mmd2(
    x: Tensor,
    y: Tensor,
    *,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
    unbiased: bool = True,
    per_bandwidth: bool = False,
) -> Tensor:
    r"""Squared maximum mean discrepancy with a mixture of RBF kernels (Gretton et al., 2012).

    The kernel is :math:`k(a, b) = \sum_{s} \exp\!\big(-|a - b|^2 / (2 s^2)\big)` over
    ``bandwidths`` (:data:`DEFAULT_BANDWIDTHS`, in the standardized units of the toys).

    - ``unbiased=True``: the U-statistic of Gretton et al. (2012, Lemma 6),

      .. math::

          \mathrm{MMD}^2_u = \frac{1}{n(n-1)} \sum_{i \ne j} k(x_i, x_j)
          + \frac{1}{m(m-1)} \sum_{i \ne j} k(y_i, y_j)
          - \frac{2}{nm} \sum_{i, j} k(x_i, y_j),

      an unbiased estimate of the population :math:`\mathrm{MMD}^2`. When the two
      distributions are equal its mean is 0 and individual values are often negative: a
      small negative value means "no detectable difference". The null distribution is
      **not symmetric**: the U-statistic is then *degenerate*, and for ``n = m``
      :math:`n\,\mathrm{MMD}^2_u` converges to :math:`\sum_l \lambda_l (z_l^2 - 2)`,
      :math:`z_l \sim \mathcal N(0, 2)` independent, :math:`\lambda_l \ge 0` the
      eigenvalues of the centred kernel under the data distribution (Gretton et al., 2012,
      Section 5; ``[thm-mmd-null]`` in the evaluation chapter): a weighted sum of centred
      chi-squares, skewed to the right (third cumulant :math:`64 \sum_l \lambda_l^3 > 0`);
      in the chapter's experiments its median is below its mean 0, so values are negative
      *more* than half the time (with one dominant eigenvalue, about 68% of the time, the
      probability that a chi-square with one degree of freedom is below its mean 1).
    - ``unbiased=False``: the biased V-statistic :math:`\mathrm{MMD}^2_b` of the same paper
      (all sums over all pairs, divided by :math:`n^2`, :math:`m^2`, :math:`nm`): the squared
      RKHS distance between the empirical mean embeddings, always :math:`\ge 0`, 0 for
      identical sets, and biased upwards by exactly
      :math:`\frac1n\,\mathbb E_p[k(x, x) - k(x, x')] + \frac1m\,\mathbb E_q[k(y, y) - k(y, y')]`
      (``[eq-mmd-v-bias]``), which is :math:`(1/n + 1/m)\,\mathbb E[k(x, x) - k(x, x')]`
      when :math:`p = q`. :func:`scorecard` uses it, so that the noise floor is positive
      and ratios are defined. A model more concentrated than the data has a smaller second
      term than the data, so it can score *below* the floor in expectation.

    Computed in blocks (memory stays bounded for any ``n``), differentiable in ``x`` and
    ``y``, on their device, in their dtype (at least float32).

    Args:
        x: samples, shape ``(n, D)`` (``n >= 2`` if ``unbiased``).
        y: samples, shape ``(m, D)`` (``m >= 2`` if ``unbiased``).
        bandwidths: the bandwidths :math:`s > 0`.
        unbiased: U-statistic (True) or V-statistic (False).
        per_bandwidth: return the value of each bandwidth's kernel separately.

    Returns:
        A 0-dim tensor, or shape ``(len(bandwidths),)`` if ``per_bandwidth`` (they sum to
        the 0-dim value).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g)
        >>> mmd2(x, y, per_bandwidth=True).shape
        torch.Size([6])
        >>> bool(mmd2(x, y, unbiased=False) > 0), bool(mmd2(x, y + 1) > 0.1)
        (True, True)
    """
    _check_bool("unbiased", unbiased)
    _check_bool("per_bandwidth", per_bandwidth)
    scales = _check_bandwidths(bandwidths)
    x, y = _check_pair(x, y, min_n=2 if unbiased else 1)
    n, m = x.shape[0], y.shape[0]
    x, y = _centred(x, y)
    kxx = _pair_sums(x, x, scales, dist=False, same=True)[1]
    kyy = _pair_sums(y, y, scales, dist=False, same=True)[1]
    kxy = _pair_sums(x, y, scales, dist=False, same=False)[1]
    if unbiased:  # the diagonal holds k = 1 per bandwidth: remove it
        value = (kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2 * kxy / (n * m)
    else:
        value = kxx / n**2 + kyy / m**2 - 2 * kxy / (n * m)
    return (value if per_bandwidth else value.sum()).to(x.dtype)  # combined in float64


def energy_distance(x: Tensor, y: Tensor, *, unbiased: bool = False) -> Tensor:
    r"""Energy distance :math:`2\,\mathbb E|X - Y| - \mathbb E|X - X'| - \mathbb E|Y - Y'|`.

    The energy distance of Székely, written :math:`D^2(F, G)` by Rizzo and Székely (2016),
    the square of a metric on distributions with finite first moments: zero if and only if
    the distributions are equal. It is also the MMD² of the kernel
    :math:`k(a, b) = |a| + |b| - |a - b|`.

    - ``unbiased=False`` (the default): V-statistics, every average over all pairs including
      :math:`i = j`. This is exactly the energy distance between the two *empirical*
      distributions: always :math:`\ge 0`, 0 for identical sets, biased upwards at finite
      :math:`n` (the noise floor of :func:`scorecard`).
    - ``unbiased=True``: U-statistics within each sample (:math:`i \ne j`, divided by
      :math:`n(n-1)`), an unbiased estimate of the population value that can be negative.

    Note that it has the units of a distance but behaves like a *squared* one: for a small
    shift :math:`\delta` of a distribution it grows like :math:`\delta^2`, like MMD² and
    unlike W2 and SW2.

    Args:
        x: samples, shape ``(n, D)``.
        y: samples, shape ``(m, D)`` (both at least 2 points if ``unbiased``).
        unbiased: U-statistics within the samples instead of V-statistics.

    Returns:
        A 0-dim tensor in the inputs' dtype (at least float32) and device.
    """
    _check_bool("unbiased", unbiased)
    x, y = _check_pair(x, y, min_n=2 if unbiased else 1)
    n, m = x.shape[0], y.shape[0]
    x, y = _centred(x, y)
    dxx = _pair_sums(x, x, None, dist=True, same=True)[0]
    dyy = _pair_sums(y, y, None, dist=True, same=True)[0]
    dxy = _pair_sums(x, y, None, dist=True, same=False)[0]
    if unbiased:
        value = 2 * dxy / (n * m) - dxx / (n * (n - 1)) - dyy / (m * (m - 1))
    else:
        value = 2 * dxy / (n * m) - dxx / n**2 - dyy / m**2
    return value.to(x.dtype)  # combined in float64


def _w2sq_sorted(xs: Tensor, ys: Tensor) -> Tensor:
    r"""Exact 1-D :math:`W_2^2` between empirical distributions of sorted columns.

    ``xs`` ``(n, L)`` and ``ys`` ``(m, L)`` are sorted along dim 0. With equal weights,
    :math:`W_2^2 = \int_0^1 (F^{-1}(t) - G^{-1}(t))^2 dt`, and both quantile functions are
    step functions; on the merged breakpoints :math:`\{i/n\} \cup \{j/m\}` the integrand is
    constant, so the sum over those intervals is exact. Returns shape ``(L,)``.
    """
    n, m = xs.shape[0], ys.shape[0]
    if n == m:
        return (xs - ys).square().mean(0)
    device = xs.device
    f64 = dict(device=device, dtype=torch.float64)
    t = torch.cat([torch.arange(1, n + 1, **f64) / n, torch.arange(1, m + 1, **f64) / m])
    t = t.sort().values  # (n + m,) right ends of the intervals
    w = torch.diff(t, prepend=t.new_zeros(1))  # widths, some 0
    mid = t - w / 2
    ix = (mid * n).floor().long().clamp_(max=n - 1)
    iy = (mid * m).floor().long().clamp_(max=m - 1)
    return (w.to(xs.dtype)[:, None] * (xs[ix] - ys[iy]).square()).sum(0)


def sliced_wasserstein2(
    x: Tensor,
    y: Tensor,
    *,
    n_projections: int = 256,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Sliced Wasserstein-2 distance between two sample sets.

    .. math::

        \mathrm{SW}_2(\hat p_x, \hat p_y) = \Big(\mathbb E_\theta\,
        W_2^2(\theta_\# \hat p_x, \theta_\# \hat p_y)\Big)^{1/2},

    where :math:`\theta_\# \hat p` is the distribution of the projections
    :math:`\theta \cdot x`. The expectation over directions :math:`\theta` uniform on the
    unit sphere is a Monte Carlo mean over ``n_projections`` random directions; each 1-D
    :math:`W_2^2` between the
    projected empirical distributions is exact: for ``n == m`` the mean squared difference
    of the sorted projections, otherwise the integral of the squared difference of the two
    empirical quantile functions, computed exactly on their merged breakpoints. The result
    is the **square root** of the average (a distance, in the units of ``x``; it grows
    linearly with a mean shift). The direction sample adds Monte Carlo noise of relative
    size about :math:`1/\sqrt{\text{n\_projections}}` times the spread over directions; pass
    the same seeded ``generator`` to compare models on the same directions.

    Args:
        x: samples, shape ``(n, D)``.
        y: samples, shape ``(m, D)``.
        n_projections: number of random directions.
        generator: source of the directions (drawn on its device, then moved to ``x``'s);
            ``None`` uses the global RNG.

    Returns:
        A 0-dim tensor, differentiable in ``x`` and ``y``.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0]])
        >>> float(sliced_wasserstein2(x, x + 3))  # in 1-D every direction is +-1: exact
        3.0
    """
    n_projections = _check_int("n_projections", n_projections, 1)
    generator = _check_generator(generator)
    x, y = _check_pair(x, y)
    theta = _random_directions(n_projections, x.shape[1], generator, x)  # (L, D)
    xs = (x @ theta.T).sort(dim=0).values  # (n, L)
    ys = (y @ theta.T).sort(dim=0).values  # (m, L)
    return _w2sq_sorted(xs, ys).mean().sqrt()


_POT_ERROR = (
    "wasserstein2 needs the optimal-transport package POT: `pip install 'pot>=0.9.4,<1'` "
    "(or use solver='assignment' for n == m, which needs only scipy)"
)


def _pot() -> Any:
    """The POT module, imported on first use (about 1 s, so not at ``import gmbook``)."""
    try:
        import ot
    except ImportError as error:  # pragma: no cover - POT is a requirement of the book
        raise ImportError(_POT_ERROR) from error
    return ot


def _emd_cost(cost: np.ndarray) -> float:
    """Exact optimal-transport cost between uniform weights by POT's network simplex."""
    ot = _pot()
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    _, log = ot.emd(a, b, cost, numItermax=10**9, log=True)
    if log["result_code"] != 1:  # 1 = OPTIMAL
        raise RuntimeError(f"the optimal-transport solver did not converge: {log['warning']}")
    return float(log["cost"])


def _assignment_cost(cost: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def wasserstein2(
    x: Tensor, y: Tensor, *, solver: str = "pot", max_n: int = W2_MAX_N
) -> float:
    r"""Exact Wasserstein-2 distance between two empirical distributions with equal weights.

    .. math::

        W_2(\hat p_x, \hat p_y) = \Big(\min_{\gamma \in \Gamma} \sum_{i,j}
        \gamma_{ij} |x_i - y_j|^2\Big)^{1/2},

    :math:`\Gamma` the couplings with marginals :math:`1/n` and :math:`1/m`: a linear
    program, solved exactly on squared distances computed in float64.

    - ``solver="pot"`` (default): the network simplex of POT (``ot.emd``), any ``n, m``.
    - ``solver="assignment"``: for ``n == m`` an optimal coupling is a permutation
      (Birkhoff), found by :func:`scipy.optimize.linear_sum_assignment`; same value.

    Measured on this book's 2-core CPU at ``n = m = 2000`` (standardized two moons): POT
    0.35 s between two samples of the toy and 0.5 s between :math:`\mathcal N(0, I)` and the
    toy; the assignment solver 0.46 s and 1.4 s. So POT is the default; the tests check that
    the two agree. Also measured and rejected (same data, exact to 1e-15): ``lap.lapjv``
    2.0 and 4.6 s; a sparse k-nearest-neighbour problem certified by a dense check of the
    dual's reduced costs, solved by scipy's ``min_weight_full_bipartite_matching`` (10 to
    58 s) or by HiGHS with column generation (35 and 175 s); a vectorised auction with
    epsilon-scaling in torch, 2.7 and 5 s. The value is the **distance** :math:`W_2` (not squared). POT is imported
    on the first call (about 1 s).

    Args:
        x: samples, shape ``(n, D)``.
        y: samples, shape ``(m, D)``.
        solver: ``"pot"`` or ``"assignment"``.
        max_n: largest ``n`` or ``m`` accepted (:data:`W2_MAX_N`); the cost grows quickly
            (the cost matrix alone is ``8 n m`` bytes), so larger sets need a deliberate
            ``max_n``.

    Returns:
        :math:`W_2` as a float (not differentiable).

    Raises:
        ValueError: if ``max(n, m) > max_n``, or ``solver="assignment"`` with ``n != m``.
    """
    x, y = _check_pair(x, y)
    max_n = _check_int("max_n", max_n, 1)
    n, m = x.shape[0], y.shape[0]
    if max(n, m) > max_n:
        raise ValueError(
            f"exact W2 is limited to n, m <= max_n = {max_n} (got n = {n}, m = {m}): it costs "
            "O(n^2) memory and about O(n^2.5) time; subsample, use sliced_wasserstein2, or "
            "raise max_n deliberately"
        )
    if solver not in ("pot", "assignment"):
        raise ValueError(f"solver must be 'pot' or 'assignment', got {solver!r}")
    if solver == "assignment" and n != m:
        raise ValueError(f"solver='assignment' needs n == m, got n = {n}, m = {m}; use 'pot'")
    cost = _sq_dists64(x, y)
    value = _emd_cost(cost) if solver == "pot" else _assignment_cost(cost)
    return math.sqrt(max(value, 0.0))


def _knn_radii2(x: Tensor, k: int) -> Tensor:
    """Squared distance of each point of ``x`` ``(n, D)`` to its k-th nearest other point."""
    n = x.shape[0]
    rows = max(1, _BLOCK // n)
    x2 = x.square().sum(1)
    out = []
    for i0 in range(0, n, rows):
        xb = x[i0 : i0 + rows]
        d2 = torch.addmm(xb.square().sum(1, keepdim=True) + x2, xb, x.T, alpha=-2).clamp_min(0)
        r = torch.arange(xb.shape[0], device=x.device)
        d2 = d2.index_put((r, r + i0), d2.new_tensor(math.inf))  # exclude the point itself
        out.append(d2.kthvalue(k, dim=1).values)
    return torch.cat(out)


def _ball_counts(points: Tensor, centres: Tensor, radii2: Tensor) -> tuple[Tensor, Tensor]:
    """For closed balls ``B(centres_i, sqrt(radii2_i))``: how many balls hold each point
    ``(P,)``, and how far (squared) the nearest point is from each centre ``(C,)``."""
    rows = max(1, _BLOCK // centres.shape[0])
    c2 = centres.square().sum(1)
    counts, nearest = [], torch.full_like(radii2, math.inf)
    for i0 in range(0, points.shape[0], rows):
        pb = points[i0 : i0 + rows]
        d2 = torch.addmm(pb.square().sum(1, keepdim=True) + c2, pb, centres.T, alpha=-2)
        d2 = d2.clamp_min(0)
        counts.append((d2 <= radii2).sum(1))
        nearest = torch.minimum(nearest, d2.min(0).values)
    return torch.cat(counts), nearest


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 5) -> dict[str, float]:
    r"""Improved precision and recall of Kynkäänniemi et al. (2019), k-NN manifold estimates.

    The manifold of a sample set :math:`\Phi` is the union of the closed balls around each
    of its points with radius the distance to that point's ``k``-th nearest neighbour in
    :math:`\Phi`. Then

    .. math::

        \text{precision} = \frac1M \sum_{j} \mathbb 1\big[\text{fake}_j \in
        \text{manifold(real)}\big], \qquad
        \text{recall} = \frac1N \sum_{i} \mathbb 1\big[\text{real}_i \in
        \text{manifold(fake)}\big].

    Precision is the share of model samples that look real (fidelity); recall the share of
    the data the model covers (diversity). A model that drops modes keeps its precision and
    loses recall; an over-dispersed model loses precision. Both are biased by the finite
    ``k``-NN balls and sensitive to outliers, which inflate the balls (Naeem et al., 2020,
    whose :func:`density_coverage` fixes this).

    Args:
        real: data samples, shape ``(N, D)``.
        fake: model samples, shape ``(M, D)``.
        k: the neighbour that sets the radii, ``1 <= k < min(N, M)``: a small ``k`` gives
            tight manifolds (both numbers lower), a large one loose manifolds. 5 here, as in
            :func:`density_coverage`.

    Returns:
        ``{"precision": float, "recall": float}``, both in ``[0, 1]``.
    """
    k = _check_int("k", k, 1)
    real, fake = _check_pair(real, fake)
    if k >= min(real.shape[0], fake.shape[0]):
        raise ValueError(
            f"k = {k} needs more than k points in both sets, got {real.shape[0]} and "
            f"{fake.shape[0]}"
        )
    real, fake = _centred(real.detach(), fake.detach())
    r_real, r_fake = _knn_radii2(real, k), _knn_radii2(fake, k)
    in_real = _ball_counts(fake, real, r_real)[0]
    in_fake = _ball_counts(real, fake, r_fake)[0]
    return {
        "precision": float((in_real > 0).double().mean()),
        "recall": float((in_fake > 0).double().mean()),
    }


def density_coverage(real: Tensor, fake: Tensor, *, k: int = 5) -> dict[str, float]:
    r"""Density and coverage of Naeem et al. (2020).

    With :math:`B_i` the closed ball around :math:`\text{real}_i` of radius its ``k``-th
    nearest-neighbour distance among the real points,

    .. math::

        \text{density} = \frac{1}{kM} \sum_{j=1}^M \sum_{i=1}^N
        \mathbb 1[\text{fake}_j \in B_i], \qquad
        \text{coverage} = \frac1N \sum_{i=1}^N \mathbb 1[\exists j:\ \text{fake}_j \in B_i].

    Only the real balls are used, so outliers among the model samples do not inflate
    anything. For a model equal to the data (continuous, ``fake`` independent of ``real``)
    density has mean exactly 1, and coverage has mean
    :math:`1 - \prod_{i=1}^{k} \frac{N - i}{N + M - i}` (a ball holds no model sample iff
    the ``k`` nearest of the other :math:`N - 1 + M` points are all real, and by
    exchangeability), about :math:`1 - 2^{-k} \approx 0.97` for :math:`M = N` and
    :math:`k = 5`. Density exceeds 1 when the samples crowd the dense regions of the data.

    Args:
        real: data samples, shape ``(N, D)``.
        fake: model samples, shape ``(M, D)``.
        k: the neighbour that sets the radii, ``1 <= k < N``.

    Returns:
        ``{"density": float, "coverage": float}``.
    """
    k = _check_int("k", k, 1)
    real, fake = _check_pair(real, fake)
    if k >= real.shape[0]:
        raise ValueError(f"k = {k} needs more than k real points, got {real.shape[0]}")
    real, fake = _centred(real.detach(), fake.detach())
    radii2 = _knn_radii2(real, k)
    counts, nearest = _ball_counts(fake, real, radii2)
    return {
        "density": float(counts.double().sum()) / (k * fake.shape[0]),
        "coverage": float((nearest <= radii2).double().mean()),
    }


def _check_gaussian(mu: object, cov: object, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(mu, Tensor) or not isinstance(cov, Tensor):
        raise TypeError(f"mu{name} and S{name} must be torch.Tensors")
    if mu.ndim != 1 or cov.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"mu{name} must have shape (D,) and S{name} shape (D, D), got {tuple(mu.shape)} and "
            f"{tuple(cov.shape)}"
        )
    mu, cov = mu.detach().to(torch.float64), cov.detach().to(torch.float64)
    if not bool(torch.isfinite(mu).all() & torch.isfinite(cov).all()):
        raise ValueError(f"mu{name} and S{name} must be finite")
    scale = float(cov.abs().max()) if cov.numel() else 0.0
    if float((cov - cov.T).abs().max()) > 1e-6 * max(scale, 1e-300):
        raise ValueError(f"S{name} must be symmetric")
    return mu, (cov + cov.T) / 2


def _psd_sqrt(s: Tensor, name: str) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix by its eigendecomposition."""
    w, v = torch.linalg.eigh(s)
    top = float(w.abs().max()) if w.numel() else 0.0
    if float(w.min()) < -1e-8 * max(top, 1.0):
        low = float(w.min())
        raise ValueError(f"{name} must be positive semi-definite, has eigenvalue {low:.3g}")
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_gaussians(mu1: Tensor, S1: Tensor, mu2: Tensor, S2: Tensor) -> float:
    r"""Fréchet distance between two Gaussians: the squared Wasserstein-2 distance.

    .. math::

        d^2 = |\mu_1 - \mu_2|^2 + \operatorname{tr}\!\Big(S_1 + S_2
        - 2\big(S_1^{1/2} S_2 S_1^{1/2}\big)^{1/2}\Big),

    which equals :math:`W_2^2(\mathcal N(\mu_1, S_1), \mathcal N(\mu_2, S_2))` and is the
    formula of the FID (Heusel et al., 2017). It is computed in float64 with *symmetric*
    eigendecompositions (``eigh``): :math:`S_1^{1/2}` from that of :math:`S_1`, then the trace
    of the square root of the symmetric PSD matrix :math:`S_1^{1/2} S_2 S_1^{1/2}` as the sum
    of the square roots of its eigenvalues (clamped at 0). This avoids
    ``scipy.linalg.sqrtm`` of the non-symmetric :math:`S_1 S_2`, which can return complex
    parts and loses accuracy for ill-conditioned covariances. Tiny negative results of
    rounding are clamped to 0.

    Args:
        mu1: mean, shape ``(D,)``.
        S1: covariance, shape ``(D, D)``, symmetric positive semi-definite.
        mu2: mean, shape ``(D,)``.
        S2: covariance, shape ``(D, D)``.

    Returns:
        :math:`d^2` (squared, as the FID reports it), a float.

    Example:
        >>> I = torch.eye(2)
        >>> frechet_gaussians(torch.zeros(2), I, torch.tensor([3.0, 4.0]), 4 * I)  # 25 + 2 * 1
        27.0
    """
    mu1, S1 = _check_gaussian(mu1, S1, "1")
    mu2, S2 = _check_gaussian(mu2, S2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"the two Gaussians have different dimensions: {mu1.shape[0]} and {mu2.shape[0]}"
        )
    S2 = S2.to(S1.device)
    root1 = _psd_sqrt(S1, "S1")
    _psd_sqrt(S2, "S2")  # validates S2
    middle = root1 @ S2 @ root1
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = float(eig.clamp_min(0).sqrt().sum())
    mean_term = float((mu1 - mu2.to(mu1.device)).square().sum())
    d2 = mean_term + float(S1.trace() + S2.trace()) - 2 * trace_root
    return max(d2, 0.0)


def frechet_distance(x: Tensor, y: Tensor) -> float:
    r"""Fréchet distance between Gaussian fits of two sample sets (the FID formula).

    Fits :math:`\mathcal N(\hat\mu, \hat S)` to each set (mean and the unbiased sample
    covariance, divided by :math:`n - 1`, as the FID does) in float64 and returns
    :func:`frechet_gaussians` of the fits. On raw coordinates it sees only the first two
    moments: two distributions with the same mean and covariance are at distance about 0,
    however different their shapes (and the standardized toys all have mean 0 and unit
    variances). The FID applies it to features of a trained network (Inception for images),
    where first and second moments say more.

    Args:
        x: samples, shape ``(n, D)``, ``n >= 2``.
        y: samples, shape ``(m, D)``, ``m >= 2``.

    Returns:
        The squared Fréchet distance, a float.
    """
    x, y = _check_pair(x, y, min_n=2)

    def fit(z: Tensor) -> tuple[Tensor, Tensor]:
        z = z.detach().to(torch.float64)
        mu = z.mean(0)
        zc = z - mu
        return mu, zc.T @ zc / (z.shape[0] - 1)

    return frechet_gaussians(*fit(x), *fit(y))


def _poly_kernel_sum(a: Tensor, b: Tensor, gamma: float, coef0: float, degree: int) -> float:
    r"""Sum over all pairs of :math:`(\gamma\, a_i \cdot b_j + c_0)^d` in float64, by row blocks."""
    rows = max(1, _BLOCK // max(b.shape[0], 1))
    total = 0.0
    for i0 in range(0, a.shape[0], rows):
        total += float(((a[i0 : i0 + rows] @ b.T) * gamma + coef0).pow(degree).sum())
    return total


def kid(
    x: Tensor,
    y: Tensor,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> float:
    r"""Kernel Inception Distance: the unbiased MMD² with a polynomial kernel on features.

    Bińkowski et al. (2018) compare feature vectors (of the Inception network for
    images) with the kernel

    .. math::

        k(a, b) = \big(\gamma\, a \cdot b + c_0\big)^d, \qquad
        \gamma = 1/D,\ c_0 = 1,\ d = 3 \text{ by default},

    and report the **unbiased** U-statistic :math:`\mathrm{MMD}^2_u` of Gretton et al.
    (2012), the same estimator as :func:`mmd2` with ``unbiased=True`` (``[eq-mmd-u]`` and
    ``[eq-kid]`` in the evaluation chapter). Unlike the Fréchet distance
    (:func:`frechet_distance`), whose plug-in estimate is biased upwards by an amount that
    depends on ``n``, its expectation is the population value at every ``n``; so KIDs
    computed with different numbers of samples estimate the same number, and it can be
    negative when the two distributions are close (its null distribution is that of
    :func:`mmd2`'s U-statistic, skewed to the right). The cubic kernel compares the first
    three moments of the features. Bińkowski et al. average the estimate over random subsets
    of 1000 points; here it is computed once on all points, in float64, by row blocks
    (bounded memory, :math:`O(nmD)` time).

    Args:
        x: features, shape ``(n, D)``, ``n >= 2``.
        y: features, shape ``(m, D)``, ``m >= 2``.
        degree: the degree :math:`d \ge 1` of the polynomial kernel.
        gamma: the scale :math:`\gamma > 0` of the inner product; ``None`` means
            :math:`1/D`.
        coef0: the constant :math:`c_0 \ge 0`.

    Returns:
        :math:`\mathrm{MMD}^2_u` as a float (it can be negative).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(500, 4, generator=g), torch.randn(500, 4, generator=g)
        >>> abs(kid(x, y)) < 0.05, kid(x, y + 1.0) > 1.0
        (True, True)
    """
    degree = _check_int("degree", degree, 1)
    coef0 = _check_nonnegative("coef0", coef0)
    x, y = _check_pair(x, y, min_n=2)
    gamma = 1.0 / x.shape[1] if gamma is None else _check_positive("gamma", gamma)
    x64, y64 = x.detach().to(torch.float64), y.detach().to(torch.float64)
    n, m = x.shape[0], y.shape[0]
    diag_x = float((x64.square().sum(1) * gamma + coef0).pow(degree).sum())  # the i = j terms
    diag_y = float((y64.square().sum(1) * gamma + coef0).pow(degree).sum())
    kxx = _poly_kernel_sum(x64, x64, gamma, coef0, degree) - diag_x
    kyy = _poly_kernel_sum(y64, y64, gamma, coef0, degree) - diag_y
    kxy = _poly_kernel_sum(x64, y64, gamma, coef0, degree)
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)


def inception_score(probs: Tensor) -> float:
    r"""Inception Score of samples from their predicted class probabilities.

    Salimans et al. (2016) score a set of samples :math:`x_1, \dots, x_n` with a classifier
    :math:`p(y \mid x)` (the Inception network for ImageNet images; the book uses its digit
    classifier, :class:`gmbook.nets.DigitClassifier`):

    .. math::

        \mathrm{IS} = \exp\Big(\frac1n \sum_{i=1}^n
        \mathrm{KL}\big(p(y \mid x_i) \,\big\|\, \hat p(y)\big)\Big),
        \qquad \hat p(y) = \frac1n \sum_{i=1}^n p(y \mid x_i),

    ``[eq-inception-score]`` in the evaluation chapter. The exponent is the mutual
    information between the sample and its predicted label, :math:`H(\hat p(y)) - \frac1n
    \sum_i H(p(y \mid x_i))`, so :math:`1 \le \mathrm{IS} \le K` for :math:`K` classes:
    it is 1 when every prediction is the same, and :math:`K` exactly when every prediction
    is certain (one-hot) and the classes are used equally often. It never looks at real
    data, so it cannot see a model that produces one perfect exemplar per class (Barratt
    and Sharma, 2018). Terms with :math:`p(y \mid x_i) = 0` contribute 0
    (:math:`0 \log 0 = 0`). Salimans et al. average the score over 10 splits of 5000
    samples; values computed on other numbers of samples or splits are not comparable.

    Args:
        probs: class probabilities :math:`p(y \mid x_i)`, shape ``(n, K)``, ``K >= 2``,
            nonnegative, each row summing to 1 (within ``1e-4``; e.g. a ``softmax`` of
            logits).

    Returns:
        The Inception Score, a float in :math:`[1, K]`.

    Example:
        >>> inception_score(torch.eye(4))  # certain and balanced: the maximum K
        4.0
        >>> inception_score(torch.full((5, 4), 0.25))  # all predictions equal
        1.0
    """
    if not isinstance(probs, Tensor):
        raise TypeError(f"probs must be a torch.Tensor of shape (n, K), got {_describe(probs)}")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be a floating-point tensor, got dtype {probs.dtype}")
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (n, K) with n >= 1, K >= 2, got "
                         f"{tuple(probs.shape)}")
    p = probs.detach().to(torch.float64)
    if not bool(torch.isfinite(p).all()) or float(p.min()) < 0:
        raise ValueError("probs must be finite and nonnegative (probabilities, not logits)")
    worst = float((p.sum(1) - 1).abs().max())
    if worst > 1e-4:
        raise ValueError(f"each row of probs must sum to 1 (apply softmax to logits); a row "
                         f"sums to 1 {'+-'} {worst:.3g}")
    p = p / p.sum(1, keepdim=True)
    marginal = p.mean(0)  # (K,)
    ratio = torch.where(p > 0, p / marginal, torch.ones_like(p))  # p > 0 implies marginal > 0
    kl = (p * ratio.log()).sum(1)  # (n,)
    return float(kl.mean().exp())


# --------------------------------------------------------------------------- two-sample test


@dataclasses.dataclass(frozen=True)
class TestResult:
    r"""Result of :func:`two_sample_test`.

    Attributes:
        statistic: the observed statistic.
        p_value: :math:`(1 + \#\{b: T_b \ge T\}) / (B + 1)`.
        null: the statistics of the ``B`` permutations, float64 on the CPU, shape ``(B,)``.
    """

    __test__ = False  # not a pytest test class, despite its name

    statistic: float
    p_value: float
    null: Tensor

    def __str__(self) -> str:
        b = self.null.shape[0]
        return f"statistic {self.statistic:.4g}, p = {self.p_value:.4g} ({b} permutations)"


def _pooled_null(
    z: Tensor, n: int, statistic: Callable, perms: Tensor,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
) -> tuple[float, Tensor]:
    """Observed and permuted values of mmd2 / energy_distance (default settings) from one
    pooled matrix, in float64: each statistic is a quadratic form of the labelling vector."""
    big_n = z.shape[0]
    m = big_n - n
    (zc,) = _centred(z.to(torch.float64))
    rows = []
    for i0 in range(0, big_n, max(1, _BLOCK // big_n)):  # the pooled matrix A, (N, N)
        zb = zc[i0 : i0 + max(1, _BLOCK // big_n)]
        d2 = torch.addmm(zb.square().sum(1, keepdim=True) + zc.square().sum(1), zb, zc.T, alpha=-2)
        d2 = d2.clamp_min_(0)
        r = torch.arange(zb.shape[0], device=z.device)
        d2[r, r + i0] = 0
        if statistic is mmd2:
            coeffs = [-0.5 / s**2 for s in bandwidths]
            rows.append(sum((d2 * c).clamp_min(_EXP_FLOOR).exp() for c in coeffs))
        else:
            rows.append(d2.sqrt_())
    a = torch.cat(rows)  # (N, N)
    row_sums = a.sum(1)  # (N,)
    total = row_sums.sum()
    labels = torch.cat([perms.new_tensor(range(big_n))[None], perms])  # identity first
    values = []
    chunk = max(1, _BLOCK // big_n)
    for p in labels.split(chunk):
        s = torch.zeros(p.shape[0], big_n, dtype=a.dtype, device=a.device)
        s.scatter_(1, p[:, :n].to(a.device), 1.0)  # indicator of the x-labelled points
        s_xx = ((s @ a) * s).sum(1)
        s_x_all = s @ row_sums
        s_xy = s_x_all - s_xx
        s_yy = total - 2 * s_x_all + s_xx
        if statistic is mmd2:  # unbiased, the k = 1 per bandwidth of the diagonal removed
            k0 = len(bandwidths)
            v = (s_xx - n * k0) / (n * (n - 1)) + (s_yy - m * k0) / (m * (m - 1))
            v = v - 2 * s_xy / (n * m)
        else:  # energy distance, V-statistics
            v = 2 * s_xy / (n * m) - s_xx / n**2 - s_yy / m**2
        values.append(v.to(torch.float64).cpu())
    values = torch.cat(values)
    return float(values[0]), values[1:]


def two_sample_test(
    x: Tensor,
    y: Tensor,
    *,
    statistic: Callable[[Tensor, Tensor], Tensor | float] = mmd2,
    n_permutations: int = 500,
    generator: torch.Generator | None = None,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
) -> TestResult:
    r"""Permutation two-sample test of :math:`H_0: p_x = p_y`.

    Pools the ``n + m`` points, recomputes the statistic on ``B = n_permutations`` random
    relabellings (``n`` points labelled ``x``), and returns the p-value

    .. math::

        \hat p = \frac{1 + \#\{b : T_b \ge T_{\text{obs}}\}}{B + 1},

    which is exactly valid (:math:`P(\hat p \le \alpha) \le \alpha` under :math:`H_0`)
    because the observed labelling is one more exchangeable draw; it is never 0, and the
    smallest reportable value is :math:`1/(B+1)`. Large values of the statistic must mean
    "different".

    With ``statistic=mmd2`` or ``statistic=energy_distance`` (the functions themselves, at
    their default settings) the kernel or distance matrix of the pooled sample is computed
    once, in float64, and each permutation costs one vector-matrix product (the statistic
    is a quadratic form of the labelling); ``bandwidths`` selects the kernels of ``mmd2``
    on that fast path (a single narrow bandwidth is more powerful against fine errors than
    the default mixture, see the evaluation chapter). Any other callable is called
    ``B + 1`` times.

    Args:
        x: samples, shape ``(n, D)``, ``n >= 2``.
        y: samples, shape ``(m, D)``, ``m >= 2``.
        statistic: callable ``(x, y) -> scalar``.
        n_permutations: number of permutations ``B``.
        generator: source of the permutations; ``None`` uses the global RNG.
        bandwidths: the kernel bandwidths when ``statistic`` is :func:`mmd2`.

    Returns:
        The :class:`TestResult`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)
        >>> two_sample_test(x, y + 1.0, n_permutations=99, generator=g).p_value
        0.01
    """
    if not callable(statistic):
        raise TypeError(f"statistic must be a callable (x, y) -> scalar, got {_describe(statistic)}")
    n_permutations = _check_int("n_permutations", n_permutations, 1)
    generator = _check_generator(generator)
    x, y = _check_pair(x, y, min_n=2)
    n = x.shape[0]
    z = torch.cat([x, y]).detach()  # (N, D)
    big_n = z.shape[0]
    device = generator.device if generator is not None else z.device
    perms = torch.rand(n_permutations, big_n, generator=generator, device=device).argsort(dim=1)
    perms = perms.to(z.device)  # (B, N)
    bandwidths = _check_bandwidths(bandwidths)
    if statistic is mmd2 or statistic is energy_distance:
        observed, null = _pooled_null(z, n, statistic, perms, bandwidths)
    else:
        with torch.no_grad():
            observed = float(statistic(x.detach(), y.detach()))
            null = torch.tensor(
                [float(statistic(z[p[:n]], z[p[n:]])) for p in perms], dtype=torch.float64
            )
    if not math.isfinite(observed) or not bool(torch.isfinite(null).all()):
        raise ValueError("the statistic returned a non-finite value")
    p_value = (1 + int((null >= observed).sum())) / (n_permutations + 1)
    return TestResult(statistic=observed, p_value=p_value, null=null)


# --------------------------------------------------------------------------- scorecard


_LABELS = {"w2": "W2 (exact)", "energy": "energy (V)", "sw2": "SW2", "mmd": "MMD^2 (V)"}


@dataclasses.dataclass(frozen=True)
class ScorecardRow:
    r"""One metric of a :class:`Scorecard`: mean and standard deviation over the repeats.

    Attributes:
        metric: key: ``"w2"``, ``"energy"``, ``"sw2"``, ``"mmd"``, or ``"mmd@<s>"`` for the
            MMD² of the single bandwidth ``s``.
        label: what the number is, in ASCII (e.g. ``"MMD^2 (V) s=0.05"``).
        model_mean, model_std: the metric between model and fresh data samples.
        floor_mean, floor_std: between two independent data samples (the noise floor).
        ceiling_mean, ceiling_std: between :math:`\mathcal N(0, I)` samples and data.
        ratio_mean: the mean over repeats of the per-repeat ratio ``model_r / floor_mean``,
            which is the ratio of the means ``model_mean / floor_mean`` (dividing by the
            floor's mean, not by one noisy floor pair, avoids the upward bias of a mean of
            ratios).
        ratio_std: the standard deviation over repeats of ``model_r / floor_mean``: the
            spread of a single repeat, like the other ``_std`` columns.
        ratio_se: the standard error of ``ratio_mean`` by the delta method,
            :math:`\text{ratio}\,\sqrt{(\mathrm{se}_m/\bar m)^2 + (\mathrm{se}_f/\bar f)^2}`
            with :math:`\mathrm{se} = \text{std}/\sqrt{k}` for a mean over :math:`k` repeats
            (the model and floor samples are independent). With a handful of repeats this
            standard error is itself uncertain (by about :math:`1/\sqrt{2(k-1)}`, 35% for 5).
    """

    metric: str
    label: str
    model_mean: float
    model_std: float
    floor_mean: float
    floor_std: float
    ceiling_mean: float
    ceiling_std: float
    ratio_mean: float
    ratio_std: float
    ratio_se: float


def _g(v: float) -> str:
    return f"{v:.3g}"


@dataclasses.dataclass(frozen=True)
class Scorecard:
    r"""The table of :func:`scorecard`: one :class:`ScorecardRow` per metric.

    ``str()`` gives the compact plain-ASCII table the chapters print (the PDF is built by
    xelatex); in a notebook it renders as an HTML table. Index it by metric key:
    ``card["w2"].ratio_mean``.

    Attributes:
        rows: the rows, the requested metrics first, then the MMD² of each bandwidth.
        dataset: ``repr`` of the data distribution.
        n: sample size of every comparison.
        repeats: number of independent repeats of the model's comparisons.
        floor_repeats: number of pairs behind each floor and ceiling.
    """

    rows: list[ScorecardRow]
    dataset: str
    n: int
    repeats: int
    floor_repeats: int

    def __getitem__(self, metric: str) -> ScorecardRow:
        for row in self.rows:
            if row.metric == metric:
                return row
        raise KeyError(f"no metric {metric!r}; have {[r.metric for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON or a DataFrame): the metadata and a list of row dicts."""
        return {
            "dataset": self.dataset,
            "n": self.n,
            "repeats": self.repeats,
            "floor_repeats": self.floor_repeats,
            "rows": [dataclasses.asdict(row) for row in self.rows],
        }

    def _cells(self, pm: str) -> tuple[list[str], list[list[str]]]:
        head = ["metric", "model", "floor (data vs data)", "ceiling (N(0,I))", "model/floor"]
        body = [
            [
                row.label,
                f"{_g(row.model_mean)} {pm} {_g(row.model_std)}",
                f"{_g(row.floor_mean)} {pm} {_g(row.floor_std)}",
                f"{_g(row.ceiling_mean)} {pm} {_g(row.ceiling_std)}",
                f"{row.ratio_mean:.2f} {pm} {row.ratio_se:.2f}",
            ]
            for row in self.rows
        ]
        return head, body

    def _title(self) -> str:
        floors = f" ({self.floor_repeats} for floors)"
        if self.floor_repeats == self.repeats:
            floors = ""
        return (
            f"{self.dataset}, n = {self.n}, {self.repeats} repeats{floors} "
            "(mean +- std over repeats; model/floor: ratio of means +- standard error)"
        )

    def __str__(self) -> str:
        head, body = self._cells("+-")
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *body]]
        return "\n".join([self._title(), *lines])

    def _repr_markdown_(self) -> str:
        head, body = self._cells("±")
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows += ["| " + " | ".join(r) + " |" for r in body]
        return f"**Scorecard**: {self._title().replace('+-', '±')}\n\n" + "\n".join(rows)

    def _repr_html_(self) -> str:
        head, body = self._cells("&plusmn;")
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
        caption = html.escape(self._title()).replace("+-", "&plusmn;")
        return f"<table><caption>Scorecard: {caption}</caption><tr>{th}</tr>{trs}</table>"


@dataclasses.dataclass
class _SetStats:
    """What one sample set contributes to every comparison it is in."""

    x: Tensor  # (n, D)
    dist_sum: Tensor | None  # sum over all pairs of |x_i - x_j|
    kernel_sums: Tensor | None  # (S,) sum over all pairs of each RBF kernel
    proj: Tensor | None  # (n, L) sorted projections


def _set_stats(
    x: Tensor, names: tuple[str, ...], scales: tuple[float, ...], theta: Tensor
) -> _SetStats:
    (xc,) = _centred(x)
    dsum, ksum = _pair_sums(
        xc, xc, scales if "mmd" in names else None, dist="energy" in names, same=True
    )
    proj = (x @ theta.T).sort(dim=0).values if "sw2" in names else None
    return _SetStats(x, dsum, ksum, proj)


def _w2_exact(x: Tensor, y: Tensor) -> float:
    return math.sqrt(max(_emd_cost(_sq_dists64(x, y)), 0.0))


def _compare(
    a: _SetStats,
    b: _SetStats,
    names: tuple[str, ...],
    scales: tuple[float, ...],
    pool: ThreadPoolExecutor | None,
) -> dict[str, Any]:
    """All requested metrics between two sets of the same size n (V-statistics). Exact W2
    is submitted to ``pool`` first (POT releases the GIL, so it runs beside the torch work)
    and left as a Future in the result, for :func:`_resolve`."""
    n = a.x.shape[0]
    out: dict[str, Any] = {}
    if "w2" in names:
        out["w2"] = pool.submit(_w2_exact, a.x, b.x)
    if "energy" in names or "mmd" in names:
        ac, bc = _centred(a.x, b.x)
        dsum, ksum = _pair_sums(
            ac, bc, scales if "mmd" in names else None, dist="energy" in names, same=False
        )
        if "energy" in names:
            out["energy"] = float((2 * dsum - a.dist_sum - b.dist_sum) / n**2)
        if "mmd" in names:
            per = ((a.kernel_sums + b.kernel_sums - 2 * ksum) / n**2).tolist()
            out["mmd"] = float(sum(per))
            for s, v in zip(scales, per):
                out[f"mmd@{s:g}"] = v
    if "sw2" in names:
        out["sw2"] = float((a.proj - b.proj).square().mean(0).mean().sqrt())
    return out


def _resolve(results: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Replace the Futures of :func:`_compare` by their values (re-raising any error)."""
    return [{k: v.result() if isinstance(v, Future) else v for k, v in r.items()} for r in results]


@dataclasses.dataclass
class _Reference:
    theta: Tensor  # (L, D) projection directions, shared by every comparison
    floor: list[dict[str, float]]
    ceiling: list[dict[str, float]]


_REFERENCE_CACHE: collections.OrderedDict[tuple, _Reference] = collections.OrderedDict()
_REFERENCE_CACHE_SIZE = 16


def _reference_key(dataset: Any, *params: object) -> tuple | None:
    key = (dataset, *params)
    try:
        hash(key)
    except TypeError:  # an unhashable dataset: no caching
        return None
    return key


def _reference(
    dataset: Any,
    dim: int,
    n: int,
    repeats: int,
    names: tuple[str, ...],
    scales: tuple[float, ...],
    n_projections: int,
    floor_seed: int,
    like: Tensor,
    pool: ThreadPoolExecutor | None,
) -> _Reference:
    """Floors and ceilings, drawn with a private generator seeded ``floor_seed``; their W2
    values may still be Futures (resolve, then cache, in :func:`scorecard`)."""
    g = torch.Generator(device="cpu").manual_seed(floor_seed)
    theta = _random_directions(n_projections, dim, g, torch.empty(0, dtype=like.dtype))
    theta = theta.to(like.device)  # (L, D)
    floor, ceiling = [], []
    for _ in range(repeats):
        t1 = _true_samples(dataset, n, dim, g, like)
        t2 = _true_samples(dataset, n, dim, g, like)
        gauss = torch.randn(n, dim, generator=g, dtype=like.dtype).to(like.device)
        s1 = _set_stats(t1, names, scales, theta)
        floor.append(_compare(s1, _set_stats(t2, names, scales, theta), names, scales, pool))
        ceiling.append(_compare(_set_stats(gauss, names, scales, theta), s1, names, scales, pool))
    return _Reference(theta, floor, ceiling)


def _true_samples(
    dataset: Any, n: int, dim: int, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    x = dataset.sample(n, generator=generator)
    if not isinstance(x, Tensor) or x.shape[0] != n or not x.is_floating_point():
        raise ValueError(f"dataset.sample({n}) must return a floating-point tensor of {n} points")
    x = x.detach().reshape(n, -1).to(device=like.device, dtype=like.dtype)
    if x.shape[1] != dim:
        raise ValueError(f"the data have dimension {x.shape[1]}, the model samples {dim}")
    return x


def _model_samples(
    samples_or_model: Any, n: int, repeats: int, generator: torch.Generator | None
) -> list[Tensor]:
    if isinstance(samples_or_model, Tensor):
        x = samples_or_model
        if x.ndim < 2 or x.shape[0] < n * repeats:
            raise ValueError(
                f"a tensor of samples must have at least repeats * n = {repeats * n} rows "
                f"(shape (N, *D)), got shape {tuple(x.shape)}; pass more samples, or a model"
            )
        chunks = list(x.detach()[: n * repeats].reshape(n * repeats, -1).split(n))
    else:
        sample = getattr(samples_or_model, "sample", None)
        if not callable(sample):
            if not callable(samples_or_model):
                raise TypeError(
                    "samples_or_model must be a tensor of samples, a model with "
                    ".sample(n, generator=...), or a callable (n, generator=...), got "
                    f"{_describe(samples_or_model)}"
                )
            sample = samples_or_model
        chunks = []
        with torch.no_grad():
            for _ in range(repeats):
                x = sample(n, generator=generator)
                if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] != n:
                    got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                    raise ValueError(
                        f"the model's sample({n}) must return a tensor (n, *D), got {got}"
                    )
                chunks.append(x.detach().reshape(n, -1))
    for x in chunks:
        if not x.is_floating_point():
            raise TypeError(f"model samples must be floating point, got {x.dtype}")
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        if bad:
            raise ValueError(
                f"{bad} of {n} model samples are not finite (nan/inf): the model diverged?"
            )
    dtype = torch.promote_types(chunks[0].dtype, torch.float32)
    return [x.to(dtype) for x in chunks]


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def scorecard(
    samples_or_model: Tensor | Any,
    dataset: Any,
    *,
    n: int = 2000,
    repeats: int = 5,
    metrics: Sequence[str] = SCORECARD_METRICS,
    generator: torch.Generator | None = None,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
    n_projections: int = 256,
    floor_seed: int = 0,
    floor_repeats: int | None = None,
) -> Scorecard:
    r"""Score a model's samples against the data, next to the noise floor and a ceiling.

    For each of ``repeats`` repeats, ``n`` model samples are compared with ``n`` *fresh*
    data samples (``dataset.sample(n, generator=generator)``) by each metric:

    - ``"w2"``: exact :func:`wasserstein2` (POT), a distance;
    - ``"energy"``: :func:`energy_distance`, V-statistic (squared-type);
    - ``"sw2"``: :func:`sliced_wasserstein2`, a distance;
    - ``"mmd"``: :func:`mmd2` with ``unbiased=False`` (the V-statistic, so that its floor is
      positive), and one more row per bandwidth, because the mixture is dominated by its
      wide kernels and blind to the fine errors of good models. At bandwidths below the
      typical spacing of ``n`` points the V-statistic is dominated by its diagonal terms
      (about :math:`2/n`), so the ratios of the smallest bandwidths stay modest even for a
      bad model (about 2 for :math:`\mathcal N(0, I)` against two moons at ``n = 500``).

    The **floor** of a metric is its value between two independent data samples of size
    ``n`` (the distance a perfect model would get), the **ceiling** its value between
    :math:`\mathcal N(0, I)` samples and data (a model that learned only the
    standardization), each over ``floor_repeats`` (default ``repeats``) fresh pairs.

    The ratio model/floor of repeat ``r`` is ``model_r / floor_mean``; the row reports the
    mean of these (the ratio of the means), their standard deviation, and the standard error
    of the mean ratio by the delta method, which includes the floor's own uncertainty (see
    :class:`ScorecardRow`); the printed table shows mean +- standard error. A ratio near 1
    means the metric cannot tell the model from the data at this ``n``; W2 and SW2 grow
    linearly with a small error of the model, energy and MMD² quadratically, so their ratios
    rise later but faster.

    Floors and ceilings are drawn with a private generator seeded ``floor_seed``, so they
    are the same numbers in every chapter, do not consume the caller's random stream, and are
    cached (per dataset, ``n``, ``floor_repeats``, metrics, bandwidths, ``n_projections``,
    ``floor_seed``, device and dtype; the toys of :mod:`gmbook.data` are frozen dataclasses,
    equal when their parameters are, and an unhashable dataset is not cached): the second
    scorecard on the same data costs only the model's comparisons. The projection directions of SW2 come from the same private
    generator and are shared by model, floor and ceiling (common random numbers).

    The exact W2 solves (0.35 to 0.5 s each at ``n = 2000``) run in worker threads (as many
    as ``torch.get_num_threads()``; POT releases the GIL) beside the torch metrics (about
    0.07 s per comparison). Measured on the book's 2-core CPU at ``n = 2000``,
    ``repeats = 5``, all metrics: 1.3 s with the floors cached, 3.8 s without (15 W2 solves);
    without ``"w2"``, 0.38 s (cached) and 1 s; at ``n = 1000`` with ``"w2"``, 0.3 s and
    0.8 s.

    Args:
        samples_or_model: a model with ``.sample(n, generator=...)`` (or such a callable),
            called once per repeat under ``torch.no_grad()``; or a tensor of at least
            ``repeats * n`` samples ``(N, *D)``, split into ``repeats`` consecutive chunks of
            ``n`` (rows beyond ``repeats * n`` are ignored). Samples are flattened to
            ``(n, D)``; their device and dtype (at least float32) are used throughout.
        dataset: the data distribution, with ``.sample(n, generator=...)`` (a toy of
            :mod:`gmbook.data`).
        n: sample size of every comparison (at most :data:`W2_MAX_N` with ``"w2"``).
        repeats: number of repeats.
        metrics: a subset of :data:`SCORECARD_METRICS`.
        generator: randomness of the model samples and the fresh data samples; ``None`` uses
            the global RNG.
        bandwidths: of the MMD kernel.
        n_projections: directions of SW2.
        floor_seed: seed of the private generator of floors, ceilings and directions.
        floor_repeats: number of pairs behind each floor and ceiling (default: ``repeats``).
            Floors are cached, so a larger value costs only once; it makes the ratios more
            precise. The W2 floor of two moons at ``n = 2000``, for one, varies by about 20%
            (one standard deviation) from pair to pair: W2 must carry any chance excess of
            points across the set, for instance from one moon to the other.

    Returns:
        The :class:`Scorecard`.

    Example:
        >>> from gmbook.data import EightGaussians
        >>> data = EightGaussians()
        >>> g = torch.Generator().manual_seed(0)
        >>> card = scorecard(data, data, n=200, repeats=2, generator=g)
        >>> [row.metric for row in card.rows][:4]
        ['w2', 'energy', 'sw2', 'mmd']
        >>> card["mmd"].ceiling_mean > 3 * card["mmd"].floor_mean
        True
    """
    n = _check_int("n", n, 2)
    repeats = _check_int("repeats", repeats, 1)
    if floor_repeats is None:
        floor_repeats = repeats
    floor_repeats = _check_int("floor_repeats", floor_repeats, 1)
    n_projections = _check_int("n_projections", n_projections, 1)
    floor_seed = _check_int("floor_seed", floor_seed, 0)
    generator = _check_generator(generator)
    scales = _check_bandwidths(bandwidths)
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise TypeError(f"metrics must be a non-empty sequence of names from {SCORECARD_METRICS}")
    unknown = [m for m in metrics if m not in SCORECARD_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {SCORECARD_METRICS}")
    names = tuple(m for m in SCORECARD_METRICS if m in metrics)  # canonical order, no repeats
    if "w2" in names and n > W2_MAX_N:
        raise ValueError(
            f"exact W2 is limited to n <= {W2_MAX_N}; leave 'w2' out of metrics for n = {n}"
        )
    if not callable(getattr(dataset, "sample", None)):
        raise TypeError(f"dataset must have .sample(n, generator=...), got {_describe(dataset)}")

    fakes = _model_samples(samples_or_model, n, repeats, generator)
    like = fakes[0]
    dim = like.shape[1]
    key = _reference_key(
        dataset, dim, n, floor_repeats, names, scales, n_projections, floor_seed,
        str(like.device), like.dtype,
    )
    ref = _REFERENCE_CACHE.get(key) if key is not None else None
    # Exact W2 solves run in worker threads (POT releases the GIL) beside the torch metrics;
    # POT is imported here, in the calling thread, not concurrently by the workers.
    if "w2" in names:
        _pot()
    workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) if "w2" in names else nullcontext() as pool:
        new_ref = ref is None
        if new_ref:
            ref = _reference(
                dataset, dim, n, floor_repeats, names, scales, n_projections, floor_seed, like,
                pool,
            )
        model = []
        for fake in fakes:
            real = _true_samples(dataset, n, dim, generator, like)
            fake_stats = _set_stats(fake, names, scales, ref.theta)
            real_stats = _set_stats(real, names, scales, ref.theta)
            model.append(_compare(fake_stats, real_stats, names, scales, pool))
        model = _resolve(model)
        if new_ref:
            ref = _Reference(ref.theta, _resolve(ref.floor), _resolve(ref.ceiling))
            if key is not None:
                _REFERENCE_CACHE[key] = ref
                while len(_REFERENCE_CACHE) > _REFERENCE_CACHE_SIZE:
                    _REFERENCE_CACHE.popitem(last=False)
        else:
            _REFERENCE_CACHE.move_to_end(key)
    keys = [*names]
    if "mmd" in names:
        keys += [f"mmd@{s:g}" for s in scales]
    rows = []
    for key in keys:
        label = _LABELS[key] if key in _LABELS else f"  {_LABELS['mmd']} s={key[4:]}"
        mv = [r[key] for r in model]
        fv = [r[key] for r in ref.floor]
        cv = [r[key] for r in ref.ceiling]
        (m_mean, m_std), (f_mean, f_std) = _mean_std(mv), _mean_std(fv)
        ratio = m_mean / f_mean if f_mean > 0 else math.inf
        ratio_std = m_std / f_mean if f_mean > 0 else math.inf
        rel = math.hypot(
            m_std / m_mean / math.sqrt(repeats) if m_mean else 0.0,
            f_std / f_mean / math.sqrt(floor_repeats) if f_mean else 0.0,
        )
        ratio_se = abs(ratio) * rel if min(repeats, floor_repeats) > 1 else math.nan
        rows.append(
            ScorecardRow(
                key, label, m_mean, m_std, f_mean, f_std, *_mean_std(cv), ratio, ratio_std,
                ratio_se,
            )
        )
    return Scorecard(
        rows=rows, dataset=repr(dataset), n=n, repeats=repeats, floor_repeats=floor_repeats
    )
