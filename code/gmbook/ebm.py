r"""Energy-based models: the chapter *Energy-based models* (``book/foundations/ebm.md``).

An energy-based model (EBM) is a density :math:`p_\theta(x) = e^{-E_\theta(x)} / Z_\theta` given
by a network :math:`E_\theta` (eq. ``eq-ebm-density``). Its log-likelihood gradient is a
*positive phase* on the data minus a *negative phase* under the model
(:prf:ref:`thm-ebm-gradient`, eq. ``eq-ebm-grad``), so training needs samples of the model
itself, drawn here by Langevin dynamics (eq. ``eq-ebm-langevin``):

- :class:`EBM`: the model, with the three ways of producing negatives the chapter compares
  (contrastive divergence from the data, persistent chains in a replay buffer, short-run
  chains from noise), an optional penalty on the energies' size, and
  :meth:`EBM.grid_density`, the exact normalisation in two dimensions by a grid
  (:class:`gmbook.problem.GridDensity`);
- :func:`langevin`: Langevin dynamics on an energy, with a noise scale (eq.
  ``eq-ebm-langevin``);
- :func:`contrastive_loss`: the surrogate whose gradient is eq. ``eq-ebm-grad``;
- :func:`nce_loss` and :class:`NCE`: noise-contrastive estimation
  :cite:p:`gutmann2010noise`, logistic regression of data against a known noise density,
  which learns the energy and :math:`\log Z_\theta` without sampling the model (eq.
  ``eq-ebm-nce``, :prf:ref:`thm-ebm-nce`);
- :func:`ais`: annealed importance sampling :cite:p:`neal2001annealed`, an unbiased
  estimate of :math:`Z_\theta` from MALA transitions (:func:`gmbook.mcmc.mala`) along a
  geometric path (eq. ``eq-ebm-ais``, :prf:ref:`prop-ebm-ais`).

Example:
    >>> ebm = EBM(MLP(2, 1, hidden=32, depth=2), negatives="short-run", k=5)
    >>> ebm.loss(torch.randn(64, 2)).shape
    torch.Size([])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gmbook._checks import (check_generator, check_int, check_nonnegative, check_positive,
                            describe)
from gmbook._random import rand, randn
from gmbook.mcmc import _langevin_move, langevin_step, log_prob_and_grad, mala
from gmbook.nets import MLP
from gmbook.problem import GridDensity

__all__ = ["AISResult", "EBM", "EnergyMLP", "NCE", "NEGATIVES", "ais", "contrastive_loss", "energy_mlp",
           "langevin", "nce_loss"]

#: The ways :class:`EBM` can draw its negative samples.
NEGATIVES = ("cd", "pcd", "short-run")

Energy = Callable[[Tensor], Tensor]


def _check_points(x: object, name: str = "x", like: Tensor | None = None) -> Tensor:
    """``x`` as a floating-point batch of points ``(B, D)``, ``B >= 1``; with ``like`` (an
    already checked batch, e.g. the data beside negatives or noise), of the same ``D``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor of shape (B, D), got {describe(x)}")
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (B, D) with B >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if like is not None and x.shape[1] != like.shape[1]:
        raise ValueError(f"{name} must have the dimension D = {like.shape[1]} of the points "
                         f"beside it, got shape {tuple(x.shape)}")
    return x


def _energy_grad(energy: Energy, x: Tensor) -> Tensor:
    """:math:`\\nabla_x E(x)` for points ``(B, D)``, without a graph to the parameters."""
    return -log_prob_and_grad(lambda z: -energy(z), x)[1]


def _noise_schedule(noise: object, steps: int) -> list[float]:
    if isinstance(noise, (int, float)) and not isinstance(noise, bool):
        return [check_nonnegative("noise", noise)] * steps
    if isinstance(noise, (list, tuple, Tensor)) and len(noise) == steps:
        return [check_nonnegative("noise", float(v)) for v in noise]
    raise ValueError(f"noise must be a number >= 0 or a sequence of {steps} of them (one per "
                     f"step), got {describe(noise)}")


