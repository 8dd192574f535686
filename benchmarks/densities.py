r"""Entries of the chapter "Modeling continuous random variables" (``gmbook.densities``).

* ``gmm_em``: a mixture of :data:`COMPONENTS` full-covariance Gaussians fitted by the
  book's own EM (:func:`gmbook.densities.fit_em`), best of :data:`N_INIT` k-means++ starts;
* ``kde``: a Gaussian kernel density estimate of :data:`N_KDE` points, its bandwidth chosen
  by held-out likelihood on :data:`N_VALID` more (:func:`gmbook.densities.select_bandwidth`);
* ``autoregressive``: :class:`gmbook.densities.Autoregressive`, two mixture density networks
  :math:`p(x_1)\,p(x_2 \mid x_1)`, trained by maximum likelihood; ancestral sampling costs
  one network evaluation per coordinate (``nfe = 2``).

All three have an exact ``log_prob``.
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.data import Toy2D
from gmbook.densities import Autoregressive, GaussianKDE, fit_em, select_bandwidth
from gmbook.train import fit

__all__ = ["COMPONENTS", "N_INIT", "N_KDE", "N_TRAIN", "N_VALID"]

CHAPTER = "book/foundations/densities.md"
N_TRAIN = 20_000
"""Training points of ``gmm_em`` and ``autoregressive``."""
COMPONENTS = 16
"""Mixture components of ``gmm_em``."""
N_INIT = 3
"""EM restarts of ``gmm_em``; the best training likelihood is kept."""
N_KDE = 5000
"""Points of the kernel density estimate."""
N_VALID = 1000
"""Held-out points that choose the KDE bandwidth."""



@register(
    name="gmm_em",
    family="mixture",
    chapter=CHAPTER,
    description=f"{COMPONENTS}-component Gaussian mixture, EM (best of {N_INIT}), "
    f"{N_TRAIN} points",
)
def train_gmm_em(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""EM on :data:`N_TRAIN` fresh points, the best of :data:`N_INIT` starts."""
    x = dataset.sample(N_TRAIN, generator=generator)
    fits = [fit_em(x, COMPONENTS, generator=generator) for _ in range(N_INIT)]
    model = max(fits, key=lambda r: r.log_likelihood[-1]).model.requires_grad_(False)
    return Trained(sample=model.sample, nfe=0, log_prob=model.log_prob, n_train=N_TRAIN)


@register(
    name="kde",
    family="kde",
    chapter=CHAPTER,
    description=f"Gaussian KDE of {N_KDE} points, bandwidth by held-out likelihood",
)
def train_kde(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""A KDE of :data:`N_KDE` points; the bandwidth minimises the NLL of :data:`N_VALID`."""
    x = dataset.sample(N_KDE, generator=generator)
    valid = dataset.sample(N_VALID, generator=generator)
    sel = select_bandwidth(x, valid, torch.logspace(-2.5, 0, 30), leave_one_out=False)
    model = GaussianKDE(x, sel.bandwidth)
    return Trained(sample=model.sample, nfe=0, log_prob=model.log_prob,
                   n_train=N_KDE + N_VALID)


@register(
    name="autoregressive",
    family="autoregressive",
    chapter=CHAPTER,
    description=f"p(x1) p(x2 | x1), mixture density networks (8 components), {N_TRAIN} points",
)
def train_autoregressive(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Maximum likelihood with Adam, 3000 steps of 512 points from :data:`N_TRAIN`."""
    x = dataset.sample(N_TRAIN, generator=generator)
    model = Autoregressive(2, components=8, hidden=64)
    fit(model, x, steps=3000, batch_size=512, lr=3e-3, schedule="cosine",
        seed=seed_from(generator), progress=False)
    model.requires_grad_(False)
    return Trained(sample=model.sample, nfe=2, log_prob=model.log_prob, n_train=N_TRAIN)
