r"""Entry of the chapter "Normalizing flows" (``gmbook.flows``).

* ``spline_flow``: the chapter's best flow, a coupling neural spline flow
  (:func:`gmbook.flows.spline_flow`: four rational-quadratic spline couplings with
  :data:`BINS` bins on :math:`[-B, B]`, :math:`B =` :data:`BOUND`, separated by reversals),
  trained by exact maximum likelihood on :data:`STEPS` batches of :data:`BATCH` *fresh*
  points (Adam, cosine decay, 50 warm-up steps). A sample costs one pass through each of the
  four couplings (``nfe = 4``); the density is exact.
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.data import Toy2D
from gmbook.flows import spline_flow
from gmbook.train import fit

__all__ = ["BATCH", "BINS", "BOUND", "LAYERS", "STEPS"]

CHAPTER = "book/latent/flows.md"
LAYERS = 4
"""Spline coupling layers."""
BINS = 8
"""Bins of each spline."""
BOUND = 5.0
"""Half-width of the splines' interval (identity tails outside)."""
STEPS = 1000
"""Optimization steps."""
BATCH = 1024
"""Fresh points per step."""


@register(
    name="spline_flow",
    family="flow",
    chapter=CHAPTER,
    description=f"neural spline flow, {LAYERS} couplings x {BINS} bins, {STEPS} steps of "
    f"{BATCH} fresh points",
)
def train_spline_flow(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Maximum likelihood with Adam (lr 5e-3, cosine), fresh batches from ``dataset``."""
    model = spline_flow(2, layers=LAYERS, bins=BINS, bound=BOUND, hidden=64)
    fit(model, lambda n: dataset.sample(n, generator=generator), steps=STEPS,
        batch_size=BATCH, lr=5e-3, schedule="cosine", warmup=50,
        seed=seed_from(generator), progress=False)
    model.requires_grad_(False)
    return Trained(sample=model.sample, nfe=LAYERS, log_prob=model.log_prob,
                   n_train=STEPS * BATCH)
