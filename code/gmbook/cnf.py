r"""Neural ODEs and continuous normalizing flows: chapter ``book/latent/cnf.md``.

A continuous normalizing flow (CNF) is the flow of an ODE :math:`\dot x_t = v_\theta(x_t, t)`
from a base density :math:`p_0 = \mathcal N(0, I)` at :math:`t = 0` to the model
:math:`p_1` at :math:`t = 1` (the book's time convention: noise at 0, data at 1, as in flow
matching). Its density follows the instantaneous change of variables, eq.
``eq-cnf-icov``,

.. math::

    \frac{\mathrm d}{\mathrm dt} \log p_t(x_t) = -\nabla\cdot v_\theta(x_t, t),

so a log-density costs one ODE solve of the *augmented state* :math:`(x_t, \ell_t)` with
:math:`\dot\ell_t = -\nabla\cdot v_\theta`. The module holds

- the divergence: exact (:func:`gmbook.score.divergence`, ``D`` backward passes) or
  Hutchinson's estimator :math:`\varepsilon^\top \nabla v\, \varepsilon` with Gaussian or
  Rademacher probes (:func:`hutchinson_divergence`, eq. ``eq-cnf-hutchinson``), and the
  exact variance of the estimator (:func:`hutchinson_variance`, proposition
  ``prop-cnf-hutchinson``: it depends on the symmetric part of the Jacobian only);
- :func:`integrate`: the augmented ODE (position, log-density change, and optionally the
  kinetic energy :math:`\int \|v\|^2 \mathrm dt` and the Jacobian's Frobenius norm
  :math:`\int \|\nabla v\|_F^2 \mathrm dt`, the regularisers of Finlay et al., 2020, eq.
  ``eq-cnf-regularisers``), with a fixed-step solver or the adaptive ``dopri5`` (its
  network evaluations counted), gradients by backpropagation through the solver or by
  the adjoint method (:func:`odeint_adjoint`, eq. ``eq-cnf-adjoint``);
- the Gronwall bound on the flow's Lipschitz constant (:func:`gronwall_bound`,
  :func:`lipschitz_upper_bound`, theorem ``thm-cnf-gronwall``);
- the model :class:`CNF` with the book's verbs ``loss`` (maximum likelihood, optionally
  regularised), ``sample`` and ``log_prob``.

The ODE solvers (:func:`odeint`: Euler, midpoint, Heun, and ``dopri5`` from torchdiffeq) live
here, the first chapter that integrates a learned ODE; :mod:`gmbook.flow_matching` re-exports
:func:`odeint`.

References: Chen et al. (2018), *Neural ordinary differential equations*; Grathwohl et al.
(2019), *FFJORD*; Finlay et al. (2020), *How to train your neural ODE*; Hutchinson (1989).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gmbook._checks import (
    check_bool,
    check_generator,
    check_int,
    check_nonnegative,
    check_positive,
    check_real,
    describe,
)
from gmbook._random import randn
from gmbook.nets import MLP
from gmbook.score import divergence

__all__ = [
    "DIVERGENCES",
    "PROBES",
    "SOLVERS",
    "CNF",
    "CNFSolution",
    "draw_probe",
    "gronwall_bound",
    "hutchinson_divergence",
    "hutchinson_variance",
    "integrate",
    "lipschitz_upper_bound",
    "odeint",
    "odeint_adjoint",
]

PROBES: tuple[str, ...] = ("gaussian", "rademacher")
"""Distributions of Hutchinson's probe :math:`\\varepsilon` (both have
:math:`\\mathbb E[\\varepsilon \\varepsilon^\\top] = I`)."""

DIVERGENCES: tuple[str, ...] = ("exact",) + PROBES
"""The ways the divergence is computed (exactly, or by Hutchinson with one probe per point)."""

SOLVERS: tuple[str, ...] = ("euler", "midpoint", "heun", "dopri5")
"""ODE solvers of :func:`odeint`."""

# Largest |activation'(x)|: the Lipschitz constant of each elementwise activation.
_ACTIVATION_LIPSCHITZ = {
    nn.ReLU: 1.0, nn.Tanh: 1.0, nn.Softplus: 1.0, nn.ELU: 1.0, nn.Identity: 1.0,
    nn.LeakyReLU: 1.0, nn.Sigmoid: 0.25,
    nn.SiLU: 1.0998393,  # max of s(x)(1 + x(1 - s(x))), at x ~ 2.3994
    nn.GELU: 1.1289,  # max of Phi(x) + x phi(x), at x = sqrt(2)
}


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_batch(name: str, x: object, dim: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {describe(x)}")
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = "(B, D)" if dim is None else f"(B, {dim})"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    return x


def _check_state(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {describe(x)}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape (B, *D), got a 0-dim tensor")
    return x


# --------------------------------------------------------------------------- ODE solvers


def odeint(f: Callable[[Tensor, Tensor], Tensor], x: Tensor, *, t0: float = 0.0,
           t1: float = 1.0, steps: int = 10, solver: str = "euler", rtol: float = 1e-5,
           atol: float = 1e-5, return_path: bool = False, scalar_t: bool = False) -> Tensor:
    r"""Integrate :math:`\dot x = f(x, t)` from ``t0`` to ``t1``, eq. ``eq-cnf-ode``.

    Fixed steps :math:`h = (t_1 - t_0) / N`:

    - Euler: :math:`x_{k+1} = x_k + h f(x_k, t_k)`;
    - midpoint: :math:`x_{k+1} = x_k + h f(x_k + \tfrac h2 f(x_k, t_k), t_k + \tfrac h2)`;
    - Heun: :math:`\tilde x = x_k + h f(x_k, t_k)`,
      :math:`x_{k+1} = x_k + \tfrac h2 [f(x_k, t_k) + f(\tilde x, t_{k+1})]`.

    ``"dopri5"`` is the adaptive Dormand-Prince method of ``torchdiffeq`` with tolerances
    ``rtol`` and ``atol`` (``steps`` is then ignored except for ``return_path``).

    Args:
        f: the velocity, called as ``f(x, t)`` with ``x`` ``(B, *D)`` and ``t`` ``(B,)``
            (or a 0-dim ``t``, see ``scalar_t``).
        x: initial points at ``t0``, shape ``(B, *D)``.
        t0: initial time.
        t1: final time (may be smaller than ``t0``: integration backwards).
        steps: number of steps :math:`N`.
        solver: one of :data:`SOLVERS`.
        rtol: relative tolerance of ``dopri5``.
        atol: absolute tolerance of ``dopri5``.
        return_path: also return the states at the ``steps + 1`` grid times.
        scalar_t: call ``f`` with a 0-dim tensor ``t``, one time for the whole batch,
            instead of a ``(B,)`` tensor of equal times; a time-conditioned
            :class:`gmbook.nets.MLP` then runs its time branch once per call instead of once
            per row (half the cost of a call on 1000 points). Only for an ``f`` that
            accepts it.

    Returns:
        The points at ``t1``, shape ``(B, *D)``, or, with ``return_path``, the states of
        shape ``(steps + 1, B, *D)``.
    """
    if not callable(f):
        raise TypeError("odeint: f must be a callable f(x, t)")
    x = _check_state("x", x)
    steps = check_int("steps", steps, 1)
    _check_choice("solver", solver, SOLVERS)
    b = x.shape[0]

    def ft(xx: Tensor, t: float | Tensor) -> Tensor:
        t = float(t.detach()) if isinstance(t, Tensor) else float(t)  # a plain number
        if scalar_t:
            return f(xx, torch.tensor(t, device=xx.device, dtype=xx.dtype))
        return f(xx, torch.full((b,), t, device=xx.device, dtype=xx.dtype))

    if solver == "dopri5":
        from torchdiffeq import odeint as _tdq

        grid = torch.linspace(t0, t1, steps + 1 if return_path else 2, dtype=torch.float64)
        out = _tdq(lambda t, xx: ft(xx, t), x, grid.to(x.dtype).to(x.device),
                   method="dopri5", rtol=rtol, atol=atol)
        return out if return_path else out[-1]
    h = (t1 - t0) / steps
    path = [x]
    for k in range(steps):
        t = t0 + k * h
        if solver == "euler":
            x = x + h * ft(x, t)
        elif solver == "midpoint":
            x = x + h * ft(x + 0.5 * h * ft(x, t), t + 0.5 * h)
        else:
            d = ft(x, t)
            x_pred = x + h * d
            x = x + 0.5 * h * (d + ft(x_pred, t + h))
        if return_path:
            path.append(x)
    return torch.stack(path) if return_path else x


# --------------------------------------------------------------------------- divergence


def draw_probe(shape: tuple[int, ...], kind: str = "rademacher", *, like: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    r"""Probes :math:`\varepsilon` with :math:`\mathbb E[\varepsilon\varepsilon^\top] = I`,
    eq. ``eq-cnf-hutchinson``.

    Args:
        shape: the shape, e.g. ``(B, D)`` or ``(M, B, D)``.
        kind: ``"gaussian"`` (:math:`\mathcal N(0, I)`) or ``"rademacher"`` (independent
            signs :math:`\pm 1`).
        like: a tensor whose device and dtype the probes take.
        generator: source of randomness.

    Returns:
        Probes of ``shape``.
    """
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"draw_probe: shape must be a tuple of positive ints, got {shape!r}")
    _check_choice("kind", kind, PROBES)
    eps = randn(shape, like=like, generator=check_generator(generator))
    return eps.sign() if kind == "rademacher" else eps


def hutchinson_divergence(v: Tensor, x: Tensor, probe: Tensor, *,
                          create_graph: bool = True) -> Tensor:
    r"""Hutchinson's estimate of :math:`\nabla\cdot v = \operatorname{tr} \nabla_x v`,
    eq. ``eq-cnf-hutchinson``.

    .. math::

        \widehat{\nabla\cdot v}(x) = \frac1M \sum_{m=1}^M \varepsilon_m^\top \nabla_x v(x)\,
        \varepsilon_m, \qquad \mathbb E[\varepsilon\varepsilon^\top] = I,

    unbiased because :math:`\mathbb E[\varepsilon^\top A \varepsilon] = \operatorname{tr}
    (A\, \mathbb E[\varepsilon\varepsilon^\top])` (the score chapter's eq.
    ``eq-sm-hutchinson``). Each probe costs one backward pass (the vector-Jacobian product
    :math:`\varepsilon^\top \nabla_x v`), whatever the dimension ``D``.

    Args:
        v: the field's values, shape ``(B, D)``, computed from ``x`` with a graph.
        x: the points, shape ``(B, D)``, with ``requires_grad``.
        probe: probes of shape ``(B, D)`` (one per point) or ``(M, B, D)``, e.g. from
            :func:`draw_probe`.
        create_graph: keep the graph of the result (to train through it).

    Returns:
        The estimates, shape ``(B,)``.
    """
    v, x = _check_batch("v", v), _check_batch("x", x)
    if v.shape != x.shape:
        raise ValueError(f"v and x must have the same shape, got {tuple(v.shape)} "
                         f"and {tuple(x.shape)}")
    if not isinstance(probe, Tensor):
        raise TypeError(f"probe must be a tensor, got {describe(probe)}")
    probes = probe[None] if probe.ndim == 2 else probe  # (M, B, D)
    if probes.ndim != 3 or probes.shape[1:] != x.shape:
        raise ValueError(f"probe must have shape (B, D) or (M, B, D) with (B, D) = "
                         f"{tuple(x.shape)}, got {tuple(probe.shape)}")
    m = probes.shape[0]
    total = x.new_zeros(x.shape[0])
    for k, eps in enumerate(probes):
        (g,) = torch.autograd.grad((v * eps).sum(), x, create_graph=create_graph,
                                   retain_graph=create_graph or k < m - 1)  # eps^T dv/dx
        total = total + (g * eps).sum(1)
    return total / m


def hutchinson_variance(jacobian: Tensor, kind: str = "gaussian") -> Tensor:
    r"""The exact variance of one probe of Hutchinson's estimator, eq. ``eq-cnf-hutchinson-var``.

    With :math:`S = \tfrac12 (A + A^\top)` the symmetric part of the Jacobian (the
    quadratic form only sees it: :math:`\varepsilon^\top A \varepsilon = \varepsilon^\top
    S \varepsilon`), proposition ``prop-cnf-hutchinson`` gives

    .. math::

        \operatorname{Var}_{\mathcal N}[\varepsilon^\top A \varepsilon] = 2 \|S\|_F^2,
        \qquad
        \operatorname{Var}_{\pm 1}[\varepsilon^\top A \varepsilon] = 2 \sum_{i \ne j}
        S_{ij}^2 ,

    so Rademacher probes never do worse, and are exact for a diagonal Jacobian (a 1-D
    field, or a field acting coordinatewise).

    Args:
        jacobian: :math:`A`, shape ``(D, D)`` or ``(B, D, D)``.
        kind: one of :data:`PROBES`.

    Returns:
        The variance, shape ``()`` or ``(B,)``.
    """
    if not isinstance(jacobian, Tensor) or not jacobian.is_floating_point():
        raise TypeError(f"jacobian must be a floating-point tensor, got {describe(jacobian)}")
    if jacobian.ndim not in (2, 3) or jacobian.shape[-1] != jacobian.shape[-2]:
        raise ValueError(f"jacobian must have shape (D, D) or (B, D, D), "
                         f"got {tuple(jacobian.shape)}")
    _check_choice("kind", kind, PROBES)
    s = 0.5 * (jacobian + jacobian.transpose(-1, -2))
    total = 2 * (s**2).sum((-1, -2))
    if kind == "gaussian":
        return total
    return total - 2 * (torch.diagonal(s, dim1=-2, dim2=-1) ** 2).sum(-1)


# --------------------------------------------------------------------------- the augmented ODE


@dataclass(frozen=True)
class CNFSolution:
    r"""The end of a solve of the augmented ODE, eq. ``eq-cnf-augmented``.

    Attributes:
        x: the points at the final time, shape ``(B, D)``.
        delta_logp: :math:`\ell_{t_1} = \log p_{t_1}(x_{t_1}) - \log p_{t_0}(x_{t_0})
            = -\int_{t_0}^{t_1} \nabla\cdot v\, \mathrm dt`, shape ``(B,)`` (``None``
            without density).
        kinetic: :math:`\int |\mathrm dt|\, \|v\|^2` along each path, shape ``(B,)``
            (``None`` without regularisers).
        jacobian: :math:`\int |\mathrm dt|\, \|\nabla v\|_F^2`, exact or its Hutchinson
            estimate :math:`\|\varepsilon^\top \nabla v\|^2`, shape ``(B,)`` (or ``None``).
        nfe: network evaluations of the forward solve (each on the whole batch).
    """

    x: Tensor
    delta_logp: Tensor | None
    kinetic: Tensor | None
    jacobian: Tensor | None
    nfe: int


def _field_call(velocity: Callable[[Tensor, Tensor], Tensor], scalar_t: bool
                ) -> Callable[[Tensor, Tensor], Tensor]:
    def call(x: Tensor, t: Tensor) -> Tensor:
        t = t.to(x.dtype)
        if not scalar_t:
            t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return velocity(x, t)
    return call


def _augmented(velocity: Callable[[Tensor, Tensor], Tensor], d: int, density: bool,
               div: str, probe: Tensor | None, regularise: bool, direction: float,
               counter: list[int]) -> Callable[[Tensor, Tensor], Tensor]:
    r"""The right-hand side of eq. ``eq-cnf-augmented`` on a flat state ``(B, d + k)``."""

    def f(state: Tensor, t: Tensor) -> Tensor:
        counter[0] += 1
        x = state[:, :d]
        if not density and not regularise:
            return velocity(x, t)
        train = torch.is_grad_enabled()  # build a graph through the dynamics
        with torch.enable_grad():
            # keep the graph to x when training through the solver, else start a new one
            z = x if train and x.requires_grad else x.detach().requires_grad_(True)
            v = velocity(z, t)  # (B, d)
            frob = None
            if div == "exact" and not regularise:
                dv = divergence(v, z, create_graph=train)
            elif div == "exact":
                dv, frob = z.new_zeros(z.shape[0]), z.new_zeros(z.shape[0])
                for i in range(d):  # row i of the Jacobian, dv_i/dz
                    (g,) = torch.autograd.grad(v[:, i].sum(), z, create_graph=train,
                                               retain_graph=True)
                    dv, frob = dv + g[:, i], frob + (g**2).sum(1)
            else:
                (g,) = torch.autograd.grad((v * probe).sum(), z, create_graph=train,
                                           retain_graph=True)  # eps^T dv/dz, (B, d)
                dv = (g * probe).sum(1)
                frob = (g**2).sum(1) if regularise else None
        cols = [v]
        if density:
            cols.append(-dv[:, None])
        if regularise:
            cols += [direction * (v**2).sum(1, keepdim=True), direction * frob[:, None]]
        out = torch.cat(cols, dim=1)  # (B, d + k)
        return out if train else out.detach()

    return f


def integrate(velocity: Callable[[Tensor, Tensor], Tensor], x: Tensor, *, t0: float = 0.0,
              t1: float = 1.0, density: bool = True, divergence: str = "exact",
              probe: Tensor | None = None, regularise: bool = False, solver: str = "midpoint",
              steps: int = 10, rtol: float = 1e-5, atol: float = 1e-5, adjoint: bool = False,
              params: tuple[Tensor, ...] = (), scalar_t: bool = False,
              generator: torch.Generator | None = None) -> CNFSolution:
    r"""Solve the augmented ODE of a CNF from ``t0`` to ``t1``, eq. ``eq-cnf-augmented``.

    .. math::

        \frac{\mathrm d}{\mathrm dt}
        \begin{pmatrix} x_t \\ \ell_t \\ E_t \\ J_t \end{pmatrix}
        = \begin{pmatrix} v(x_t, t) \\ -\nabla\cdot v(x_t, t) \\ \|v(x_t, t)\|^2 \\
        \|\nabla v(x_t, t)\|_F^2 \end{pmatrix},
        \qquad \ell_{t_0} = E_{t_0} = J_{t_0} = 0,

    the second row being the instantaneous change of variables (eq. ``eq-cnf-icov``), the
    last two the kinetic and Jacobian regularisers of Finlay et al. (2020) (eq.
    ``eq-cnf-regularisers``; integrated in :math:`|\mathrm dt|`, so both are positive
    whichever the direction). The divergence is exact (``D`` backward passes) or
    Hutchinson's (one pass with a probe fixed for the whole solve, as in FFJORD, so that
    the ODE stays a smooth function of time for an adaptive solver); the Frobenius norm
    then uses the same pass, :math:`\|\varepsilon^\top\nabla v\|^2`.

    Gradients: with ``adjoint=False`` autograd backpropagates through the solver's steps
    (memory grows with the steps); with ``adjoint=True`` the gradient with respect to
    ``x`` and ``params`` is that of the adjoint method, :func:`odeint_adjoint`.

    Args:
        velocity: :math:`v(x, t)`, ``x`` of shape ``(B, D)`` and ``t`` of shape ``(B,)``
            (or 0-dim with ``scalar_t``).
        x: the points at ``t0``, shape ``(B, D)``.
        t0, t1: the ends (``t1 < t0`` integrates backwards).
        density: integrate :math:`\ell_t` (else only ``x``, and the regularisers if asked).
        divergence: one of :data:`DIVERGENCES`.
        probe: Hutchinson's probe, shape ``(B, D)``; drawn (Rademacher for
            ``"rademacher"``, Gaussian for ``"gaussian"``) with ``generator`` if omitted.
        regularise: also integrate the kinetic energy and the Jacobian norm.
        solver: one of :data:`SOLVERS`.
        steps: steps of a fixed-step solver.
        rtol, atol: tolerances of ``"dopri5"``.
        adjoint: gradients by the adjoint method instead of backpropagation.
        params: with ``adjoint``, the parameters ``velocity`` depends on (their gradients
            are computed by the adjoint ODE).
        scalar_t: call ``velocity`` with a 0-dim time (one per call; for an
            :class:`gmbook.nets.MLP`, whose time branch then runs once).
        generator: randomness of the probe.

    Returns:
        The :class:`CNFSolution`.
    """
    if not callable(velocity):
        raise TypeError(f"velocity must be a callable v(x, t), got {describe(velocity)}")
    x = _check_batch("x", x)
    t0, t1 = check_real("t0", t0), check_real("t1", t1)
    if t0 == t1:
        raise ValueError("t0 and t1 must differ")
    for name, flag in (("density", density), ("regularise", regularise),
                       ("adjoint", adjoint), ("scalar_t", scalar_t)):
        check_bool(name, flag)
    _check_choice("divergence", divergence, DIVERGENCES)
    _check_choice("solver", solver, SOLVERS)
    steps = check_int("steps", steps, 1)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    generator = check_generator(generator)
    if not isinstance(params, tuple) or not all(isinstance(p, Tensor) for p in params):
        raise TypeError("params must be a tuple of tensors")
    b, d = x.shape
    if divergence != "exact" and (density or regularise):
        if probe is None:
            probe = draw_probe((b, d), divergence, like=x, generator=generator)
        elif not isinstance(probe, Tensor) or probe.shape != x.shape:
            raise ValueError(f"probe must be a tensor of shape {tuple(x.shape)}")
    counter = [0]
    f = _augmented(_field_call(velocity, scalar_t), d, density, divergence, probe,
                   regularise, 1.0 if t1 > t0 else -1.0, counter)
    extra = int(density) + 2 * int(regularise)
    state = torch.cat([x, x.new_zeros(b, extra)], dim=1) if extra else x
    if adjoint:
        out = odeint_adjoint(f, state, params, t0=t0, t1=t1, steps=steps, solver=solver,
                             rtol=rtol, atol=atol)
    else:
        out = odeint(f, state, t0=t0, t1=t1, steps=steps, solver=solver, rtol=rtol,
                     atol=atol, scalar_t=True)
    k = d
    delta = kinetic = jac = None
    if density:
        delta, k = out[:, k], k + 1
    if regularise:
        kinetic, jac = out[:, k], out[:, k + 1]
    return CNFSolution(out[:, :d], delta, kinetic, jac, counter[0])


# --------------------------------------------------------------------------- the adjoint


class _AdjointSolve(torch.autograd.Function):
    """The solve with the adjoint method's backward pass, eq. ``eq-cnf-adjoint``."""

    @staticmethod
    def forward(ctx, f, opts, x0, *params):  # type: ignore[override]
        with torch.no_grad():
            x1 = odeint(f, x0, scalar_t=True, **opts)
        ctx.f, ctx.opts = f, opts
        ctx.save_for_backward(x1, *params)
        return x1

    @staticmethod
    def backward(ctx, a1):  # type: ignore[override]
        x1, *params = ctx.saved_tensors
        f, opts = ctx.f, ctx.opts
        n = x1.numel()
        sizes = [p.numel() for p in params]

        def aug(s: Tensor, t: Tensor) -> Tensor:
            z, a = s[:n].view_as(x1), s[n:2 * n].view_as(x1)
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                out = f(z, t)
                grads = torch.autograd.grad(out, (z, *params), a, allow_unused=True)
            gz = grads[0] if grads[0] is not None else torch.zeros_like(z)
            gp = [torch.zeros_like(p) if g is None else g for g, p in zip(grads[1:], params)]
            # dz/dt = f, da/dt = -a^T df/dz, d a_theta/dt = -a^T df/dtheta
            return torch.cat([out.detach().flatten(), -gz.flatten()]
                             + [-g.flatten() for g in gp])

        s1 = torch.cat([x1.flatten(), a1.flatten(), x1.new_zeros(sum(sizes))])
        back = dict(opts, t0=opts["t1"], t1=opts["t0"])
        s0 = odeint(aug, s1, scalar_t=True, **back)
        a0 = s0[n:2 * n].view_as(x1)
        gp = torch.split(s0[2 * n:], sizes) if sizes else ()
        return (None, None, a0, *[g.view_as(p) for g, p in zip(gp, params)])


