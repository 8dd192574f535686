r"""The entries of the chapter "Autoregressive models and sequences" (``gmbook.sequences``),
on the benchmark's sequence track (:mod:`benchmarks.run_sequences`): sequences of the
regime-switching process :class:`gmbook.sequences.RegimeSwitching`, whose exact likelihood
is the floor.

* ``continuous_ar``: the chapter's continuous autoregressive model,
  :class:`gmbook.sequences.ContinuousAR` (a causal transformer of width :data:`D_MODEL`,
  :data:`HEADS` heads, :data:`LAYERS` layers, and a mixture of :data:`COMPONENTS` Gaussians
  per step), with residual means and increment inputs, inputs divided by
  :data:`INPUT_SCALE`. Its ``log_prob`` is exact (eqs. ``eq-seq-chain-rule``,
  ``eq-seq-mdn``); it samples ancestrally.
* ``binned_ar``: :data:`BINS` uniform bins over the range of the training sequences
  (:meth:`gmbook.sequences.Binning.uniform`) and a :class:`gmbook.sequences.TokenAR` of the
  same size over the tokens. Its ``log_prob`` is the density the token model implies for
  real values (:func:`gmbook.sequences.binned_log_prob`, eq. ``eq-seq-binned-density``:
  token probability over bin width, exponential tails in the outer bins), so its NLL is in
  the same nats per step as the floor; it samples tokens ancestrally and then values from
  that within-bin density (:meth:`~gmbook.sequences.Binning.sample_within`), i.e. from the
  very density it is scored by.

Both train by teacher forcing with :func:`gmbook.train.fit` for :data:`STEPS` Adam steps of
:data:`BATCH` sequences (learning rate :data:`LR`, cosine schedule after :data:`WARMUP`
warm-up steps, gradients clipped at norm :data:`GRAD_CLIP`) on one thread, over one epoch
of :data:`N_TRAIN` training sequences drawn once from the process (so every sequence is seen
once, as if drawn fresh at every step).

No VQ-VAE entry: :class:`gmbook.vae.VQVAE` has a deterministic encoder and decoder trained
on the squared error, so a transformer over its tokens defines a law over token sequences
but no density of real sequences; one would need a decoder noise model, and then
:math:`-\log P(z(x)) - \log p(x \mid z(x))` is only an upper bound on the NLL (``z(x)``
is one of the token sequences that could have produced ``x``), not comparable with the
exact floor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmarks.registry import Trained, register, seed_from
from gmbook.runtime import threads
from gmbook.sequences import Binning, ContinuousAR, RegimeSwitching, TokenAR, binned_log_prob
from gmbook.train import fit

__all__ = ["BATCH", "BINS", "COMPONENTS", "D_MODEL", "GRAD_CLIP", "HEADS", "INPUT_SCALE",
           "LAYERS", "LR", "N_TRAIN", "STEPS", "WARMUP"]

CHAPTER = "book/beyond/sequences.md"
STEPS = 800
"""Adam steps of both entries."""
BATCH = 16
"""Sequences per step."""
N_TRAIN = STEPS * BATCH
"""Training sequences, drawn once: one epoch of :data:`STEPS` batches of :data:`BATCH`."""
LR = 3e-3
"""Peak learning rate (cosine schedule)."""
WARMUP = 100
"""Linear warm-up steps of the learning rate."""
GRAD_CLIP = 1.0
"""Gradient-norm clip."""
D_MODEL = 32
"""Width of the transformer."""
HEADS = 4
"""Attention heads."""
LAYERS = 2
"""Transformer blocks."""
COMPONENTS = 4
"""Gaussians per step of the continuous model's mixture head."""
INPUT_SCALE = 2.5
"""The continuous model's inputs are divided by it (about the data's standard deviation)."""
BINS = 256
"""Uniform bins of the token model."""


def _fit(model: torch.nn.Module, data: Tensor, generator: torch.Generator) -> None:
    with threads(1):
        fit(model, data, steps=STEPS, batch_size=BATCH, lr=LR, schedule="cosine",
            warmup=WARMUP, grad_clip=GRAD_CLIP, seed=seed_from(generator), progress=False)
    model.eval().requires_grad_(False)


@register(name="continuous_ar", family="autoregressive", chapter=CHAPTER, track="sequences",
          description=f"transformer d{D_MODEL} x {LAYERS} layers x {HEADS} heads + "
          f"{COMPONENTS}-Gaussian mixture head, residual means, increment inputs, input "
          f"scale {INPUT_SCALE}; {STEPS} Adam steps x {BATCH} sequences (lr {LR:g}, cosine, "
          f"warm-up {WARMUP}, clip {GRAD_CLIP:g}) on {N_TRAIN} sequences")
def train_continuous_ar(process: RegimeSwitching, length: int,
                        generator: torch.Generator) -> Trained:
    r"""The chapter's continuous recipe; exact ``log_prob``, ancestral sampling."""
    x = process.sample(N_TRAIN, length, generator=generator, return_regimes=False)
    model = ContinuousAR(d_model=D_MODEL, heads=HEADS, layers=LAYERS, components=COMPONENTS,
                         max_len=length, start=process.start, input_scale=INPUT_SCALE,
                         residual=True, increments=True)
    _fit(model, x, generator)
    return Trained(sample=model.sample, nfe=length, log_prob=model.log_prob, n_train=N_TRAIN)


class BinnedAR:
    r"""A :class:`~gmbook.sequences.TokenAR` over :class:`~gmbook.sequences.Binning` tokens,
    seen as a model of real sequences through the implied density (eq.
    ``eq-seq-binned-density``).

    Args:
        model: the token model, ``vocab == binning.bins``.
        binning: the tokenizer.
    """

    def __init__(self, model: TokenAR, binning: Binning) -> None:
        self.model, self.binning = model, binning

    def log_prob(self, x: Tensor) -> Tensor:
        r"""The implied :math:`\log p(x_{1:T})` of values ``(B, T)``, float64 ``(B,)``."""
        return binned_log_prob(self.model, self.binning, x)

    @torch.no_grad()
    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Tokens by ancestral sampling, then a value from each token's within-bin density:
        ``(n, length)``, a draw from the density :meth:`log_prob` evaluates."""
        tokens = self.model.sample(n, length, generator=generator)
        return self.binning.sample_within(tokens, generator=generator).float()


@register(name="binned_ar", family="autoregressive", chapter=CHAPTER, track="sequences",
          description=f"{BINS} uniform bins over the training range + token transformer "
          f"d{D_MODEL} x {LAYERS} layers x {HEADS} heads; NLL by the implied density; "
          f"{STEPS} Adam steps x {BATCH} sequences (lr {LR:g}, cosine, warm-up {WARMUP}, "
          f"clip {GRAD_CLIP:g}) on {N_TRAIN} sequences")
def train_binned_ar(process: RegimeSwitching, length: int,
                    generator: torch.Generator) -> Trained:
    r"""Uniform bins fitted on the training sequences' range, a token transformer over them."""
    x = process.sample(N_TRAIN, length, generator=generator, return_regimes=False)
    binning = Binning.uniform(x, BINS)
    model = TokenAR(BINS, d_model=D_MODEL, heads=HEADS, layers=LAYERS, max_len=length)
    _fit(model, binning.encode(x), generator)
    binned = BinnedAR(model, binning)
    return Trained(sample=binned.sample, nfe=length, log_prob=binned.log_prob,
                   n_train=N_TRAIN)
