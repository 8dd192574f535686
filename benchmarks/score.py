r"""Entry of the chapter "Score matching and denoising" (``gmbook.score``).

* ``ncsn``: :class:`gmbook.score.NCSN`, the chapter's noise-conditional score network on a
  geometric ladder of :data:`LEVELS` noise levels from :data:`SIGMA_MAX` down to
  :data:`SIGMA_MIN`, trained by denoising score matching (weight :math:`\sigma^2`) with Adam,
  warm-up, cosine decay and EMA weights, as in the chapter. Samples are annealed Langevin
  chains, :data:`STEPS_PER_LEVEL` steps per level and a final Tweedie step
  (``nfe = LEVELS * STEPS_PER_LEVEL + 1``). No tractable density: no NLL.
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.data import Toy2D
from gmbook.nets import MLP
from gmbook.score import NCSN, geometric_sigmas
from gmbook.train import EMA, fit

__all__ = ["BATCH", "LEVELS", "SIGMA_MAX", "SIGMA_MIN", "STEPS", "STEPS_PER_LEVEL"]

CHAPTER = "book/diffusion/score_matching.md"
SIGMA_MAX = 4.0
"""The largest noise level (about the largest distance between standardized points)."""
SIGMA_MIN = 0.01
"""The smallest noise level."""
LEVELS = 10
"""Noise levels of the ladder."""
STEPS = 2000
"""Optimization steps."""
BATCH = 512
"""Fresh points per step."""
STEPS_PER_LEVEL = 30
"""Langevin steps per level of the sampler."""
EPS = 5e-5
"""Langevin step size at the last level."""


@register(
    name="ncsn",
    family="score-based",
    chapter=CHAPTER,
    description=f"NCSN, MLP 128x3, {LEVELS} levels {SIGMA_MAX:g}..{SIGMA_MIN:g}, {STEPS} steps "
    f"of {BATCH} fresh points, EMA; annealed Langevin, {STEPS_PER_LEVEL} steps per level",
)
def train_ncsn(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""The chapter's recipe (Adam 3e-3, warm-up 100, cosine, EMA 0.995); annealed sampling."""
    seed = seed_from(generator)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = NCSN(MLP(2, hidden=128, depth=3, time_dim=32),
                     geometric_sigmas(SIGMA_MAX, SIGMA_MIN, LEVELS), dim=2)
    ema = EMA(model, decay=0.995, warmup=True)
    fit(model, lambda n: dataset.sample(n, generator=generator), steps=STEPS,
        batch_size=BATCH, lr=3e-3, schedule="cosine", warmup=100, ema=ema, seed=seed,
        progress=False)
    ema.copy_to(model)
    model.requires_grad_(False)

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.sample(n, steps_per_level=STEPS_PER_LEVEL, eps=EPS, generator=generator)

    return Trained(sample=sample, nfe=LEVELS * STEPS_PER_LEVEL + 1, n_train=STEPS * BATCH)
