r"""Entry of the chapter "Diffusion as stochastic differential equations" (``gmbook.sde``).

* ``edm``: EDM's preconditioned denoiser (:class:`gmbook.sde.EDM`, variance-exploding path,
  ``sigma_data = 1`` for the standardized toys, log-normal training noise levels with the
  model's default ``p_mean`` and ``p_std``) with a time-conditioned MLP of width 128 and
  depth 3 fed :math:`c_{\mathrm{noise}} = \tfrac14 \log\sigma` through a sinusoidal embedding
  without a factor (``time_scale=1``, as in EDM; the default 1000, made for times in
  :math:`[0, 1]`, makes the learned field rough in :math:`\log\sigma`), trained on :data:`STEPS`
  batches of :data:`BATCH` *fresh* points by Adam (lr 3e-3, 100 warm-up steps, cosine
  decay), sampled from an exponential moving average of the weights (decay 0.998) by
  DPM-Solver++(2M) (:func:`gmbook.samplers.dpm_solver_pp_2m`) on the model's default EDM
  grid of :data:`SAMPLE_STEPS` noise levels (``nfe = SAMPLE_STEPS``). The density is the
  probability-flow ODE's (:meth:`gmbook.sde.EDM.log_prob`, adaptive Dormand-Prince with an
  exact divergence).
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook import samplers
from gmbook.data import Toy2D
from gmbook.nets import MLP
from gmbook.sde import EDM
from gmbook.train import EMA, fit

__all__ = ["BATCH", "SAMPLE_STEPS", "STEPS", "TIME_SCALE"]

CHAPTER = "book/diffusion/sde.md"
STEPS = 3000
"""Optimization steps."""
BATCH = 256
"""Fresh points per step."""
SAMPLE_STEPS = 10
"""Noise levels of the sampler's grid, one network evaluation each."""
TIME_SCALE = 1.0
r"""Factor of :math:`c_{\mathrm{noise}}` in the MLP's sinusoidal embedding."""


@register(
    name="edm",
    family="diffusion",
    chapter=CHAPTER,
    description=f"EDM preconditioning, MLP 128x3, {STEPS} steps of {BATCH} fresh points, "
    f"EMA, DPM-Solver++(2M) with {SAMPLE_STEPS} NFE",
)
def train_edm(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""EDM loss with Adam (lr 3e-3, warm-up, cosine), EMA weights, DPM-Solver++(2M)."""
    model = EDM(MLP(2, hidden=128, depth=3, time_dim=32, time_scale=TIME_SCALE))
    ema = EMA(model, decay=0.998, warmup=True)
    fit(model, lambda n: dataset.sample(n, generator=generator), steps=STEPS,
        batch_size=BATCH, lr=3e-3, schedule="cosine", warmup=100, ema=ema,
        seed=seed_from(generator), progress=False)
    ema.copy_to()
    model.requires_grad_(False)

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return model.sample(n, steps=SAMPLE_STEPS, sampler=samplers.dpm_solver_pp_2m,
                            generator=generator)

    return Trained(sample=sample, nfe=SAMPLE_STEPS, log_prob=model.log_prob,
                   n_train=STEPS * BATCH)
