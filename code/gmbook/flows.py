r"""Normalizing flows: invertible layers, their compositions, and the usual flow families.

Derived in the chapter "Normalizing flows" (``book/latent/flows.md``); each object names
the equation it implements.

A **layer** is an :class:`~torch.nn.Module` with two methods, both returning the image and
the log-absolute-determinant of the Jacobian *of the map they apply*:

- ``forward(x) -> (z, log|det J(x)|)``, the normalizing direction, data to latent;
- ``inverse(z) -> (x, log|det J^{-1}(z)|)``, the generative direction.

The layers are :class:`AffineCoupling` (RealNVP, eq. ``eq-flow-affine-coupling``; NICE's
additive coupling with ``additive=True``, eq. ``eq-flow-additive-coupling``),
:class:`SplineCoupling` (monotone rational-quadratic splines, eq. ``eq-flow-rqs``),
:class:`Permutation` and :class:`Reverse`, :class:`LULinear` (eq. ``eq-flow-lu``),
:class:`ActNorm` (eq. ``eq-flow-actnorm``), :class:`MaskedAutoregressive` (MAF, eq.
``eq-flow-maf``) on the masked network :class:`MADE` (eq. ``eq-flow-made-mask``), and
:class:`Inverse`, which swaps the two directions of any layer (an IAF layer is
``Inverse(MaskedAutoregressive(...))``, eq. ``eq-flow-iaf``).

A :class:`Flow` composes layers over a standard normal base and has the book's verbs:
``log_prob(x)`` by the change of variables for a composition (eq. ``eq-flow-composition``),
``sample(n, generator=...)``, ``sample_and_log_prob`` and ``loss(x)``. The builders
:func:`nice`, :func:`realnvp`, :func:`glow`, :func:`maf`, :func:`iaf` and
:func:`spline_flow` assemble the families of the chapter, and
:func:`rational_quadratic_spline` is the one-dimensional spline transform itself.

Example:
    >>> flow = realnvp(2, layers=4, hidden=16)
    >>> x = torch.randn(5, 2)
    >>> flow.log_prob(x).shape
    torch.Size([5])
    >>> z, ladj = flow(x)
    >>> torch.allclose(flow.inverse(z)[0], x, atol=1e-5)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gmbook._checks import (
    check_bool,
    check_generator,
    check_int,
    check_points,
    check_positive,
    describe,
)
from gmbook._random import randn
from gmbook.nets import MLP

__all__ = [
    "MADE",
    "ActNorm",
    "AffineCoupling",
    "CouplingLayer",
    "Flow",
    "Inverse",
    "LULinear",
    "MaskedAutoregressive",
    "Permutation",
    "Reverse",
    "SplineCoupling",
    "alternating_mask",
    "bridge_mass_bound",
    "glow",
    "iaf",
    "maf",
    "made_masks",
    "min_lipschitz",
    "nice",
    "rational_quadratic_spline",
    "realnvp",
    "spline_flow",
    "spline_from_knots",
]

_LOG_2PI = math.log(2 * math.pi)


def _check_mask(mask: object) -> Tensor:
    if not isinstance(mask, Tensor) or mask.ndim != 1 or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a 1-D bool tensor, got {describe(mask)}")
    if bool(mask.all()) or not bool(mask.any()):
        raise ValueError("mask must select some coordinates to transform and leave some fixed")
    return mask


def alternating_mask(dim: int, parity: int) -> Tensor:
    r"""The coupling mask that transforms the coordinates :math:`d` with
    :math:`d \equiv \text{parity} \pmod 2` (0-based) and keeps the others, ``(dim,)`` bool.

    Example:
        >>> alternating_mask(5, 0).tolist()
        [True, False, True, False, True]
    """
    dim = check_int("dim", dim, 2)
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    return torch.arange(dim) % 2 == parity


# --------------------------------------------------------------------------- couplings


class CouplingLayer(nn.Module):
    r"""The shared code of coupling layers (eq. ``eq-flow-affine-coupling``), a base class.

    A conditioner MLP reads the kept coordinates :math:`x_{\bar m}` and outputs ``params``
    numbers for each transformed coordinate; a subclass's ``_elementwise`` transforms
    :math:`x_m` with them. The kept coordinates pass through unchanged, so the Jacobian is
    block triangular (:prf:ref:`prop-flow-triangular`). The conditioner's last layer starts
    at zero.

    Args:
        mask: ``(D,)`` bool, ``True`` for the coordinates to transform.
        params: numbers per transformed coordinate.
        hidden: width of the conditioner MLP.
        depth: its number of hidden layers.
    """

    def __init__(self, mask: Tensor, params: int, hidden: int, depth: int) -> None:
        super().__init__()
        mask = _check_mask(mask)
        self.dim = mask.shape[0]
        self.register_buffer("transformed", torch.nonzero(mask).flatten())
        self.register_buffer("kept", torch.nonzero(~mask).flatten())
        self.params = params
        self.net = MLP(len(self.kept), len(self.transformed) * params, hidden=hidden,
                       depth=depth, zero_init_last=True)  # starts as the identity

    def _conditioner(self, x: Tensor) -> Tensor:
        out = self.net(x[:, self.kept])  # (B, n_t * params)
        return out.view(x.shape[0], len(self.transformed), self.params)  # (B, n_t, P)

    def _couple(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        x = check_points("x", x, self.dim)
        theta = self._conditioner(x)
        y, lad = self._elementwise(x[:, self.transformed], theta, inverse)  # (B, n_t) each
        return x.index_copy(1, self.transformed, y), lad.sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Data to latent: ``(z, log|det J|)`` of shapes ``(B, D)`` and ``(B,)``."""
        return self._couple(x, inverse=False)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""Latent to data: ``(x, log|det J^{-1}|)`` of shapes ``(B, D)`` and ``(B,)``."""
        return self._couple(z, inverse=True)

    def _elementwise(
        self, x: Tensor, theta: Tensor, inverse: bool
    ) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class AffineCoupling(CouplingLayer):
    r"""The affine coupling layer of RealNVP (eq. ``eq-flow-affine-coupling``):

    .. math::

        z_{m} = x_{m} \odot e^{s(x_{\bar m})} + t(x_{\bar m}), \qquad
        z_{\bar m} = x_{\bar m}, \qquad \log|\det J| = \textstyle\sum_{d \in m} s_d,

    where :math:`m` is the set of transformed coordinates. The log-scale is soft-clamped,
    :math:`s = c \tanh(\tilde s / c)`, so that one layer cannot blow up early in training.
    With ``additive=True`` it is NICE's additive coupling (eq. ``eq-flow-additive-coupling``):
    :math:`s = 0`, volume preserving.

    Args:
        mask: ``(D,)`` bool, ``True`` for the coordinates :math:`m` to transform.
        hidden: width of the conditioner MLP.
        depth: its number of hidden layers.
        additive: NICE's additive coupling instead of the affine one.
        scale_clamp: the bound :math:`c > 0` of the log-scale.
    """

    def __init__(self, mask: Tensor, *, hidden: int = 64, depth: int = 2,
                 additive: bool = False, scale_clamp: float = 3.0) -> None:
        self.additive = check_bool("additive", additive)
        super().__init__(mask, 1 if additive else 2, check_int("hidden", hidden),
                         check_int("depth", depth))
        self.scale_clamp = check_positive("scale_clamp", scale_clamp)

    def _elementwise(self, x: Tensor, theta: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift = theta[..., 0]
        if self.additive:
            s = torch.zeros_like(shift)
        else:
            s = self.scale_clamp * torch.tanh(theta[..., 1] / self.scale_clamp)
        if inverse:
            return (x - shift) * torch.exp(-s), -s
        return x * torch.exp(s) + shift, s


# --------------------------------------------------------------------------- splines


def _spline_knots(
    widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float,
    min_bin: float, min_derivative: float,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Unconstrained parameters ``(..., K)``, ``(..., K)``, ``(..., K - 1)`` to knots
    ``x_k``, ``y_k`` and derivatives ``d_k``, each ``(..., K + 1)``, on ``[-B, B]``: bin
    sizes by a softmax with a floor, interior derivatives by a shifted softplus (0 maps to
    1, so zero parameters give the identity) and boundary derivatives 1 (linear tails)."""
    k = widths.shape[-1]
    sizes = torch.softmax(torch.stack([widths, heights]), dim=-1)  # (2, ..., K), sums 1
    sizes = min_bin + (1 - min_bin * k) * sizes
    cum = torch.cumsum(sizes[..., :-1], dim=-1)  # (2, ..., K - 1) interior knots in (0, 1)
    knots = F.pad(2 * bound * cum - bound, (1, 1), value=-bound)  # (2, ..., K + 1)
    knots[..., -1] = bound  # the ends are exactly -B and B
    shift = math.log(math.expm1(1 - min_derivative))
    inner = min_derivative + F.softplus(derivatives + shift)  # (..., K - 1)
    return knots[0], knots[1], F.pad(inner, (1, 1), value=1.0)


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    *,
    bound: float = 3.0,
    inverse: bool = False,
    min_bin: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    r"""The monotone rational-quadratic spline of Durkan et al. (2019), elementwise.

    Implements eqs. ``eq-flow-rqs`` and ``eq-flow-rqs-derivative`` (forward) and
    ``eq-flow-rqs-inverse`` (inverse, a root of a quadratic). Inside :math:`[-B, B]` the
    map is a strictly increasing, continuously differentiable spline with :math:`K` bins;
    in bin :math:`k`, with :math:`\xi = (x - x_k) / w_k`, :math:`s_k = h_k / w_k`,

    .. math::

        g(x) = y_k + \frac{h_k\,[s_k \xi^2 + d_k \xi (1 - \xi)]}
        {s_k + (d_{k+1} + d_k - 2 s_k)\, \xi (1 - \xi)} .

    Outside :math:`[-B, B]` it is the identity (the boundary derivatives are 1).

    Args:
        x: inputs, any shape ``(*S,)``.
        widths: unnormalized bin widths, ``(*S, K)`` (a softmax makes them sum to ``2B``).
        heights: unnormalized bin heights, ``(*S, K)``.
        derivatives: unconstrained interior knot derivatives, ``(*S, K - 1)``.
        bound: :math:`B > 0`, half the width of the spline's interval.
        inverse: apply :math:`g^{-1}` instead of :math:`g`.
        min_bin: smallest bin width and height, as a fraction of ``2B``.
        min_derivative: smallest knot derivative.

    Returns:
        ``(y, log_deriv)``, both ``(*S,)``: the image and :math:`\log |g'(x)|` (for the
        inverse, :math:`\log |(g^{-1})'(x)|`).

    Example:
        >>> x = torch.linspace(-4, 4, 5)
        >>> zero = torch.zeros(5, 8)
        >>> y, ld = rational_quadratic_spline(x, zero, zero, torch.zeros(5, 7))
        >>> torch.allclose(y, x), float(ld.abs().max()) < 1e-6  # zero parameters: identity
        (True, True)
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {describe(x)}")
    for name, t, extra in (("widths", widths, 0), ("heights", heights, 0),
                           ("derivatives", derivatives, -1)):
        if not isinstance(t, Tensor) or t.shape[:-1] != x.shape:
            raise ValueError(f"{name} must have shape (*x.shape, K{'' if extra == 0 else ' - 1'})"
                             f" = ({', '.join(map(str, x.shape))}, ...), got {describe(t)}")
    k = widths.shape[-1]
    if k < 2 or heights.shape[-1] != k or derivatives.shape[-1] != k - 1:
        raise ValueError(f"need K >= 2 bins with widths and heights (..., K) and derivatives "
                         f"(..., K - 1); got {widths.shape[-1]}, {heights.shape[-1]} and "
                         f"{derivatives.shape[-1]}")
    bound = check_positive("bound", bound)
    if not 0 < min_bin * k < 1:
        raise ValueError(f"min_bin * K must be in (0, 1), got {min_bin} * {k}")
    xk, yk, dk = _spline_knots(widths, heights, derivatives, bound, min_bin, min_derivative)
    inside = (x > -bound) & (x < bound)
    y, log_deriv = _spline(x.clamp(-bound, bound), xk, yk, dk, inverse)
    return torch.where(inside, y, x), torch.where(inside, log_deriv, torch.zeros_like(x))


def _spline(x: Tensor, xk: Tensor, yk: Tensor, dk: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    r"""The spline on its interval: ``x`` ``(*S,)``, knots and derivatives ``(*S, K + 1)``."""
    k = xk.shape[-1] - 1
    src = yk if inverse else xk  # the knots of the variable we are given
    idx = torch.searchsorted(src.contiguous(), x[..., None].contiguous(), right=True) - 1
    idx = idx.clamp(0, k - 1)  # (*S, 1): the bin of each input
    table = torch.stack([xk, yk, dk])  # (3, *S, K + 1)
    idx = idx.expand(3, *idx.shape)
    x0, y0, d0 = table.gather(-1, idx).squeeze(-1)  # left ends of the bins, (*S,) each
    x1, y1, d1 = table.gather(-1, idx + 1).squeeze(-1)  # right ends
    w, h = x1 - x0, y1 - y0
    s = h / w
    c2 = d1 + d0 - 2 * s
    if inverse:
        dy = x - y0  # here x is a value of y
        a = h * (s - d0) + dy * c2
        b = h * d0 - dy * c2
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp_min(0)
        xi = ((2 * c) / (-b - torch.sqrt(disc))).clamp(0, 1)  # eq-flow-rqs-inverse
        out = x0 + xi * w
    else:
        xi = (x - x0) / w
    xi1 = xi * (1 - xi)
    denom = s + c2 * xi1
    if not inverse:
        out = y0 + h * (s * xi * xi + d0 * xi1) / denom  # eq-flow-rqs
    # eq-flow-rqs-derivative, at the same xi in both directions
    num = s * s * (d1 * xi * xi + 2 * s * xi1 + d0 * (1 - xi) ** 2)
    log_deriv = torch.log(num) - 2 * torch.log(denom)
    return out, -log_deriv if inverse else log_deriv


def spline_from_knots(
    x: Tensor, x_knots: Tensor, y_knots: Tensor, derivatives: Tensor, *, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    r"""The rational-quadratic spline through given knots (eqs. ``eq-flow-rqs`` and
    ``eq-flow-rqs-derivative``; ``eq-flow-rqs-inverse`` with ``inverse=True``).

    Args:
        x: inputs ``(*S,)`` inside ``[x_knots[0], x_knots[-1]]`` (inside the ``y_knots`` for
            the inverse).
        x_knots: strictly increasing knots :math:`x_0 < \dots < x_K`, ``(K + 1,)`` shared by
            all inputs, or ``(*S, K + 1)``.
        y_knots: strictly increasing :math:`y_k`, same shape.
        derivatives: positive :math:`d_k = g'(x_k)`, same shape.
        inverse: apply the inverse.

    Returns:
        ``(y, log_deriv)``, each ``(*S,)``: :math:`g(x)` and :math:`\log g'(x)` (for the
        inverse, :math:`g^{-1}(x)` and :math:`\log (g^{-1})'(x)`).

    Example:
        >>> knots = torch.tensor([0.0, 1.0, 3.0])
        >>> y, _ = spline_from_knots(torch.tensor([1.0, 3.0]), knots, knots**2, torch.ones(3))
        >>> y.tolist()  # the knots are interpolated
        [1.0, 9.0]
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {describe(x)}")
    knots = []
    for name, t in (("x_knots", x_knots), ("y_knots", y_knots), ("derivatives", derivatives)):
        if not isinstance(t, Tensor) or t.ndim == 0 or t.shape[-1] < 2:
            raise ValueError(f"{name} must have shape (K + 1,) or (*x.shape, K + 1) with K >= 1, "
                             f"got {describe(t)}")
        if t.ndim == 1:
            t = t.expand(*x.shape, t.shape[0])
        if t.shape[:-1] != x.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, incompatible with x of shape "
                             f"{tuple(x.shape)}")
        knots.append(t.to(x.dtype))
    xk, yk, dk = knots
    if xk.shape[-1] != yk.shape[-1] or xk.shape[-1] != dk.shape[-1]:
        raise ValueError("x_knots, y_knots and derivatives must have the same length K + 1")
    if bool((xk.diff(dim=-1) <= 0).any() | (yk.diff(dim=-1) <= 0).any()):
        raise ValueError("x_knots and y_knots must be strictly increasing")
    if bool((dk <= 0).any()):
        raise ValueError("derivatives must be positive")
    return _spline(x, xk, yk, dk, check_bool("inverse", inverse))


