r"""Small networks shared by every chapter: time embeddings and MLPs.

The models of the book are small enough to train on a laptop CPU. This module holds the
building blocks they share:

- :func:`default_device`, called once at the top of a chapter;
- :func:`append_dims`, the package's single broadcasting helper, ``(B,) -> (B, 1, ..., 1)``;
- :class:`SinusoidalEmbedding`, the Transformer position encoding used as a time embedding
  by diffusion and flow-matching models (Vaswani et al., 2017, Sec. 3.5; Ho et al., 2020,
  Appendix B);
- :class:`MLP`, a fully connected network, optionally conditioned on a time ``t``;
- :func:`count_parameters`.

Package code never picks a device on its own: a model lives wherever the caller moves it,
and new tensors follow their inputs (``device=x.device, dtype=x.dtype``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _torch_module

from gmbook._checks import check_int as _check_int
from gmbook._checks import check_positive as _check_positive

__all__ = [
    "DigitClassifier",
    "MLP",
    "SinusoidalEmbedding",
    "append_dims",
    "count_parameters",
    "default_device",
]


def default_device() -> torch.device:
    r"""The fastest device available on this machine.

    Returns ``cuda`` if a CUDA GPU is available, else ``mps`` (Apple silicon) if it is
    available and works, else ``cpu``. Chapters call it **once**, in their first code
    cell (``device = default_device()``), and pass ``device`` on explicitly; no other
    function of the package chooses a device. Every model of the book may use a GPU but
    never needs one: each chapter runs on a 2-core CPU within its time budget.

    Returns:
        A ``torch.device``.

    Example:
        >>> default_device().type in {"cuda", "mps", "cpu"}
        True
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        try:  # "available" is not "working": some builds fail on the first kernel.
            (torch.ones(1, device="mps") + 1).cpu()
        except Exception:  # noqa: BLE001 - any failure means: do not use MPS
            pass
        else:
            return torch.device("mps")
    return torch.device("cpu")