def odeint_adjoint(f: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                   params: tuple[Tensor, ...] = (), *, t0: float = 0.0, t1: float = 1.0,
                   steps: int = 10, solver: str = "midpoint", rtol: float = 1e-5,
                   atol: float = 1e-5) -> Tensor:
    r"""Solve :math:`\dot x = f(x, t)` and differentiate by the adjoint method,
    eq. ``eq-cnf-adjoint`` (Chen et al., 2018).

    The forward solve keeps no graph. For a loss :math:`L(x_{t_1})` the backward pass
    solves, from :math:`t_1` back to :math:`t_0`, the augmented ODE

    .. math::

        \dot x_t = f(x_t, t), \qquad \dot a_t = -a_t^\top \partial_x f(x_t, t), \qquad
        \dot a_{\theta, t} = -a_t^\top \partial_\theta f(x_t, t),

    from :math:`a_{t_1} = \partial L / \partial x_{t_1}`, :math:`a_{\theta, t_1} = 0`; then
    :math:`\partial L/\partial x_{t_0} = a_{t_0}` and :math:`\partial L / \partial\theta =
    a_{\theta, t_0} = \int_{t_0}^{t_1} a_t^\top \partial_\theta f\, \mathrm dt`. Each
    right-hand side is one vector-Jacobian product; the memory does not grow with the
    steps. The state :math:`x_t` is recomputed backwards, so the gradient matches
    backpropagation through the solver up to the solver's error (tested).

    Args:
        f: the field ``f(x, t)``, ``x`` of the shape of ``x``, ``t`` a 0-dim tensor.
        x: the initial state, any shape.
        params: the tensors ``f`` depends on whose gradients are wanted (e.g.
            ``tuple(model.parameters())``).
        t0, t1: the ends.
        steps, solver: the fixed-step solver and its steps (or ``"dopri5"``), used for
            both the forward and the backward solve.
        rtol, atol: tolerances of ``"dopri5"``.

    Returns:
        The state at ``t1``, with the adjoint method as its backward pass.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable f(x, t), got {describe(f)}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {describe(x)}")
    if not isinstance(params, tuple) or not all(isinstance(p, Tensor) for p in params):
        raise TypeError("params must be a tuple of tensors")
    _check_choice("solver", solver, SOLVERS)
    opts = dict(t0=check_real("t0", t0), t1=check_real("t1", t1),
                steps=check_int("steps", steps, 1), solver=solver,
                rtol=check_positive("rtol", rtol), atol=check_positive("atol", atol))
    return _AdjointSolve.apply(f, opts, x, *params)


# --------------------------------------------------------------------------- Gronwall


def gronwall_bound(lipschitz: float, t0: float = 0.0, t1: float = 1.0) -> float:
    r"""The Gronwall bound on the Lipschitz constant of the flow map, theorem
    ``thm-cnf-gronwall``.

    If :math:`\|v(x, t) - v(y, t)\| \le L \|x - y\|` for all :math:`t` between ``t0`` and
    ``t1``, then the flow :math:`\phi` satisfies

    .. math::

        \|\phi_{t_0 \to t_1}(x) - \phi_{t_0 \to t_1}(y)\| \le e^{L |t_1 - t_0|}\, \|x - y\|,

    in either direction of time (so the inverse map is Lipschitz too: the flow is a
    bi-Lipschitz homeomorphism). Equality holds for :math:`v(x) = L x`.

    Args:
        lipschitz: :math:`L \ge 0`.
        t0, t1: the ends.

    Returns:
        :math:`e^{L |t_1 - t_0|}`.
    """
    lipschitz = check_nonnegative("lipschitz", lipschitz)
    return math.exp(lipschitz * abs(check_real("t1", t1) - check_real("t0", t0)))


def lipschitz_upper_bound(net: MLP) -> float:
    r"""An upper bound on the Lipschitz constant in :math:`x` of an :class:`gmbook.nets.MLP`,
    uniform in :math:`t`, for :func:`gronwall_bound` (theorem ``thm-cnf-gronwall``).

    The time enters the hidden layers only through additive biases, which do not change the
    Lipschitz constant in :math:`x`; so

    .. math::

        \operatorname{Lip}_x(v) \le \|W_{\mathrm{out}}\|_2 \prod_{\ell=1}^{L}
        \operatorname{Lip}(\sigma)\, \|W_\ell\|_2,

    with :math:`\|\cdot\|_2` the spectral norm and :math:`\operatorname{Lip}(\sigma)` the
    largest slope of the activation (1.0998 for SiLU).

    Args:
        net: the network.

    Returns:
        The bound (a float).
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a gmbook.nets.MLP, got {describe(net)}")
    bound = 1.0
    for layer, act in zip(net.layers, net.acts):
        lip = _ACTIVATION_LIPSCHITZ.get(type(act))
        if lip is None:
            raise ValueError(f"no known Lipschitz constant for the activation {act!r}")
        bound *= lip * float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    return bound * float(torch.linalg.matrix_norm(net.out.weight.detach().double(), ord=2))


