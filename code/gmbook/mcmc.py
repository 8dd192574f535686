r"""Sampling from a density we can evaluate: the samplers of the chapter *Sampling and MCMC*.

Derived in ``book/foundations/sampling.md``:

- **exact methods**: inverse-CDF sampling (:func:`inverse_cdf_sample`, eq.
  ``eq-samp-inverse-cdf``) and rejection sampling (:func:`rejection_sample`,
  :prf:ref:`thm-samp-rejection`);
- **Markov chain Monte Carlo**: the exact Metropolis-Hastings kernel on a finite state
  space (:func:`mh_transition_matrix`, eq. ``eq-samp-mh-accept``), random-walk
  Metropolis (:func:`random_walk_mh`), the unadjusted Langevin algorithm (:func:`ula`,
  eq. ``eq-samp-ula``), its Metropolis-adjusted version (:func:`mala`, eq.
  ``eq-samp-mala``), the leapfrog integrator (:func:`leapfrog`, eq. ``eq-samp-leapfrog``)
  and Hamiltonian Monte Carlo (:func:`hmc`, :prf:ref:`prop-samp-leapfrog`), Gibbs
  sampling of a Gaussian (:func:`gibbs_sweep_gaussian`, :func:`gibbs_gaussian`,
  :prf:ref:`thm-samp-gibbs`), and parallel tempering (:func:`parallel_tempering`, eq.
  ``eq-samp-swap``);
- **diagnostics**: autocorrelation (:func:`autocorrelation`), the multi-chain effective
  sample size (:func:`ess`, eq. ``eq-samp-ess``) and split-:math:`\hat R`
  (:func:`rhat`, eq. ``eq-samp-rhat``).

Conventions. A *log-density* is any callable ``log_prob(x)`` mapping points ``(C, D)`` to
``(C,)``; it may be unnormalized (every sampler here needs it only up to an additive
constant) and the gradient-based samplers differentiate it with autograd. A batch of
``C`` chains is one tensor ``(C, D)``: every chain takes its step at once. Samplers return
a :class:`Chains` record whose ``samples`` have shape ``(T, C, D)``, and take a
``generator`` for their randomness; none touches the global random state.

Example:
    >>> target = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    >>> g = torch.Generator().manual_seed(0)
    >>> out = mala(target.log_prob, torch.zeros(500, 2), steps=200, step_size=0.5,
    ...            generator=g)
    >>> out.samples.shape, out.grad_evals
    (torch.Size([200, 500, 2]), 201)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gmbook._checks import check_generator, check_int, check_nonnegative, check_positive, describe
from gmbook._random import rand, randn

__all__ = [
    "Chains",
    "RejectionResult",
    "TemperingResult",
    "autocorrelation",
    "ess",
    "gibbs_gaussian",
    "gibbs_sweep_gaussian",
    "hamiltonian",
    "hmc",
    "inverse_cdf_sample",
    "langevin_step",
    "leapfrog",
    "log_prob_and_grad",
    "mala",
    "mh_transition_matrix",
    "parallel_tempering",
    "random_walk_mh",
    "rejection_sample",
    "rhat",
    "tune_step_size",
    "ula",
]

#: A log-density: points ``(C, D)`` to values ``(C,)``, possibly unnormalized.
LogProb = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- checks


def _check_log_prob(log_prob: object) -> LogProb:
    if not callable(log_prob):
        raise TypeError(f"log_prob must be a callable (C, D) -> (C,), got {describe(log_prob)}")
    return log_prob  # type: ignore[return-value]


def _check_states(x: object, name: str = "x0") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor of shape (C, D), got {describe(x)}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (C, D) with C, D >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x.detach()


def _check_momenta(p: object, x: Tensor) -> None:
    if not isinstance(p, Tensor):
        raise TypeError(f"p must be a Tensor of the shape of x, {tuple(x.shape)}, "
                        f"got {describe(p)}")
    if p.shape != x.shape:
        raise ValueError(f"p must have the shape of x, {tuple(x.shape)}, got {tuple(p.shape)}")


def _evaluate(log_prob: LogProb, x: Tensor) -> Tensor:
    lp = log_prob(x)
    if not isinstance(lp, Tensor) or lp.shape != x.shape[:1]:
        got = tuple(lp.shape) if isinstance(lp, Tensor) else describe(lp)
        raise ValueError(f"log_prob must map (C, D) to (C,) = {tuple(x.shape[:1])}, got {got}")
    return lp


def _check_sampler(
    log_prob: object, x0: object, generator: object
) -> tuple[LogProb, Tensor, torch.Generator | None]:
    """The log-density, a fresh copy of the states ``(C, D)`` and the generator, checked."""
    return _check_log_prob(log_prob), _check_states(x0).clone(), check_generator(generator)


def _check_chain_args(steps: object, step_size: object, burn_in: object, thin: object) -> tuple:
    steps = check_int("steps", steps)
    step_size = check_positive("step_size", step_size)
    burn_in = check_int("burn_in", burn_in, minimum=0)
    thin = check_int("thin", thin)
    if burn_in >= steps:
        raise ValueError(f"burn_in must be smaller than steps = {steps}, got {burn_in}")
    return steps, step_size, burn_in, thin


def _draws(x: object, name: str = "x") -> tuple[Tensor, bool]:
    """``x`` as ``(T, C, D)`` float64 and whether the input had a trailing ``D`` axis."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor of shape (T,), (T, C) or (T, C, D), "
                        f"got {describe(x)}")
    if x.ndim not in (1, 2, 3):
        raise ValueError(f"{name} must have shape (T,), (T, C) or (T, C, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (found nan or inf)")
    has_d = x.ndim == 3
    x = x.detach().to(torch.float64)
    x = x.reshape(x.shape[0], -1, 1) if x.ndim < 3 else x
    return x, has_d


# --------------------------------------------------------------------------- exact methods