def langevin(
    energy: Energy,
    x0: Tensor,
    steps: int,
    step_size: float,
    *,
    noise: float | Sequence[float] = 1.0,
    grad: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Langevin dynamics on an energy, eq. ``eq-ebm-langevin``.

    :math:`x \leftarrow x - h \nabla E(x) + \sigma \sqrt{2h}\,\xi` with
    :math:`\xi \sim \mathcal N(0, I)`, ``steps`` times. With ``noise`` :math:`\sigma = 1` this
    is the unadjusted Langevin algorithm (:func:`gmbook.mcmc.ula`) for
    :math:`p \propto e^{-E}`; with a constant :math:`\sigma > 0` it is ULA with step
    :math:`h\sigma^2` for the tempered density :math:`e^{-E/\sigma^2}` (colder for
    :math:`\sigma < 1`, flatter for :math:`\sigma > 1`), and with :math:`\sigma = 0`
    gradient descent on :math:`E`. A decreasing sequence of noise scales anneals from a flat
    density down to :math:`p`.

    Args:
        energy: :math:`E`, ``(B, D) -> (B,)``, differentiable in its input.
        x0: starting points, shape ``(B, D)``.
        steps: number of steps (0 returns ``x0``).
        step_size: :math:`h > 0`.
        noise: :math:`\sigma \ge 0`, one number or one per step.
        grad: :math:`\nabla_x E`, ``(B, D) -> (B, D)``, where it is cheaper than autograd
            through ``energy`` (:meth:`EBM.energy_grad`); ``None`` differentiates ``energy``.
        generator: source of randomness.

    Returns:
        The final points, shape ``(B, D)``, detached.
    """
    if not callable(energy):
        raise TypeError(f"energy must be a callable (B, D) -> (B,), got {describe(energy)}")
    x = _check_points(x0, "x0").detach()
    steps = check_int("steps", steps, minimum=0)
    h = check_positive("step_size", step_size)
    sigmas = _noise_schedule(noise, steps)
    generator = check_generator(generator)
    if grad is not None and not callable(grad):
        raise TypeError(f"grad must be None or a callable (B, D) -> (B, D), got {describe(grad)}")
    for i, sigma in enumerate(sigmas):
        g = _energy_grad(energy, x) if grad is None else grad(x)
        if i == 0:  # the first step checks what `grad` returns; h and sigma are checked
            x = langevin_step(x, -g, h, noise_scale=sigma, generator=generator)
        else:
            x = _langevin_move(x, -g, h, sigma, generator)
    return x


def contrastive_loss(
    energy: Energy, x_pos: Tensor, x_neg: Tensor, *, reg: float = 0.0
) -> Tensor:
    r"""The surrogate loss whose parameter gradient is eq. ``eq-ebm-grad``.

    .. math::

        \mathcal L = \frac1B \sum_i E_\theta(x_i^+) - \frac1{B'} \sum_j E_\theta(x_j^-)
        + \alpha \Big(\frac1B \sum_i E_\theta(x_i^+)^2 + \frac1{B'} \sum_j
        E_\theta(x_j^-)^2\Big),

    with the negatives :math:`x^-` treated as constants. Without the penalty
    (:math:`\alpha = 0`) and with negatives drawn from :math:`p_\theta`, its gradient is an
    unbiased estimate of the gradient of the average negative log-likelihood
    (:prf:ref:`thm-ebm-gradient`). The penalty keeps the energies near zero
    :cite:p:`du2019implicit`; it changes the objective, not just its variance.

    Args:
        energy: :math:`E_\theta`, ``(B, D) -> (B,)``.
        x_pos: data, shape ``(B, D)``.
        x_neg: negative samples, shape ``(B', D)``.
        reg: :math:`\alpha \ge 0`.

    Returns:
        The scalar loss.
    """
    x_pos, x_neg = _check_points(x_pos, "x_pos"), _check_points(x_neg, "x_neg", like=x_pos)
    alpha = check_nonnegative("reg", reg)
    b = x_pos.shape[0]
    e = energy(torch.cat([x_pos, x_neg.detach()]))     # one pass for both: (B + B',)
    e_pos, e_neg = e[:b], e[b:]
    loss = e_pos.mean() - e_neg.mean()
    if alpha > 0:
        loss = loss + alpha * ((e_pos**2).mean() + (e_neg**2).mean())
    return loss


class _LogDensity(nn.Module):
    """``-E(x)`` as a module, for :class:`gmbook.problem.GridDensity`."""

    def __init__(self, ebm: EBM) -> None:
        super().__init__()
        self.ebm = ebm

    def forward(self, x: Tensor) -> Tensor:
        return -self.ebm.energy(x)


class EBM(nn.Module):
    r"""An energy-based model :math:`p_\theta(x) = e^{-E_\theta(x)} / Z_\theta`, eq. ``eq-ebm-density``.

    :meth:`loss` is the contrastive loss (:func:`contrastive_loss`) of a batch of data
    against negatives drawn by :func:`langevin` on the current energy, started

    - ``"cd"``: at the data batch itself (contrastive divergence, CD-:math:`k`
      :cite:p:`hinton2002training`);
    - ``"pcd"``: at states kept from earlier steps in a replay buffer, a fraction ``reinit``
      of them restarted from uniform noise on the box ``init_lims`` (persistent contrastive
      divergence with a buffer :cite:p:`du2019implicit`);
    - ``"short-run"``: at fresh uniform noise every step (short-run MCMC).

    The negatives' chains run ``k`` steps of size ``step_size`` with noise scale ``noise``
    per training step. For ``"pcd"`` a negative is therefore the end of a chain that has run
    ``k`` steps at each of its earlier visits too: the buffer ``buffer_steps`` counts, for
    every state, the Langevin steps run since it was last started from noise (about
    ``k / reinit`` on average once training has run long enough).

    Args:
        net: the energy network, ``(B, D) -> (B, 1)`` or ``(B,)``.
        negatives: one of ``NEGATIVES``: ``"cd"``, ``"pcd"`` or ``"short-run"``.
        k: Langevin steps per training step.
        step_size: Langevin step :math:`h`.
        noise: Langevin noise scale :math:`\sigma` (1 samples :math:`p_\theta` itself).
        reg: weight :math:`\alpha` of the energy penalty of :func:`contrastive_loss`.
        buffer_size: number of states in the replay buffer (``"pcd"`` only).
        reinit: fraction of buffer states restarted from noise at each step.
        init_lims: the box ``(lo, hi)``, in every coordinate, of the noise that starts chains.
        base_std: if given, :math:`s_0`, and the energy is the network plus the confining
            term :math:`\lVert x\rVert^2 / (2 s_0^2)` (eq. ``eq-ebm-base``), which makes
            :math:`Z_\theta` finite for any network whose output grows at most linearly;
            ``None`` uses the network alone.
        dim: data dimension (sizes the buffer).
        generator: randomness of the negatives and of :meth:`sample` by default; ``None``
            uses the global RNG.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        negatives: str = "pcd",
        k: int = 20,
        step_size: float = 0.01,
        noise: float = 1.0,
        reg: float = 0.0,
        buffer_size: int = 8192,
        reinit: float = 0.05,
        init_lims: tuple[float, float] = (-3.0, 3.0),
        base_std: float | None = None,
        dim: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {describe(net)}")
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
        self.net, self.negatives = net, negatives
        self.k = check_int("k", k)
        self.step_size = check_positive("step_size", step_size)
        self.noise = check_nonnegative("noise", noise)
        self.reg = check_nonnegative("reg", reg)
        self.reinit = check_nonnegative("reinit", reinit)
        if self.reinit > 1:
            raise ValueError(f"reinit must be in [0, 1], got {reinit}")
        lo, hi = (float(v) for v in init_lims)
        if not hi > lo:
            raise ValueError(f"init_lims must be (lo, hi) with hi > lo, got {init_lims}")
        self.init_lims = (lo, hi)
        self.base_std = None if base_std is None else check_positive("base_std", base_std)
        self.dim = check_int("dim", dim)
        self.generator = check_generator(generator)
        size = check_int("buffer_size", buffer_size)
        self.register_buffer("buffer", self._noise(size))
        self.register_buffer("buffer_steps", torch.zeros(size, dtype=torch.long))

    def _noise(
        self, n: int, like: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` uniform points on the box ``init_lims``, shape ``(n, dim)``, drawn from
        ``generator`` (default: the model's own), on the device of ``like``."""
        device = None if like is None else like.device
        lo, hi = self.init_lims
        u = rand((n, self.dim), device=device, generator=generator or self.generator)
        return lo + (hi - lo) * u

    def energy(self, x: Tensor) -> Tensor:
        r""":math:`E_\theta(x)`, shape ``(B,)`` for ``x`` of shape ``(B, D)`` (eq. ``eq-ebm-base``)."""
        x = _check_points(x)
        e = self.net(x).reshape(x.shape[0])
        if self.base_std is not None:
            e = e + 0.5 * (x**2).sum(1) / self.base_std**2
        return e

    def energy_grad(self, x: Tensor) -> Tensor:
        r""":math:`\nabla_x E_\theta(x)`, shape ``(B, D)``, detached (for Langevin chains).

        The base term's part is :math:`x / s_0^2` in closed form (eq. ``eq-ebm-base``); the
        network's is :meth:`EnergyMLP.input_grad` for an :class:`EnergyMLP` and autograd for
        any other network. The same gradient as autograd through :meth:`energy`, at half the
        cost for the chapter's network.
        """
        x = _check_points(x).detach()
        if isinstance(self.net, EnergyMLP):
            g = self.net.input_grad(x)
        else:
            with torch.enable_grad():
                z = x.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(self.net(z).sum(), z)
        if self.base_std is not None:
            g = g + x / self.base_std**2
        return g

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        r""":math:`-E_\theta(x) = \log p_\theta(x) + \log Z_\theta`, shape ``(B,)``."""
        return -self.energy(x)

    def _chains(self, x: Tensor, steps: int, generator: torch.Generator | None) -> Tensor:
        return langevin(self.energy, x, steps, self.step_size, noise=self.noise,
                        grad=self.energy_grad, generator=generator)

    def sample_negatives(self, x_pos: Tensor) -> Tensor:
        r"""Negatives for the data batch ``x_pos`` ``(B, D)``: ``(B, D)``, detached.

        These are the samples the model is trained against. For ``"pcd"`` the buffer (and
        ``buffer_steps``) is updated in place with the new states.
        """
        x_pos = _check_points(x_pos, "x_pos")
        b = x_pos.shape[0]
        if self.negatives == "cd":
            start = x_pos.detach()
        elif self.negatives == "short-run":
            start = self._noise(b, x_pos)
        else:
            size = self.buffer.shape[0]
            g = self.generator                  # indices drawn on its device, then moved
            idx = torch.randint(0, size, (b,), generator=g,
                                device=self.buffer.device if g is None else g.device)
            idx = idx.to(self.buffer.device)
            start = self.buffer[idx].clone()
            fresh = rand((b,), device=start.device, generator=g) < self.reinit
            start[fresh] = self._noise(int(fresh.sum()), start)
            ran = torch.where(fresh, 0, self.buffer_steps[idx])
        x_neg = self._chains(start.to(x_pos), self.k, self.generator)
        if self.negatives == "pcd":
            self.buffer[idx] = x_neg.to(self.buffer)
            self.buffer_steps[idx] = ran + self.k
        return x_neg

    def loss(self, x: Tensor) -> Tensor:
        """The contrastive loss of the data batch ``x`` ``(B, D)`` against fresh negatives."""
        return contrastive_loss(self.energy, x, self.sample_negatives(x), reg=self.reg)

    def sample(
        self,
        n: int,
        *,
        steps: int | None = None,
        noise: float | Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Draw ``n`` points by Langevin dynamics from uniform noise on ``init_lims``.

        With the default ``steps = k`` these are the negatives of ``"short-run"`` training.
        They are *not* what a ``"pcd"`` model was trained against (its negatives come from
        the buffer, chains of about ``k / reinit`` steps) nor a ``"cd"`` model (its chains
        start at the data); :meth:`sample_negatives` gives those.

        Args:
            n: number of points.
            steps: chain length (default ``k``, the per-update chain length of training).
            noise: noise scale, one number or one per step (default: the model's ``noise``).
            generator: source of randomness (default: the model's own).

        Returns:
            Points of shape ``(n, D)``.
        """
        n = check_int("n", n)
        steps = self.k if steps is None else check_int("steps", steps)
        generator = self.generator if generator is None else check_generator(generator)
        x0 = self._noise(n, next(self.parameters()), generator)
        return langevin(self.energy, x0, steps, self.step_size,
                        noise=self.noise if noise is None else noise, grad=self.energy_grad,
                        generator=generator)

    def grid_density(self, lims: tuple[float, float] = (-3.5, 3.5), n: int = 256) -> GridDensity:
        r"""The EBM normalised on a grid: a :class:`gmbook.problem.GridDensity` of :math:`-E`.

        Only for ``dim == 2``. Its ``log_prob`` is the exact log-density of the model
        restricted to the box ``lims`` (up to the grid's quadrature error), its ``sample``
        draws exactly from the grid distribution.
        """
        if self.dim != 2:
            raise ValueError(f"grid_density needs dim == 2, got dim = {self.dim}")
        device = next(self.parameters()).device
        return GridDensity(_LogDensity(self), lims=lims, n=n).to(device)


class EnergyMLP(MLP):
    r"""The chapter's energy network: a :class:`gmbook.nets.MLP` ``(B, D) -> (B, 1)`` with SiLU
    activations and no time input, which also gives its input gradient in closed form.

    Langevin chains call :math:`\nabla_x f_\theta` thousands of times on a few hundred points,
    where autograd's bookkeeping costs more than the arithmetic. :meth:`input_grad` writes
    the chain rule out: with :math:`h_l = W_l a_{l-1} + b_l`, :math:`a_l = \mathrm{silu}(h_l)`
    (:math:`a_0 = x`) and output :math:`w^\top a_L + c`,

    .. math::

        \nabla_x f = W_1^\top \big(\mathrm{silu}'(h_1) \odot W_2^\top \big(\cdots
        \mathrm{silu}'(h_L) \odot w\big)\big), \qquad
        \mathrm{silu}'(h) = s(h) + \mathrm{silu}(h)\,(1 - s(h)),

    with :math:`s` the logistic function.

    Args:
        dim: input dimension :math:`D`.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
    """

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 2) -> None:
        super().__init__(dim, 1, hidden=hidden, depth=depth, activation=nn.SiLU)

    def input_grad(self, x: Tensor) -> Tensor:
        r""":math:`\nabla_x f_\theta(x)`, shape ``(B, D)`` for ``x`` of shape ``(B, D)``; no graph."""
        x = _check_points(x)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (B, {self.in_dim}), got {tuple(x.shape)}")
        with torch.no_grad():
            a, weights, slopes = x, [], []
            for layer in self.layers:
                w = layer.weight                                     # (hidden, fan_in)
                h = nn.functional.linear(a, w, layer.bias)           # (B, hidden)
                s = torch.sigmoid(h)
                a = h * s                                            # silu(h)
                slopes.append(torch.addcmul(s, a, 1 - s))            # silu'(h)
                weights.append(w)
            g = self.out.weight                                      # (1, hidden)
            for w, slope in zip(reversed(weights), reversed(slopes)):
                g = (g * slope) @ w                                  # (B, fan_in)
        return g


def energy_mlp(
    hidden: int = 64, depth: int = 2, dim: int = 2, *, seed: int | None = None
) -> EnergyMLP:
    """A small energy network ``(B, dim) -> (B, 1)`` with SiLU activations (:class:`EnergyMLP`).

    Args:
        hidden, depth: width and number of hidden layers.
        dim: input dimension.
        seed: if given, the initial weights are drawn from a global RNG forked and seeded
            with it (the caller's random state is left exactly as it was), so they do not
            depend on what ran before; ``None`` draws them from the global RNG.
    """
    if seed is None:
        return EnergyMLP(dim, hidden=hidden, depth=depth)
    seed = check_int("seed", seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EnergyMLP(dim, hidden=hidden, depth=depth)


# --------------------------------------------------------------------------- NCE


def nce_loss(
    log_model: Callable[[Tensor], Tensor],
    x_data: Tensor,
    x_noise: Tensor,
    noise_log_prob: Callable[[Tensor], Tensor],
) -> Tensor:
    r"""The noise-contrastive estimation loss of :cite:t:`gutmann2010noise`, eq. ``eq-ebm-nce``.

    With :math:`\nu = T_n / T_d` noise points per data point, the log-odds that a point
    :math:`u` is data rather than noise are
    :math:`G(u) = \log p_m(u) - \log q(u) - \log\nu`, and the loss is the logistic
    regression loss

    .. math::

        \mathcal J = -\frac1{T_d} \sum_t \log \sigma\big(G(x_t)\big)
        - \frac{\nu}{T_n} \sum_s \log \sigma\big(-G(y_s)\big),

    minimised over the *unnormalised* model :math:`\log p_m = -E_\theta - c`, the constant
    :math:`c` being a parameter like the others. Its population minimiser is
    :math:`p_m = p_{\text{data}}`, normalised (:prf:ref:`thm-ebm-nce`).

    Args:
        log_model: :math:`\log p_m`, ``(B, D) -> (B,)``, differentiable in its parameters.
        x_data: data, shape ``(T_d, D)``.
        x_noise: draws of the noise :math:`q`, shape ``(T_n, D)``.
        noise_log_prob: the *normalised* :math:`\log q`, ``(B, D) -> (B,)``.

    Returns:
        The scalar loss.
    """
    x_data = _check_points(x_data, "x_data")
    x_noise = _check_points(x_noise, "x_noise", like=x_data)
    for name, f in (("log_model", log_model), ("noise_log_prob", noise_log_prob)):
        if not callable(f):
            raise TypeError(f"{name} must be a callable (B, D) -> (B,), got {describe(f)}")
    log_nu = math.log(x_noise.shape[0] / x_data.shape[0])

    def logit(u: Tensor) -> Tensor:
        g = log_model(u) - noise_log_prob(u) - log_nu
        if not isinstance(g, Tensor) or g.shape != u.shape[:1]:
            raise ValueError(f"log_model and noise_log_prob must map (B, D) to (B,), got "
                             f"{describe(g)}")
        return g

    nu = math.exp(log_nu)
    return (-nn.functional.logsigmoid(logit(x_data)).mean()
            - nu * nn.functional.logsigmoid(-logit(x_noise)).mean())


class NCE(nn.Module):
    r"""An :class:`EBM` trained by noise-contrastive estimation :cite:p:`gutmann2010noise`.

    The model is :math:`\log p_m(x) = -E_\theta(x) - c` with the energy of ``ebm`` and a
    learned scalar :math:`c` (``log_z``), which estimates :math:`\log Z_\theta`. :meth:`loss`
    draws ``nu`` noise points per data point from the noise
    :math:`q = \mathcal N(0, s_n^2 I)` and returns :func:`nce_loss`. No Markov chain is
    run: sampling the model is needed only to use it, not to train it.

    Args:
        ebm: the energy model (its ``negatives`` settings are unused).
        noise_std: :math:`s_n > 0`, the scale of the Gaussian noise.
        nu: noise points per data point, :math:`\nu > 0`.
        generator: randomness of the noise draws; ``None`` uses the global RNG.
    """

    def __init__(
        self,
        ebm: EBM,
        *,
        noise_std: float = 1.0,
        nu: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(ebm, EBM):
            raise TypeError(f"ebm must be an EBM, got {describe(ebm)}")
        self.ebm = ebm
        self.noise_std = check_positive("noise_std", noise_std)
        self.nu = check_positive("nu", nu)
        self.generator = check_generator(generator)
        self.log_z = nn.Parameter(torch.zeros(()))

    def noise_log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log q(x)` of the noise :math:`\mathcal N(0, s_n^2 I)`, shape ``(B,)``."""
        x = _check_points(x)
        d, s = x.shape[1], self.noise_std
        return -0.5 * (x**2).sum(1) / s**2 - d * math.log(s) - 0.5 * d * math.log(2 * math.pi)

    def log_prob(self, x: Tensor) -> Tensor:
        r"""The self-normalised model :math:`-E_\theta(x) - c`, shape ``(B,)``."""
        return -self.ebm.energy(x) - self.log_z

    def loss(self, x: Tensor) -> Tensor:
        """:func:`nce_loss` of the data batch ``x`` ``(B, D)`` against ``nu * B`` fresh noise
        draws."""
        x = _check_points(x)
        n_noise = max(1, round(self.nu * x.shape[0]))
        y = self.noise_std * randn((n_noise, x.shape[1]), like=x, generator=self.generator)
        return nce_loss(self.log_prob, x, y, self.noise_log_prob)


# --------------------------------------------------------------------------- AIS


@dataclass
class AISResult:
    r"""The output of :func:`ais`.

    Attributes:
        log_weights: :math:`\log w_i` of the ``n`` runs, shape ``(n,)``; :math:`w_i` is an
            unbiased estimate of :math:`Z / Z_0` (:prf:ref:`prop-ebm-ais`).
        samples: the runs' final states, shape ``(n, D)`` (weighted samples of the target).
        log_z: :math:`\log \hat Z = \log \frac1n \sum_i w_i` (:math:`\hat Z` is unbiased,
            :math:`\log\hat Z` is biased downwards by Jensen's inequality).
        log_z_se: its standard error by the delta method,
            :math:`\mathrm{sd}(w) / (\sqrt n\, \bar w)`.
        acceptance: the MALA acceptance rate averaged over runs and temperatures.
    """

    log_weights: Tensor
    samples: Tensor
    log_z: float
    log_z_se: float
    acceptance: float


def ais(
    log_prob: Callable[[Tensor], Tensor],
    x0: Tensor,
    log_prob0: Callable[[Tensor], Tensor],
    betas: Sequence[float] | Tensor,
    step_size: float,
    *,
    mcmc_steps: int = 1,
    generator: torch.Generator | None = None,
) -> AISResult:
    r"""Annealed importance sampling :cite:p:`neal2001annealed`, eq. ``eq-ebm-ais``.

    Runs ``n`` chains from draws ``x0`` of a *normalised* density :math:`p_0` through the
    geometric path :math:`f_\beta = p_0^{1-\beta} f^\beta`, :math:`0 = \beta_0 < \dots <
    \beta_T = 1`. At each :math:`t = 1, \dots, T` the log-weight grows by
    :math:`(\beta_t - \beta_{t-1})\,(\log f(x) - \log p_0(x))` at the current state, and
    then ``mcmc_steps`` MALA steps (:func:`gmbook.mcmc.mala`), which leave
    :math:`f_{\beta_t}` exactly invariant, move the state. The weights' mean is an unbiased
    estimate of :math:`Z = \int f` (:prf:ref:`prop-ebm-ais`); ULA in place of MALA would
    bias it.

    Args:
        log_prob: :math:`\log f`, the unnormalised target, ``(C, D) -> (C,)``.
        x0: draws of :math:`p_0`, shape ``(n, D)``.
        log_prob0: the normalised :math:`\log p_0`, ``(C, D) -> (C,)``.
        betas: the schedule :math:`\beta_0 = 0 < \dots < \beta_T = 1`, at least two values.
        step_size: the MALA step :math:`h > 0`.
        mcmc_steps: MALA steps per temperature.
        generator: source of randomness.

    Returns:
        :class:`AISResult`.
    """
    for name, f in (("log_prob", log_prob), ("log_prob0", log_prob0)):
        if not callable(f):
            raise TypeError(f"{name} must be a callable (C, D) -> (C,), got {describe(f)}")
    x = _check_points(x0, "x0").detach()
    b = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
    if b.numel() < 2 or b[0] != 0 or b[-1] != 1 or not bool((b[1:] > b[:-1]).all()):
        raise ValueError(f"betas must increase strictly from 0 to 1 (at least two values), got "
                         f"{describe(betas)}")
    h = check_positive("step_size", step_size)
    mcmc_steps = check_int("mcmc_steps", mcmc_steps)
    generator = check_generator(generator)
    log_w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    accepted = 0.0
    for t in range(1, b.numel()):
        beta, dbeta = float(b[t]), float(b[t] - b[t - 1])
        with torch.no_grad():
            log_w += dbeta * (log_prob(x) - log_prob0(x)).to(torch.float64)

        def log_f(z: Tensor, beta: float = beta) -> Tensor:
            return (1 - beta) * log_prob0(z) + beta * log_prob(z)

        chains = mala(log_f, x, mcmc_steps, h, generator=generator)
        x = chains.samples[-1]
        accepted += float(chains.acceptance.mean())
    lw = log_w - log_w.max()
    w = lw.exp()
    n = x.shape[0]
    log_z = float(torch.logsumexp(log_w, 0)) - math.log(n)
    se = float(w.std() / (math.sqrt(n) * w.mean())) if n > 1 else math.nan
    return AISResult(log_w, x, log_z, se, accepted / (b.numel() - 1))
