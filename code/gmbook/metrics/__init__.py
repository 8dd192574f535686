r"""Evaluation of generative models: likelihoods, sample metrics and their noise floors.

Every chapter scores its models with this package; the chapter "Evaluating generative
models" (``book/foundations/evaluation.md``, Part I) derives what each number means. There
are three groups.

**Likelihood** (models with a tractable ``log_prob``). :func:`nll` gives the held-out
negative log-likelihood in nats as an :class:`Estimate` (mean and standard error over the
points); :func:`bits_per_dim` converts it, including the dequantization bound for discrete
data (Theis et al., 2016); :func:`entropy` (Monte Carlo) and :func:`entropy_quadrature`
(a 2-D grid) give the entropy :math:`H(p)` of a toy, the smallest NLL any model can reach;
:func:`paired_kl` estimates the gap :math:`\mathrm{KL}(p \,\|\, q) = \mathrm{NLL}(q) - H(p)`
on the *same* points, with a far smaller error bar than the difference of two estimates;
:func:`nll_report` puts NLL, entropy and gap on one line.

**Sample metrics** between two sample sets ``x`` ``(n, D)`` and ``y`` ``(m, D)``, vectorised
in torch on the inputs' device and dtype: :func:`mmd2` (Gretton et al., 2012),
:func:`energy_distance`, :func:`sliced_wasserstein2`, the exact :func:`wasserstein2` (an
optimal-transport solver, POT), :func:`frechet_distance` (the FID formula of Heusel et al.,
2017, on raw coordinates), :func:`precision_recall` (Kynkäänniemi et al., 2019),
:func:`density_coverage` (Naeem et al., 2020) and the permutation test
:func:`two_sample_test`. On features of a classifier: :func:`kid` (the Kernel Inception
Distance of Bińkowski et al., 2018, an unbiased MMD² with a cubic kernel) and, from its
class probabilities, :func:`inception_score` (Salimans et al., 2016).
The torch metrics (:func:`mmd2`, :func:`energy_distance`,
:func:`sliced_wasserstein2`) return 0-dim tensors, differentiable where the formula is; the
solver-based and float64 ones (:func:`wasserstein2`, :func:`frechet_distance`) return
Python floats.

**Noise floors.** Every sample metric except the unbiased U-statistics (:func:`mmd2` with
``unbiased=True``, :func:`kid`) is biased upwards at finite ``n``: two independent
samples of the *same* distribution are at a positive distance. :func:`scorecard` therefore
reports each metric next to its *floor* (two true sample sets of the same size) and its
*ceiling* (:math:`\mathcal N(0, I)` against the data), and the ratio model/floor with a
standard error that includes the floor's own: a ratio near 1 means the metric cannot tell
the model from the data at this ``n``. Each floor is the mean of :data:`FLOOR_REPEATS` (30)
independent pairs, shipped precomputed for the book's configurations
(:func:`floor_values` gives the per-pair values, :func:`reference_draws` the draws). Two
models are compared by :func:`paired_difference`, on shared data sets, whose noise then
cancels from the difference.

**Layout.** The functions live in submodules by topic; import them from here
(``from gmbook.metrics import nll, scorecard``), where they are documented:

- ``gmbook.metrics.likelihood``: :class:`Estimate`, :func:`nll`, :func:`bits_per_dim`,
  :func:`paired_kl`, :func:`entropy`, :func:`entropy_quadrature`, :class:`NLLReport`,
  :func:`nll_report`;
- ``gmbook.metrics.distances``: the sample metrics, from :func:`mmd2` to
  :func:`inception_score`, with :data:`DEFAULT_BANDWIDTHS` and :data:`W2_MAX_N`;
- ``gmbook.metrics.two_sample``: :class:`TestResult` and :func:`two_sample_test`;
- ``gmbook.metrics.scorecards``: :data:`SCORECARD_METRICS`, :class:`ScorecardRow`,
  :class:`Scorecard` and :func:`scorecard`, with the thread pool of the exact W2 solves,
  and the paired comparison of two models on shared data sets, :class:`PairedDifference`
  and :func:`paired_difference` (or :func:`paired_rows`, from two rows already scored);
- ``gmbook.metrics.floors``: :data:`FLOOR_REPEATS`, :data:`CEILING_REPEATS`,
  :class:`FloorPrecisionWarning`, :func:`floor_values`, :func:`reference_draws`, the floors
  shipped in ``floors.json`` and their caches; ``python -m gmbook.metrics --write``
  regenerates the file;
- ``gmbook.metrics._common`` (private): the argument checks and the blocked pairwise sums
  shared by the others; ``gmbook.metrics._pairs`` (private): one comparison of two sample
  sets by every scorecard metric, shared by floors and scorecards.

Imports go one way: every submodule uses ``_common``; ``two_sample``, ``_pairs``,
``floors`` and ``scorecards`` use ``distances``; ``floors`` and ``scorecards`` use
``_pairs``; ``scorecards`` uses ``floors``; nothing imports ``scorecards``.

Example:
    >>> import torch
    >>> from gmbook.data import EightGaussians
    >>> g = torch.Generator().manual_seed(0)
    >>> data = EightGaussians()
    >>> x, y = data.sample(500, generator=g), data.sample(500, generator=g)
    >>> bool(mmd2(x, y + 0.5) > mmd2(x, y))
    True
    >>> round(wasserstein2(x, x), 6)
    0.0
"""

# In the order of the old single module, which is the order of the API page.
from gmbook.metrics.distances import DEFAULT_BANDWIDTHS
from gmbook.metrics.scorecards import SCORECARD_METRICS
from gmbook.metrics.distances import W2_MAX_N
from gmbook.metrics.likelihood import (
    Estimate,
    nll,
    bits_per_dim,
    paired_kl,
    entropy,
    entropy_quadrature,
    NLLReport,
    nll_report,
)
from gmbook.metrics.distances import (
    mmd2,
    energy_distance,
    sliced_wasserstein2,
    wasserstein2,
    precision_recall,
    density_coverage,
    frechet_gaussians,
    frechet_distance,
    kid,
    inception_score,
)
from gmbook.metrics.two_sample import TestResult, two_sample_test
from gmbook.metrics.scorecards import (
    ScorecardRow,
    Scorecard,
    scorecard,
    PairedDifference,
    paired_difference,
    paired_rows,
)
from gmbook.metrics.floors import (
    FLOOR_REPEATS,
    CEILING_REPEATS,
    FloorPrecisionWarning,
    floor_values,
    reference_draws,
)

__all__ = [
    "CEILING_REPEATS",
    "FLOOR_REPEATS",
    "FloorPrecisionWarning",
    "DEFAULT_BANDWIDTHS",
    "SCORECARD_METRICS",
    "W2_MAX_N",
    "Estimate",
    "NLLReport",
    "PairedDifference",
    "Scorecard",
    "ScorecardRow",
    "TestResult",
    "bits_per_dim",
    "density_coverage",
    "energy_distance",
    "entropy",
    "entropy_quadrature",
    "floor_values",
    "frechet_distance",
    "frechet_gaussians",
    "inception_score",
    "kid",
    "mmd2",
    "nll",
    "nll_report",
    "paired_difference",
    "paired_kl",
    "paired_rows",
    "precision_recall",
    "reference_draws",
    "scorecard",
    "sliced_wasserstein2",
    "two_sample_test",
    "wasserstein2",
]