def inverse_cdf_sample(
    icdf: Callable[[Tensor], Tensor],
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Draw ``n`` points :math:`X = F^{-1}(U)` with :math:`U \sim \mathcal U(0, 1)`.

    Implements eq. ``eq-samp-inverse-cdf``.

    Args:
        icdf: the (generalised) inverse CDF :math:`F^{-1}`, applied elementwise to a tensor
            of shape ``(n,)`` with values in :math:`(0, 1)`.
        n: number of draws.
        generator: source of randomness.
        dtype: floating-point dtype of the uniforms.

    Returns:
        The draws, shape ``(n,)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = inverse_cdf_sample(lambda u: -torch.log1p(-u), 100_000, generator=g)
        >>> round(x.mean().item(), 1)   # Exp(1) has mean 1
        1.0
    """
    if not callable(icdf):
        raise TypeError(f"icdf must be a callable, got {describe(icdf)}")
    n = check_int("n", n)
    generator = check_generator(generator)
    u = rand((n,), dtype=dtype, generator=generator)
    u = u.clamp_min(torch.finfo(dtype).tiny)  # U in (0, 1): F^{-1}(0) may be -inf
    x = icdf(u)
    if not isinstance(x, Tensor) or x.shape != (n,):
        raise ValueError(f"icdf must map (n,) to (n,), got {describe(x)}")
    return x


@dataclass(frozen=True)
class RejectionResult:
    r"""The output of :func:`rejection_sample`.

    Attributes:
        samples: the accepted points, shape ``(n, D)``.
        proposals: how many proposals were drawn to accept ``n``.
        acceptance_rate: ``n / proposals`` (the last batch's surplus is not counted), the
            estimate of :math:`Z_p / (M Z_q)` of :prf:ref:`thm-samp-rejection`.
    """

    samples: Tensor
    proposals: int
    acceptance_rate: float


def rejection_sample(
    log_p: LogProb,
    sample_q: Callable[[int, torch.Generator | None], Tensor],
    log_q: LogProb,
    log_m: float,
    n: int,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 65_536,
    max_proposals: int = 10**8,
) -> RejectionResult:
    r"""Rejection sampling from :math:`p \propto \tilde p` under an envelope :math:`M q`.

    Implements :prf:ref:`thm-samp-rejection` (eq. ``eq-samp-rejection``): draw
    :math:`X \sim q` and :math:`U \sim \mathcal U(0, 1)`, and accept :math:`X` when
    :math:`\log U < \log\tilde p(X) - \log M - \log q(X)`. The accepted points are
    i.i.d. draws of :math:`p`, and a proposal is accepted with probability
    :math:`Z_p / (M Z_q)`.

    Args:
        log_p: :math:`\log \tilde p`, ``(B, D) -> (B,)``, possibly unnormalized.
        sample_q: ``sample_q(m, generator)`` returns ``m`` proposals, shape ``(m, D)``.
        log_q: :math:`\log q`, ``(B, D) -> (B,)``.
        log_m: :math:`\log M`, with :math:`\tilde p \le M q` everywhere.
        n: number of accepted points wanted.
        generator: source of randomness (passed on to ``sample_q``).
        batch_size: proposals drawn per round.
        max_proposals: give up (``RuntimeError``) after this many proposals.

    Returns:
        A :class:`RejectionResult`.

    Raises:
        ValueError: if a proposal has :math:`\tilde p(x) > M q(x)`: the envelope is not one.
    """
    for name, f in (("log_p", log_p), ("sample_q", sample_q), ("log_q", log_q)):
        if not callable(f):
            raise TypeError(f"{name} must be a callable, got {describe(f)}")
    n = check_int("n", n)
    batch_size = check_int("batch_size", batch_size)
    max_proposals = check_int("max_proposals", max_proposals)
    generator = check_generator(generator)
    log_m = float(log_m)
    if not math.isfinite(log_m):  # nan would reject every proposal until max_proposals
        raise ValueError(f"log_m must be finite, got {log_m}")
    kept: list[Tensor] = []
    accepted = proposals = 0
    while accepted < n:
        if proposals >= max_proposals:
            raise RuntimeError(f"rejection_sample: only {accepted} of {n} points accepted "
                               f"after {proposals} proposals; the envelope M q is too loose")
        x = sample_q(batch_size, generator)
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] != batch_size:
            raise ValueError(f"sample_q(m, generator) must return m = {batch_size} points "
                             f"of shape (m, D), got {describe(x)}")
        log_ratio = _evaluate(log_p, x) - log_m - _evaluate(log_q, x)  # log(p~ / (M q)) <= 0
        if bool((log_ratio > 1e-9).any()):
            worst = float(log_ratio.max())
            raise ValueError(f"the envelope fails: log p~(x) - log M - log q(x) = {worst:.3g} > 0 "
                             "at a proposal; increase log_m")
        u = rand((batch_size,), like=log_ratio, generator=generator)
        ok = torch.log(u) < log_ratio
        hits = torch.nonzero(ok).squeeze(1)
        need = n - accepted
        if hits.numel() >= need:  # count proposals up to the n-th acceptance only
            proposals += int(hits[need - 1]) + 1
            hits = hits[:need]
        else:
            proposals += batch_size
        kept.append(x[hits])
        accepted += hits.numel()
    return RejectionResult(torch.cat(kept), proposals, n / proposals)


def mh_transition_matrix(target: Tensor, proposal: Tensor) -> Tensor:
    r"""The exact Metropolis-Hastings transition matrix on a finite state space.

    Implements eq. ``eq-samp-mh-accept``: for :math:`j \ne i`,
    :math:`P_{ij} = Q_{ij} \min\!\big(1, \frac{\pi_j Q_{ji}}{\pi_i Q_{ij}}\big)` (and 0 where
    :math:`Q_{ij} = 0`), and the rejected mass stays put,
    :math:`P_{ii} = 1 - \sum_{j \ne i} P_{ij}`.

    Args:
        target: unnormalized target :math:`\pi`, shape ``(S,)``, positive.
        proposal: proposal matrix :math:`Q`, shape ``(S, S)``, rows summing to 1.

    Returns:
        :math:`P`, shape ``(S, S)``, row-stochastic, in the dtype of ``proposal``.

    Example:
        >>> P = mh_transition_matrix(torch.tensor([1.0, 3.0]), torch.full((2, 2), 0.5))
        >>> P
        tensor([[0.5000, 0.5000],
                [0.1667, 0.8333]])
    """
    if not isinstance(target, Tensor) or not isinstance(proposal, Tensor):
        raise TypeError("target and proposal must be Tensors, got "
                        f"{describe(target)} and {describe(proposal)}")
    s = target.shape[0] if target.ndim == 1 else -1
    if target.ndim != 1 or proposal.shape != (s, s):
        raise ValueError(f"target must have shape (S,) and proposal (S, S), got "
                         f"{tuple(target.shape)} and {tuple(proposal.shape)}")
    if not bool(((target > 0) & torch.isfinite(target)).all()):
        raise ValueError("target must be positive and finite in every state")
    if bool((proposal < 0).any()) or not torch.allclose(
        proposal.sum(1), torch.ones(s, dtype=proposal.dtype), atol=1e-6
    ):
        raise ValueError("proposal must be non-negative with rows summing to 1")
    pi = target.to(proposal.dtype)
    flow = pi[:, None] * proposal  # pi_i Q_ij, (S, S)
    ratio = torch.where(flow > 0, flow.T / flow.where(flow > 0, torch.ones_like(flow)),
                        torch.zeros_like(flow))
    p = proposal * ratio.clamp(max=1.0)
    p.fill_diagonal_(0.0)
    return p + torch.diag(1.0 - p.sum(1))


# --------------------------------------------------------------------------- MCMC


@dataclass(frozen=True)
class Chains:
    r"""The output of an MCMC sampler.

    Attributes:
        samples: the kept states, shape ``(T, C, D)`` (after ``burn_in``, every
            ``thin``-th step).
        acceptance: each chain's fraction of accepted proposals over all steps, shape
            ``(C,)``; all ones for :func:`ula`, which accepts every move.
        grad_evals: gradient evaluations per chain (each also evaluates the log-density).
        log_prob_evals: log-density evaluations per chain.
    """

    samples: Tensor
    acceptance: Tensor
    grad_evals: int
    log_prob_evals: int


def log_prob_and_grad(log_prob: LogProb, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""The log-density and its gradient (the score) at each of ``C`` points, by autograd.

    Args:
        log_prob: ``(C, D) -> (C,)``.
        x: points, shape ``(C, D)``.

    Returns:
        ``(lp, grad)`` of shapes ``(C,)`` and ``(C, D)``, both detached.
    """
    log_prob = _check_log_prob(log_prob)
    with torch.enable_grad():
        x = _check_states(x, "x").requires_grad_(True)
        lp = _evaluate(log_prob, x)
        (grad,) = torch.autograd.grad(lp.sum(), x)
    return lp.detach(), grad.detach()


def _run(
    step: Callable[[], Tensor], steps: int, burn_in: int, thin: int
) -> tuple[Tensor, Tensor]:
    """Call ``step()`` ``steps`` times; keep the states; count accepted moves per chain."""
    kept, accepted = [], None
    for t in range(steps):
        x, acc = step()
        accepted = acc.to(torch.float64) if accepted is None else accepted + acc
        if t >= burn_in and (t - burn_in) % thin == 0:
            kept.append(x)
    return torch.stack(kept), accepted / steps


def _mh_accept(log_alpha: Tensor, generator: torch.Generator | None) -> Tensor:
    """Accept with probability min(1, exp(log_alpha)), per chain: a bool mask (C,)."""
    u = rand(log_alpha.shape, like=log_alpha, generator=generator)
    return torch.log(u) < log_alpha


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return randn(x.shape, like=x, generator=generator)


def langevin_step(x: Tensor, grad: Tensor, step_size: float, *, noise_scale: float = 1.0,
                  generator: torch.Generator | None = None) -> Tensor:
    r"""One Langevin step, eq. ``eq-samp-ula``: the one the package has.

    :math:`x' = x + h\, g + \sigma \sqrt{2h}\, \xi` with :math:`\xi \sim \mathcal N(0, I)`
    drawn from ``generator``, where :math:`g` is the gradient of the log-density (or a
    score) at ``x``. With :math:`\sigma = 1` this is the unadjusted Langevin algorithm
    (:func:`ula`), with :math:`\sigma = 0` a gradient-ascent step; a constant
    :math:`\sigma` is ULA with step :math:`h\sigma^2` on the tempered density
    :math:`\tilde p^{1/\sigma^2}`. Every Langevin sampler of the book (:func:`ula`,
    :func:`gmbook.ebm.langevin`, :func:`gmbook.score.langevin`,
    :func:`gmbook.score.annealed_langevin` and the samplers' correctors) takes this step.

    Args:
        x: the states, shape ``(C, *D)``.
        grad: :math:`\nabla \log \tilde p(x)` (or the score), same shape as ``x``.
        step_size: :math:`h > 0`.
        noise_scale: :math:`\sigma \ge 0`.
        generator: source of :math:`\xi`.

    Returns:
        The new states, shape of ``x``.

    Example:
        >>> x = torch.zeros(3, 2)
        >>> langevin_step(x, -x, 0.1, noise_scale=0.0).abs().max().item()
        0.0
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {describe(x)}")
    if not isinstance(grad, Tensor) or grad.shape != x.shape:
        raise ValueError(f"grad must be a tensor of the shape of x {tuple(x.shape)}, got "
                         f"{describe(grad)}")
    h = check_positive("step_size", step_size)
    sigma = check_nonnegative("noise_scale", noise_scale)
    return _langevin_move(x, grad, h, sigma, generator)


def _langevin_move(x: Tensor, grad: Tensor, h: float, sigma: float,
                   generator: torch.Generator | None) -> Tensor:
    """The arithmetic of :func:`langevin_step`, unchecked: for loops whose entry point has
    already checked ``h > 0``, ``sigma >= 0`` and the shapes (:func:`ula`,
    :func:`gmbook.ebm.langevin`)."""
    x = x + h * grad
    if sigma > 0:
        x = x + sigma * math.sqrt(2 * h) * randn(x.shape, like=x, generator=generator)
    return x


def random_walk_mh(
    log_prob: LogProb,
    x0: Tensor,
    steps: int,
    step_size: float,
    *,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
) -> Chains:
    r"""Random-walk Metropolis: propose :math:`x' = x + h\,\xi`, accept by ``eq-samp-mh-accept``.

    The Gaussian proposal is symmetric, so the acceptance probability is
    :math:`\min(1, \tilde p(x') / \tilde p(x))`. No gradients are needed.

    Args:
        log_prob: :math:`\log\tilde p`, ``(C, D) -> (C,)``.
        x0: initial states of the ``C`` chains, shape ``(C, D)``.
        steps: number of steps.
        step_size: :math:`h`, the proposal's standard deviation.
        burn_in: steps discarded at the start.
        thin: keep every ``thin``-th state after the burn-in.
        generator: source of randomness.

    Returns:
        :class:`Chains`, with ``grad_evals = 0``.
    """
    log_prob, x, generator = _check_sampler(log_prob, x0, generator)
    steps, h, burn_in, thin = _check_chain_args(steps, step_size, burn_in, thin)
    with torch.no_grad():
        lp = _evaluate(log_prob, x)

        def step() -> tuple[Tensor, Tensor]:
            nonlocal x, lp
            prop = x + h * _noise(x, generator)
            lp_prop = _evaluate(log_prob, prop)
            ok = _mh_accept(lp_prop - lp, generator)
            x = torch.where(ok[:, None], prop, x)
            lp = torch.where(ok, lp_prop, lp)
            return x, ok

        samples, acc = _run(step, steps, burn_in, thin)
    return Chains(samples, acc, 0, steps + 1)


def ula(
    log_prob: LogProb,
    x0: Tensor,
    steps: int,
    step_size: float,
    *,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
) -> Chains:
    r"""The unadjusted Langevin algorithm, eq. ``eq-samp-ula``.

    :math:`x' = x + h \nabla\log\tilde p(x) + \sqrt{2h}\,\xi`, every move accepted: the
    Euler-Maruyama discretisation of the Langevin diffusion. Its stationary law is *not*
    :math:`p` but a step-size-dependent approximation (:prf:ref:`prop-samp-ula-bias`).

    Args:
        log_prob: :math:`\log\tilde p`, differentiable, ``(C, D) -> (C,)``.
        x0: initial states, shape ``(C, D)``.
        steps: number of steps (one gradient each).
        step_size: :math:`h`.
        burn_in: steps discarded at the start.
        thin: keep every ``thin``-th state after the burn-in.
        generator: source of randomness.

    Returns:
        :class:`Chains`, with ``acceptance`` all ones.
    """
    log_prob, x, generator = _check_sampler(log_prob, x0, generator)
    steps, h, burn_in, thin = _check_chain_args(steps, step_size, burn_in, thin)
    ones = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)

    def step() -> tuple[Tensor, Tensor]:
        nonlocal x
        _, grad = log_prob_and_grad(log_prob, x)
        x = _langevin_move(x, grad, h, 1.0, generator)  # h checked above
        return x, ones

    samples, acc = _run(step, steps, burn_in, thin)
    return Chains(samples, acc, steps, steps)


def _langevin_log_q(to: Tensor, frm: Tensor, grad_frm: Tensor, h: float) -> Tensor:
    r"""Log-density of the Langevin proposal at ``to`` from ``frm``, up to a constant."""
    return -((to - frm - h * grad_frm) ** 2).sum(-1) / (4 * h)


def mala(
    log_prob: LogProb,
    x0: Tensor,
    steps: int,
    step_size: float,
    *,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
) -> Chains:
    r"""The Metropolis-adjusted Langevin algorithm, eq. ``eq-samp-mala``.

    Proposes the :func:`ula` move :math:`x' \sim \mathcal N(x + h\nabla\log\tilde p(x), 2hI)`
    and accepts it with the Metropolis-Hastings probability of eq. ``eq-samp-mh-accept``,
    whose proposal ratio corrects the discretisation: the chain leaves :math:`p` exactly
    invariant. The gradient at the current state is cached: one gradient per step.

    Args:
        log_prob: :math:`\log\tilde p`, differentiable, ``(C, D) -> (C,)``.
        x0: initial states, shape ``(C, D)``.
        steps: number of steps.
        step_size: :math:`h`.
        burn_in: steps discarded at the start.
        thin: keep every ``thin``-th state after the burn-in.
        generator: source of randomness.

    Returns:
        :class:`Chains`.
    """
    log_prob, x, generator = _check_sampler(log_prob, x0, generator)
    steps, h, burn_in, thin = _check_chain_args(steps, step_size, burn_in, thin)
    lp, grad = log_prob_and_grad(log_prob, x)

    def step() -> tuple[Tensor, Tensor]:
        nonlocal x, lp, grad
        prop = x + h * grad + math.sqrt(2 * h) * _noise(x, generator)
        lp_prop, grad_prop = log_prob_and_grad(log_prob, prop)
        log_alpha = (lp_prop + _langevin_log_q(x, prop, grad_prop, h)
                     - lp - _langevin_log_q(prop, x, grad, h))
        ok = _mh_accept(log_alpha, generator)
        x = torch.where(ok[:, None], prop, x)
        lp = torch.where(ok, lp_prop, lp)
        grad = torch.where(ok[:, None], grad_prop, grad)
        return x, ok

    samples, acc = _run(step, steps, burn_in, thin)
    return Chains(samples, acc, steps + 1, steps + 1)


def hamiltonian(log_prob: LogProb, x: Tensor, p: Tensor) -> Tensor:
    r"""The energy :math:`H(x, p) = -\log\tilde p(x) + \tfrac12 \lVert p \rVert^2`.

    Implements eq. ``eq-samp-hamiltonian``.

    Args:
        log_prob: :math:`\log\tilde p`, ``(C, D) -> (C,)``.
        x: positions, shape ``(C, D)``.
        p: momenta, shape ``(C, D)``.

    Returns:
        :math:`H`, shape ``(C,)``.
    """
    log_prob = _check_log_prob(log_prob)
    x = _check_states(x, "x")
    _check_momenta(p, x)
    return -_evaluate(log_prob, x) + 0.5 * (p**2).sum(-1)


def leapfrog(
    grad_log_prob: Callable[[Tensor], Tensor],
    x: Tensor,
    p: Tensor,
    step_size: float,
    n_steps: int,
    *,
    return_path: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""The leapfrog (Stormer-Verlet) integrator of Hamilton's equations, eq. ``eq-samp-leapfrog``.

    Each step is a half kick :math:`p \leftarrow p + \frac h2 \nabla\log\tilde p(x)`, a drift
    :math:`x \leftarrow x + h p`, and a half kick; consecutive half kicks are merged, so
    ``n_steps`` steps cost ``n_steps + 1`` gradients. The map is reversible and
    volume-preserving (:prf:ref:`prop-samp-leapfrog`).

    Args:
        grad_log_prob: :math:`\nabla \log\tilde p`, ``(C, D) -> (C, D)``.
        x: positions, shape ``(C, D)``.
        p: momenta, shape ``(C, D)``.
        step_size: :math:`h` (may be negative: integrate backwards in time).
        n_steps: :math:`L \ge 1`.
        return_path: also return the positions and momenta after every step.

    Returns:
        ``(x, p)`` after ``n_steps`` steps, each ``(C, D)``; with ``return_path``, the
        paths ``(L + 1, C, D)`` including the start.
    """
    if not callable(grad_log_prob):
        raise TypeError(f"grad_log_prob must be a callable, got {describe(grad_log_prob)}")
    _check_states(x, "x")  # validate only: x stays differentiable, like p (autograd Jacobian)
    _check_momenta(p, x)
    h = float(step_size)
    if not math.isfinite(h) or h == 0:
        raise ValueError(f"step_size must be finite and non-zero, got {step_size!r}")
    n_steps = check_int("n_steps", n_steps)
    xs, ps = [x], [p]
    g = grad_log_prob(x)
    if not isinstance(g, Tensor) or g.shape != x.shape:  # e.g. log_prob passed by mistake
        raise ValueError(f"grad_log_prob must map (C, D) to (C, D) = {tuple(x.shape)}, "
                         f"got {describe(g)}")
    p = p + 0.5 * h * g
    for i in range(n_steps):
        x = x + h * p
        g = grad_log_prob(x)
        p = p + (h if i < n_steps - 1 else 0.5 * h) * g
        if return_path:  # the momentum at integer times: undo half of the merged kick
            xs.append(x)
            ps.append(p - 0.5 * h * g if i < n_steps - 1 else p)
    if return_path:
        return torch.stack(xs), torch.stack(ps)
    return x, p


def hmc(
    log_prob: LogProb,
    x0: Tensor,
    steps: int,
    step_size: float,
    n_leapfrog: int,
    *,
    jitter: float = 0.0,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
) -> Chains:
    r"""Hamiltonian Monte Carlo with an identity mass matrix.

    Each step draws a momentum :math:`p \sim \mathcal N(0, I)`, runs :func:`leapfrog` for
    ``n_leapfrog`` steps and accepts the end point with probability
    :math:`\min(1, e^{-\Delta H})` (eq. ``eq-samp-hmc-accept``), where :math:`H` is
    :func:`hamiltonian`. Gradients at the start of a trajectory are cached, so a step costs
    ``n_leapfrog`` gradients.

    Args:
        log_prob: :math:`\log\tilde p`, differentiable, ``(C, D) -> (C,)``.
        x0: initial states, shape ``(C, D)``.
        steps: number of HMC steps (trajectories).
        step_size: leapfrog step :math:`h`.
        n_leapfrog: leapfrog steps per trajectory :math:`L`.
        jitter: draw each trajectory's step size uniformly from
            :math:`[h(1 - j), h(1 + j)]`, per chain, to break periodic orbits; in ``[0, 1)``.
        burn_in: steps discarded at the start.
        thin: keep every ``thin``-th state after the burn-in.
        generator: source of randomness.

    Returns:
        :class:`Chains`, with ``grad_evals = steps * n_leapfrog + 1``.
    """
    log_prob, x, generator = _check_sampler(log_prob, x0, generator)
    steps, h, burn_in, thin = _check_chain_args(steps, step_size, burn_in, thin)
    n_leapfrog = check_int("n_leapfrog", n_leapfrog)
    jitter = check_nonnegative("jitter", jitter)
    if jitter >= 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    lp, grad = log_prob_and_grad(log_prob, x)

    def step() -> tuple[Tensor, Tensor]:
        nonlocal x, lp, grad
        p = _noise(x, generator)
        u = rand((x.shape[0], 1), like=x, generator=generator)
        hc = h * (1 + jitter * (2 * u - 1))  # (C, 1)
        xn, pn = x, p + 0.5 * hc * grad
        for i in range(n_leapfrog):
            xn = xn + hc * pn
            lpn, gn = log_prob_and_grad(log_prob, xn)
            pn = pn + (hc if i < n_leapfrog - 1 else 0.5 * hc) * gn
        log_alpha = (lpn - 0.5 * (pn**2).sum(-1)) - (lp - 0.5 * (p**2).sum(-1))  # -Delta H
        ok = _mh_accept(torch.nan_to_num(log_alpha, nan=-math.inf), generator)
        x = torch.where(ok[:, None], xn, x)
        lp = torch.where(ok, lpn, lp)
        grad = torch.where(ok[:, None], gn, grad)
        return x, ok

    samples, acc = _run(step, steps, burn_in, thin)
    return Chains(samples, acc, steps * n_leapfrog + 1, steps * n_leapfrog + 1)


def gibbs_sweep_gaussian(x: Tensor, precision: Tensor, noise: Tensor,
                         mean: Tensor | None = None) -> Tensor:
    r"""One systematic-scan Gibbs sweep for :math:`\mathcal N(\mu, \Lambda^{-1})`, given its noise.

    Coordinates :math:`i = 1, \dots, D` are updated in turn, each from its full conditional
    (eq. ``eq-samp-gibbs-gaussian``) given the *current* values of the others (the ones
    already updated in this sweep included):

    .. math::

        x_i \leftarrow \mu_i - \frac{1}{\Lambda_{ii}} \sum_{j \ne i} \Lambda_{ij}
        (x_j - \mu_j) + \frac{\xi_i}{\sqrt{\Lambda_{ii}}}, \qquad \xi_i = \text{noise}_i.

    Deterministic given ``noise``, so that it can be checked exactly;
    :func:`gibbs_gaussian` draws the noise.

    Args:
        x: current states ``(C, D)``.
        precision: :math:`\Lambda`, symmetric positive definite ``(D, D)``.
        noise: standard normal draws ``(C, D)``, one per coordinate update.
        mean: :math:`\mu` ``(D,)``; zero if ``None``.

    Returns:
        The states after the sweep ``(C, D)``.
    """
    x = _check_states(x, "x")
    if not isinstance(precision, Tensor) or precision.shape != (x.shape[1], x.shape[1]):
        raise ValueError(f"precision must be a ({x.shape[1]}, {x.shape[1]}) tensor, got "
                         f"{describe(precision)}")
    if not isinstance(noise, Tensor) or noise.shape != x.shape:
        raise ValueError(f"noise must be a tensor of the shape of x {tuple(x.shape)}, got "
                         f"{describe(noise)}")
    diag = torch.diagonal(precision)
    if not bool((diag > 0).all()):
        raise ValueError("precision must have a positive diagonal (positive definite)")
    lam = precision.to(x.dtype)
    mu = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device) if mean is None \
        else mean.to(x.dtype)
    z = x - mu  # (C, D), centred
    for i in range(x.shape[1]):
        rest = z @ lam[:, i] - z[:, i] * lam[i, i]  # sum over j != i of Lambda_ij z_j
        z = z.clone()
        z[:, i] = -rest / lam[i, i] + noise[:, i].to(x.dtype) / lam[i, i].sqrt()
    return z + mu


def gibbs_gaussian(
    precision: Tensor,
    x0: Tensor,
    steps: int,
    *,
    mean: Tensor | None = None,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
) -> Chains:
    r"""Systematic-scan Gibbs sampling of :math:`\mathcal N(\mu, \Lambda^{-1})`
    (:prf:ref:`thm-samp-gibbs`): ``steps`` sweeps of :func:`gibbs_sweep_gaussian`.

    Every update is accepted (``acceptance`` is all ones) and no gradient is needed; a sweep
    costs one conditional draw per coordinate.

    Args:
        precision: :math:`\Lambda`, symmetric positive definite ``(D, D)``.
        x0: initial states ``(C, D)``.
        steps: number of sweeps.
        mean: :math:`\mu` ``(D,)``; zero if ``None``.
        burn_in: sweeps discarded at the start.
        thin: keep every ``thin``-th state after the burn-in.
        generator: source of randomness.

    Returns:
        :class:`Chains` with ``samples`` ``(T, C, D)``, ``grad_evals = 0`` and
        ``log_prob_evals = 0``.
    """
    x = _check_states(x0)
    check_generator(generator)
    steps, _, burn_in, thin = _check_chain_args(steps, 1.0, burn_in, thin)

    def step() -> tuple[Tensor, Tensor]:
        nonlocal x
        x = gibbs_sweep_gaussian(x, precision, _noise(x, generator), mean)
        return x, torch.ones(x.shape[0], dtype=torch.bool, device=x.device)

    samples, acc = _run(step, steps, burn_in, thin)
    return Chains(samples, acc, 0, 0)


@dataclass(frozen=True)
class TemperingResult:
    r"""The output of :func:`parallel_tempering`.

    Attributes:
        samples: states of the chains at inverse temperature 1 (the target), ``(T, C, D)``.
        hot: states of every temperature, ``(T, K, C, D)``, temperatures in the order of
            ``betas``.
        acceptance: within-temperature acceptance rate per temperature, ``(K,)``.
        swap_acceptance: acceptance rate of the swaps between neighbours ``k, k+1``,
            ``(K - 1,)``.
    """

    samples: Tensor
    hot: Tensor
    acceptance: Tensor
    swap_acceptance: Tensor


def _check_betas(betas: object) -> Tensor:
    try:  # a list, tuple, Tensor or NumPy array (e.g. np.geomspace(1, 0.05, 6))
        b = None if isinstance(betas, (str, bytes)) else torch.as_tensor(betas,
                                                                          dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        b = None
    if b is None or b.ndim != 1 or b.numel() < 2:
        raise ValueError(f"betas must be a sequence of at least 2 inverse temperatures, got "
                         f"{describe(betas)}")
    if not (bool((b > 0).all()) and bool((b <= 1).all()) and float(b[0]) == 1.0
            and bool((b[1:] < b[:-1]).all())):
        raise ValueError(f"betas must decrease strictly from 1 and stay > 0, got {b.tolist()}")
    return b


def parallel_tempering(
    log_prob: LogProb,
    x0: Tensor,
    betas: Sequence[float],
    steps: int,
    step_size: float,
    *,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
) -> TemperingResult:
    r"""Parallel tempering (replica exchange) with random-walk Metropolis moves.

    Runs ``C`` independent ladders of ``K`` chains; chain :math:`k` targets
    :math:`\tilde p^{\beta_k}` with random-walk proposals of scale
    :math:`h / \sqrt{\beta_k}`. After every move, neighbouring temperatures propose to swap
    their states (even pairs on even steps, odd pairs on odd steps) and accept by eq.
    ``eq-samp-swap``, :math:`\min\big(1, \exp((\beta_k - \beta_{k+1})
    (\log\tilde p(x_{k+1}) - \log\tilde p(x_k)))\big)`. Every move and swap leaves the
    product of the tempered targets invariant, so the :math:`\beta = 1` chain samples
    :math:`p`; the hot chains cross barriers and hand their states down.

    Args:
        log_prob: :math:`\log\tilde p`, ``(N, D) -> (N,)``.
        x0: initial states, shape ``(C, D)``, copied to every temperature.
        betas: inverse temperatures :math:`1 = \beta_1 > \dots > \beta_K > 0`.
        steps: number of steps.
        step_size: :math:`h`, the proposal scale at :math:`\beta = 1`.
        burn_in: steps discarded at the start.
        thin: keep every ``thin``-th state after the burn-in.
        generator: source of randomness.

    Returns:
        :class:`TemperingResult`.
    """
    log_prob = _check_log_prob(log_prob)
    x0 = _check_states(x0)
    b = _check_betas(betas).to(dtype=x0.dtype, device=x0.device)
    steps, h, burn_in, thin = _check_chain_args(steps, step_size, burn_in, thin)
    generator = check_generator(generator)
    k, (c, d) = b.numel(), x0.shape
    x = x0.expand(k, c, d).clone()  # (K, C, D)
    scale = (h / b.sqrt())[:, None, None]

    def lp_of(z: Tensor) -> Tensor:
        return _evaluate(log_prob, z.reshape(k * c, d)).reshape(k, c)

    kept, acc = [], torch.zeros(k, dtype=torch.float64)
    swapped, tried = torch.zeros(k - 1, dtype=torch.float64), torch.zeros(k - 1)
    with torch.no_grad():
        lp = lp_of(x)
        for t in range(steps):
            prop = x + scale * _noise(x, generator)
            lp_prop = lp_of(prop)
            ok = _mh_accept(b[:, None] * (lp_prop - lp), generator)  # (K, C)
            x, lp = torch.where(ok[..., None], prop, x), torch.where(ok, lp_prop, lp)
            acc += ok.to(torch.float64).mean(1).cpu()
            pairs = torch.arange(t % 2, k - 1, 2)
            if pairs.numel():
                lo, hi = pairs, pairs + 1
                log_a = (b[lo] - b[hi])[:, None] * (lp[hi] - lp[lo])  # (P, C)
                sw = _mh_accept(log_a, generator)
                xl, xh, ll, lh = x[lo], x[hi], lp[lo], lp[hi]
                swap = sw[..., None]
                x[lo], x[hi] = torch.where(swap, xh, xl), torch.where(swap, xl, xh)
                lp[lo], lp[hi] = torch.where(sw, lh, ll), torch.where(sw, ll, lh)
                swapped[lo] += sw.to(torch.float64).mean(1).cpu()
                tried[lo] += 1
            if t >= burn_in and (t - burn_in) % thin == 0:
                kept.append(x.clone())
    hot = torch.stack(kept)  # (T, K, C, D)
    return TemperingResult(hot[:, 0], hot, acc / steps, swapped / tried.clamp(min=1))


# --------------------------------------------------------------------------- diagnostics


def _autocov(x: Tensor) -> Tensor:
    """Biased autocovariance of each chain by FFT: ``(T, C, D) -> (T, C, D)``."""
    t = x.shape[0]
    xc = x - x.mean(0, keepdim=True)
    n_fft = 1 << (2 * t - 1).bit_length()
    f = torch.fft.rfft(xc, n=n_fft, dim=0)
    return torch.fft.irfft(f * f.conj(), n=n_fft, dim=0)[:t] / t


def autocorrelation(x: Tensor) -> Tensor:
    r"""The sample autocorrelation :math:`\hat\rho_k` of each chain, for every lag :math:`k`.

    :math:`\hat\rho_k = \hat\gamma_k / \hat\gamma_0` with the biased autocovariance
    :math:`\hat\gamma_k = \frac1T \sum_{t=1}^{T-k} (x_t - \bar x)(x_{t+k} - \bar x)`, computed
    by FFT in float64 (eq. ``eq-samp-acf``).

    Args:
        x: draws, shape ``(T,)``, ``(T, C)`` (C chains) or ``(T, C, D)``.

    Returns:
        :math:`\hat\rho_k`, ``k = 0, ..., T-1``, in the shape of ``x`` (float64); a constant
        chain gives ``nan``.
    """
    xs, _ = _draws(x)
    g = _autocov(xs)
    return (g / g[:1]).reshape(x.shape)


def _var_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """Within-chain variance W and the pooled estimate var+ of eq-samp-rhat, each ``(D,)``."""
    t = x.shape[0]
    w = x.var(0, unbiased=True).mean(0)  # (D,)
    b_over_t = x.mean(0).var(0, unbiased=True) if x.shape[1] > 1 else torch.zeros_like(w)
    return w, (t - 1) / t * w + b_over_t


def ess(x: Tensor) -> Tensor:
    r"""The effective sample size of MCMC draws, pooled over chains, eq. ``eq-samp-ess``.

    :math:`\mathrm{ESS} = CT / \hat\tau` with the integrated autocorrelation time
    :math:`\hat\tau = 1 + 2\sum_{k\ge1}\hat\rho_k`. The multi-chain autocorrelation
    :math:`\hat\rho_k = 1 - (W - \overline{\gamma}_k) / \widehat{\mathrm{var}}^+` combines
    the chains' mean autocovariance :math:`\overline{\gamma}_k` with the variances of eq.
    ``eq-samp-rhat``, so chains that disagree lower the ESS; the sum is truncated by
    Geyer's initial monotone sequence (sums of pairs :math:`\hat\rho_{2m} +
    \hat\rho_{2m+1}` kept while positive, made non-increasing). This is the estimator of
    :cite:t:`vehtari2021rank` without rank normalisation.

    Args:
        x: draws, shape ``(T,)``, ``(T, C)`` or ``(T, C, D)``, with ``T >= 4``.

    Returns:
        The effective sample size in float64, a 0-dim tensor, or one per coordinate
        ``(D,)`` for input ``(T, C, D)``.
    """
    xs, has_d = _draws(x)
    t, c, _ = xs.shape
    if t < 4:
        raise ValueError(f"ess needs at least 4 draws per chain, got T = {t}")
    gamma = _autocov(xs).mean(1)  # (T, D), the chains' mean autocovariance
    w, var_plus = _var_parts(xs)
    rho = 1 - (w - gamma) / var_plus  # (T, D)
    rho[0] = 1.0
    n_pairs = t // 2
    pairs = rho[: 2 * n_pairs].reshape(n_pairs, 2, -1).sum(1)  # (T//2, D): P_m
    positive = torch.cumprod((pairs > 0).to(torch.float64), 0)  # 1 until the first P_m <= 0
    monotone = torch.cummin(torch.where(positive > 0, pairs, torch.zeros_like(pairs)), 0).values
    tau = -1 + 2 * (monotone * positive).sum(0)
    tau = tau.clamp(min=1.0 / math.log10(max(c * t, 10)))  # guard antithetic chains
    out = c * t / tau
    return out if has_d else out[0]


def rhat(x: Tensor) -> Tensor:
    r"""Split-:math:`\hat R`, eq. ``eq-samp-rhat``: between- against within-chain variance.

    Each chain is split into halves (so a drifting chain disagrees with itself), and
    :math:`\hat R = \sqrt{\widehat{\mathrm{var}}^+ / W}` with :math:`W` the mean
    within-half variance and
    :math:`\widehat{\mathrm{var}}^+ = \frac{n-1}{n} W + \frac{B}{n}`, :math:`B/n` the variance
    of the half means. Values near 1 are necessary for convergence, not sufficient
    :cite:p:`gelman1992inference,vehtari2021rank`.

    Args:
        x: draws, shape ``(T,)``, ``(T, C)`` or ``(T, C, D)``, with ``T >= 4``.

    Returns:
        Split-:math:`\hat R` in float64, a 0-dim tensor, or one per coordinate ``(D,)`` for
        input ``(T, C, D)``.
    """
    xs, has_d = _draws(x)
    t = xs.shape[0]
    if t < 4:
        raise ValueError(f"rhat needs at least 4 draws per chain, got T = {t}")
    half = t // 2
    split = torch.cat([xs[:half], xs[t - half:]], dim=1)  # (T/2, 2C, D)
    w, var_plus = _var_parts(split)
    out = (var_plus / w).sqrt()
    return out if has_d else out[0]


# --------------------------------------------------------------------------- tuning


def tune_step_size(
    sampler: Callable[..., Chains],
    log_prob: LogProb,
    x0: Tensor,
    target_accept: float,
    *,
    step_size: float = 0.1,
    rounds: int = 40,
    steps_per_round: int = 5,
    generator: torch.Generator | None = None,
    **kwargs: object,
) -> tuple[float, Tensor]:
    r"""Adapt a sampler's step size during a warm-up until its acceptance rate hits a target.

    After each round of ``steps_per_round`` steps, the step size moves on a log scale by
    :math:`\log h \leftarrow \log h + (\bar a - a^\star) / \sqrt{r}`, where :math:`\bar a` is
    the round's acceptance rate averaged over all chains, :math:`a^\star` the target and
    :math:`r` the round (a Robbins-Monro recursion; the shrinking gain lets :math:`h`
    settle). The warm-up doubles as burn-in; the step size is then *fixed*, because a
    step size that keeps adapting to the chain's own history can break invariance.

    Args:
        sampler: :func:`random_walk_mh`, :func:`mala` or :func:`hmc` (anything with the
            signature ``sampler(log_prob, x0, steps, step_size, *, generator, **kwargs)``
            returning :class:`Chains`).
        log_prob: :math:`\log\tilde p`, ``(C, D) -> (C,)``.
        x0: initial states, shape ``(C, D)``.
        target_accept: :math:`a^\star \in (0, 1)`.
        step_size: initial :math:`h`.
        rounds: number of adaptation rounds.
        steps_per_round: sampler steps per round.
        generator: source of randomness.
        **kwargs: passed on to the sampler (e.g. ``n_leapfrog``).

    Returns:
        ``(h, x)``: the tuned step size and the chains' states after the warm-up ``(C, D)``.
    """
    if not callable(sampler):
        raise TypeError(f"sampler must be a callable, got {describe(sampler)}")
    target_accept = check_positive("target_accept", target_accept)
    if target_accept >= 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    log_h = math.log(check_positive("step_size", step_size))
    rounds = check_int("rounds", rounds)
    steps_per_round = check_int("steps_per_round", steps_per_round)
    x = _check_states(x0)
    for r in range(1, rounds + 1):
        out = sampler(log_prob, x, steps_per_round, math.exp(log_h), generator=generator,
                      **kwargs)
        x = out.samples[-1]
        log_h += (float(out.acceptance.mean()) - target_accept) / math.sqrt(r)
    return math.exp(log_h), x
