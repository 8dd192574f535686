r"""Entry of the chapter "Guidance and conditional generation" (``gmbook.guidance``).

* ``conditional_edm``: the class-conditional EDM of the chapter
  (:class:`gmbook.guidance.ConditionalEDM`, variance-exploding path from
  :math:`\sigma_{\max} = 80`) on a :class:`gmbook.guidance.LabelledMLP` of width 128 and depth
  3 fed :math:`c_{\mathrm{noise}} = \tfrac14 \log\sigma` without a factor (``time_scale=1``),
  trained with label dropout (``p_uncond = 0.2``) on :data:`STEPS` batches of :data:`BATCH`
  *fresh* labelled points (the labels are the toy's mixture components,
  :meth:`gmbook.data.Toy2D.sample_with_labels`: the moon for the two moons, the component for
  the eight Gaussians, a single class for a toy without components) by Adam (lr 3e-3, 100
  warm-up steps, cosine decay), sampled from an exponential moving average of the weights
  (decay 0.998). The benchmark scores the *joint* sampler: a label drawn with the training
  set's class frequencies, then the conditional model (guidance weight 1, no guidance) by
  Euler-Maruyama on the reverse SDE over EDM's grid of :data:`SAMPLE_STEPS` levels
  (``nfe = SAMPLE_STEPS``). No density.
"""

from __future__ import annotations

import torch

from benchmarks.registry import Trained, register, seed_from
from gmbook import samplers
from gmbook.data import Toy2D
from gmbook.guidance import ConditionalEDM, LabelledMLP
from gmbook.train import EMA, fit

__all__ = ["BATCH", "SAMPLE_STEPS", "STEPS"]

CHAPTER = "book/diffusion/guidance.md"
STEPS = 3000
"""Optimization steps."""
BATCH = 256
"""Fresh labelled points per step."""
SAMPLE_STEPS = 64
"""Noise levels of the Euler-Maruyama grid, one network evaluation each."""


@register(
    name="conditional_edm",
    family="diffusion",
    chapter=CHAPTER,
    description=f"class-conditional EDM (label dropout 0.2), MLP 128x3, {STEPS} steps of "
    f"{BATCH} fresh labelled points, EMA, label then Euler-Maruyama with {SAMPLE_STEPS} NFE",
)
def train_conditional_edm(dataset: Toy2D, generator: torch.Generator) -> Trained:
    r"""EDM loss with label dropout, Adam (lr 3e-3, warm-up, cosine), EMA weights."""
    classes = int(dataset.components)
    model = ConditionalEDM(LabelledMLP(2, classes, hidden=128, depth=3, time_dim=32,
                                       time_scale=1.0), p_uncond=0.2)
    ema = EMA(model, decay=0.998, warmup=True)

    def batch(n: int) -> torch.Tensor:
        x, y = dataset.sample_with_labels(n, generator=generator)
        return torch.cat([x, y[:, None].float()], 1)             # (n, 3)

    fit(lambda b: model.loss(b[:, :2], b[:, 2].long()), batch, params=model.parameters(),
        steps=STEPS, batch_size=BATCH, lr=3e-3, schedule="cosine", warmup=100, ema=ema,
        seed=seed_from(generator), progress=False)
    ema.copy_to(model)
    model.requires_grad_(False)
    _, labels = dataset.sample_with_labels(20_000, generator=generator)
    freq = torch.bincount(labels, minlength=classes) / len(labels)  # class frequencies
    grid = model.grid(SAMPLE_STEPS)

    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        c = torch.multinomial(freq, n, replacement=True, generator=generator)  # (n,)
        pred = samplers.Prediction(lambda x, t: model.denoise(x, t, c), "x0", model.path())
        x = model.prior(n, sigma=float(grid[0]), generator=generator)
        return samplers.euler_maruyama(pred, x, grid, generator=generator).samples

    return Trained(sample=sample, nfe=SAMPLE_STEPS, n_train=STEPS * BATCH)
