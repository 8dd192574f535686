r"""Entry of the chapter "Energy-based models" (``gmbook.ebm``).

* ``ebm_pcd``: :class:`gmbook.ebm.EBM` with the chapter's best training scheme: persistent
  Langevin chains in a replay buffer (:data:`K` steps of size :data:`STEP` per update), an
  energy penalty of :data:`REG` and a Gaussian base of scale 2. Samples are Langevin chains
  of :data:`SAMPLE_STEPS` steps from uniform noise (``nfe = SAMPLE_STEPS``, one gradient
  each); ``log_prob`` is the exact density normalised on a :data:`GRID` by :data:`GRID` grid
  over :data:`LIMS` (two dimensions only). Chains start from uniform noise on
  :math:`[-3, 3]^2`, as in the chapter.
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.data import Toy2D
from gmbook.ebm import EBM, energy_mlp
from gmbook.train import fit

__all__ = ["GRID", "K", "LIMS", "REG", "SAMPLE_STEPS", "STEP", "STEPS"]

CHAPTER = "book/foundations/ebm.md"
K = 20
"""Langevin steps per training update."""
STEP = 0.005
"""Langevin step size."""
REG = 0.1
"""Weight of the energy penalty."""
STEPS = 1500
"""Training updates (batches of 256 fresh points)."""
SAMPLE_STEPS = 300
"""Langevin steps of the sampler."""
GRID = 256
"""Grid cells per axis of the normaliser."""
LIMS = (-4.0, 4.0)
"""The box of the grid normaliser."""


@register(
    name="ebm_pcd",
    family="energy-based",
    chapter=CHAPTER,
    description=f"EBM, persistent Langevin chains (k={K}), penalty {REG}, {STEPS} updates; "
    f"{SAMPLE_STEPS}-step Langevin sampler, grid-normalised density",
)
def train_ebm_pcd(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""PCD training on fresh batches; sampling and density as described above."""
    seed = seed_from(generator)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = EBM(energy_mlp(hidden=64, depth=2), negatives="pcd", k=K, step_size=STEP,
                    reg=REG, base_std=2.0,
                    generator=torch.Generator().manual_seed(seed))
    fit(model, lambda n: dataset.sample(n, generator=generator), steps=STEPS,
        batch_size=256, lr=2e-3, seed=seed, progress=False)
    model.requires_grad_(False)
    density = model.grid_density(lims=LIMS, n=GRID)

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.sample(n, steps=SAMPLE_STEPS, generator=generator)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return density.log_prob(x)

    return Trained(sample=sample, nfe=SAMPLE_STEPS, log_prob=log_prob, n_train=STEPS * 256)
