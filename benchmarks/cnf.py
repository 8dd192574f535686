r"""Entry of the chapter "Neural ODEs and continuous normalizing flows" (``gmbook.cnf``).

* ``cnf``: a continuous normalizing flow (:class:`gmbook.cnf.CNF`) on an MLP velocity
  (width :data:`HIDDEN`, depth 3, sinusoidal time embedding of scale :data:`TIME_SCALE`),
  started by :data:`FM_STEPS` steps of conditional flow matching (the same network, linear
  path, independent pairs, EMA) and then trained by exact maximum likelihood for
  :data:`ML_STEPS` steps (exact divergence, adaptive ``dopri5`` at tolerance
  :data:`ML_TOL`, backpropagation through the solver: a fixed-step solver's error can be
  exploited by maximum likelihood). Samples use :data:`SAMPLE_STEPS` midpoint steps; the
  density is the instantaneous change of variables, integrated by ``dopri5`` at
  tolerance 1e-5.
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.cnf import CNF
from gmbook.data import Toy2D
from gmbook.flow_matching import FlowMatching
from gmbook.nets import MLP
from gmbook.train import EMA, fit

__all__ = ["FM_STEPS", "HIDDEN", "ML_STEPS", "ML_TOL", "SAMPLE_STEPS", "TIME_SCALE"]

CHAPTER = "book/latent/cnf.md"
HIDDEN = 64
"""Width of the velocity MLP."""
TIME_SCALE = 10.0
"""Scale of the sinusoidal time embedding (smooth in time: few adaptive steps)."""
N_TRAIN = 20_000
"""Training points."""
FM_STEPS = 3500
"""Flow-matching steps (batches of 256) before maximum likelihood."""
ML_STEPS = 100
"""Maximum-likelihood steps (batches of 256)."""
ML_TOL = 1e-3
"""Tolerance (relative and absolute) of ``dopri5`` in training."""
SAMPLE_STEPS = 10
"""Midpoint steps of the sampler (``nfe = 2 SAMPLE_STEPS``)."""


@register(name="cnf", family="flow", chapter=CHAPTER,
          description=f"CNF, MLP 3x{HIDDEN}, {FM_STEPS} flow-matching steps then {ML_STEPS} "
          f"maximum-likelihood steps (dopri5 at {ML_TOL:g}, exact divergence)")
def train_cnf(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Flow matching to start, then exact maximum likelihood (eq. ``eq-cnf-icov``)."""
    x = dataset.sample(N_TRAIN, generator=generator)
    net = MLP(2, hidden=HIDDEN, depth=3, time_dim=16, time_scale=TIME_SCALE)
    fm = FlowMatching(net, shape=(2,))
    ema = EMA(fm, 0.999, warmup=True)
    fit(fm, x, steps=FM_STEPS, batch_size=256, lr=1e-2, schedule="cosine", warmup=100,
        ema=ema, seed=seed_from(generator), progress=False)
    ema.copy_to(fm)
    model = CNF(net, dim=2, solver="dopri5", rtol=ML_TOL, atol=ML_TOL)
    fit(model, x, steps=ML_STEPS, batch_size=256, lr=2e-3, schedule="cosine", warmup=10,
        seed=seed_from(generator), progress=False)
    model.requires_grad_(False)
    model.rtol = model.atol = 1e-5  # a converged solve for the density

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.sample(n, generator=generator, solver="midpoint", steps=SAMPLE_STEPS)

    return Trained(sample=sample, nfe=2 * SAMPLE_STEPS, log_prob=model.log_prob,
                   n_train=N_TRAIN)
