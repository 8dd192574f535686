r"""The entry of the chapter "Generative adversarial networks" (``gmbook.gans``).

* ``gan_r1``: the chapter's recipes, a non-saturating GAN (:func:`gmbook.gans.mlp_gan`:
  generator MLP :data:`LATENT_DIM` -> :data:`HIDDEN` x 3 -> 2 with ReLU, discriminator
  2 -> :data:`HIDDEN` x 3 -> 1 with leaky ReLU) with the R1 penalty (:data:`R1` on the data)
  applied lazily, every :data:`LAZY`-th discriminator update at weight :data:`LAZY`, trained by
  :func:`gmbook.gans.train_gan` (batches of :data:`BATCH`, Adam, lr :data:`LR` for the
  generator and :data:`LR_D` for the discriminator, constant) on :data:`N_TRAIN` points. As in
  the chapter, the two moons get Adam's betas :data:`MOON_BETAS` and :data:`MOON_STEPS`
  alternating updates, and every other toy (the Gaussian mixtures among them) the grid's
  recipe, betas :data:`BETAS` and :data:`STEPS` updates. It samples with the generator's
  exponential moving average (decay :data:`EMA_DECAY`): one network evaluation per sample
  (``nfe = 1``), and no density (no NLL).

Training runs on one thread (:func:`gmbook.runtime.threads`), as in the chapter: small
batches are as fast on one thread as on two, and robust to load.
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.data import Toy2D, TwoMoons
from gmbook.gans import mlp_gan, train_gan
from gmbook.runtime import threads
from gmbook.train import EMA

__all__ = ["BATCH", "BETAS", "EMA_DECAY", "HIDDEN", "LATENT_DIM", "LAZY", "LR", "LR_D",
           "MOON_BETAS", "MOON_STEPS", "N_TRAIN", "R1", "STEPS"]

CHAPTER = "book/beyond/gans.md"
STEPS = 6500
"""Generator updates (each after one discriminator update), the grid's recipe."""
BETAS = (0.0, 0.99)
"""Adam's betas of the grid's recipe."""
MOON_STEPS = 4000
"""Generator updates on the two moons."""
MOON_BETAS = (0.5, 0.999)
"""Adam's betas on the two moons."""
BATCH = 256
"""Data points per discriminator update, generated points per update."""
N_TRAIN = 20_000
"""Training points."""
LATENT_DIM = 8
"""Dimension of the latent prior :math:`\\mathcal N(0, I)`."""
HIDDEN = 64
"""Width of both networks (three hidden layers each)."""
R1 = 0.05
""":math:`\\gamma` of the R1 penalty."""
LAZY = 8
"""The penalty enters every ``LAZY``-th discriminator update, multiplied by ``LAZY``."""
LR = 2e-3
"""The generator's learning rate."""
LR_D = 4e-3
"""The discriminator's learning rate (two time scales)."""
EMA_DECAY = 0.995
"""Decay of the generator's exponential moving average, which draws the samples."""


@register(name="gan_r1", family="gan", chapter=CHAPTER,
          description=f"non-saturating GAN + lazy R1 ({R1}, every {LAZY}), MLPs 3x{HIDDEN}, "
          f"{STEPS} steps with betas {BETAS} ({MOON_STEPS} with {MOON_BETAS} on the moons), "
          f"lr {LR:g}/{LR_D:g} (G/D), EMA {EMA_DECAY}, on {N_TRAIN} points")
def train_gan_r1(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""The chapter's recipe for the toy; samples from the EMA generator."""
    moons = isinstance(dataset, TwoMoons)
    x = dataset.sample(N_TRAIN, generator=generator)
    gan = mlp_gan(dim=2, latent_dim=LATENT_DIM, hidden=HIDDEN, depth=3,
                  loss="nonsaturating", r1_weight=R1)
    ema = EMA(gan.generator, EMA_DECAY, warmup=True)
    with threads(1):
        train_gan(gan, x, steps=MOON_STEPS if moons else STEPS, batch_size=BATCH, lr=LR,
                  lr_d=LR_D, betas=MOON_BETAS if moons else BETAS, lazy=LAZY, ema=ema,
                  seed=seed_from(generator), progress=False)
    ema.copy_to()
    gan.eval().requires_grad_(False)
    return Trained(sample=gan.sample, nfe=1, n_train=N_TRAIN)
