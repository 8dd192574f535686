r"""Entries of the chapter "Variational autoencoders" (``gmbook.vae``).

* ``vae``: a Gaussian VAE with a 2-D latent (:class:`gmbook.vae.VAE` with a
  :class:`~gmbook.vae.GaussianEncoder` and a :class:`~gmbook.vae.GaussianDecoder`, MLPs of
  two hidden layers of :data:`HIDDEN` units), trained on the ELBO. Its ``log_prob`` is the
  integral :math:`\int p_\theta(x \mid z)\, p(z)\, dz` computed by quadrature over a
  :data:`GRID` x :data:`GRID` grid of the latent square :math:`[-5, 5]^2`
  (:func:`gmbook.vae.log_marginal_quadrature`): deterministic, and on two moons within
  about 1e-4 nats of a finer and wider grid (checked in the chapter). A sample costs one
  decoder evaluation (``nfe = 1``).
* ``vae_free_bits``: the same encoder with the autoregressive decoder
  :class:`~gmbook.vae.AutoregressiveDecoder` (two mixture density networks), trained with
  free bits (:data:`FREE_BITS` nats per latent coordinate) so that the latent is not
  ignored. Its exact likelihood is out of reach (the quadrature would evaluate the decoder
  on every pair of point and grid node), so it reports no NLL; ancestral sampling costs two
  network evaluations (``nfe = 2``).
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.data import Toy2D
from gmbook.train import fit
from gmbook.vae import VAE, AutoregressiveDecoder, GaussianDecoder, GaussianEncoder
from gmbook.vae import log_marginal_quadrature

__all__ = ["FREE_BITS", "GRID", "HIDDEN", "N_TRAIN"]

CHAPTER = "book/latent/vae.md"
N_TRAIN = 20_000
"""Training points of both entries."""
HIDDEN = 64
"""Width of the encoder's and the Gaussian decoder's hidden layers."""
GRID = 301
"""Grid points per latent axis of the quadrature of ``vae``'s ``log_prob``."""
FREE_BITS = 0.5
"""The free-bits floor of ``vae_free_bits``, nats per latent coordinate."""


@register(
    name="vae",
    family="vae",
    chapter=CHAPTER,
    description=f"Gaussian VAE, 2-D latent, MLPs 2x{HIDDEN}, ELBO, 4000 Adam steps on "
    f"{N_TRAIN} points; log_prob by latent quadrature",
)
def train_vae(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""The ELBO with Adam: 4000 steps of 256 points, cosine schedule from 1e-2."""
    x = dataset.sample(N_TRAIN, generator=generator)
    model = VAE(GaussianEncoder(2, 2, hidden=HIDDEN),
                GaussianDecoder(2, 2, hidden=HIDDEN, init_std=0.3), shape=(2,))
    fit(model, x, steps=4000, batch_size=256, lr=1e-2, schedule="cosine",
        seed=seed_from(generator), progress=False)
    model.requires_grad_(False)

    def log_prob(points: torch.Tensor) -> torch.Tensor:
        return log_marginal_quadrature(model, points, lims=5.0, n=GRID, batch_size=128)

    return Trained(sample=model.sample, nfe=1, log_prob=log_prob, n_train=N_TRAIN)


@register(
    name="vae_free_bits",
    family="vae",
    chapter=CHAPTER,
    description=f"VAE, 2-D latent, autoregressive mixture decoder, free bits {FREE_BITS}, "
    f"2000 Adam steps on {N_TRAIN} points",
)
def train_vae_free_bits(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Free bits with Adam: 2000 steps of 512 points, cosine schedule from 3e-3."""
    x = dataset.sample(N_TRAIN, generator=generator)
    model = VAE(GaussianEncoder(2, 2, hidden=HIDDEN),
                AutoregressiveDecoder(2, 2, components=8, hidden=32), shape=(2,),
                free_bits=FREE_BITS)
    fit(model, x, steps=2000, batch_size=512, lr=3e-3, schedule="cosine",
        seed=seed_from(generator), progress=False)
    model.requires_grad_(False)
    return Trained(sample=model.sample, nfe=2, n_train=N_TRAIN)
