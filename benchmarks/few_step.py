r"""Entry of the chapter "Generation in one or two steps" (``gmbook.few_step``).

* ``kd_consistency_oracle``: **an oracle entry**, not a model learned from samples alone. A
  consistency model (:class:`gmbook.few_step.ConsistencyModel`,
  variance-exploding path, :math:`\sigma_{\min} = 0.002`, :math:`\sigma_{\max} = 3`, an MLP
  of width 128 and depth 3 fed :math:`c_{\mathrm{noise}}` through a sinusoidal embedding
  without a factor) trained by knowledge distillation along the teacher's trajectories
  (:func:`gmbook.few_step.trajectory_distillation_loss`, eq. ``eq-fs-kd-loss``): the
  teacher's probability-flow ODE is solved accurately (:func:`gmbook.few_step.flow_map_pairs`)
  from :data:`N_TRAIN` prior draws through 12 noise levels, and the model regresses the end
  points on :data:`STEPS` batches of :data:`BATCH` trajectories (Adam, lr 1e-3, cosine
  decay, EMA of the weights with the warm-up decay :math:`\min(0.999, (1 + n)/(10 + n))` at
  step :math:`n`, 0.997 at the end). The teacher is the **exact** denoiser of the data, computed
  from the data set's density, wherever the data set gives its Gaussian mixture (the two
  moons, :meth:`gmbook.data.TwoMoons.mixture`), so on those data sets the entry never learns
  from samples and is not comparable with the learned entries; elsewhere it is an EDM denoiser
  trained on samples by the ``edm`` entry's recipe. One network evaluation per sample
  (``nfe = 1``), the chapter's best one-call model.
"""

from __future__ import annotations

import math

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook import samplers
from gmbook.data import Toy2D
from gmbook.few_step import ConsistencyModel, flow_map_pairs, trajectory_distillation_loss
from gmbook.nets import MLP
from gmbook.sde import EDM
from gmbook.train import EMA, fit

__all__ = ["BATCH", "N_TRAIN", "STEPS"]

CHAPTER = "book/diffusion/few_step.md"
STEPS = 3000
"""Optimization steps."""
BATCH = 256
"""Trajectories per step."""
N_TRAIN = 8000
"""Teacher trajectories (solved once, before training)."""


def _teacher(dataset: Toy2D, generator: torch.Generator) -> samplers.Prediction:
    path = samplers.VEPath(3.0)
    if hasattr(dataset, "mixture"):
        return samplers.mixture_prediction(*dataset.mixture(), path)
    edm = EDM(MLP(2, hidden=128, depth=3, time_dim=32, time_scale=1.0), sigma_max=3.0)
    ema = EMA(edm, decay=0.998, warmup=True)
    fit(edm, lambda n: dataset.sample(n, generator=generator), steps=3000, batch_size=256,
        lr=3e-3, schedule="cosine", warmup=100, ema=ema, seed=seed_from(generator),
        progress=False)
    ema.copy_to()
    return edm.requires_grad_(False).prediction()


@register(
    name="kd_consistency_oracle",
    family="few-step",
    chapter=CHAPTER,
    description="ORACLE teacher (the exact denoiser of the data's density where known, "
    "else a trained EDM): consistency model by trajectory distillation, MLP 128x3, "
    f"{N_TRAIN} teacher trajectories, {STEPS} steps of {BATCH}, EMA, 1 NFE",
)
def train_kd(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""Trajectory distillation of a consistency model, sampled in one call; an oracle
    entry where the data set gives its exact density (see the module's docstring)."""
    cm = ConsistencyModel(MLP(2, hidden=128, depth=3, time_dim=32, time_scale=1.0),
                          sigma_min=0.002, sigma_max=3.0)
    teacher = _teacher(dataset, generator)
    levels = cm.levels(12)
    x = math.sqrt(cm.sigma_max**2 + 1) * torch.randn(N_TRAIN, 2, dtype=torch.float64,
                                                     generator=generator)
    states = flow_map_pairs(teacher, x, levels).float()          # (12, N_TRAIN, 2)
    rows = states.transpose(0, 1).contiguous()                    # (N_TRAIN, 12, 2)
    g = torch.Generator().manual_seed(seed_from(generator))
    ema = EMA(cm, decay=0.999, warmup=True)
    fit(lambda b: trajectory_distillation_loss(cm, b.transpose(0, 1), levels, batch=len(b),
                                               generator=g),
        rows, params=cm.parameters(), steps=STEPS, batch_size=BATCH, lr=1e-3,
        schedule="cosine", ema=ema, seed=seed_from(generator), progress=False)
    ema.copy_to()
    cm.requires_grad_(False)
    return Trained(sample=cm.sample, nfe=1, n_train=N_TRAIN)