class SplineCoupling(CouplingLayer):
    r"""A coupling layer whose elementwise transform is a monotone rational-quadratic
    spline (eq. ``eq-flow-rqs``) with ``bins`` bins on :math:`[-B, B]` and identity tails,
    its :math:`3K - 1` parameters computed from the kept coordinates (neural spline flows,
    Durkan et al., 2019). It starts as the identity.

    Args:
        mask: ``(D,)`` bool, ``True`` for the coordinates to transform.
        bins: :math:`K \ge 2`.
        bound: :math:`B > 0`.
        hidden: width of the conditioner MLP.
        depth: its number of hidden layers.
    """

    def __init__(self, mask: Tensor, *, bins: int = 8, bound: float = 3.0,
                 hidden: int = 64, depth: int = 2) -> None:
        self.bins = check_int("bins", bins, 2)
        super().__init__(mask, 3 * self.bins - 1, check_int("hidden", hidden),
                         check_int("depth", depth))
        self.bound = check_positive("bound", bound)

    def _elementwise(self, x: Tensor, theta: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        w, h, d = theta[..., :k], theta[..., k:2 * k], theta[..., 2 * k:]
        return rational_quadratic_spline(x, w, h, d, bound=self.bound, inverse=inverse)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound:g}"


# --------------------------------------------------------------------------- linear layers


