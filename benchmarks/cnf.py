r"""Entry of the chapter "Neural ODEs and continuous normalizing flows" (``gmbook.cnf``).

* ``cnf``: a continuous normalizing flow (:class:`gmbook.cnf.CNF`) on an MLP velocity
  (width :data:`HIDDEN`, depth 3, sinusoidal time embedding of scale :data:`TIME_SCALE`),
  started by :data:`FM_STEPS` steps of conditional flow matching (the same network, linear
  path, independent pairs, EMA) and then trained by exact maximum likelihood for
  :data:`ML_STEPS` steps (exact divergence, :data:`ML_SOLVER_STEPS` midpoint steps per
  solve, backpropagation through the solver). Samples use the same midpoint solver
  (``nfe = 2 ML_SOLVER_STEPS``); the density is the instantaneous change of variables,
  integrated with :data:`EVAL_SOLVER_STEPS` midpoint steps (a converged solve).
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.cnf import CNF
from gmbook.data import Toy2D
from gmbook.flow_matching import FlowMatching
from gmbook.nets import MLP
from gmbook.train import EMA, fit

__all__ = ["EVAL_SOLVER_STEPS", "FM_STEPS", "HIDDEN", "ML_SOLVER_STEPS", "ML_STEPS",
           "TIME_SCALE"]

CHAPTER = "book/latent/cnf.md"
HIDDEN = 64
"""Width of the velocity MLP."""
TIME_SCALE = 10.0
"""Scale of the sinusoidal time embedding (smooth in time: few adaptive steps)."""
N_TRAIN = 20_000
"""Training points."""
FM_STEPS = 2000
"""Flow-matching steps (batches of 256) before maximum likelihood."""
ML_STEPS = 250
"""Maximum-likelihood steps (batches of 256)."""
ML_SOLVER_STEPS = 8
"""Midpoint steps of each training solve (and of the sampler)."""
EVAL_SOLVER_STEPS = 32
"""Midpoint steps of the log-density."""


@register(name="cnf", family="flow", chapter=CHAPTER,
          description=f"CNF, MLP 3x{HIDDEN}, {FM_STEPS} flow-matching steps then {ML_STEPS} "
          f"maximum-likelihood steps ({ML_SOLVER_STEPS} midpoint steps, exact divergence)")
def train_cnf(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Flow matching to start, then exact maximum likelihood (eq. ``eq-cnf-icov``)."""
    x = dataset.sample(N_TRAIN, generator=generator)
    net = MLP(2, hidden=HIDDEN, depth=3, time_dim=16, time_scale=TIME_SCALE)
    fm = FlowMatching(net, shape=(2,))
    ema = EMA(fm, 0.999, warmup=True)
    fit(fm, x, steps=FM_STEPS, batch_size=256, lr=5e-3, schedule="cosine", warmup=100,
        ema=ema, seed=seed_from(generator), progress=False)
    ema.copy_to(fm)
    model = CNF(net, dim=2, solver="midpoint", steps=ML_SOLVER_STEPS)
    fit(model, x, steps=ML_STEPS, batch_size=256, lr=1e-3, schedule="cosine", warmup=10,
        seed=seed_from(generator), progress=False)
    model.requires_grad_(False)

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.sample(n, generator=generator)

    def log_prob(z: torch.Tensor) -> torch.Tensor:
        return model.log_prob(z, steps=EVAL_SOLVER_STEPS)

    return Trained(sample=sample, nfe=2 * ML_SOLVER_STEPS, log_prob=log_prob,
                   n_train=N_TRAIN)
