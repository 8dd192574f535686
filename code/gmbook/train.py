r"""The training loop of the book, and an exponential moving average of weights.

Chapters show a short explicit loop when the loop itself is the lesson; every real
training run goes through :func:`fit`, which adds what a teaching loop leaves out: an
isolated random state (``seed``), minibatches from a dataset tensor, a learning-rate
schedule with warm-up, gradient clipping, an :class:`EMA` of the weights, a progress bar
that stays quiet in the static book build, and a clear error when the loss diverges.
It returns a :class:`History` of the losses for the chapter's figures.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from gmbook._checks import check_int as _check_int

__all__ = ["EMA", "History", "fit"]


# --------------------------------------------------------------------------- History


@dataclass(repr=False)
class History:
    r"""What :func:`fit` returns: the loss of every step and the wall time.

    Attributes:
        losses: the training loss of every step, ``losses[k]`` being that of step
            ``k + 1`` (measured on the step's minibatch, before its update).
        seconds: wall-clock time of the loop, in seconds.
        steps: number of optimization steps taken.
        lrs: the learning rate used at every step (of the optimizer's first parameter
            group), to plot a schedule.

    Example:
        >>> h = History(losses=[4.0, 2.0, 1.0, 1.0], seconds=0.1, steps=4)
        >>> h.final(window=2)
        1.0
        >>> h.smoothed(window=2).tolist()
        [4.0, 3.0, 1.5, 1.0]
    """

    losses: list[float]
    seconds: float
    steps: int
    lrs: list[float] = field(default_factory=list)

    def smoothed(self, window: int = 50) -> np.ndarray:
        r"""Trailing moving average of the losses, for plotting.

        Entry ``k`` is the mean of ``losses[max(0, k - window + 1) : k + 1]``, so the result
        has one value per step (the first ``window - 1`` average fewer losses).

        Args:
            window: number of steps averaged, at least 1.

        Returns:
            A float array of shape ``(steps,)``.
        """
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"History.smoothed: window must be an int >= 1, got {window!r}")
        x = np.asarray(self.losses, dtype=np.float64)
        csum = np.concatenate([[0.0], np.cumsum(x)])  # (steps + 1,)
        hi = np.arange(1, x.size + 1)
        lo = np.maximum(0, hi - window)
        return (csum[hi] - csum[lo]) / (hi - lo)

    def final(self, window: int = 100) -> float:
        r"""Mean of the last ``window`` losses (all of them if there are fewer).

        Args:
            window: number of final steps averaged, at least 1.

        Returns:
            The mean loss at the end of training, a float.

        Raises:
            ValueError: if there are no losses (``steps=0``).
        """
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"History.final: window must be an int >= 1, got {window!r}")
        if not self.losses:
            raise ValueError("History.final: no losses recorded (the run had 0 steps)")
        return float(np.mean(self.losses[-window:]))

    def __repr__(self) -> str:
        final = f"{self.final():.4g}" if self.losses else "n/a"
        return f"History(steps={self.steps}, final_loss={final}, seconds={self.seconds:.2f})"


# --------------------------------------------------------------------------- EMA


class EMA:
    r"""Exponential moving average (EMA) of a model's parameters.

    After every optimizer step, :meth:`update` moves each averaged parameter
    :math:`\bar\theta` towards the current one :math:`\theta`:

    .. math::

        \bar\theta \leftarrow \beta_n \bar\theta + (1 - \beta_n)\, \theta,
        \qquad \beta_n = \beta
        \ \text{ or, with warm-up, }\ \beta_n = \min\Big(\beta, \frac{1 + n}{10 + n}\Big),

    where :math:`n = 1, 2, \dots` counts the updates. The average starts at the weights
    the model has when the EMA is created. Without warm-up, a decay such as 0.999
    remembers those (random) initial weights for thousands of steps; the warm-up
    correction, standard in diffusion codebases (TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``, latent diffusion's ``LitEma``), uses a
    short memory early on (:math:`\beta_1 = 2/11`) that lengthens towards
    :math:`\beta`. Sampling from the averaged weights of a diffusion model gives visibly
    better samples than from the last iterate (Ho et al., 2020, Appendix B).

    Buffers (e.g. normalization statistics) are not averaged: the latest values are copied
    at every update. The EMA keeps its own copies (on the model's device), so moving the
    model with ``.to(device)`` later is fine.

    Args:
        model: the module being trained.
        decay: :math:`\beta \in [0, 1)`; the average has a memory of about
            :math:`1 / (1 - \beta)` steps.
        warmup: use the warm-up-corrected decay :math:`\beta_n` above.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = net.bias.fill_(0.0)
        >>> ema = EMA(net, decay=0.9)         # the average starts at bias = 0
        >>> with torch.no_grad():
        ...     _ = net.bias.fill_(1.0)       # as if an optimizer step set it to 1
        >>> ema.update()                      # the average moves 10% of the way to 1
        >>> with ema.swap():                  # temporarily load the averaged weights
        ...     print(f"{net.bias.item():.3f}")
        0.100
        >>> net.bias.item()                   # the trained weights are back on exit
        1.0
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"EMA: model must be an nn.Module, got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)):
            raise TypeError(f"EMA: decay must be a float, got {type(decay).__name__}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must satisfy 0 <= decay < 1, got {decay}")
        self.model = model
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        with torch.no_grad():
            self.shadow: dict[str, Tensor] = {
                name: p.detach().clone() for name, p in model.named_parameters()
            }
            self.buffers: dict[str, Tensor] = {
                name: b.detach().clone() for name, b in model.named_buffers()
            }

    def decay_at(self, n: int) -> float:
        r"""The decay :math:`\beta_n` used by the ``n``-th update (``n >= 1``)."""
        if self.warmup:
            return min(self.decay, (1 + n) / (10 + n))
        return self.decay

    @torch.no_grad()
    def update(self) -> None:
        r"""Fold the model's current parameters into the average (call after each step)."""
        params = dict(self.model.named_parameters())
        self._check_names(params, "update")
        self.num_updates += 1
        beta = self.decay_at(self.num_updates)
        averaged, current = [], []
        for name, p in params.items():
            avg = self.shadow[name]
            if avg.device != p.device or avg.dtype != p.dtype:
                avg = self.shadow[name] = avg.to(device=p.device, dtype=p.dtype)
            if p.is_floating_point() or p.is_complex():
                averaged.append(avg)
                current.append(p.detach())
            else:
                avg.copy_(p)
        if averaged:  # beta * avg + (1 - beta) * p, all tensors in one call (same arithmetic)
            torch._foreach_lerp_(averaged, current, 1.0 - beta)
        self._copy_buffers()

    def _updater(self) -> Callable[[], None]:
        r"""An :meth:`update` for a loop in which the model's tensors stay the same objects.

        :func:`fit` calls it once before its loop. The first call of the returned function
        is :meth:`update` itself (names checked, averages moved to the parameters' device
        and dtype, buffers copied); it then keeps the tensors, so that later calls skip the
        walk of the module tree (about 6% of a small model's training step) and do the same
        arithmetic on the same tensors: the parameters are those the optimizer updates in
        place, and buffers are updated in place too (batch normalization's statistics), as
        long as no module assigns a new tensor to one during the loop.
        """
        kept: dict[str, list] = {}

        @torch.no_grad()
        def update() -> None:
            if not kept:  # the first call: update() itself, then remember the tensors
                self.update()
                params = dict(self.model.named_parameters())
                floats = [(self.shadow[name], p.detach()) for name, p in params.items()
                          if p.is_floating_point() or p.is_complex()]
                kept["averaged"] = [a for a, _ in floats]
                kept["current"] = [p for _, p in floats]
                kept["others"] = [(self.shadow[name], p) for name, p in params.items()
                                  if not (p.is_floating_point() or p.is_complex())]
                kept["buffers"] = list(self.buffers.values())
                kept["latest"] = [b.detach() for b in self.model.buffers()]
                return
            self.num_updates += 1
            beta = self.decay_at(self.num_updates)
            for avg, p in kept["others"]:
                avg.copy_(p)
            if kept["averaged"]:  # the same call as update()'s
                torch._foreach_lerp_(kept["averaged"], kept["current"], 1.0 - beta)
            if kept["buffers"]:
                torch._foreach_copy_(kept["buffers"], kept["latest"])

        return update

    def _copy_buffers(self) -> None:
        """Keep a copy of the model's latest buffers: copied into the kept tensors when the
        names, shapes, dtypes and devices are unchanged (no allocation), else cloned."""
        latest = dict(self.model.named_buffers())
        kept = self.buffers
        if latest.keys() == kept.keys() and all(
            b.shape == kept[name].shape and b.dtype == kept[name].dtype
            and b.device == kept[name].device for name, b in latest.items()
        ):
            if kept:
                torch._foreach_copy_(list(kept.values()), [b.detach() for b in latest.values()])
        else:
            self.buffers = {name: b.detach().clone() for name, b in latest.items()}

    def _check_names(self, params: dict[str, Tensor], where: str) -> None:
        if params.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - params.keys())
            extra = sorted(params.keys() - self.shadow.keys())
            raise ValueError(
                f"EMA.{where}: the model's parameters do not match the averaged ones "
                f"(missing: {missing}, unexpected: {extra}); was the EMA built for another model?"
            )

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None = None) -> None:
        r"""Overwrite the parameters (and buffers) of ``model`` with the averaged ones.

        Args:
            model: a module with the same parameter names; defaults to the tracked model.
        """
        model = self.model if model is None else model
        if not isinstance(model, nn.Module):
            raise TypeError(f"EMA.copy_to: model must be an nn.Module, got {type(model).__name__}")
        params = dict(model.named_parameters())
        self._check_names(params, "copy_to")
        for name, p in params.items():
            p.copy_(self.shadow[name])
        for name, b in model.named_buffers():
            if name in self.buffers:
                b.copy_(self.buffers[name])

    @contextlib.contextmanager
    def swap(self, model: nn.Module | None = None) -> Iterator[nn.Module]:
        r"""Context manager: load the averaged weights into ``model``, restore them on exit.

        Use it to sample or evaluate with the averaged weights in the middle of training::

            with ema.swap():
                x = model.sample(1000)

        Args:
            model: defaults to the tracked model.

        Yields:
            The model, holding the averaged weights inside the ``with`` block.
        """
        model = self.model if model is None else model
        if not isinstance(model, nn.Module):
            raise TypeError(f"EMA.swap: model must be an nn.Module, got {type(model).__name__}")
        with torch.no_grad():
            saved = [(t, t.detach().clone()) for t in (*model.parameters(), *model.buffers())]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for t, value in saved:
                    t.copy_(value)

    def average_parameters(self) -> contextlib.AbstractContextManager[nn.Module]:
        r"""Same as :meth:`swap` on the tracked model (the name ``torch_ema`` uses)."""
        return self.swap()

    def state_dict(self) -> dict[str, Any]:
        r"""The EMA's state (decay, update count, averaged tensors), for ``torch.save``."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
            "buffers": {k: v.clone() for k, v in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        r"""Restore a state produced by :meth:`state_dict`."""
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError(
                "EMA.load_state_dict: the saved parameter names do not match the model"
            )
        decay = float(state["decay"])
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA.load_state_dict: invalid decay {decay}")
        self.decay, self.warmup = decay, bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.buffers = {k: v.clone() for k, v in state["buffers"].items()}

    def __repr__(self) -> str:
        return (
            f"EMA(decay={self.decay}, warmup={self.warmup}, num_updates={self.num_updates}, "
            f"model={type(self.model).__name__})"
        )


# --------------------------------------------------------------------------- fit


class _Minibatches:
    """Epoch-shuffled minibatches of a dataset tensor, drawn with a private generator."""

    def __init__(self, data: Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.data = data
        self.n = data.shape[0]
        self.batch_size = min(batch_size, self.n)
        self.generator = generator
        self.perm: Tensor | None = None
        self.pos = 0

    def __call__(self, _n: int) -> Tensor:
        if self.batch_size == self.n:  # full-batch training: no sampling needed
            return self.data
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator).to(self.data.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]  # (batch_size,)
        self.pos += self.batch_size
        return self.data[idx]  # (batch_size, *D)


def _resolve_loss(
    loss_fn: Callable[[Tensor], Tensor] | nn.Module,
) -> tuple[Callable[[Tensor], Tensor], nn.Module | None]:
    """Return the callable computing the loss and the module that owns it (if any)."""
    if isinstance(loss_fn, nn.Module):
        method = getattr(loss_fn, "loss", None)
        return (method if callable(method) else loss_fn), loss_fn
    if callable(loss_fn):
        owner = getattr(loss_fn, "__self__", None)  # a bound method such as model.loss
        return loss_fn, owner if isinstance(owner, nn.Module) else None
    raise TypeError(
        "fit: loss_fn must be a module with a .loss(x) method or a callable batch -> scalar, "
        f"got {type(loss_fn).__name__}"
    )


def _lr_factor(i: int, steps: int, schedule: str, warmup: int) -> float:
    """Multiplier of the base learning rate at step ``i`` (0-based)."""
    if i < warmup:
        return (i + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (i - warmup) / max(steps - warmup, 1)  # in [0, 1)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch_source(data: Tensor | Callable[[int], Tensor], batch_size: int,
                  device: torch.device) -> Callable[[int], Tensor]:
    """What a training loop draws its minibatches from: a callable as given, or, for a
    tensor, shuffled epochs of it (:class:`_Minibatches`) with a generator seeded from the
    global RNG (which :func:`fit` and :func:`gmbook.gans.train_gan` fork and seed)."""
    if not isinstance(data, Tensor):
        return data
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
    return _Minibatches(data.to(device), batch_size, gen)


def _progress_bar(steps: int, progress: bool | None) -> Iterable[int]:
    """``range(steps)``, wrapped in a progress bar unless disabled."""
    iterable = range(steps)
    if progress is False:
        return iterable
    if progress is None:
        try:
            from gmbook.display import progress as auto_progress
        except ImportError:
            auto_progress = None
        if auto_progress is not None:  # assumed tqdm-like: wraps an iterable
            return auto_progress(iterable)
        disable = os.environ.get("GMBOOK_STATIC") == "1"
    else:
        disable = False
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable, desc="fit", leave=False)


def fit(
    loss_fn: Callable[[Tensor], Tensor] | nn.Module,
    data: Callable[[int], Tensor] | Tensor,
    *,
    params: Iterable[nn.Parameter] | None = None,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    schedule: Literal["constant", "cosine"] = "constant",
    warmup: int = 0,
    grad_clip: float | None = None,
    ema: EMA | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    log_every: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> History:
    r"""Minimize a loss by stochastic gradient descent: the one training loop of the book.

    Each step draws a batch, evaluates the scalar loss, back-propagates, optionally clips
    the gradient norm, takes an optimizer step and updates the ``ema``.

    Args:
        loss_fn: what to minimize. A module with a ``.loss(x)`` method (every model of the
            book), a module whose ``forward(x)`` returns the loss, or any callable
            ``batch -> scalar tensor`` (e.g. the bound method ``model.loss`` or a lambda).
        data: either a sampler ``n -> batch`` of shape ``(n, *D)`` (e.g.
            ``lambda n: two_moons(n)``), called with ``batch_size`` at every step, or a
            dataset tensor of shape ``(N, *D)``. A dataset is moved to ``device`` once and
            read in **epoch-shuffled minibatches**: a random permutation (from a private
            ``torch.Generator``) is cut into consecutive batches of ``batch_size``
            examples, without replacement; the incomplete last batch of an epoch is
            dropped and a new permutation is drawn. If ``batch_size >= N``, every step uses
            the whole dataset (full-batch gradient descent).
        params: the parameters to train. Defaults to those of the optimizer when one is
            given, else to the trainable parameters of ``loss_fn`` when it is a module (or
            the module of a bound method such as ``model.loss``).
        steps: number of optimization steps (0 is allowed and trains nothing).
        batch_size: examples per step.
        lr: learning rate of the default optimizer,
            ``torch.optim.Adam(params, lr, foreach=True)``.
            Ignored when ``optimizer`` is given (its own learning rates are the base
            rates of the schedule).
        optimizer: a ready optimizer, for anything but Adam with defaults.
        schedule: ``"constant"``, or ``"cosine"``, which decays each base rate
            :math:`\eta` to 0 over the steps after warm-up:
            :math:`\eta_i = \tfrac{\eta}{2} \big(1 + \cos(\pi\, \tfrac{i - w}{S - w})\big)`
            for step :math:`i = w, \dots, S - 1` (0-based; the last step uses a rate of
            order :math:`\eta / (S - w)^2`).
        warmup: number :math:`w` of initial steps over which the rate grows linearly from
            :math:`\eta / w` to :math:`\eta` (for either schedule); at most ``steps``.
            The optimizer's learning rates are restored when ``fit`` returns.
        grad_clip: if given, clip the global gradient norm of ``params`` to this value.
        ema: an :class:`EMA` of the trained model, updated after every step.
        seed: if given, the loop runs inside ``torch.random.fork_rng`` seeded with it:
            the run (minibatches and any noise the loss draws from the global RNG) is
            reproducible, and the caller's global random state is left exactly as it
            was. If ``None`` (and no ``generator``), the loop uses (and advances) the global
            RNG.
        generator: instead of ``seed``, a generator to draw the run's seed from (one draw,
            which advances it): the run is then reproducible from the generator's state,
            like every other random function of the package, and the caller's global
            random state is left as it was. Give ``seed`` or ``generator``, not both.
        device: device to which each batch (or the dataset) is moved; defaults to that of
            the first trained parameter. The model itself is never moved.
        progress: show a progress bar. ``None`` (default) lets
            ``gmbook.display.progress`` decide (quiet in the static book build, where
            ``GMBOOK_STATIC=1``); if that module is unavailable, a ``tqdm.auto`` bar is
            shown unless ``GMBOOK_STATIC=1``. ``True`` always shows a bar, ``False`` never.
        log_every: ``callback`` is called after every ``log_every``-th step (after every
            step when 0).
        callback: ``callback(step, loss)`` with ``step`` the number of steps done (1-based)
            and ``loss`` that step's loss as a float.

    Returns:
        A :class:`History` with the loss of every step and the wall time.

    Raises:
        TypeError: if an argument has the wrong type, or the loss is not a tensor.
        ValueError: if an argument is out of range, the loss is not a scalar, or the loss
            does not depend on the trained parameters.
        FloatingPointError: if the loss becomes NaN or infinite; the message names the
            step and suggests remedies. The parameters are those before that step.

    Example:
        Linear regression of :math:`y = 3x + 1` by full-batch Adam, with a cosine schedule:

        >>> model = nn.Linear(1, 1)
        >>> x = torch.linspace(-1, 1, 64)[:, None]
        >>> data = torch.cat([x, 3 * x + 1], dim=1)          # (N, 2) columns x, y
        >>> mse = lambda b: ((model(b[:, :1]) - b[:, 1:]) ** 2).mean()
        >>> hist = fit(mse, data, params=model.parameters(), steps=400, lr=0.1,
        ...            schedule="cosine", seed=0, progress=False)
        >>> round(model.weight.item(), 2), round(model.bias.item(), 2)
        (3.0, 1.0)
        >>> len(hist.losses), hist.final(10) < 1e-4
        (400, True)
    """
    objective, owner = _resolve_loss(loss_fn)
    steps = _check_int("steps", steps, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    warmup = _check_int("warmup", warmup, 0)
    log_every = _check_int("log_every", log_every, 0)
    if warmup > steps:
        raise ValueError(f"fit: warmup ({warmup}) must not exceed steps ({steps})")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"fit: schedule must be 'constant' or 'cosine', got {schedule!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"fit: lr must be a float, got {type(lr).__name__}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"fit: lr must be positive and finite, got {lr}")
    if grad_clip is not None and not (grad_clip > 0 and math.isfinite(grad_clip)):
        raise ValueError(f"fit: grad_clip must be positive (or None), got {grad_clip}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"fit: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if ema is not None and not isinstance(ema, EMA):
        raise TypeError(f"fit: ema must be a gmbook.train.EMA, got {type(ema).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"fit: seed must be an int or None, got {type(seed).__name__}")
    if generator is not None:
        if seed is not None:
            raise ValueError("fit: give seed or generator, not both")
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"fit: generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    if callback is not None and not callable(callback):
        raise TypeError("fit: callback must be callable as callback(step, loss)")
    if not isinstance(data, Tensor) and not callable(data):
        raise TypeError(
            "fit: data must be a sampler n -> (n, *D) tensor or a dataset tensor (N, *D), "
            f"got {type(data).__name__} (convert arrays with torch.as_tensor)"
        )
    if isinstance(data, Tensor) and (data.ndim == 0 or data.shape[0] == 0):
        raise ValueError(
            "fit: the dataset tensor must have shape (N, *D) with N >= 1, "
            f"got {tuple(data.shape)}"
        )

    # The parameters to train.
    if params is not None:
        param_list = list(params)
        bad = [type(p).__name__ for p in param_list if not isinstance(p, Tensor)]
        if bad:
            raise TypeError(f"fit: params must be tensors (nn.Parameter), got {bad[0]}")
    elif optimizer is not None:
        param_list = [p for group in optimizer.param_groups for p in group["params"]]
    elif owner is not None:
        param_list = [p for p in owner.parameters() if p.requires_grad]
    else:
        raise TypeError(
            "fit: cannot tell which parameters to train; pass params=model.parameters() "
            "(or an optimizer, or a module as loss_fn)"
        )
    if not param_list:
        raise ValueError("fit: there are no parameters to train")
    if optimizer is None:
        # foreach: one vectorized update of all parameters instead of a Python loop over them
        # (PyTorch picks it by default on GPUs only); the same arithmetic, bit for bit, and
        # about 8% of a small model's training step saved on a CPU.
        optimizer = torch.optim.Adam(param_list, lr=lr, foreach=True)
    device = param_list[0].device if device is None else torch.device(device)

    base_lrs = [group["lr"] for group in optimizer.param_groups]
    ema_update = ema._updater() if ema is not None else None  # ema.update(), looked up once
    modes = {m: m.training for m in owner.modules()} if owner is not None else {}
    rng = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
    losses: list[float] = []
    lrs: list[float] = []
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        draw = _batch_source(data, batch_size, device)
        if owner is not None:
            owner.train()
        bar = _progress_bar(steps, progress)
        postfix_every = max(1, steps // 100)
        start = time.perf_counter()
        try:
            for i in bar:
                factor = _lr_factor(i, steps, schedule, warmup)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor

                batch = draw(batch_size)
                if not isinstance(batch, Tensor):
                    raise TypeError(
                        f"fit: the data sampler must return a tensor, got {type(batch).__name__}"
                    )
                loss = objective(batch.to(device))
                if not isinstance(loss, Tensor):
                    raise TypeError(
                        f"fit: the loss must be a scalar tensor, got {type(loss).__name__}"
                    )
                if loss.ndim != 0:
                    raise ValueError(
                        f"fit: the loss must be a scalar, got shape {tuple(loss.shape)}; "
                        "reduce it over the batch, e.g. with .mean()"
                    )
                if not loss.requires_grad:
                    raise ValueError(
                        "fit: the loss does not depend on the trained parameters (no gradient); "
                        "was it computed under torch.no_grad(), or are params the wrong ones?"
                    )
                value = loss.item()
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"fit: the loss became {value} at step {i + 1} of {steps} "
                        f"(learning rate {optimizer.param_groups[0]['lr']:.3g}). Try a lower lr, "
                        "gradient clipping (grad_clip=1.0), or standardizing the data "
                        "(zero mean, unit variance per coordinate)."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(param_list, grad_clip)
                optimizer.step()
                if ema_update is not None:
                    ema_update()

                losses.append(value)
                lrs.append(float(optimizer.param_groups[0]["lr"]))
                if callback is not None and (i + 1) % max(log_every, 1) == 0:
                    callback(i + 1, value)
                set_postfix = getattr(bar, "set_postfix", None)
                if set_postfix is not None and (i + 1) % postfix_every == 0:
                    set_postfix(loss=f"{value:.4g}", refresh=False)
        finally:
            seconds = time.perf_counter() - start
            close = getattr(bar, "close", None)
            if close is not None:
                close()
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base
            for module, mode in modes.items():
                module.training = mode
    return History(losses=losses, seconds=seconds, steps=len(losses), lrs=lrs)