class Permutation(nn.Module):
    r""":math:`z = x_{\pi}`, a fixed permutation of the coordinates; :math:`\log|\det J| = 0`.

    Args:
        perm: a permutation of ``0, ..., D - 1``, ``(D,)`` int64.
    """

    def __init__(self, perm: Tensor) -> None:
        super().__init__()
        if not isinstance(perm, Tensor) or perm.ndim != 1 or perm.dtype != torch.int64:
            raise TypeError(f"perm must be a 1-D int64 tensor, got {describe(perm)}")
        if not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(f"perm must be a permutation of 0..{len(perm) - 1}")
        self.dim = len(perm)
        self.register_buffer("perm", perm.clone())
        self.register_buffer("inv", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(x[:, perm], 0)``, shapes ``(B, D)`` and ``(B,)``."""
        x = check_points("x", x, self.dim)
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(z[:, perm^{-1}], 0)``, shapes ``(B, D)`` and ``(B,)``."""
        z = check_points("z", z, self.dim)
        return z[:, self.inv], z.new_zeros(z.shape[0])


class Reverse(Permutation):
    r"""Reverses the order of the ``dim`` coordinates (a :class:`Permutation`)."""

    def __init__(self, dim: int) -> None:
        super().__init__(torch.arange(check_int("dim", dim) - 1, -1, -1))


class LULinear(nn.Module):
    r"""A learned invertible linear layer in LU form (Glow; eq. ``eq-flow-lu``):

    .. math::

        z = W x + b, \qquad W = P L (U + \mathrm{diag}(\sigma\, e^{\lambda})), \qquad
        \log|\det J| = \textstyle\sum_d \lambda_d,

    with :math:`P` a fixed permutation, :math:`L` unit lower triangular, :math:`U` strictly
    upper triangular and fixed signs :math:`\sigma_d = \pm 1`. The determinant costs
    :math:`O(D)` and the inverse two triangular solves, instead of :math:`O(D^3)`. It is
    initialized at a random rotation (from the global RNG, like :class:`torch.nn.Linear`).

    Args:
        dim: :math:`D`.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        diag = upper.diagonal()
        self.register_buffer("P", p.float())
        self.register_buffer("sign", diag.sign().float())
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_diag = nn.Parameter(diag.abs().log().float())
        self.bias = nn.Parameter(torch.zeros(dim))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.dim, device=self.lower.device, dtype=self.lower.dtype)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * self.log_diag.exp())
        return lower, upper

    def weight(self) -> Tensor:
        r""":math:`W = P L U`, shape ``(D, D)``."""
        lower, upper = self._factors()
        return self.P @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(W x + b, sum(lambda))``, shapes ``(B, D)`` and ``(B,)``."""
        x = check_points("x", x, self.dim)
        lad = self.log_diag.sum().expand(x.shape[0])
        return x @ self.weight().T + self.bias, lad

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(W^{-1}(z - b), -sum(lambda))`` by two triangular solves."""
        z = check_points("z", z, self.dim)
        lower, upper = self._factors()
        rhs = ((z - self.bias) @ self.P).T  # P^T (z - b), (D, B)
        y = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True).T  # (B, D)
        return x, (-self.log_diag.sum()).expand(z.shape[0])


class ActNorm(nn.Module):
    r"""Activation normalization (Glow; eq. ``eq-flow-actnorm``): a per-coordinate affine
    map :math:`z = (x - \mu) \odot e^{-\rho}`, with :math:`\log|\det J| = -\sum_d \rho_d`,
    whose parameters are set by the *first* batch it sees so that this batch leaves with zero
    mean and unit (biased) variance per coordinate (data-dependent initialization), then
    trained.

    Args:
        dim: :math:`D`.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        self.shift = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        r"""Set :math:`\mu` and :math:`\rho` from a batch ``(B, D)``, ``B >= 2``."""
        x = check_points("x", x, self.dim)
        if x.shape[0] < 2:
            raise ValueError("ActNorm needs a batch of at least 2 points to initialize")
        self.shift.copy_(x.mean(0))
        self.log_scale.copy_(x.std(0, correction=0).clamp_min(1e-6).log())
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``((x - mu) e^{-rho}, -sum(rho))``; the first call initializes."""
        x = check_points("x", x, self.dim)
        if not bool(self.initialized):
            self.initialize(x)
        z = (x - self.shift) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(z e^{rho} + mu, sum(rho))``."""
        z = check_points("z", z, self.dim)
        return z * torch.exp(self.log_scale) + self.shift, self.log_scale.sum().expand(z.shape[0])


# --------------------------------------------------------------------------- autoregressive


def made_masks(in_degrees: Tensor, hidden_degrees: Sequence[Tensor]) -> list[Tensor]:
    r"""The connectivity masks of MADE (Germain et al., 2015; eq. ``eq-flow-made-mask``).

    A unit of degree :math:`m(k)` may see an input :math:`d` iff :math:`m(k) \ge m(d)`
    (hidden layers) and an output of coordinate :math:`d` may see a hidden unit iff
    :math:`m(d) > m(k)` (strict: output :math:`d` never depends on inputs of degree
    :math:`\ge m(d)`).

    Args:
        in_degrees: the degree of each input, ``(D,)`` int64 (the coordinate's position
            in the autoregressive order, from 1).
        hidden_degrees: the degrees of each hidden layer's units, each ``(H_l,)`` int64.

    Returns:
        The bool masks of the linear layers in order, of shapes ``(H_1, D)``,
        ``(H_2, H_1)``, ..., then the output mask ``(D, H_L)``.
    """
    if not isinstance(in_degrees, Tensor) or in_degrees.ndim != 1:
        raise TypeError(f"in_degrees must be a 1-D tensor, got {describe(in_degrees)}")
    if not hidden_degrees:
        raise ValueError("need at least one hidden layer")
    masks, prev = [], in_degrees
    for deg in hidden_degrees:
        masks.append(deg[:, None] >= prev[None, :])
        prev = deg
    masks.append(in_degrees[:, None] > prev[None, :])
    return masks


class _MaskedLinear(nn.Linear):
    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""A masked autoencoder for distribution estimation (Germain et al., 2015): an MLP
    ``(B, D) -> (B, params, D)`` whose output for coordinate :math:`d` depends only on the
    inputs that precede :math:`d` in ``order`` (masks of :func:`made_masks`). Hidden units
    get the degrees :math:`1, \dots, D - 1` cyclically. The output layer starts at zero.

    Args:
        dim: :math:`D \ge 2`.
        params: outputs per coordinate.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        order: the autoregressive order, a permutation of ``0..D-1`` (default natural).
    """

    def __init__(self, dim: int, params: int, *, hidden: int = 64, depth: int = 2,
                 order: Tensor | None = None) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, 2)
        self.params = check_int("params", params)
        hidden = check_int("hidden", hidden)
        depth = check_int("depth", depth)
        order = torch.arange(dim) if order is None else order
        if not isinstance(order, Tensor) or not torch.equal(order.sort().values,
                                                            torch.arange(dim)):
            raise ValueError(f"order must be a permutation of 0..{dim - 1}")
        degrees = torch.empty(dim, dtype=torch.int64)
        degrees[order] = torch.arange(1, dim + 1)  # order[i] is the (i+1)-th coordinate
        self.register_buffer("degrees", degrees)
        hid = [torch.arange(hidden) % (dim - 1) + 1 for _ in range(depth)]
        masks = made_masks(degrees, hid)
        out_mask = masks[-1].repeat(params, 1)  # (params * D, H): row p * D + d
        self.hidden_layers = nn.ModuleList(_MaskedLinear(m) for m in masks[:-1])
        self.out = _MaskedLinear(out_mask)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        r"""Outputs ``(B, params, D)``; ``[:, p, d]`` depends on :math:`x_{<d}` only."""
        x = check_points("x", x, self.dim)
        h = x
        for layer in self.hidden_layers:
            h = F.silu(layer(h))  # (B, H)
        return self.out(h).view(x.shape[0], self.params, self.dim)


class MaskedAutoregressive(nn.Module):
    r"""A masked autoregressive flow layer (MAF, Papamakarios et al., 2017;
    eq. ``eq-flow-maf``):

    .. math::

        z_d = (x_d - \mu_d(x_{<d}))\, e^{-\alpha_d(x_{<d})}, \qquad
        \log|\det J| = -\textstyle\sum_d \alpha_d,

    with :math:`(\mu, \alpha)` from one pass of a :class:`MADE`. The density direction
    (``forward``) costs one network pass; the sampling direction (``inverse``) solves for
    :math:`x_d` one coordinate after the other, :math:`D` passes. Wrapped in
    :class:`Inverse` it becomes an IAF layer (eq. ``eq-flow-iaf``), with the costs swapped.
    The log-scale is soft-clamped to :math:`[-c, c]`.

    Args:
        dim: :math:`D \ge 2`.
        hidden: width of the MADE.
        depth: its number of hidden layers.
        order: autoregressive order (default natural).
        scale_clamp: :math:`c > 0`.
    """

    def __init__(self, dim: int, *, hidden: int = 64, depth: int = 2,
                 order: Tensor | None = None, scale_clamp: float = 3.0) -> None:
        super().__init__()
        self.made = MADE(dim, 2, hidden=hidden, depth=depth, order=order)
        self.dim = self.made.dim
        self.scale_clamp = check_positive("scale_clamp", scale_clamp)
        self.passes = 0  # network passes so far (for the chapter's cost measurements)

    def _mu_alpha(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.passes += 1
        out = self.made(x)  # (B, 2, D)
        c = self.scale_clamp
        return out[:, 0], c * torch.tanh(out[:, 1] / c)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Data to latent in one pass: ``(z, -sum(alpha))``, ``(B, D)`` and ``(B,)``."""
        x = check_points("x", x, self.dim)
        mu, alpha = self._mu_alpha(x)
        return (x - mu) * torch.exp(-alpha), -alpha.sum(1)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""Latent to data in :math:`D` passes: after pass :math:`k` the coordinates of
        degree :math:`\le k` are final. Returns ``(x, sum(alpha))``."""
        z = check_points("z", z, self.dim)
        x = torch.zeros_like(z)
        alpha = torch.zeros_like(z)
        for _ in range(self.dim):
            mu, alpha = self._mu_alpha(x)
            x = z * torch.exp(alpha) + mu
        return x, alpha.sum(1)


class Inverse(nn.Module):
    r"""The inverse of a layer: ``forward`` is the layer's ``inverse`` and vice versa.

    ``Inverse(MaskedAutoregressive(...))`` is an inverse autoregressive flow layer (IAF,
    Kingma et al., 2016; eq. ``eq-flow-iaf``): sampling takes one pass, density evaluation
    of an arbitrary point :math:`D`.

    Args:
        layer: any layer with ``forward`` and ``inverse``.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(layer, "inverse", None)):
            raise TypeError(f"layer must have an inverse() method, got {describe(layer)}")
        self.layer = layer

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The wrapped layer's ``inverse``."""
        return self.layer.inverse(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""The wrapped layer's ``forward``."""
        return self.layer(z)


# --------------------------------------------------------------------------- the flow


class Flow(nn.Module):
    r"""A normalizing flow: layers :math:`f = f_K \circ \dots \circ f_1` (data to latent)
    over the base :math:`\mathcal N(0, I_D)`.

    By the change of variables for a composition (eq. ``eq-flow-composition``),

    .. math::

        \log q(x) = \log \mathcal N(f(x); 0, I)
        + \sum_{k=1}^K \log|\det J_{f_k}(h_{k-1})|, \qquad h_0 = x,\; h_k = f_k(h_{k-1}).

    Args:
        layers: the layers :math:`f_1, \dots, f_K`, applied in this order to data.
        dim: :math:`D`.
    """

    def __init__(self, layers: Sequence[nn.Module], dim: int) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        layers = list(layers)
        for layer in layers:
            if not isinstance(layer, nn.Module) or not callable(getattr(layer, "inverse", None)):
                raise TypeError(f"every layer must be a module with inverse(), got "
                                f"{describe(layer)}")
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(f(x), log|det J_f(x)|)``, shapes ``(B, D)`` and ``(B,)``."""
        x = check_points("x", x, self.dim)
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, lad = layer(x)
            total = total + lad
        return x, total

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(f^{-1}(z), log|det J_{f^{-1}}(z)|)``, shapes ``(B, D)`` and ``(B,)``."""
        z = check_points("z", z, self.dim)
        total = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, lad = layer.inverse(z)
            total = total + lad
        return z, total

    def base_log_prob(self, z: Tensor) -> Tensor:
        r""":math:`\log \mathcal N(z; 0, I)`, ``(B,)``."""
        return -0.5 * (z.square().sum(1) + self.dim * _LOG_2PI)

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log q(x)` (eq. ``eq-flow-composition``), ``(B,)``."""
        z, lad = self(x)
        return self.base_log_prob(z) + lad

    def loss(self, x: Tensor) -> Tensor:
        r"""Mean negative log-likelihood of a batch ``(B, D)``, a scalar."""
        return -self.log_prob(x).mean()

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        n = check_int("n", n)
        generator = check_generator(generator)
        ref = next(iter(self.parameters()), None)
        return randn((n, self.dim), like=ref, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` samples :math:`f^{-1}(z)`, :math:`z \sim \mathcal N(0, I)`, ``(n, D)``."""
        return self.inverse(self._noise(n, generator))[0]

    def sample_and_log_prob(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Samples and their log-densities in one generative pass:
        :math:`\log q(x) = \log \mathcal N(z) - \log|\det J_{f^{-1}}(z)|`. ``(n, D)``, ``(n,)``.
        (Differentiable: the reverse-KL objective of variational inference uses it.)"""
        z = self._noise(n, generator)
        x, lad = self.inverse(z)
        return x, self.base_log_prob(z) - lad


# --------------------------------------------------------------------------- builders


def _interleave(dim: int, layers: int, make, *, permute: str) -> list[nn.Module]:
    out: list[nn.Module] = []
    for i in range(layers):
        out.append(make(i))
        if i < layers - 1:
            if permute == "reverse":
                out.append(Reverse(dim))
            elif permute == "lu":
                out.append(LULinear(dim))
    return out


def nice(dim: int, *, layers: int = 4, hidden: int = 64, depth: int = 2) -> Flow:
    r"""NICE (Dinh et al., 2015): additive couplings on alternating halves, then a learned
    diagonal scaling (an :class:`ActNorm`), the only non-volume-preserving layer."""
    dim, layers = check_int("dim", dim, 2), check_int("layers", layers)
    parts = [AffineCoupling(alternating_mask(dim, i % 2), hidden=hidden, depth=depth,
                            additive=True) for i in range(layers)]
    return Flow([*parts, ActNorm(dim)], dim)


def realnvp(dim: int, *, layers: int = 4, hidden: int = 64, depth: int = 2) -> Flow:
    r"""RealNVP (Dinh et al., 2017): affine couplings on alternating halves, with an
    :class:`ActNorm` in front (a data-dependent standardization)."""
    dim, layers = check_int("dim", dim, 2), check_int("layers", layers)
    parts = [AffineCoupling(alternating_mask(dim, i % 2), hidden=hidden, depth=depth)
             for i in range(layers)]
    return Flow([ActNorm(dim), *parts], dim)


def glow(dim: int, *, layers: int = 4, hidden: int = 64, depth: int = 2) -> Flow:
    r"""A Glow-style flow (Kingma and Dhariwal, 2018) for vectors: each step is
    :class:`ActNorm`, :class:`LULinear`, then an affine coupling of the first half."""
    dim, layers = check_int("dim", dim, 2), check_int("layers", layers)
    mask = alternating_mask(dim, 0)
    parts: list[nn.Module] = []
    for _ in range(layers):
        parts += [ActNorm(dim), LULinear(dim),
                  AffineCoupling(mask, hidden=hidden, depth=depth)]
    return Flow(parts, dim)


def maf(dim: int, *, layers: int = 4, hidden: int = 64, depth: int = 2) -> Flow:
    r"""A masked autoregressive flow: :class:`MaskedAutoregressive` layers with reversed
    orders in between, after an :class:`ActNorm`. Density: one pass per layer; sampling:
    :math:`D` passes per layer."""
    dim, layers = check_int("dim", dim, 2), check_int("layers", layers)
    parts = _interleave(dim, layers, lambda i: MaskedAutoregressive(
        dim, hidden=hidden, depth=depth), permute="reverse")
    return Flow([ActNorm(dim), *parts], dim)


def iaf(dim: int, *, layers: int = 4, hidden: int = 64, depth: int = 2) -> Flow:
    r"""An inverse autoregressive flow: :func:`maf` with every autoregressive layer
    wrapped in :class:`Inverse`. Sampling: one pass per layer; density of a given point:
    :math:`D` passes per layer."""
    dim, layers = check_int("dim", dim, 2), check_int("layers", layers)
    parts = _interleave(dim, layers, lambda i: Inverse(MaskedAutoregressive(
        dim, hidden=hidden, depth=depth)), permute="reverse")
    return Flow([ActNorm(dim), *parts], dim)


def spline_flow(dim: int, *, layers: int = 4, bins: int = 8, bound: float = 3.0,
                hidden: int = 64, depth: int = 2, permute: str = "reverse") -> Flow:
    r"""A coupling neural spline flow (Durkan et al., 2019): :class:`SplineCoupling`
    layers on alternating halves, separated by reversals (``permute="reverse"``) or
    learned :class:`LULinear` layers (``permute="lu"``)."""
    dim, layers = check_int("dim", dim, 2), check_int("layers", layers)
    if permute not in ("reverse", "lu"):
        raise ValueError(f"permute must be 'reverse' or 'lu', got {permute!r}")
    parts = _interleave(dim, layers, lambda i: SplineCoupling(
        alternating_mask(dim, 0), bins=bins, bound=bound, hidden=hidden, depth=depth),
        permute=permute)
    return Flow(parts, dim)


# --------------------------------------------------------------------------- topology


def _std_normal() -> torch.distributions.Normal:
    return torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64),
                                      torch.tensor(1.0, dtype=torch.float64))