def append_dims(x: Tensor, ndim: int) -> Tensor:
    r"""Append trailing singleton dimensions to ``x`` until it has ``ndim`` dimensions.

    The one broadcasting helper of the package: it turns per-example scalars such as times
    ``t`` of shape ``(B,)`` into ``(B, 1, ..., 1)``, which broadcasts against a batch of
    shape ``(B, *D)``. The result is a view of ``x`` (no copy).

    Args:
        x: tensor of shape ``(B, ...)``, usually ``(B,)``.
        ndim: number of dimensions of the result, at least ``x.ndim``; typically the
            ``.ndim`` of the batch to broadcast against.

    Returns:
        ``x`` viewed with shape ``(*x.shape, 1, ..., 1)`` and ``ndim`` dimensions.

    Raises:
        TypeError: if ``x`` is not a tensor or ``ndim`` is not an int.
        ValueError: if ``x`` has more than ``ndim`` dimensions.

    Example:
        >>> t = torch.tensor([0.0, 0.5, 1.0])          # (B,)
        >>> x = torch.ones(3, 1, 8, 8)                 # (B, C, H, W)
        >>> append_dims(t, x.ndim).shape
        torch.Size([3, 1, 1, 1])
        >>> (append_dims(t, x.ndim) * x).shape
        torch.Size([3, 1, 8, 8])
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"append_dims: x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(ndim, bool) or not isinstance(ndim, int):
        raise TypeError(f"append_dims: ndim must be an int, got {type(ndim).__name__}")
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(
            f"append_dims: x has {x.ndim} dimensions (shape {tuple(x.shape)}), "
            f"more than the requested ndim={ndim}"
        )
    return x.reshape(*x.shape, *([1] * missing))


class SinusoidalEmbedding(nn.Module):
    r"""Sinusoidal embedding of scalar times, ``(B,) -> (B, dim)``.

    With :math:`h = \mathrm{dim} / 2` frequencies
    :math:`\omega_k = P^{-k/h}` for :math:`k = 0, \dots, h - 1` (:math:`P` is
    ``max_period``), a time :math:`t` is mapped to

    .. math::

        e(t) = \big(\cos(s t \omega_0), \dots, \cos(s t \omega_{h-1}),
                    \sin(s t \omega_0), \dots, \sin(s t \omega_{h-1})\big),

    the position encoding of Vaswani et al. (2017, Sec. 3.5) used for diffusion times by
    Ho et al. (2020). The book's times are floats in :math:`[0, 1]`; the factor
    :math:`s` (``scale``, default 1000) stretches them to the range :math:`[0, 1000]` of
    DDPM's integer steps, so that the fastest frequency turns by one radian between
    times :math:`10^{-3}` apart and the slow ones still vary across :math:`[0, 1]`.
    For times that already are integer steps, pass ``scale=1.0``.

    Every entry lies in :math:`[-1, 1]` and :math:`\|e(t)\|^2 = h` for every :math:`t`.
    The module has no parameters; the frequencies are a (non-persistent) buffer, so
    ``.to(device)`` moves them.

    Args:
        dim: embedding size, a positive even integer.
        max_period: :math:`P`, the longest period (in scaled time units).
        scale: :math:`s`, multiplies ``t`` before the sinusoids.

    Example:
        >>> emb = SinusoidalEmbedding(16)
        >>> e = emb(torch.tensor([0.0, 0.5, 1.0]))     # (B,) -> (B, dim)
        >>> e.shape
        torch.Size([3, 16])
        >>> bool(e.abs().max() <= 1.0)
        True
    """

    freqs: Tensor

    def __init__(self, dim: int, *, max_period: float = 10_000.0, scale: float = 1000.0) -> None:
        super().__init__()
        _check_int("SinusoidalEmbedding: dim", dim)
        if dim % 2:
            raise ValueError(f"SinusoidalEmbedding: dim must be even, got {dim}")
        if not max_period > 0 or not math.isfinite(max_period):
            raise ValueError(f"SinusoidalEmbedding: max_period must be > 0, got {max_period}")
        if not math.isfinite(scale) or scale == 0:
            raise ValueError(f"SinusoidalEmbedding: scale must be finite and nonzero, got {scale}")
        self.dim = dim
        self.max_period = float(max_period)
        self.scale = float(scale)
        half = dim // 2
        # Computed in float64 for accuracy, then cast.
        k = torch.arange(half, dtype=torch.float64)
        freqs = torch.exp(-math.log(max_period) * k / half)  # (h,)
        self.register_buffer("freqs", freqs.to(torch.get_default_dtype()), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        r"""Embed times.

        Args:
            t: times, shape ``(B,)``; an integer tensor is converted to floats.

        Returns:
            Embeddings of shape ``(B, dim)``, in the dtype of ``t`` (or the default dtype
            for an integer ``t``).
        """
        if not isinstance(t, Tensor):
            raise TypeError(f"SinusoidalEmbedding: t must be a tensor, got {type(t).__name__}")
        if t.ndim != 1:
            raise ValueError(
                f"SinusoidalEmbedding: t must have shape (B,), got {tuple(t.shape)}"
            )
        dtype = t.dtype if t.is_floating_point() else self.freqs.dtype
        args = (self.scale * t.to(dtype))[:, None] * self.freqs.to(dtype)[None, :]  # (B, h)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}, scale={self.scale:g}"


def _calls_forward(module: nn.Module) -> bool:
    """Whether calling each submodule of ``module`` is the same as calling its ``forward``:
    no hooks (global or on any submodule) and no JIT tracing, the case in which
    ``nn.Module.__call__`` calls ``forward`` at once. Calling ``forward`` directly then
    runs the same operations, minus about 4 microseconds of Python per call (an MLP
    without time on a few hundred rows: 0.19 -> 0.15 ms per call)."""
    try:  # PyTorch's private registries: a version without them takes the normal path
        if (_torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks
                or _torch_module._global_backward_hooks
                or _torch_module._global_backward_pre_hooks
                or torch._C._get_tracing_state()):
            return False
    except AttributeError:  # pragma: no cover - other PyTorch versions
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   or m._backward_pre_hooks for m in module.modules())


FOLD_CHUNK = 2048
"""Rows per matrix product of an :class:`MLP` call without autograd (cache-sized)."""
FOLD_MAX_LEVELS = 64
"""With autograd, an :class:`MLP` folds its time branch when a batch holds at most this
many distinct times (the noise levels of a score network): the branch then runs once per
level, not once per row."""


class MLP(nn.Module):
    r"""A fully connected network ``(B, in_dim) -> (B, out_dim)``, optionally time-conditioned.

    Without time (``time_dim=0``) it is ``depth`` hidden layers of width ``hidden``, each
    a linear map followed by ``activation``, then a linear output layer:

    .. math::

        h_0 = x, \qquad h_\ell = \sigma(W_\ell h_{\ell-1} + b_\ell)
        \ (\ell = 1, \dots, L), \qquad f(x) = W_{\mathrm{out}} h_L + b_{\mathrm{out}}.

    With ``time_dim > 0`` it is conditioned on a time :math:`t` the way the residual
    blocks of DDPM's U-Net are (Ho et al., 2020): ``t`` is embedded by a
    :class:`SinusoidalEmbedding` of size ``time_dim`` and a two-layer MLP into
    :math:`\tau(t) \in \mathbb{R}^{\mathrm{hidden}}`, and every hidden layer adds its own
    linear projection of it to its pre-activation:

    .. math::

        h_\ell = \sigma\big(W_\ell h_{\ell-1} + b_\ell + V_\ell\, \sigma(\tau(t)) + c_\ell\big).

    Adding (rather than concatenating ``t`` to the input once) lets every layer modulate
    its features with time, which matters for the deeper networks of later chapters.

    Args:
        in_dim: input size.
        out_dim: output size; defaults to ``in_dim`` (a vector field or a score).
        hidden: width of the hidden layers.
        depth: number of hidden layers :math:`L \ge 1` (the network has ``depth + 1``
            linear layers, plus those of the time branch).
        activation: a callable returning an activation module, e.g. ``nn.SiLU`` (default),
            ``nn.ReLU`` or ``nn.Tanh``.
        time_dim: size of the sinusoidal time embedding; ``0`` (default) means no time
            input. Must be even.
        time_scale: the factor :math:`s > 0` that multiplies ``t`` before the sinusoids
            (the ``scale`` of :class:`SinusoidalEmbedding`). The default 1000 suits times
            in :math:`[0, 1]`; for an input such as EDM's
            :math:`c_{\mathrm{noise}} = \tfrac14 \ln\sigma` it makes the fastest feature
            :math:`\cos(250 \ln\sigma)`, so a smaller factor (EDM itself uses none) gives
            a smoother function of the input. Ignored without time.
        zero_init_last: if true, the output layer starts at zero, so the untrained network
            outputs exactly 0 (useful for residual parameterizations and flows that
            should start at the identity).

    Example:
        >>> net = MLP(2, hidden=32, depth=2)
        >>> net(torch.randn(5, 2)).shape
        torch.Size([5, 2])
        >>> field = MLP(2, hidden=32, time_dim=16)
        >>> field(torch.randn(5, 2), torch.rand(5)).shape   # t of shape (B,)
        torch.Size([5, 2])
        >>> field(torch.randn(5, 2), 0.3).shape              # a scalar t is broadcast
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None = None,
        *,
        hidden: int = 128,
        depth: int = 3,
        activation: Callable[[], nn.Module] = nn.SiLU,
        time_dim: int = 0,
        time_scale: float = 1000.0,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        _check_int("MLP: in_dim", in_dim)
        out_dim = in_dim if out_dim is None else out_dim
        _check_int("MLP: out_dim", out_dim)
        _check_int("MLP: hidden", hidden)
        _check_int("MLP: depth", depth)
        _check_int("MLP: time_dim", time_dim, minimum=0)
        if time_dim % 2:
            raise ValueError(f"MLP: time_dim must be even (or 0 for no time), got {time_dim}")
        time_scale = _check_positive("MLP: time_scale", time_scale)
        if not callable(activation):
            raise TypeError("MLP: activation must be a callable returning an nn.Module")
        act = activation()
        if not isinstance(act, nn.Module):
            raise TypeError(
                f"MLP: activation() must return an nn.Module, got {type(act).__name__}"
            )
        self.in_dim, self.out_dim = in_dim, out_dim
        self.hidden, self.depth, self.time_dim = hidden, depth, time_dim

        widths = [in_dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.acts = nn.ModuleList([act] + [activation() for _ in range(depth - 1)])
        self.out = nn.Linear(hidden, out_dim)
        if zero_init_last:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        self.time_embed: nn.Module | None = None
        self.time_proj: nn.ModuleList | None = None
        if time_dim > 0:
            self.time_embed = nn.Sequential(  # t: (B,) -> tau(t): (B, hidden)
                SinusoidalEmbedding(time_dim, scale=time_scale),
                nn.Linear(time_dim, hidden),
                activation(),
                nn.Linear(hidden, hidden),
                activation(),
            )
            self.time_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))

    def _batch_times(self, t: Tensor | float, x: Tensor) -> Tensor:
        """Validate ``t`` and return it with shape ``(B,)``, or ``(1,)`` for a scalar."""
        if isinstance(t, bool) or not isinstance(t, (Tensor, int, float)):
            raise TypeError(
                f"MLP: t must be a tensor of shape (B,) or a number, got {type(t).__name__}"
            )
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        # straight to x's dtype: a Python float through float32 would lose digits
        t = torch.as_tensor(t, dtype=dtype, device=x.device) if not isinstance(t, Tensor) \
            else t.to(device=x.device, dtype=dtype)
        if t.ndim == 0:
            return t.reshape(1)  # a scalar: the time branch runs once and broadcasts
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(
                f"MLP: t must be a scalar or have shape (B,) = ({x.shape[0]},), "
                f"got {tuple(t.shape)}; flatten a (B, 1) tensor with t.flatten()"
            )
        return t

    def forward(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        r"""Apply the network.

        Args:
            x: inputs, shape ``(B, in_dim)``.
            t: times, shape ``(B,)``, or a Python number / 0-d tensor used for the whole
                batch (the time branch then runs once, not once per row, which makes the
                many network calls of a sampler cheaper). Required if and only if the
                network was built with ``time_dim > 0``.

        Returns:
            Outputs of shape ``(B, out_dim)``.

        Raises:
            TypeError: if ``x`` or ``t`` has the wrong type, or ``t`` is missing when the
                network needs it, or is given when it does not.
            ValueError: if a shape is wrong.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"MLP: x must be a tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(
                f"MLP: x must have shape (B, in_dim) = (B, {self.in_dim}), got {tuple(x.shape)}"
            )
        if self.time_embed is None:
            if t is not None:
                raise TypeError(
                    "MLP: got a time t, but this network was built without time "
                    "(time_dim=0); build it with MLP(..., time_dim=64) to condition on t"
                )
            h = x
            if _calls_forward(self):  # what nn.Module.__call__ would do, without its cost
                for layer, act in zip(self.layers, self.acts):
                    h = act.forward(layer.forward(h))  # (B, hidden)
                return self.out.forward(h)  # (B, out_dim)
            for layer, act in zip(self.layers, self.acts):
                h = act(layer(h))  # (B, hidden)
            return self.out(h)  # (B, out_dim)

        if t is None:
            raise TypeError(
                f"MLP: this network is time-conditioned (time_dim={self.time_dim}); "
                "call it as net(x, t) with t of shape (B,) or a scalar"
            )
        assert self.time_proj is not None
        times = self._batch_times(t, x)  # (B,) or (1,)
        if times.shape[0] == 1 or not torch.is_grad_enabled() or \
                times.shape[0] <= FOLD_MAX_LEVELS:  # (then at most that many distinct times)
            return self._forward_folded(x, times)
        levels = torch.unique(times, return_inverse=True)  # (U,), (B,): one sort per call
        if levels[0].shape[0] <= FOLD_MAX_LEVELS:  # a ladder of levels (a score network's)
            return self._forward_folded(x, times, levels)
        tau = self.time_embed(times)  # (B, hidden)
        h = x
        for layer, act, proj in zip(self.layers, self.acts, self.time_proj):
            h = act(layer(h) + proj(tau))  # (B, hidden)
        return self.out(h)  # (B, out_dim)

    def _forward_folded(
        self, x: Tensor, times: Tensor, levels: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """The same function, faster when few distinct times occur (a sampler's calls).

        The time branch runs once per *distinct* time (once for a scalar or a constant
        ``(B,)`` time), its projections are folded into the biases of the hidden layers,
        the rows are processed in chunks of :data:`FOLD_CHUNK` (the activations then stay
        in the CPU cache), and activations are applied in place when autograd is off.
        ``levels`` is ``torch.unique(times, return_inverse=True)`` if already computed.
        """
        assert self.time_embed is not None and self.time_proj is not None
        if times.shape[0] == 1:
            distinct, index = times, None
        else:
            distinct, index = levels if levels is not None else torch.unique(
                times, return_inverse=True)  # (U,), (B,)
            if distinct.shape[0] == 1:
                index = None
        tau = self.time_embed(distinct)  # (U, hidden)
        biases = [layer.bias + proj(tau) for layer, proj in zip(self.layers, self.time_proj)]
        inplace = not torch.is_grad_enabled()
        outs = []
        for start in range(0, x.shape[0], FOLD_CHUNK):
            h = x[start : start + FOLD_CHUNK]
            rows = None if index is None else index[start : start + FOLD_CHUNK]
            for layer, act, bias in zip(self.layers, self.acts, biases):
                b = bias if rows is None else bias[rows]  # (1 or rows, hidden)
                h = torch.addmm(b, h, layer.weight.t())
                h = nn.functional.silu(h, inplace=True) if inplace and isinstance(
                    act, nn.SiLU) else act(h)
            outs.append(self.out(h))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, hidden={self.hidden}, "
            f"depth={self.depth}, time_dim={self.time_dim}"
        )


class DigitClassifier(nn.Module):
    r"""A small convolutional classifier of the 8x8 digits.

    Two 3x3 convolutions (16 and 32 channels, SiLU), 2x2 average pooling, and two linear
    layers. Its penultimate activations, :meth:`features`, play the role that the
    Inception network's features play in the Frechet Inception Distance (Heusel et al.,
    2017): the evaluation chapter computes a Frechet distance on them
    (``book/foundations/evaluation.md``).

    Args:
        n_features: width of the feature layer.
        n_classes: number of classes.

    Example:
        >>> net = DigitClassifier()
        >>> net(torch.zeros(5, 1, 8, 8)).shape, net.features(torch.zeros(5, 1, 8, 8)).shape
        (torch.Size([5, 10]), torch.Size([5, 64]))
    """

    def __init__(self, n_features: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("n_classes", n_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DigitClassifier: {name} must be a positive int, got {value!r}")
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(),  # (B, 16, 8, 8)
            nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(),  # (B, 32, 8, 8)
            nn.AvgPool2d(2), nn.Flatten(),  # (B, 32 * 4 * 4)
            nn.Linear(32 * 4 * 4, n_features), nn.SiLU(),  # (B, n_features)
        )
        self.head = nn.Linear(n_features, n_classes)

    def features(self, x: Tensor) -> Tensor:
        r"""Penultimate features, shape ``(B, n_features)``, of images ``x`` ``(B, 1, 8, 8)``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"DigitClassifier: x must be a tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(
                f"DigitClassifier: x must have shape (B, 1, 8, 8), got {tuple(x.shape)}"
            )
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        r"""Class logits, shape ``(B, n_classes)``, of images ``x`` ``(B, 1, 8, 8)``."""
        return self.head(self.features(x))


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    r"""Number of scalar parameters of ``module`` (shared parameters counted once).

    Args:
        module: any ``torch.nn.Module``.
        trainable_only: count only parameters with ``requires_grad=True``.

    Returns:
        The total number of entries of its parameters.

    Example:
        >>> count_parameters(nn.Linear(3, 4))           # 3 * 4 weights + 4 biases
        16
        >>> count_parameters(MLP(2, hidden=8, depth=1))  # (2*8 + 8) + (8*2 + 2)
        42
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"count_parameters: expected an nn.Module, got {type(module).__name__}"
        )
    return sum(
        p.numel() for p in module.parameters() if p.requires_grad or not trainable_only
    )
