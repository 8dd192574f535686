r"""The registry of benchmark entries: one per model family, added by its chapter.

An :class:`Entry` says how to train a model on a 2-D toy (its ``train`` function) and
where the book derives it (``chapter``). Training returns a :class:`TrainedModel`: an
object that can ``sample(n, *, generator)``, says how many network evaluations one sample
costs (``nfe``), and, where the density is tractable, has an exact ``log_prob(x)``.

Entries belong to a **track** (:data:`TRACKS`): ``"toys"``, the 2-D toys of
:mod:`benchmarks.run` (the default), or ``"sequences"``, the regime-switching sequences of
:mod:`benchmarks.run_sequences`, whose ``train(process, length, generator)`` returns a model
that samples ``(n, length)`` sequences (see :class:`Entry`).

A chapter registers its entry in a module of this folder, e.g. ``benchmarks/ddpm.py``,
which :func:`load_entries` imports:

.. code-block:: python

    from benchmarks.registry import Trained, register

    @register(name="ddpm", family="diffusion", chapter="book/diffusion/ddpm.md")
    def train_ddpm(dataset, generator):
        x = dataset.sample(20_000, generator=generator)
        model = DDPM(MLP(2, hidden=128), shape=(2,))
        fit(model, x, steps=4000, seed=int(torch.randint(2**62, (), generator=generator)))
        return Trained(sample=model.sample, nfe=model.steps, n_train=len(x))
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


__all__ = [
    "ENTRIES",
    "TRACKS",
    "Entry",
    "Trained",
    "TrainedModel",
    "entries_of",
    "load_entries",
    "register",
    "seed_from",
]


@runtime_checkable
class TrainedModel(Protocol):
    r"""What an entry's ``train`` returns.

    Attributes:
        nfe: network evaluations per sample (0 for a closed-form sampler; the number of
            solver steps times evaluations per step for a diffusion or flow sampler).

    Optionally, ``log_prob(x)``: the model's exact log-density at ``x`` of shape
    ``(B, 2)``, returning ``(B,)``. A model without a tractable density leaves it out (or
    sets it to ``None``); the benchmark then reports no likelihood for it. An optional
    ``n_train`` attribute (training points used) is recorded when present.
    """

    nfe: int

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` points, shape ``(n, 2)``, from ``generator``."""
        ...  # pragma: no cover


@dataclasses.dataclass
class Trained:
    r"""Adapter that turns any sampler into a :class:`TrainedModel`.

    Attributes:
        sample: ``sample(n, *, generator=None) -> (n, 2)``, e.g. a gmbook model's bound
            method ``model.sample`` (on the sequence track:
            ``sample(n, length, *, generator=None) -> (n, length)``).
        nfe: network evaluations per sample (on the sequence track: per sequence).
        log_prob: ``log_prob(x) -> (B,)``, the exact log-density, or ``None`` (on the
            sequence track: of sequences ``(B, T)``, in nats).
        n_train: the number of training points used, for the record (optional).
    """

    sample: Callable[..., Tensor]
    nfe: int
    log_prob: Callable[[Tensor], Tensor] | None = None
    n_train: int | None = None


@dataclasses.dataclass(frozen=True)
class Entry:
    r"""One model family in the benchmark.

    Attributes:
        name: unique identifier, lower case with underscores (``"gaussian_mixture"``); the
            ``--entries`` option of the runner selects by it.
        family: the model family (``"baseline"``, ``"vae"``, ``"ddpm"``, ...).
        chapter: the book page that derives the model, e.g.
            ``"book/foundations/evaluation.md"``.
        train: ``train(dataset, generator) -> TrainedModel``. It draws its own training
            points from ``dataset`` (a :class:`gmbook.data.Toy2D`) with ``generator`` and
            takes every other random number from it too (or from the global RNG, which
            the runner forks and seeds around the call). On the sequence track,
            ``train(process, length, generator)``: ``process`` is a
            :class:`gmbook.sequences.RegimeSwitching`, ``length`` the steps per sequence,
            and the result samples ``(n, length)`` sequences and, if it has one, gives
            their exact ``log_prob`` in nats.
        description: one line saying what is trained and how (for the tables).
        track: ``"toys"`` (default) or ``"sequences"`` (:data:`TRACKS`).
    """

    name: str
    family: str
    chapter: str
    train: Callable[..., TrainedModel]
    description: str = ""
    track: str = "toys"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(
                f"Entry.name must be lower case letters, digits and underscores, got {self.name!r}"
            )
        if not callable(self.train):
            raise TypeError(f"Entry.train must be callable, got {type(self.train).__name__}")
        if self.track not in TRACKS:
            raise ValueError(f"Entry.track must be one of {', '.join(TRACKS)}, got "
                             f"{self.track!r}")


TRACKS = ("toys", "sequences")
"""The benchmark's tracks: the 2-D toys and the regime-switching sequences."""


ENTRIES: dict[str, Entry] = {}
"""The registered entries by name, in registration order."""


def register(
    entry: Entry | None = None, /, **fields: Any
) -> Entry | Callable[[Callable[..., TrainedModel]], Callable[..., TrainedModel]]:
    r"""Add an entry to :data:`ENTRIES`.

    Either ``register(Entry(...))``, or as a decorator of the train function,
    ``@register(name=..., family=..., chapter=...)``, which returns the function unchanged.

    Raises:
        ValueError: if an entry of that name is already registered.
    """
    if entry is None:

        def decorator(train: Callable[..., TrainedModel]) -> Callable[..., TrainedModel]:
            register(Entry(train=train, **fields))
            return train

        return decorator
    if fields:
        raise TypeError("register: pass either an Entry or its fields, not both")
    if not isinstance(entry, Entry):
        raise TypeError(f"register: expected an Entry, got {type(entry).__name__}")
    if entry.name in ENTRIES:
        raise ValueError(f"register: an entry named {entry.name!r} is already registered")
    ENTRIES[entry.name] = entry
    return entry


def entries_of(track: str) -> dict[str, Entry]:
    r"""The registered entries of one track (:data:`TRACKS`), by name, in registration order.

    Raises:
        ValueError: for an unknown track.
    """
    if track not in TRACKS:
        raise ValueError(f"unknown track {track!r}; choose from {', '.join(TRACKS)}")
    return {name: e for name, e in ENTRIES.items() if e.track == track}


_INFRASTRUCTURE = {"registry", "run", "run_sequences", "__main__"}


def load_entries() -> dict[str, Entry]:
    r"""Import every module of the ``benchmarks`` folder, so that each registers its entries.

    Returns:
        :data:`ENTRIES`, after the imports.
    """
    import benchmarks

    for module in pkgutil.iter_modules(benchmarks.__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"benchmarks.{module.name}")
    return ENTRIES


def seed_from(generator: torch.Generator) -> int:
    r"""An int seed drawn from ``generator``, for code that takes a seed, not a generator
    (``gmbook.train.fit``, scikit-learn)."""
    return int(torch.randint(0, 2**31 - 1, (), generator=generator))