def _check_mass(name: str, value: object) -> float:
    value = check_positive(name, value)
    if not value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def bridge_mass_bound(mass: float, gap: float, lipschitz: float) -> float:
    r"""The least probability a flow puts within ``gap`` of a set of probability ``mass``,
    outside the set (eq. ``eq-flow-bridge``):

    .. math::

        q(A_\delta \setminus A) \;\ge\; \Phi\big(\Phi^{-1}(q(A)) + \delta / L\big) - q(A),

    for :math:`q = f_\# \mathcal N(0, I)` with :math:`f` :math:`L`-Lipschitz, or stretching
    by at most :math:`L` on the latent ring within :math:`\delta / L` of the preimage of
    :math:`A` (:prf:ref:`thm-flow-bridge`).

    Args:
        mass: :math:`q(A) \in (0, 1)`.
        gap: :math:`\delta > 0`.
        lipschitz: :math:`L > 0`.

    Returns:
        The bound, a float in :math:`(0, 1 - q(A))`.

    Example:
        >>> round(bridge_mass_bound(0.5, 1.0, 1.0), 4)  # Phi(1) - 1/2
        0.3413
    """
    mass = _check_mass("mass", mass)
    r = check_positive("gap", gap) / check_positive("lipschitz", lipschitz)
    normal = _std_normal()
    m = torch.tensor(mass, dtype=torch.float64)
    return float(normal.cdf(normal.icdf(m) + r) - m)