# --------------------------------------------------------------------------- the model


class CNF(nn.Module):
    r"""A continuous normalizing flow: a velocity network and its ODE, eq. ``eq-cnf-icov``.

    The model's density is :math:`\log p_1(x) = \log \mathcal N(x_0; 0, I) -
    \int_0^1 \nabla\cdot v_\theta(x_t, t)\, \mathrm dt`, with :math:`x_t` the solution
    through :math:`x_1 = x`, computed by integrating the augmented ODE (:func:`integrate`)
    from :math:`t = 1` back to 0. It is trained by maximum likelihood (FFJORD, Grathwohl
    et al., 2019), optionally with the kinetic and Jacobian regularisers of Finlay et al.
    (2020), eq. ``eq-cnf-regularisers``:

    .. math::

        \mathcal L(\theta) = \mathbb E_{x}\Big[-\log p_1(x) + \lambda_K \int_0^1
        \|v_\theta\|^2 \mathrm dt + \lambda_J \int_0^1 \|\nabla v_\theta\|_F^2
        \mathrm dt\Big].

    A caution: the "log-density" of a coarse fixed-step solve is not the density of any
    flow (the chapter's exercise ``cnf-ex-euler-mass``), and maximum likelihood through it
    can learn to exploit the solver's error, a training loss that improves while the
    converged solver's likelihood does not. Train with ``"dopri5"`` (its error is
    controlled), or check the likelihood with a converged solver.

    The time convention is flow matching's (noise at 0, data at 1), so a trained
    :class:`gmbook.flow_matching.FlowMatching` model's ``net`` is a CNF's velocity as is.

    Args:
        net: the velocity network, called as ``net(x, t)`` with ``x`` of shape
            ``(B, dim)`` and ``t`` of shape ``(B,)`` (a 0-dim ``t`` for an
            :class:`gmbook.nets.MLP`, whose time branch then runs once per call).
        dim: the data dimension ``D``.
        divergence: for training, one of :data:`DIVERGENCES`.
        solver: one of :data:`SOLVERS`, for training and by default everywhere.
        steps: steps of a fixed-step solver.
        rtol, atol: tolerances of ``"dopri5"``.
        adjoint: gradients by the adjoint method instead of backpropagation.
        kinetic: :math:`\lambda_K \ge 0`.
        jacobian: :math:`\lambda_J \ge 0`.

    Attributes:
        last_nfe: network evaluations of the last forward solve (the NFE of ``dopri5``).

    Example:
        >>> model = CNF(MLP(2, hidden=16, time_dim=8), dim=2, steps=4)
        >>> model.loss(torch.randn(8, 2)).shape
        torch.Size([])
        >>> model.sample(5).shape, model.log_prob(torch.randn(5, 2)).shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, net: nn.Module, *, dim: int, divergence: str = "exact",
                 solver: str = "midpoint", steps: int = 10, rtol: float = 1e-5,
                 atol: float = 1e-5, adjoint: bool = False, kinetic: float = 0.0,
                 jacobian: float = 0.0) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"CNF: net must be an nn.Module, got {describe(net)}")
        self.net = net
        self.dim = check_int("dim", dim, 1)
        self.divergence = _check_choice("divergence", divergence, DIVERGENCES)
        self.solver = _check_choice("solver", solver, SOLVERS)
        self.steps = check_int("steps", steps, 1)
        self.rtol, self.atol = check_positive("rtol", rtol), check_positive("atol", atol)
        self.adjoint = check_bool("adjoint", adjoint)
        self.kinetic = check_nonnegative("kinetic", kinetic)
        self.jacobian = check_nonnegative("jacobian", jacobian)
        self.last_nfe = 0

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        r"""The velocity :math:`v_\theta(x, t)`, ``x`` of shape ``(B, D)``, ``t`` ``(B,)``
        or 0-dim."""
        return self.net(x, t)

    def _scalar_t(self) -> bool:
        return isinstance(self.net, MLP)

    def solve(self, x: Tensor, *, t0: float = 1.0, t1: float = 0.0, density: bool = True,
              regularise: bool = False, divergence: str | None = None,
              solver: str | None = None, steps: int | None = None,
              generator: torch.Generator | None = None) -> CNFSolution:
        r"""Integrate the model's augmented ODE (:func:`integrate`, eq.
        ``eq-cnf-augmented``) with the model's settings unless overridden.

        Args:
            x: points at ``t0``, shape ``(B, D)``.
            t0, t1: the ends (default: data to noise).
            density: integrate the log-density change.
            regularise: integrate the kinetic energy and the Jacobian norm.
            divergence, solver, steps: override the model's settings.
            generator: randomness of Hutchinson's probe.

        Returns:
            The :class:`CNFSolution`; its ``nfe`` is also stored in ``last_nfe``.
        """
        x = _check_batch("x", x, self.dim)
        params = tuple(p for p in self.parameters() if p.requires_grad) \
            if self.adjoint and torch.is_grad_enabled() else ()
        sol = integrate(
            self.velocity, x, t0=t0, t1=t1, density=density, regularise=regularise,
            divergence=self.divergence if divergence is None else divergence,
            solver=self.solver if solver is None else solver,
            steps=self.steps if steps is None else steps, rtol=self.rtol, atol=self.atol,
            adjoint=self.adjoint and torch.is_grad_enabled(), params=params,
            scalar_t=self._scalar_t(), generator=generator)
        self.last_nfe = sol.nfe
        return sol

    def _base_log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z**2).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)

    def log_prob(self, x: Tensor, *, divergence: str = "exact", solver: str | None = None,
                 steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        r"""Log-density by the instantaneous change of variables, eq. ``eq-cnf-icov``.

        :math:`\log p_1(x) = \log \mathcal N(x_0; 0, I) - \ell_0`, with
        :math:`\ell_0 = \log p_0(x_0) - \log p_1(x)` the log-density change of the
        solve from :math:`t = 1` to 0. Exact by default (the divergence by ``D`` backward
        passes); with a Hutchinson ``divergence`` an unbiased estimate of it (not of the
        density).

        Args:
            x: points, shape ``(B, D)``.
            divergence: one of :data:`DIVERGENCES` (default ``"exact"``).
            solver, steps: override the model's solver.
            generator: randomness of Hutchinson's probe.

        Returns:
            Log-densities, shape ``(B,)``.
        """
        sol = self.solve(x, divergence=divergence, solver=solver, steps=steps,
                         generator=generator)
        return self._base_log_prob(sol.x) - sol.delta_logp

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Maximum-likelihood loss, optionally regularised, eq. ``eq-cnf-regularisers``.

        Args:
            x: data, shape ``(B, D)``.
            generator: randomness of Hutchinson's probe.

        Returns:
            The scalar :math:`-\frac1B \sum \log p_1(x_i)` plus the regularisers.
        """
        reg = self.kinetic > 0 or self.jacobian > 0
        sol = self.solve(x, regularise=reg, generator=generator)
        nll = -(self._base_log_prob(sol.x) - sol.delta_logp).mean()
        if reg:
            nll = nll + self.kinetic * sol.kinetic.mean() + self.jacobian * sol.jacobian.mean()
        return nll

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               solver: str | None = None, steps: int | None = None,
               x0: Tensor | None = None) -> Tensor:
        r"""Samples: solve :math:`\dot x = v_\theta(x, t)` from :math:`x_0 \sim
        \mathcal N(0, I)` at :math:`t = 0` to :math:`t = 1` (eq. ``eq-cnf-icov``'s flow).

        Args:
            n: number of samples.
            generator: randomness of the noise.
            solver, steps: override the model's solver.
            x0: optional initial noise, shape ``(n, D)``.

        Returns:
            Samples of shape ``(n, D)``.
        """
        n = check_int("n", n, 1)
        generator = check_generator(generator)
        p = next(self.parameters())
        if x0 is None:
            x0 = randn((n, self.dim), device=p.device, dtype=p.dtype, generator=generator)
        elif _check_batch("x0", x0, self.dim).shape[0] != n:
            raise ValueError(f"x0 must have {n} rows, got {x0.shape[0]}")
        with torch.no_grad():
            return self.solve(x0, t0=0.0, t1=1.0, density=False, solver=solver,
                              steps=steps).x

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, divergence={self.divergence!r}, solver={self.solver!r}, "
                f"steps={self.steps}, adjoint={self.adjoint}, kinetic={self.kinetic:g}, "
                f"jacobian={self.jacobian:g}")
