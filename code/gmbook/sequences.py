r"""Autoregressive models and sequences: chapter ``book/beyond/sequences.md``.

An autoregressive model factorises the law of a sequence by the chain rule,

.. math::

    p(x_{1:T}) = \prod_{t=1}^{T} p(x_t \mid x_{<t})
    \qquad \text{(eq. ``eq-seq-chain-rule``)},

and learns every conditional with one network that reads the prefix: here a small causal
transformer. This module holds, in the order of the chapter:

- **the data**: :class:`RegimeSwitching`, a hidden Markov chain over three regimes
  (trending, mean-reverting, spiking) with regime-specific conditionally linear-Gaussian
  mixture dynamics, whose exact likelihood (the forward algorithm, eq. ``eq-seq-forward``),
  exact regime posterior (forward-backward, eq. ``eq-seq-forward-backward``), exact
  dwell-time law (geometric, eq. ``eq-seq-dwell``) and floor in nats per step
  (eq. ``eq-seq-floor``) are known; :func:`dwell_times` measures dwell times of a regime
  path;
- **the network**: :class:`CausalTransformer`, pre-norm blocks of multi-head causal
  self-attention (eq. ``eq-seq-attention``) and an MLP, with learned or sinusoidal positions,
  over tokens or over continuous values;
- **heads**: a categorical head (a linear map to logits) inside :class:`TokenAR`, and
  :class:`MixtureDensityHead`, :math:`K` Gaussians per step (eq. ``eq-seq-mdn``), whose
  log-density and sampler are the densities chapter's
  :func:`gmbook.densities.mixture_log_prob` and :func:`gmbook.densities.mixture_sample`;
- **the models**: :class:`ContinuousAR` (transformer and mixture head) and :class:`TokenAR`
  (transformer and categorical head), both trained by teacher forcing (the loss is the
  negative log-likelihood of eq. ``eq-seq-chain-rule`` in nats per step) and sampled
  ancestrally;
- **tokenizers**: :class:`Binning` (uniform or quantile bins fitted on training data) with the
  density a token model implies for continuous values (eq. ``eq-seq-binned-density``) and
  :func:`binned_log_prob`, a token model's log-likelihood of real sequences through it;
  :func:`to_windows` / :func:`from_windows` and :func:`vq_encode` / :func:`vq_decode`, which
  turn a series into the tokens of a :class:`gmbook.vae.VQVAE` over windows, and
  :func:`codebook_usage`, measured over a whole epoch of tokens, and
  :func:`gmbook.vae.restart_dead_codes` against codebook collapse;
- **decoding**: :func:`decoding_log_probs` (temperature, top-k, top-p: eqs.
  ``eq-seq-temperature``, ``eq-seq-top-k``, ``eq-seq-top-p``), :func:`decoding_kl`, the KL
  of the transformed distribution to the model's (eq. ``eq-seq-decoding-kl``), and
  :func:`sample_categorical`.

References: Rabiner (1989), *A tutorial on hidden Markov models and selected applications in
speech recognition* (forward-backward); Hamilton (1989), *A new approach to the economic
analysis of nonstationary time series and the business cycle* (regime switching); Vaswani et
al. (2017), *Attention is all you need*; Radford et al. (2019), *Language models are
unsupervised multitask learners* (pre-norm GPT blocks); Bishop (1994), *Mixture density
networks*; Ansari et al. (2024), *Chronos* (binned tokens for time series); van den Oord et
al. (2017), *Neural discrete representation learning*; Fan, Lewis & Dauphin (2018),
*Hierarchical neural story generation* (top-k); Holtzman et al. (2020), *The curious case of
neural text degeneration* (top-p).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gmbook._checks import (check_bool, check_float_tensor, check_generator, check_int,
                            check_positive, check_real, describe)
from gmbook._random import rand, randn
from gmbook.densities import MixtureParams, mixture_log_prob, mixture_sample
from gmbook.metrics import Estimate
from gmbook.nets import SinusoidalEmbedding
from gmbook.vae import restart_dead_codes  # noqa: F401 (documented here, lives in vae)

__all__ = [
    "REGIMES",
    "Binning",
    "CausalTransformer",
    "CodebookUsage",
    "ContinuousAR",
    "KVCache",
    "MixtureDensityHead",
    "RegimeSwitching",
    "TokenAR",
    "binned_log_prob",
    "codebook_usage",
    "decoding_kl",
    "decoding_log_probs",
    "dwell_times",
    "from_windows",
    "sample_categorical",
    "to_windows",
    "vq_decode",
    "vq_encode",
]

REGIMES = ("trending", "mean-reverting", "spiking")
"""The names of the regimes of :class:`RegimeSwitching`, in the order of their labels."""

_LOG_2PI = math.log(2 * math.pi)
F64 = torch.float64


def _sequences(name: str, x: object) -> Tensor:
    """A floating-point batch of sequences ``(B, T)`` with ``B, T >= 1``."""
    x = check_float_tensor(name, x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, T) with B, T >= 1, got {tuple(x.shape)}")
    return x


def _tokens(name: str, x: object, vocab: int) -> Tensor:
    """An int64 batch of token sequences ``(B, T)`` with entries in ``[0, vocab)``."""
    if not isinstance(x, Tensor) or x.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor, got {describe(x)}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, T) with B, T >= 1, got {tuple(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab):
        raise ValueError(f"{name} must have entries in [0, {vocab}), got "
                         f"[{int(x.min())}, {int(x.max())}]")
    return x


def _probability_matrix(name: str, value: object, rows: int | None, cols: int) -> Tensor:
    """A float64 ``(rows, cols)`` matrix of probabilities whose rows sum to one."""
    try:
        m = torch.as_tensor(value, dtype=F64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a nested sequence of numbers, got "
                        f"{describe(value)}") from err
    if m.ndim != 2 or (rows is not None and m.shape[0] != rows) or m.shape[1] != cols:
        want = f"({rows if rows is not None else 'K'}, {cols})"
        raise ValueError(f"{name} must have shape {want}, got {tuple(m.shape)}")
    if not torch.isfinite(m).all() or (m < 0).any():
        raise ValueError(f"{name} must have finite nonnegative entries")
    if not torch.allclose(m.sum(1), torch.ones(m.shape[0], dtype=F64), atol=1e-9):
        raise ValueError(f"the rows of {name} must sum to 1, got sums {m.sum(1).tolist()}")
    return m


# --------------------------------------------------------------------------- the data


@dataclasses.dataclass(frozen=True, eq=False)
class RegimeSwitching:
    r"""A regime-switching process with an exact likelihood: a hidden Markov chain of regimes
    :math:`s_t \in \{0, \dots, K-1\}` and observations :math:`x_t \in \mathbb R` whose
    conditional law given the regime is a mixture of linear-Gaussian maps of the previous
    value (a Markov-switching autoregression, Hamilton, 1989):

    .. math::

        s_1 \sim \pi_0, \quad s_t \mid s_{t-1} \sim A_{s_{t-1}, \cdot}, \\
        p(x_t \mid s_t = k, x_{t-1}) = \sum_{c} w_{kc}\,
            \mathcal N\big(x_t;\ a_{kc}\, x_{t-1} + b_{kc},\ \sigma_{kc}^2\big),

    with the fixed start value :math:`x_0` (``start``, 0 by default) and :math:`\pi_0` the
    stationary law of :math:`A` unless ``initial`` is given. The defaults are the chapter's
    three regimes (:data:`REGIMES`): **trending** (a random walk with drift 0.2 and step
    noise 0.15), **mean-reverting** (an AR(1) towards 0 with coefficient 0.8 and noise 0.3),
    **spiking** (an AR(1) with coefficient 0.5 whose innovation is 0.15 with probability 0.8
    and 2.0, a spike, with probability 0.2). Trending and mean-reverting regimes last 20
    steps on average, spiking ones 1/0.12, about 8.

    Given the regime path the observations are a Markov chain, so the forward algorithm
    (eq. ``eq-seq-forward``) gives the exact :meth:`log_prob` of a sequence, the
    forward-backward algorithm the exact :meth:`posterior` of its regimes
    (eq. ``eq-seq-forward-backward``), :meth:`dwell_pmf` the law of the regimes' dwell times
    (eq. ``eq-seq-dwell``) and :meth:`floor` the best NLL per step any model can reach
    (eq. ``eq-seq-floor``).

    Args:
        transition: :math:`A`, a ``(K, K)`` row-stochastic matrix (nested sequences).
        weights, slopes, intercepts, stds: :math:`w, a, b, \sigma`, each ``(K, C)``; every
            row of ``weights`` sums to one (pad a regime with fewer components with weight 0).
        initial: :math:`\pi_0` (``(K,)``), or ``None`` for the stationary law of :math:`A`.
        start: :math:`x_0`.

    Example:
        >>> proc = RegimeSwitching()
        >>> x, s = proc.sample(4, 16, generator=torch.Generator().manual_seed(0))
        >>> x.shape, s.shape, s.dtype
        (torch.Size([4, 16]), torch.Size([4, 16]), torch.int64)
        >>> proc.log_prob(x).shape, proc.posterior(x).shape
        (torch.Size([4]), torch.Size([4, 16, 3]))
    """

    transition: Sequence = ((0.95, 0.03, 0.02), (0.03, 0.95, 0.02), (0.06, 0.06, 0.88))
    weights: Sequence = ((1.0, 0.0), (1.0, 0.0), (0.8, 0.2))
    slopes: Sequence = ((1.0, 1.0), (0.8, 0.8), (0.5, 0.5))
    intercepts: Sequence = ((0.2, 0.0), (0.0, 0.0), (0.0, 0.0))
    stds: Sequence = ((0.15, 1.0), (0.3, 1.0), (0.15, 2.0))
    initial: Sequence | None = None
    start: float = 0.0

    def __post_init__(self) -> None:
        a = torch.as_tensor(self.transition, dtype=F64) if not isinstance(
            self.transition, (str, bytes)) else None
        if a is None or a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"transition must be a square (K, K) matrix, got "
                             f"{describe(self.transition)}")
        k = a.shape[0]
        a = _probability_matrix("transition", self.transition, k, k)
        w = torch.as_tensor(self.weights, dtype=F64)
        if w.ndim != 2:
            raise ValueError(f"weights must be a (K, C) matrix, got {describe(self.weights)}")
        w = _probability_matrix("weights", self.weights, k, w.shape[1])
        c = w.shape[1]
        params = {}
        for name in ("slopes", "intercepts", "stds"):
            m = torch.as_tensor(getattr(self, name), dtype=F64)
            if m.shape != (k, c) or not torch.isfinite(m).all():
                raise ValueError(f"{name} must be a finite ({k}, {c}) matrix like weights, "
                                 f"got shape {tuple(m.shape)}")
            params[name] = m
        if (params["stds"] <= 0).any():
            raise ValueError("stds must be > 0")
        if self.initial is None:
            pi0 = _stationary(a)
        else:
            pi0 = _probability_matrix("initial", [list(self.initial)], 1, k)[0]
        object.__setattr__(self, "start", check_real("start", self.start))
        object.__setattr__(self, "_A", a)
        object.__setattr__(self, "_pi0", pi0)
        object.__setattr__(self, "_w", w)
        object.__setattr__(self, "_a", params["slopes"])
        object.__setattr__(self, "_b", params["intercepts"])
        object.__setattr__(self, "_s", params["stds"])

    # ---- parameters
    @property
    def regimes(self) -> int:
        r"""The number of regimes :math:`K`."""
        return self._A.shape[0]

    @property
    def transition_matrix(self) -> Tensor:
        r""":math:`A`, float64 ``(K, K)``."""
        return self._A.clone()

    @property
    def initial_law(self) -> Tensor:
        r""":math:`\pi_0`, float64 ``(K,)``."""
        return self._pi0.clone()

    def stationary(self) -> Tensor:
        r"""The stationary law :math:`\pi = \pi A` of the regimes, float64 ``(K,)``."""
        return _stationary(self._A)

    # ---- sampling
    @torch.no_grad()
    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None,
               return_regimes: bool = True, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor | tuple[Tensor, Tensor]:
        r"""Draw ``n`` iid sequences of ``length`` steps (computed in float64, then cast).

        Args:
            n: number of sequences.
            length: :math:`T`, steps per sequence.
            generator: source of randomness; ``None`` uses the global RNG.
            return_regimes: also return the regime path.
            device: device of the result (default: the generator's, else the CPU).
            dtype: floating-point dtype of the values.

        Returns:
            Values ``(n, T)`` and, with ``return_regimes``, the int64 regimes ``(n, T)``.
        """
        n, length = check_int("n", n), check_int("length", length)
        generator = check_generator(generator)
        check_bool("return_regimes", return_regimes)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {describe(dtype)}")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        A, pi0, w = self._A.to(device), self._pi0.to(device), self._w.to(device)
        a, b, sd = self._a.to(device), self._b.to(device), self._s.to(device)
        cum_a, cum_w = A.cumsum(1), w.cumsum(1)  # (K, K), (K, C)
        u_s = rand((n, length), device=device, dtype=F64, generator=generator)
        u_c = rand((n, length), device=device, dtype=F64, generator=generator)
        eps = randn((n, length), device=device, dtype=F64, generator=generator)
        # the regime chain first, then every step's component and affine map at once
        s = torch.empty(n, length, dtype=torch.int64, device=device)
        cum = pi0.cumsum(0).expand(n, -1)
        for t in range(length):
            if t > 0:
                cum = cum_a[s[:, t - 1]]  # (n, K)
            s[:, t] = (u_s[:, t:t + 1] > cum).sum(1).clamp(max=self.regimes - 1)
        c = (u_c[..., None] > cum_w[s]).sum(-1).clamp(max=w.shape[1] - 1)  # (n, T)
        slope, shift = a[s, c], b[s, c] + sd[s, c] * eps  # x_t = slope_t x_{t-1} + shift_t
        x = torch.empty(n, length, dtype=F64, device=device)
        prev_x = torch.full((n,), self.start, dtype=F64, device=device)
        for t in range(length):
            prev_x = x[:, t] = slope[:, t] * prev_x + shift[:, t]
        x = x.to(dtype)
        return (x, s) if return_regimes else x

    # ---- exact inference
    def emission_log_probs(self, x: Tensor) -> Tensor:
        r"""The log-densities :math:`\log p(x_t \mid s_t = k, x_{t-1})` of every step under
        every regime, float64 ``(B, T, K)`` for values ``x`` ``(B, T)``."""
        x = _sequences("x", x).to(F64)
        prev = torch.cat([x.new_full((x.shape[0], 1), self.start), x[:, :-1]], 1)  # (B, T)
        w, a, b, sd = (m.to(x.device) for m in (self._w, self._a, self._b, self._s))
        mean = a * prev[..., None, None] + b  # (B, T, K, C)
        z = (x[..., None, None] - mean) / sd
        log_n = -0.5 * z.square() - sd.log() - 0.5 * _LOG_2PI
        return torch.logsumexp(log_n + w.log(), dim=-1)  # (B, T, K)

    def _forward(self, e: Tensor) -> Tensor:
        log_a, log_pi0 = self._A.to(e.device).log(), self._pi0.to(e.device).log()
        alpha = torch.empty_like(e)  # (B, T, K)
        alpha[:, 0] = log_pi0 + e[:, 0]
        for t in range(1, e.shape[1]):
            alpha[:, t] = torch.logsumexp(alpha[:, t - 1, :, None] + log_a, dim=1) + e[:, t]
        return alpha

    def _backward(self, e: Tensor) -> Tensor:
        log_a = self._A.to(e.device).log()
        beta = torch.zeros_like(e)  # (B, T, K); beta_T = 0
        for t in range(e.shape[1] - 2, -1, -1):
            beta[:, t] = torch.logsumexp(log_a + (e[:, t + 1] + beta[:, t + 1])[:, None, :],
                                         dim=2)
        return beta

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log p(x_{1:T})` in nats by the forward algorithm in log space,

        .. math::

            \log\alpha_1(k) &= \log\pi_0(k) + \log p(x_1 \mid k, x_0), \\
            \log\alpha_t(k) &= \log\!\sum_j e^{\log\alpha_{t-1}(j) + \log A_{jk}}
                + \log p(x_t \mid k, x_{t-1}),

        :math:`\log p(x_{1:T}) = \log\sum_k \alpha_T(k)` (eq. ``eq-seq-forward``).

        Args:
            x: values ``(B, T)``.

        Returns:
            Float64 log-likelihoods ``(B,)``.
        """
        alpha = self._forward(self.emission_log_probs(x))
        return torch.logsumexp(alpha[:, -1], dim=-1)

    def nll_per_step(self, x: Tensor) -> Tensor:
        r"""The exact :math:`-\log p(x_{1:T}) / T` of each sequence ``(B, T)``, float64
        ``(B,)``: in nats per step, the unit of every model's NLL in the chapter."""
        return -self.log_prob(x) / x.shape[1]

    @torch.no_grad()
    def posterior(self, x: Tensor) -> Tensor:
        r"""The exact regime posterior :math:`p(s_t = k \mid x_{1:T})` by forward-backward,

        .. math::

            p(s_t = k \mid x_{1:T}) &= \alpha_t(k)\, \beta_t(k) / p(x_{1:T}), \\
            \beta_T = 1, \quad \beta_t(j) &= \sum_k A_{jk}\, p(x_{t+1} \mid k, x_t)\,
            \beta_{t+1}(k)

        (eq. ``eq-seq-forward-backward``), computed in log space.

        Args:
            x: values ``(B, T)``.

        Returns:
            Float64 probabilities ``(B, T, K)`` summing to one over ``K``.
        """
        e = self.emission_log_probs(x)
        alpha, beta = self._forward(e), self._backward(e)
        log_z = torch.logsumexp(alpha[:, -1], dim=-1)  # (B,)
        return (alpha + beta - log_z[:, None, None]).exp()

    def decode_regimes(self, x: Tensor) -> Tensor:
        r"""The most probable regime of every step under :meth:`posterior`, int64 ``(B, T)``."""
        return self.posterior(x).argmax(-1)

    # ---- dwell times and the floor
    def mean_dwell(self) -> Tensor:
        r"""Mean dwell time :math:`1 / (1 - A_{kk})` of each regime, float64 ``(K,)``
        (``inf`` for an absorbing regime)."""
        return 1.0 / (1.0 - self._A.diagonal())

    def dwell_pmf(self, d: Tensor | Sequence[int] | int) -> Tensor:
        r"""The law of a regime's dwell time (the length of a run of equal regimes),

        .. math::

            P(D_k = d) = (1 - A_{kk})\, A_{kk}^{\,d - 1}, \qquad d = 1, 2, \dots

        (eq. ``eq-seq-dwell``): geometric, because the chain leaves regime :math:`k` at
        each step with probability :math:`1 - A_{kk}`, independently of the past.

        Args:
            d: dwell times, positive ints (an int, a sequence or an int64 tensor).

        Returns:
            Float64 probabilities ``(K, *d.shape)``.
        """
        d = torch.as_tensor(d)
        if d.is_floating_point() or d.dtype == torch.bool or (d < 1).any():
            raise ValueError(f"d must hold positive ints, got {describe(d)}")
        stay = self._A.diagonal().reshape(-1, *([1] * d.ndim))  # (K, 1, ...)
        return (1 - stay) * stay ** (d.to(F64) - 1)

    def floor(self, length: int, *, n: int = 2000,
              generator: torch.Generator | None = None) -> Estimate:
        r"""The floor in nats per step: the exact :math:`\mathbb E[-\log p(x_{1:T})] / T`
        over sequences of the process (eq. ``eq-seq-floor``), by Monte Carlo over ``n``
        sequences of ``length`` steps. No model's expected NLL per step on such sequences is
        lower (Gibbs' inequality): the gap is :math:`\mathrm{KL}(p \,\|\, p_\theta) / T`.
        For a model's NLL, compare it with :meth:`nll_per_step` on the *same* test
        sequences: the paired difference has a far smaller standard error.

        Returns:
            An :class:`~gmbook.metrics.Estimate` (mean, standard error, ``n``).
        """
        x = self.sample(check_int("n", n), check_int("length", length), generator=generator,
                        return_regimes=False, dtype=F64)
        v = self.nll_per_step(x)
        return Estimate(float(v.mean()), float(v.std()) / math.sqrt(n) if n > 1 else math.nan,
                        n)


def _stationary(a: Tensor) -> Tensor:
    """The stationary law of a row-stochastic matrix (the left eigenvector for 1)."""
    k = a.shape[0]
    m = torch.cat([(a.T - torch.eye(k, dtype=a.dtype)), torch.ones(1, k, dtype=a.dtype)])
    rhs = torch.cat([torch.zeros(k, dtype=a.dtype), torch.ones(1, dtype=a.dtype)])
    pi = torch.linalg.lstsq(m, rhs[:, None]).solution[:, 0]
    return pi.clamp(min=0) / pi.clamp(min=0).sum()


def dwell_times(regimes: Tensor, k: int, *, censored: bool = False) -> list[Tensor]:
    r"""The dwell times (lengths of runs of equal regimes) of each regime in a batch of paths.

    A run that touches the start or the end of its sequence is *censored* (its true length is
    longer than what is seen) and left out unless ``censored=True``; the complete runs of a
    Markov chain are iid with the law of :meth:`RegimeSwitching.dwell_pmf`. In *short*
    sequences the complete runs are biased towards short ones (a long run more often touches
    an end): with the default process and 64 steps per sequence their mean is far below the
    geometric mean. Compare generated sequences with real ones of the same length, or use long
    sequences to check the law itself.

    Args:
        regimes: int64 regime paths ``(B, T)`` with entries in ``[0, k)``.
        k: the number of regimes.
        censored: keep the runs that touch either end of a sequence.

    Returns:
        A list of ``k`` int64 tensors of run lengths.

    Example:
        >>> dwell_times(torch.tensor([[0, 1, 1, 2, 2, 2, 0]]), 3)
        [tensor([], dtype=torch.int64), tensor([2]), tensor([3])]
    """
    k = check_int("k", k)
    regimes = _tokens("regimes", regimes, k)
    check_bool("censored", censored)
    out: list[list[int]] = [[] for _ in range(k)]
    for row in regimes.cpu():
        change = torch.nonzero(row[1:] != row[:-1]).flatten() + 1
        starts = torch.cat([torch.zeros(1, dtype=torch.int64), change])
        ends = torch.cat([change, torch.tensor([row.shape[0]])])
        for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
            if not censored and (i == 0 or i == len(starts) - 1):
                continue
            out[int(row[a])].append(b - a)
    return [torch.tensor(v, dtype=torch.int64) for v in out]


# --------------------------------------------------------------------------- the network


class _CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, h: Tensor) -> Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d / H)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def step(self, h: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
        """The output at position ``t`` from its input ``h`` ``(B, 1, d)``: its key and value
        are stored at ``t`` in the cache ``keys``, ``values`` ``(B, H, max_len, d / H)``, and
        its query attends to positions ``0..t``, all earlier or equal: no mask is needed."""
        b, _, d = h.shape
        q, k, v = self.qkv(h).view(b, 1, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        keys[:, :, t] = k[:, :, 0]
        values[:, :, t] = v[:, :, 0]
        y = F.scaled_dot_product_attention(q, keys[:, :, :t + 1], values[:, :, :t + 1])
        return self.proj(y.transpose(1, 2).reshape(b, 1, d))  # (B, 1, d)


class _Block(nn.Module):
    def __init__(self, d_model: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = _CausalSelfAttention(d_model, heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))

    def step(self, h: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
        h = h + self.attn.step(self.ln1(h), keys, values, t)
        return h + self.mlp(self.ln2(h))


class KVCache:
    r"""The keys and values of the positions a :class:`CausalTransformer` has seen, per block:
    what lets ancestral sampling feed one new position per step
    (:meth:`CausalTransformer.step`) instead of the whole prefix again.

    By Proposition ``prop-seq-causal`` the keys and values at a position depend on the inputs up to
    it only, so those of the prefix do not change when a step is appended: step :math:`t`
    computes one new key and value per block and attends over the :math:`t + 1` stored ones,
    :math:`O(t)` work instead of the :math:`O(t^2)` attention of a full pass.

    Attributes:
        keys, values: float ``(layers, B, heads, max_len, d / heads)``.
        length: how many positions are stored.
    """

    def __init__(self, n: int, transformer: CausalTransformer) -> None:
        ref = transformer.ln_f.weight
        shape = (transformer.layers, check_int("n", n), transformer.heads, transformer.max_len,
                 transformer.d_model // transformer.heads)
        self.keys = ref.new_zeros(shape)
        self.values = ref.new_zeros(shape)
        self.length = 0


class CausalTransformer(nn.Module):
    r"""A small decoder-only transformer: output :math:`t` depends on inputs :math:`1..t` only.

    Inputs are embedded (a token table for ``vocab``, a linear map for ``in_dim``
    continuous values), a position code is added (learned, or the sinusoids of Vaswani et al.,
    2017, Sec. 3.5), then ``layers`` pre-norm blocks (Radford et al., 2019)
    :math:`h \leftarrow h + \mathrm{Attn}(\mathrm{LN}(h))`,
    :math:`h \leftarrow h + \mathrm{MLP}(\mathrm{LN}(h))` and a final layer norm. Attention
    has ``heads`` heads of size :math:`d_h = d / \text{heads}` with the causal mask,

    .. math::

        \mathrm{Attn}(Q, K, V)_t = \sum_{u \le t}
            \mathrm{softmax}_u\Big(\frac{q_t^\top k_u}{\sqrt{d_h}}\Big)\, v_u
        \qquad \text{(eq. ``eq-seq-attention``)},

    computed by :func:`torch.nn.functional.scaled_dot_product_attention` with
    ``is_causal=True`` (on this CPU about 20% faster per training step than the products
    written out).

    Args:
        vocab: number of token ids (token inputs ``(B, T)`` int64); or
        in_dim: size of a continuous input (inputs ``(B, T)`` when 1, else
            ``(B, T, in_dim)``). Give exactly one of ``vocab`` and ``in_dim``.
        d_model: width :math:`d`.
        heads: attention heads, dividing ``d_model``.
        layers: blocks.
        max_len: the longest sequence.
        positions: ``"learned"`` or ``"sinusoidal"``.
        mlp_ratio: hidden width of the MLPs over ``d_model``.
        classes: number of per-step condition labels (0: unconditional). With ``classes > 0``
            :meth:`forward` takes ``cond`` ``(B, T)`` int64, whose learned embedding is added
            to the input at every position (e.g. the regime a step should follow).

    Example:
        >>> net = CausalTransformer(vocab=10, d_model=16, heads=2, layers=1)
        >>> net(torch.randint(0, 10, (3, 7))).shape
        torch.Size([3, 7, 16])
    """

    def __init__(self, *, vocab: int | None = None, in_dim: int | None = None,
                 d_model: int = 64, heads: int = 4, layers: int = 2, max_len: int = 512,
                 positions: str = "learned", mlp_ratio: int = 4, classes: int = 0) -> None:
        super().__init__()
        if (vocab is None) == (in_dim is None):
            raise ValueError("CausalTransformer: give exactly one of vocab (tokens) and "
                             "in_dim (continuous values)")
        self.d_model, self.heads = check_int("d_model", d_model), check_int("heads", heads)
        if d_model % heads:
            raise ValueError(f"heads ({heads}) must divide d_model ({d_model})")
        self.layers, self.max_len = check_int("layers", layers), check_int("max_len", max_len)
        mlp_ratio = check_int("mlp_ratio", mlp_ratio)
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(f"positions must be 'learned' or 'sinusoidal', got {positions!r}")
        self.positions = positions
        self.vocab = None if vocab is None else check_int("vocab", vocab)
        self.in_dim = None if in_dim is None else check_int("in_dim", in_dim)
        if self.vocab is not None:
            self.embed: nn.Module = nn.Embedding(self.vocab, d_model)
            nn.init.normal_(self.embed.weight, std=0.02)
        else:
            self.embed = nn.Linear(self.in_dim, d_model)
        if positions == "learned":
            self.pos = nn.Parameter(0.02 * torch.randn(max_len, d_model))
        else:
            if d_model % 2:
                raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
            code = SinusoidalEmbedding(d_model, scale=1.0)(torch.arange(max_len, dtype=F64))
            self.register_buffer("pos", code.to(torch.get_default_dtype()), persistent=False)
        self.blocks = nn.ModuleList(_Block(d_model, heads, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.classes = check_int("classes", classes, 0)
        self.cond_embed = nn.Embedding(self.classes, d_model) if self.classes else None

    def embed_inputs(self, inp: Tensor) -> Tensor:
        r"""The input embeddings without positions, ``(B, T, d)``."""
        if self.vocab is not None:
            return self.embed(_tokens("inp", inp, self.vocab))
        inp = check_float_tensor("inp", inp)
        if self.in_dim == 1 and inp.ndim == 2:
            inp = inp[..., None]
        if inp.ndim != 3 or inp.shape[-1] != self.in_dim or inp.shape[1] < 1:
            want = "(B, T)" if self.in_dim == 1 else f"(B, T, {self.in_dim})"
            raise ValueError(f"inp must have shape {want}, got {tuple(inp.shape)}")
        return self.embed(inp)

    def forward(self, inp: Tensor, *, cond: Tensor | None = None,
                embedded: Tensor | None = None) -> Tensor:
        r"""Hidden states ``(B, T, d)``; position :math:`t` sees inputs :math:`\le t` only.

        Args:
            inp: tokens ``(B, T)`` int64, or values ``(B, T)`` / ``(B, T, in_dim)``.
            cond: per-step labels ``(B, T)`` int64 in ``[0, classes)``, required exactly when
                ``classes > 0``.
            embedded: instead of ``inp`` (pass ``None`` for it), input embeddings
                ``(B, T, d)``, e.g. with a learned start vector in front.
        """
        h = self.embed_inputs(inp) if embedded is None else embedded
        h = self._add_cond(h, cond)
        t = h.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequences of {t} steps exceed max_len = {self.max_len}")
        h = h + self.pos[:t].to(h.dtype)
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)

    def _add_cond(self, h: Tensor, cond: Tensor | None) -> Tensor:
        """``h`` ``(B, T, d)`` plus the embedding of the per-step labels, after checking them."""
        if (cond is None) != (self.cond_embed is None):
            raise ValueError("cond must be given exactly when the transformer has classes > 0 "
                             f"(classes = {self.classes})")
        if cond is None:
            return h
        cond = _tokens("cond", cond, self.classes)
        if cond.shape != h.shape[:2]:
            raise ValueError(f"cond must have shape {tuple(h.shape[:2])}, got "
                             f"{tuple(cond.shape)}")
        return h + self.cond_embed(cond)

    def new_cache(self, n: int) -> KVCache:
        r"""An empty :class:`KVCache` for ``n`` sequences, for :meth:`step`."""
        return KVCache(n, self)

    def step(self, inp: Tensor, cache: KVCache, *, cond: Tensor | None = None) -> Tensor:
        r"""The hidden state ``(B, d)`` of the next position, :math:`t` = ``cache.length``,
        from its input alone: the prefix is read from the cache, which this call extends.
        Equal (to float round-off) to ``forward(prefix)[:, t]`` on the whole prefix, in
        :math:`O(t)` instead of :math:`O(t^2)` work.

        Args:
            inp: the input at position :math:`t`: tokens ``(B, 1)`` int64, or values
                ``(B, 1)`` / ``(B, 1, in_dim)``.
            cache: from :meth:`new_cache` with the same ``B``, holding positions
                :math:`0..t-1`.
            cond: the label of position :math:`t`, ``(B, 1)`` int64, exactly when
                ``classes > 0``.
        """
        if not isinstance(cache, KVCache) or cache.keys.shape[1] != inp.shape[0]:
            raise TypeError(f"cache must be a KVCache of this network for {inp.shape[0]} "
                            f"sequences, got {describe(cache)}")
        t = cache.length
        if t >= self.max_len:
            raise ValueError(f"the cache is full: sequences of {t + 1} steps exceed "
                             f"max_len = {self.max_len}")
        h = self.embed_inputs(inp)
        if h.shape[1] != 1:
            raise ValueError(f"inp must hold one position, got {h.shape[1]}")
        h = self._add_cond(h, cond)
        h = h + self.pos[t:t + 1].to(h.dtype)
        for i, block in enumerate(self.blocks):
            h = block.step(h, cache.keys[i], cache.values[i], t)
        cache.length = t + 1
        return self.ln_f(h)[:, 0]

    def extra_repr(self) -> str:
        kind = f"vocab={self.vocab}" if self.vocab is not None else f"in_dim={self.in_dim}"
        return (f"{kind}, d_model={self.d_model}, heads={self.heads}, layers={self.layers}, "
                f"positions={self.positions!r}")


# --------------------------------------------------------------------------- heads


class MixtureDensityHead(nn.Module):
    r"""A mixture-density head (Bishop, 1994): a linear map of features ``(*B, d)`` to the
    parameters of :math:`K` 1-D Gaussians (``softplus`` scales plus ``min_scale``).

    Unlike :class:`gmbook.densities.MixtureDensityNetwork` (an MLP of a flat context, for the
    low-dimensional autoregressive densities of chapter 2) it is a read-out of a transformer's
    features of any batch shape; the mixture arithmetic is the same code,
    :func:`gmbook.densities.mixture_log_prob` (eq. ``eq-seq-mdn``) and
    :func:`gmbook.densities.mixture_sample`.

    Args:
        d_model: feature size.
        components: :math:`K`.
        min_scale: the smallest standard deviation.
    """

    def __init__(self, d_model: int, components: int = 4, *, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.d_model = check_int("d_model", d_model)
        self.components = check_int("components", components)
        self.min_scale = check_positive("min_scale", min_scale)
        self.out = nn.Linear(self.d_model, 3 * self.components)

    def forward(self, h: Tensor) -> MixtureParams:
        r"""The mixtures of features ``h`` ``(*B, d)``: parameters ``(*B, K)``."""
        h = check_float_tensor("h", h)
        if h.ndim < 1 or h.shape[-1] != self.d_model:
            raise ValueError(f"h must have shape (*B, {self.d_model}), got {tuple(h.shape)}")
        logits, loc, raw = self.out(h).split(self.components, dim=-1)
        return MixtureParams(logits, loc, F.softplus(raw) + self.min_scale)

    def log_prob(self, h: Tensor, y: Tensor) -> Tensor:
        r""":math:`\log p(y \mid h)` (eq. ``eq-seq-mdn``), ``(*B,)``."""
        return mixture_log_prob(self(h), y)

    @torch.no_grad()
    def sample(self, h: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""One draw per feature vector, ``(*B,)``."""
        return mixture_sample(self(h), generator=generator)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, components={self.components}"


# --------------------------------------------------------------------------- decoding


def _logits(name: str, x: object) -> Tensor:
    x = check_float_tensor(name, x)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (*B, V) with V >= 1, got {tuple(x.shape)}")
    return x


def decoding_log_probs(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                       top_p: float | None = None) -> Tensor:
    r"""The distribution a decoding rule samples from, as normalized log-probabilities.

    In order (the order of common implementations): **temperature**
    :math:`q \propto p^{1/\tau}`, i.e. logits divided by :math:`\tau`
    (eq. ``eq-seq-temperature``); **top-k** (Fan et al., 2018): keep the :math:`k` most
    probable tokens and renormalize, :math:`q(v) = p(v) / \sum_{u \in S_k} p(u)` on
    :math:`S_k` (eq. ``eq-seq-top-k``); **top-p** or nucleus (Holtzman et al., 2020): keep the
    smallest set of most probable tokens whose mass reaches :math:`p`, i.e. a token is kept
    when the mass of the tokens more probable than it is below :math:`p`, and renormalize
    (eq. ``eq-seq-top-p``). Removed tokens get log-probability ``-inf``. Ties at the
    threshold of top-k are broken by :func:`torch.topk`.

    Args:
        logits: unnormalized log-probabilities ``(*B, V)``.
        temperature: :math:`\tau > 0` (1: unchanged).
        top_k: :math:`k \ge 1` or ``None`` (all tokens).
        top_p: :math:`p \in (0, 1]` or ``None`` (all tokens).

    Returns:
        Log-probabilities ``(*B, V)`` that sum (in probability) to one.
    """
    logits = _logits("logits", logits)
    temperature = check_positive("temperature", temperature)
    out = logits / temperature
    if top_k is not None:
        top_k = check_int("top_k", top_k)
        if top_k < out.shape[-1]:
            kth = out.topk(top_k, dim=-1).values[..., -1:]  # (*B, 1)
            out = out.masked_fill(out < kth, -math.inf)
    if top_p is not None:
        top_p = check_real("top_p", top_p)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        log_p = out.log_softmax(-1)
        sorted_lp, order = log_p.sort(dim=-1, descending=True)
        before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass of the more probable
        remove = before >= top_p
        remove[..., 0] = False  # the most probable token always stays
        out = out.masked_fill(remove.scatter(-1, order, remove), -math.inf)
    return out.log_softmax(-1)


def decoding_kl(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None) -> Tensor:
    r""":math:`\mathrm{KL}(q \,\|\, p) = \sum_v q(v) \log\frac{q(v)}{p(v)}` of the decoding
    distribution :math:`q` (:func:`decoding_log_probs`) to the model's
    :math:`p = \mathrm{softmax}(\text{logits})`, in nats, ``(*B,)`` (eq.
    ``eq-seq-decoding-kl``). It is finite (the
    support of :math:`q` is inside that of :math:`p`), nonnegative, and 0 at the identity;
    after truncation alone to a set :math:`S`, it is :math:`-\log p(S)`."""
    log_q = decoding_log_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    log_p = logits.log_softmax(-1)
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))
    return terms.sum(-1).clamp(min=0)


def sample_categorical(logits: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    r"""One draw from each categorical distribution ``softmax(logits)`` (``(*B, V)``; entries
    ``-inf`` are never drawn), by inverting the CDF of one uniform; int64 ``(*B,)``."""
    logits = _logits("logits", logits)
    generator = check_generator(generator)
    cdf = logits.log_softmax(-1).exp().cumsum(-1)  # (*B, V)
    u = rand(cdf.shape[:-1], like=cdf, generator=generator)[..., None] * cdf[..., -1:]
    idx = (u >= cdf).sum(-1)
    # never past the last token of positive probability (round-off in the cumulative sum)
    last = (logits > -math.inf).cumsum(-1).argmax(-1)
    return torch.minimum(idx, last)


# --------------------------------------------------------------------------- the models


def _split_cond(x: Tensor, cond: Tensor | None, classes: int) -> tuple[Tensor, Tensor | None]:
    """For ``loss``: a conditional model's batch may be ``(B, 2, T)``, values (or tokens) and
    labels stacked, the form :func:`gmbook.train.fit` can draw."""
    if classes and cond is None and isinstance(x, Tensor) and x.ndim == 3:
        if x.shape[1] != 2:
            raise ValueError(f"a stacked batch must have shape (B, 2, T), got {tuple(x.shape)}")
        lab = x[:, 1]
        return x[:, 0], (lab.round().long() if lab.is_floating_point() else lab)
    return x, cond


def _check_sample_cond(cond: object, n: int, length: int) -> Tensor | None:
    if cond is None:
        return None
    if not isinstance(cond, Tensor) or cond.dtype != torch.int64 or \
            tuple(cond.shape) != (n, length):
        raise ValueError(f"cond must be an int64 tensor ({n}, {length}), got {describe(cond)}")
    return cond


class ContinuousAR(nn.Module):
    r"""A continuous autoregressive model: a :class:`CausalTransformer` over the values and a
    :class:`MixtureDensityHead` per step,

    .. math::

        p_\theta(x_{1:T}) = \prod_{t=1}^T \sum_k \pi_k(h_t)\,
            \mathcal N\big(x_t;\, m_k(h_t), s_k(h_t)^2\big), \qquad
        h_t = f_\theta(x_0, x_1, \dots, x_{t-1}),

    (eqs. ``eq-seq-chain-rule`` and ``eq-seq-mdn``), where the input at position :math:`t` is
    the previous value (the fixed ``start`` value :math:`x_0` at the first step). Training
    is teacher forcing: every position is predicted from the *true* prefix in one pass, and
    :meth:`loss` is the NLL in nats per step.

    With ``residual=True`` the means are offsets from the previous value,
    :math:`m_k(h_t) = x_{t-1} + \tilde m_k(h_t)` (the network predicts increments): the layer
    norms of the transformer keep the direction of a feature vector but not its length, so an
    exact copy of :math:`x_{t-1}` through them is hard, and a random walk (the trending
    regime) is then learned slowly. ``input_scale`` divides the inputs (not the outputs: the
    density stays in the data's units) to bring them to order one.

    Args:
        d_model, heads, layers, max_len, positions: of the transformer.
        components: :math:`K` of the head.
        start: :math:`x_0` (the :class:`RegimeSwitching` process starts from 0 as well).
        min_scale: the smallest standard deviation of a component.
        input_scale: the inputs are divided by it.
        residual: means relative to the previous value.
        increments: the input at position :math:`t` is the pair
            :math:`(x_{t-1}, x_{t-1} - x_{t-2})` (the increment is 0 at the first
            step), not :math:`x_{t-1}` alone: the network need not find the increments,
            which tell the regimes apart, by attention.
        classes: per-step condition labels (0: none); then every method takes ``cond``
            ``(B, T)``, the label of each step (e.g. its regime), and models
            :math:`p_\theta(x_{1:T} \mid c_{1:T})`.
    """

    def __init__(self, *, d_model: int = 32, heads: int = 4, layers: int = 2,
                 components: int = 4, max_len: int = 256, positions: str = "learned",
                 start: float = 0.0, min_scale: float = 1e-3, input_scale: float = 1.0,
                 residual: bool = False, increments: bool = False,
                 classes: int = 0) -> None:
        super().__init__()
        self.input_scale = check_positive("input_scale", input_scale)
        self.residual = check_bool("residual", residual)
        self.increments = check_bool("increments", increments)
        self.transformer = CausalTransformer(in_dim=2 if self.increments else 1,
                                             d_model=d_model, heads=heads,
                                             layers=layers, max_len=max_len,
                                             positions=positions, classes=classes)
        self.head = MixtureDensityHead(d_model, components, min_scale=min_scale)
        self.start = check_real("start", start)

    def _inputs(self, x: Tensor) -> Tensor:
        return torch.cat([x.new_full((x.shape[0], 1), self.start), x[:, :-1]], dim=1)

    def _features(self, inp: Tensor) -> Tensor:
        """The network's input at each position from the shifted values ``(B, T)``: the
        previous value, and with ``increments`` also the last increment, scaled."""
        if not self.increments:
            return inp / self.input_scale
        diff = torch.diff(inp, dim=1, prepend=inp[:, :1])  # (B, T), 0 at the first step
        return torch.stack([inp, diff], dim=-1) / self.input_scale  # (B, T, 2)

    def step_params(self, x: Tensor, cond: Tensor | None = None) -> MixtureParams:
        r"""The mixture of every step given the true prefix (teacher forcing): parameters
        ``(B, T, K)`` for values ``x`` ``(B, T)`` (and labels ``cond`` ``(B, T)``)."""
        x = _sequences("x", x)
        inp = self._inputs(x)
        p = self.head(self.transformer(self._features(inp), cond=cond))
        if self.residual:
            p = MixtureParams(p.logits, p.loc + inp[..., None], p.scale)
        return p

    def step_log_probs(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        r""":math:`\log p_\theta(x_t \mid x_{<t})` of every step, ``(B, T)``."""
        return mixture_log_prob(self.step_params(x, cond), x)

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        r""":math:`\log p_\theta(x_{1:T})` by eq. ``eq-seq-chain-rule``, ``(B,)``."""
        return self.step_log_probs(x, cond).sum(1)

    def nll_per_step(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        r""":math:`-\log p_\theta(x_{1:T}) / T` of each sequence, ``(B,)`` (nats per step)."""
        return -self.log_prob(x, cond) / x.shape[1]

    def loss(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        r"""Teacher forcing: the mean NLL in nats per step of a batch ``(B, T)``. For a
        conditional model (``classes > 0``) and :func:`gmbook.train.fit`, pass batches
        ``(B, 2, T)`` of values and labels stacked (labels as floats), or call with
        ``cond``."""
        x, cond = _split_cond(x, cond, self.transformer.classes)
        return -self.step_log_probs(x, cond).mean()

    @torch.no_grad()
    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None,
               cond: Tensor | None = None, kv_cache: bool = True) -> Tensor:
        r"""Ancestral sampling: ``length`` sequential draws, each from the head given the
        model's own prefix (and the labels ``cond`` ``(n, length)`` of a conditional
        model); ``(n, length)``. With ``kv_cache`` (the default) each step feeds only the
        newest value through the network (:meth:`CausalTransformer.step`); without it, the
        whole prefix again (the same samples to float round-off, :math:`O(T^2)` work)."""
        n, length = check_int("n", n), check_int("length", length)
        generator = check_generator(generator)
        check_bool("kv_cache", kv_cache)
        if length > self.transformer.max_len:
            raise ValueError(f"length {length} exceeds max_len = {self.transformer.max_len}")
        cond = _check_sample_cond(cond, n, length)
        ref = self.head.out.weight
        inp = ref.new_full((n, 1), self.start)
        cache = self.transformer.new_cache(n) if kv_cache else None
        out = []
        for t in range(length):
            if cache is not None:  # the newest position only: its value and increment
                c = None if cond is None else cond[:, t:t + 1]
                h = self.transformer.step(self._features(inp[:, -2:])[:, -1:], cache, cond=c)
            else:
                c = None if cond is None else cond[:, :t + 1]
                h = self.transformer(self._features(inp), cond=c)[:, -1]  # (n, d)
            p = self.head(h)
            if self.residual:
                p = MixtureParams(p.logits, p.loc + inp[:, -1:], p.scale)
            x_t = mixture_sample(p, generator=generator)  # (n,)
            out.append(x_t)
            inp = torch.cat([inp, x_t[:, None]], dim=1)
        return torch.stack(out, dim=1)


class TokenAR(nn.Module):
    r"""A token autoregressive model: a :class:`CausalTransformer` over token ids and a
    categorical head (a linear map to ``vocab`` logits),
    :math:`p_\theta(v_{1:T}) = \prod_t \mathrm{softmax}(W h_t)_{v_t}` with
    :math:`h_t = f_\theta(\text{BOS}, v_1, \dots, v_{t-1})` (eq. ``eq-seq-chain-rule``); the
    beginning-of-sequence token is the extra id ``vocab``.

    Args:
        vocab: number of tokens :math:`V`.
        d_model, heads, layers, max_len, positions: of the transformer.
        classes: per-step condition labels, as in :class:`ContinuousAR`.
    """

    def __init__(self, vocab: int, *, d_model: int = 32, heads: int = 4, layers: int = 2,
                 max_len: int = 256, positions: str = "learned", classes: int = 0) -> None:
        super().__init__()
        self.vocab = check_int("vocab", vocab)
        self.transformer = CausalTransformer(vocab=self.vocab + 1, d_model=d_model,
                                             heads=heads, layers=layers, max_len=max_len,
                                             positions=positions, classes=classes)
        self.head = nn.Linear(d_model, self.vocab)

    @property
    def bos(self) -> int:
        r"""The id of the beginning-of-sequence token, ``vocab``."""
        return self.vocab

    def logits(self, tokens: Tensor, cond: Tensor | None = None) -> Tensor:
        r"""Teacher-forced logits of every step ``(B, T, V)`` for tokens ``(B, T)``."""
        tokens = _tokens("tokens", tokens, self.vocab)
        inp = torch.cat([torch.full_like(tokens[:, :1], self.bos), tokens[:, :-1]], dim=1)
        return self.head(self.transformer(inp, cond=cond))

    def step_log_probs(self, tokens: Tensor, cond: Tensor | None = None) -> Tensor:
        r""":math:`\log p_\theta(v_t \mid v_{<t})` of every step, ``(B, T)``."""
        lp = self.logits(tokens, cond).log_softmax(-1)
        return lp.gather(-1, tokens[..., None])[..., 0]

    def log_prob(self, tokens: Tensor, cond: Tensor | None = None) -> Tensor:
        r""":math:`\log p_\theta(v_{1:T})`, ``(B,)``."""
        return self.step_log_probs(tokens, cond).sum(1)

    def loss(self, tokens: Tensor, cond: Tensor | None = None) -> Tensor:
        r"""Teacher forcing: the mean cross-entropy in nats per token of ``(B, T)`` (for a
        conditional model and :func:`gmbook.train.fit`: batches ``(B, 2, T)`` of tokens and
        labels stacked, or ``cond``)."""
        tokens, cond = _split_cond(tokens, cond, self.transformer.classes)
        return -self.step_log_probs(tokens, cond).mean()

    @torch.no_grad()
    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, cond: Tensor | None = None,
               kv_cache: bool = True) -> Tensor:
        r"""Ancestral sampling with a decoding rule (:func:`decoding_log_probs`): int64
        ``(n, length)``. Every rule still takes ``length`` sequential network calls: it
        changes the distribution, not the cost. With ``kv_cache`` (the default) each call
        feeds only the newest token (:meth:`CausalTransformer.step`); without it, the whole
        prefix again (the same samples to float round-off, :math:`O(T^2)` work)."""
        n, length = check_int("n", n), check_int("length", length)
        generator = check_generator(generator)
        check_bool("kv_cache", kv_cache)
        if length > self.transformer.max_len:
            raise ValueError(f"length {length} exceeds max_len = {self.transformer.max_len}")
        cond = _check_sample_cond(cond, n, length)
        inp = torch.full((n, 1), self.bos, dtype=torch.int64, device=self.head.weight.device)
        cache = self.transformer.new_cache(n) if kv_cache else None
        for t in range(length):
            if cache is not None:
                c = None if cond is None else cond[:, t:t + 1]
                logits = self.head(self.transformer.step(inp[:, -1:], cache, cond=c))
            else:
                c = None if cond is None else cond[:, :t + 1]
                logits = self.head(self.transformer(inp, cond=c)[:, -1])  # (n, V)
            lq = decoding_log_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
            inp = torch.cat([inp, sample_categorical(lq, generator=generator)[:, None]], dim=1)
        return inp[:, 1:]


# --------------------------------------------------------------------------- tokenizers


@dataclasses.dataclass(frozen=True, eq=False)
class Binning:
    r"""A tokenizer of real values into ``bins`` intervals, with the density it implies.

    The edges :math:`e_0 < e_1 < \dots < e_V` are fitted on training data (:meth:`uniform`:
    equal widths over a range, as Chronos (Ansari et al., 2024) does after scaling;
    :meth:`quantile`: equal training mass per bin). Token :math:`v` is the interval
    :math:`[e_v, e_{v+1})` for the inner bins; the **outer bins are half-infinite**: token 0
    is :math:`(-\infty, e_1)` and token :math:`V-1` is :math:`[e_{V-1}, \infty)`, so every
    real value has a token.

    A token model gives probabilities :math:`P(v)`; the density it implies for a value is
    :math:`p(x) = P(v(x))\, q(x \mid v(x))` with the within-bin density

    .. math::

        q(x \mid v) = \frac{1}{w_v} \ \text{(inner bins)}, \qquad
        q(x \mid 0) = \frac{1}{w_0} e^{-(e_1 - x) / w_0}, \\
        q(x \mid V-1) = \frac{1}{w_{V-1}} e^{-(x - e_{V-1}) / w_{V-1}}

    (eq. ``eq-seq-binned-density``), :math:`w_v = e_{v+1} - e_v`: uniform in an inner bin
    (probability over bin width), an exponential tail of scale :math:`w` in an outer one
    (its width in the fitted range). Each :math:`q(\cdot \mid v)` integrates to one over its
    bin, so :math:`p` integrates to one over :math:`\mathbb R`, and its NLL in nats is
    comparable with that of a continuous model.

    Attributes:
        edges: the float64 edges ``(V + 1,)``.
    """

    edges: Tensor

    def __post_init__(self) -> None:
        e = check_float_tensor("edges", self.edges).to(F64)
        if e.ndim != 1 or e.shape[0] < 3:
            raise ValueError(f"edges must have shape (V + 1,) with V >= 2, got {tuple(e.shape)}")
        if not torch.isfinite(e).all() or not (e[1:] > e[:-1]).all():
            raise ValueError("edges must be finite and strictly increasing (for quantile "
                             "bins: the training data has too many ties for this many bins)")
        object.__setattr__(self, "edges", e)

    @classmethod
    def uniform(cls, x: Tensor, bins: int, *, low: float | None = None,
                high: float | None = None) -> Binning:
        r"""``bins`` equal bins over ``[low, high]`` (default: the range of ``x``)."""
        x = check_float_tensor("x", x).detach().to(F64).flatten()
        bins = check_int("bins", bins, 2)
        low = float(x.min()) if low is None else check_real("low", low)
        high = float(x.max()) if high is None else check_real("high", high)
        if not high > low:
            raise ValueError(f"high must exceed low, got [{low}, {high}]")
        return cls(torch.linspace(low, high, bins + 1, dtype=F64))

    @classmethod
    def quantile(cls, x: Tensor, bins: int) -> Binning:
        r"""``bins`` bins of equal empirical mass: the edges are the quantiles
        :math:`0, 1/V, \dots, 1` of ``x`` (its minimum and maximum at the ends)."""
        x = check_float_tensor("x", x).detach().to(F64).flatten()
        bins = check_int("bins", bins, 2)
        if x.numel() > 2**24:  # torch.quantile's limit
            x = x[torch.linspace(0, x.numel() - 1, 2**24).long()]
        return cls(torch.quantile(x, torch.linspace(0, 1, bins + 1, dtype=F64)))

    @property
    def bins(self) -> int:
        r"""The number of tokens :math:`V`."""
        return self.edges.shape[0] - 1

    @property
    def widths(self) -> Tensor:
        r""":math:`w_v = e_{v+1} - e_v`, float64 ``(V,)``."""
        return self.edges[1:] - self.edges[:-1]

    def encode(self, x: Tensor) -> Tensor:
        r"""The token of every value, int64 of the shape of ``x``."""
        x = check_float_tensor("x", x)
        inner = self.edges[1:-1].to(device=x.device)
        return torch.bucketize(x.to(F64), inner, right=True)

    def decode(self, tokens: Tensor) -> Tensor:
        r"""The midpoint :math:`(e_v + e_{v+1}) / 2` of each token's fitted interval (also for
        the outer bins), float64 of the shape of ``tokens``."""
        tokens = self._check_tokens(tokens)
        mid = (self.edges[1:] + self.edges[:-1]).to(tokens.device) / 2
        return mid[tokens]

    def _check_tokens(self, tokens: object) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64:
            raise TypeError(f"tokens must be an int64 tensor, got {describe(tokens)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.bins):
            raise ValueError(f"tokens must be in [0, {self.bins})")
        return tokens

    def sample_within(self, tokens: Tensor, *,
                      generator: torch.Generator | None = None) -> Tensor:
        r"""One value per token from the within-bin density :math:`q(\cdot \mid v)` of
        eq. ``eq-seq-binned-density``, float64: a token model's samples through this map have
        exactly the implied density."""
        tokens = self._check_tokens(tokens)
        generator = check_generator(generator)
        e, w = self.edges.to(tokens.device), self.widths.to(tokens.device)
        u = rand(tokens.shape, device=tokens.device, dtype=F64, generator=generator)
        x = e[tokens] + u * w[tokens]
        tail = -torch.log1p(-u)  # Exp(1)
        last = self.bins - 1
        x = torch.where(tokens == 0, e[1] - w[0] * tail, x)
        return torch.where(tokens == last, e[last] + w[last] * tail, x)

    def log_within(self, x: Tensor) -> Tensor:
        r""":math:`\log q(x \mid v(x))` of eq. ``eq-seq-binned-density`` for every value,
        float64 of the shape of ``x``."""
        x = check_float_tensor("x", x).to(F64)
        v = self.encode(x)
        e, w = self.edges.to(x.device), self.widths.to(x.device)
        out = -w[v].log()
        last = self.bins - 1
        out = torch.where(v == 0, out - (e[1] - x) / w[0], out)
        return torch.where(v == last, out - (x - e[last]) / w[last], out)

    def log_density(self, x: Tensor, token_log_probs: Tensor) -> Tensor:
        r"""The implied log-density :math:`\log P(v(x)) + \log q(x \mid v(x))`
        (eq. ``eq-seq-binned-density``).

        Args:
            x: values ``(*B,)``.
            token_log_probs: the token model's log-probabilities ``(*B, V)`` at each value's
                position.

        Returns:
            Float64 log-densities ``(*B,)``.
        """
        x = check_float_tensor("x", x)
        token_log_probs = check_float_tensor("token_log_probs", token_log_probs)
        if tuple(token_log_probs.shape) != (*x.shape, self.bins):
            raise ValueError(f"token_log_probs must have shape {(*x.shape, self.bins)}, got "
                             f"{tuple(token_log_probs.shape)}")
        lp = token_log_probs.to(F64).gather(-1, self.encode(x)[..., None])[..., 0]
        return lp + self.log_within(x)

    def __repr__(self) -> str:
        return (f"Binning(bins={self.bins}, range=[{float(self.edges[0]):.3g}, "
                f"{float(self.edges[-1]):.3g}])")


def binned_log_prob(model: TokenAR, binning: Binning, x: Tensor) -> Tensor:
    r"""The log-density a token model over binned values implies for real sequences,

    .. math::

        \log p(x_{1:T}) = \sum_{t=1}^T \Big(\log P_\theta\big(v(x_t) \mid v(x_{<t})\big)
            + \log q\big(x_t \mid v(x_t)\big)\Big)

    (eqs. ``eq-seq-chain-rule`` and ``eq-seq-binned-density``), in nats, comparable with a
    continuous model's :meth:`ContinuousAR.log_prob` and the exact
    :meth:`RegimeSwitching.log_prob`.

    Args:
        model: a :class:`TokenAR` with ``vocab == binning.bins``.
        binning: the tokenizer.
        x: values ``(B, T)``.

    Returns:
        Float64 log-densities ``(B,)``.
    """
    if not isinstance(model, TokenAR) or not isinstance(binning, Binning):
        raise TypeError("binned_log_prob needs a TokenAR and a Binning, got "
                        f"{type(model).__name__} and {type(binning).__name__}")
    if model.vocab != binning.bins:
        raise ValueError(f"the model has {model.vocab} tokens, the binning {binning.bins} bins")
    x = _sequences("x", x)
    token_lp = model.logits(binning.encode(x)).log_softmax(-1)  # (B, T, V)
    return binning.log_density(x, token_lp).sum(1)


def to_windows(x: Tensor, size: int) -> Tensor:
    r"""Cut sequences ``(B, T)`` into non-overlapping windows ``(B, T / size, size)`` (``size``
    must divide ``T``): the data points of a VQ-VAE tokenizer."""
    x = _sequences("x", x)
    size = check_int("size", size)
    if x.shape[1] % size:
        raise ValueError(f"size ({size}) must divide the length ({x.shape[1]})")
    return x.reshape(x.shape[0], x.shape[1] // size, size)


def from_windows(w: Tensor) -> Tensor:
    r"""The inverse of :func:`to_windows`: ``(B, M, size) -> (B, M size)``."""
    w = check_float_tensor("w", w)
    if w.ndim != 3:
        raise ValueError(f"w must have shape (B, M, size), got {tuple(w.shape)}")
    return w.reshape(w.shape[0], -1)


def vq_encode(vq: nn.Module, x: Tensor) -> Tensor:
    r"""The tokens of sequences ``(B, T)`` under a :class:`gmbook.vae.VQVAE` of window data
    (``shape=(size,)``, ``positions`` tokens per window): int64
    ``(B, T / size * positions)``."""
    size = _vq_window(vq)
    w = to_windows(x, size)  # (B, M, size)
    b, m = w.shape[:2]
    return vq.encode(w.reshape(b * m, size)).reshape(b, m * vq.positions)


def vq_decode(vq: nn.Module, tokens: Tensor) -> Tensor:
    r"""Sequences ``(B, T)`` decoded from the tokens ``(B, M positions)`` of
    :func:`vq_encode`."""
    _vq_window(vq)
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.ndim != 2 \
            or tokens.shape[1] % vq.positions:
        raise ValueError(f"tokens must be int64 (B, M * {vq.positions}), got {describe(tokens)}")
    b = tokens.shape[0]
    w = vq.decode(tokens.reshape(-1, vq.positions))  # (B M, size)
    return w.reshape(b, -1)


def _vq_window(vq: nn.Module) -> int:
    shape = getattr(vq, "shape", None)
    if not hasattr(vq, "quantizer") or shape is None or len(shape) != 1:
        raise TypeError(f"vq must be a gmbook.vae.VQVAE of windows (shape=(size,)), got "
                        f"{type(vq).__name__}")
    return shape[0]


@dataclasses.dataclass(frozen=True)
class CodebookUsage:
    r"""How a codebook is used over a set of tokens (an epoch of training data).

    Attributes:
        fraction: the share of the codes used at least once.
        perplexity: :math:`\exp(H)` of the empirical code frequencies (the effective number
            of codes; :math:`K` for uniform use).
        counts: int64 ``(K,)`` occurrences of each code.
    """

    fraction: float
    perplexity: float
    counts: Tensor


def codebook_usage(tokens: Tensor, codes: int) -> CodebookUsage:
    r"""The :class:`CodebookUsage` of int64 ``tokens`` (any shape) over a codebook of
    ``codes`` entries. Pass the tokens of a whole epoch: a batch sees fewer codes."""
    codes = check_int("codes", codes)
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or not tokens.numel():
        raise TypeError(f"tokens must be a non-empty int64 tensor, got {describe(tokens)}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= codes:
        raise ValueError(f"tokens must be in [0, {codes})")
    counts = torch.bincount(tokens.flatten().cpu(), minlength=codes)
    p = counts.to(F64) / counts.sum()
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return CodebookUsage(float((counts > 0).to(F64).mean()), float(h.exp()), counts)