def min_lipschitz(mass: float, gap: float, gap_mass: float) -> float:
    r"""The stretch that a generator :math:`f` whose flow puts only ``gap_mass`` within
    ``gap`` of a set of probability ``mass`` must exceed (eq. ``eq-flow-bridge`` solved for
    :math:`L`):
    :math:`L_\varepsilon = \delta / \big(\Phi^{-1}(q(A) + \varepsilon) - \Phi^{-1}(q(A))\big)`.

    The certificate is local (:prf:ref:`thm-flow-bridge`): for every :math:`L < L_\varepsilon`,
    :math:`f` stretches by more than :math:`L` somewhere on the latent ring within
    :math:`\delta / L` of the preimage of :math:`A`, outside it; a fortiori its global
    Lipschitz constant is at least :math:`L_\varepsilon`.

    Args:
        mass: :math:`q(A) \in (0, 1)`.
        gap: :math:`\delta > 0`.
        gap_mass: :math:`\varepsilon = q(A_\delta \setminus A) > 0`, with
            :math:`q(A) + \varepsilon < 1`.

    Returns:
        The lower bound on :math:`L`, a float.

    Example:
        >>> round(min_lipschitz(0.5, 1.0, bridge_mass_bound(0.5, 1.0, 2.0)), 6)
        2.0
    """
    mass = _check_mass("mass", mass)
    total = _check_mass("mass + gap_mass", mass + check_positive("gap_mass", gap_mass))
    normal = _std_normal()
    step = normal.icdf(torch.tensor(total, dtype=torch.float64)) - normal.icdf(
        torch.tensor(mass, dtype=torch.float64))
    return check_positive("gap", gap) / float(step)
