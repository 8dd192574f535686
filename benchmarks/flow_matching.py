r"""Entries of the chapter "Flow matching and rectified flow" (``gmbook.flow_matching``).

* ``flow_matching``: conditional flow matching on the linear path with independent pairs,
  sampled with :data:`SOLVER_STEPS` midpoint steps (``nfe = 10``).
* ``ot_flow_matching``: the same with exact minibatch optimal-transport pairs
  (:func:`gmbook.flow_matching.couple`, ``"ot"``), sampled with :data:`EULER_STEPS` Euler
  steps (``nfe = 5``).

Both train an MLP velocity (width 128, depth 3, time embedding with factor
:data:`TIME_SCALE`) for :data:`STEPS` Adam steps at rate :data:`LR` (cosine decay, warm-up,
EMA of the weights) on :data:`N_TRAIN` points, batches of :data:`BATCH`.
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook.data import Toy2D
from gmbook.flow_matching import FlowMatching
from gmbook.nets import MLP
from gmbook.train import EMA, fit

__all__ = ["BATCH", "EULER_STEPS", "LR", "N_TRAIN", "SOLVER_STEPS", "STEPS", "TIME_SCALE"]

CHAPTER = "book/diffusion/flow_matching.md"
STEPS = 2000
"""Optimization steps."""
BATCH = 256
"""Points per step."""
LR = 1e-2
"""Adam's peak learning rate."""
TIME_SCALE = 10.0
"""The factor on ``t`` before the sinusoidal time embedding (the chapter's: the default
1000 gives a field that varies fast in ``t``, which multiplies an adaptive solver's cost)."""
N_TRAIN = 20_000
"""Training points."""
SOLVER_STEPS = 5
"""Midpoint steps of the independent-coupling model (two evaluations each)."""
EULER_STEPS = 5
"""Euler steps of the OT-coupling model."""


def _train(dataset: Toy2D, generator: torch.Generator, coupling: str) -> FlowMatching:
    x = dataset.sample(N_TRAIN, generator=generator)
    model = FlowMatching(MLP(2, hidden=128, depth=3, time_dim=32, time_scale=TIME_SCALE),
                         shape=(2,), coupling=coupling)
    ema = EMA(model, 0.999, warmup=True)
    fit(model, x, steps=STEPS, batch_size=BATCH, lr=LR, schedule="cosine", warmup=100,
        ema=ema, seed=seed_from(generator), progress=False)
    ema.copy_to(model)
    return model.requires_grad_(False)


@register(name="flow_matching", family="flow matching", chapter=CHAPTER,
          description=f"CFM, linear path, independent pairs, {STEPS} steps, "
          f"{SOLVER_STEPS} midpoint steps")
def train_flow_matching(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Independent coupling, midpoint sampler."""
    model = _train(dataset, generator, "independent")

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.sample(n, generator=generator, steps=SOLVER_STEPS, solver="midpoint")

    return Trained(sample=sample, nfe=2 * SOLVER_STEPS, log_prob=model.log_prob,
                   n_train=N_TRAIN)


@register(name="ot_flow_matching", family="flow matching", chapter=CHAPTER,
          description=f"CFM, linear path, minibatch-OT pairs, {STEPS} steps, "
          f"{EULER_STEPS} Euler steps")
def train_ot_flow_matching(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Exact minibatch OT coupling, Euler sampler."""
    model = _train(dataset, generator, "ot")

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.sample(n, generator=generator, steps=EULER_STEPS, solver="euler")

    return Trained(sample=sample, nfe=EULER_STEPS, log_prob=model.log_prob,
                   n_train=N_TRAIN)
