r"""Entry of the chapter "Denoising diffusion probabilistic models" (``gmbook.ddpm``).

* ``ddpm``: the chapter's DDPM (:class:`gmbook.ddpm.DDPM`, linear schedule, ``T = 1000``,
  :math:`\epsilon`-prediction) with a time-conditioned MLP of width 128 and depth 3, trained
  on :data:`STEPS` batches of :data:`BATCH` *fresh* points by Adam (lr 3e-3, 100 warm-up
  steps, cosine decay) and sampled from an exponential moving average of the weights (decay
  0.998) with the deterministic DDIM sampler of :data:`SAMPLE_STEPS` steps
  (``nfe = SAMPLE_STEPS``). The density is not tractable (only a bound).
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.data import Toy2D
from gmbook.ddpm import DDPM
from gmbook.nets import MLP
from gmbook.train import EMA, fit

__all__ = ["BATCH", "SAMPLE_STEPS", "STEPS"]

CHAPTER = "book/diffusion/ddpm.md"
STEPS = 3000
"""Optimization steps."""
BATCH = 256
"""Fresh points per step."""
SAMPLE_STEPS = 50
"""Network evaluations of the deterministic sampler."""


@register(
    name="ddpm",
    family="diffusion",
    chapter=CHAPTER,
    description=f"DDPM, MLP 128x3, {STEPS} steps of {BATCH} fresh points, EMA, "
    f"{SAMPLE_STEPS}-step DDIM sampler",
)
def train_ddpm(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Simple loss with Adam (lr 3e-3, warm-up, cosine), EMA weights, DDIM sampling."""
    model = DDPM(MLP(2, hidden=128, depth=3, time_dim=64), (2,), T=1000)
    ema = EMA(model, decay=0.998, warmup=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, fused=True)  # as in the chapter
    fit(model, lambda n: dataset.sample(n, generator=generator), steps=STEPS,
        batch_size=BATCH, optimizer=opt, schedule="cosine", warmup=100, ema=ema,
        seed=seed_from(generator), progress=False)
    ema.copy_to()
    model.requires_grad_(False)

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.sample(n, generator=generator, steps=SAMPLE_STEPS, deterministic=True)

    return Trained(sample=sample, nfe=SAMPLE_STEPS, n_train=STEPS * BATCH)
