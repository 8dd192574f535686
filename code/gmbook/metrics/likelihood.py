r"""Likelihood-based evaluation: held-out NLL, bits per dimension, entropy and the KL gap.

A submodule of :mod:`gmbook.metrics`, which re-exports and documents its public names
(:class:`~gmbook.metrics.Estimate`, :func:`~gmbook.metrics.nll`,
:func:`~gmbook.metrics.bits_per_dim`, :func:`~gmbook.metrics.paired_kl`,
:func:`~gmbook.metrics.entropy`, :func:`~gmbook.metrics.entropy_quadrature`,
:class:`~gmbook.metrics.NLLReport`, :func:`~gmbook.metrics.nll_report`); import them
from there.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gmbook._checks import check_generator as _check_generator
from gmbook._checks import check_int as _check_int
from gmbook._checks import check_positive as _check_positive
from gmbook._checks import describe as _describe

# Every public name here is re-exported, and documented once, by gmbook.metrics (whose
# __all__ lists it): import it from there. The empty __all__ keeps the API docs from
# describing it twice.
__all__: list[str] = []

_LN2 = math.log(2.0)
_Z95 = 1.959963984540054  # the 97.5% quantile of N(0, 1)


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


def _log_prob_values(log_prob: object, x: Tensor, batch_size: int) -> Tensor:
    """``log_prob`` at ``x`` as float64 ``(N,)``: the model evaluated in batches
    (:func:`_log_probs`), or a tensor of values already evaluated at ``x``, checked."""
    if isinstance(log_prob, Tensor):
        if not log_prob.is_floating_point() or log_prob.shape != (x.shape[0],):
            raise ValueError(
                f"log-densities given as a tensor must be floating point of shape (N,) = "
                f"({x.shape[0]},), one per point of x, got {log_prob.dtype} of shape "
                f"{tuple(log_prob.shape)}"
            )
        return log_prob.detach().to(torch.float64)
    return _log_probs(log_prob, x, batch_size)


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
            object with such a ``.log_prob`` method (a model, a toy distribution), evaluated
            under ``torch.no_grad()``; or a tensor ``(N,)`` of its log-densities at ``x``,
            already evaluated (so that :func:`paired_kl` on the same points does not
            evaluate an expensive model again).
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
    fn = log_prob if isinstance(log_prob, Tensor) else _as_log_prob(log_prob, "log_prob")
    x = _check_points(x)
    batch_size = _check_int("batch_size", batch_size, 1)
    lp = _log_prob_values(fn, x, batch_size)
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
        log_q: the model, as in :func:`nll` (a tensor ``(N,)`` of values at ``x_from_p``
            is accepted too).
        log_p: the true density (e.g. a toy of :mod:`gmbook.data`), as in :func:`nll` (or
            its values ``(N,)`` at ``x_from_p``).
        x_from_p: points drawn from :math:`p`, shape ``(N, *D)``.
        batch_size: points per call of each density.

    Returns:
        The :class:`Estimate` of the KL in nats (``inf`` if ``q`` is zero at some point).

    Raises:
        ValueError: if ``log_p`` is ``-inf`` at a point (it is then not from :math:`p`), or
            either density returns nan.
    """
    fq = log_q if isinstance(log_q, Tensor) else _as_log_prob(log_q, "log_q")
    fp = log_p if isinstance(log_p, Tensor) else _as_log_prob(log_p, "log_p")
    x = _check_points(x_from_p, "x_from_p")
    batch_size = _check_int("batch_size", batch_size, 1)
    lq = _log_prob_values(fq, x, batch_size)
    lp = _log_prob_values(fp, x, batch_size)
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
