r"""Automatic checkers for the coding exercises of the book.

Every chapter ends with exercises; a coding exercise ends with a cell such as::

    from gmbook.exercises import check
    check("gaussian_mle", my_gaussian_mle)

:func:`check` runs the reader's function on random inputs and on edge cases, compares
every result with the package's reference implementation and returns a
:class:`CheckResult`. :func:`check` prints nothing: the ``repr`` of the result *is* the
report, so a notebook cell that **ends** with ``check(...)`` shows it exactly once. Call
``print(check(...))`` anywhere else (in a loop, in a script); ``bool(result)`` is
``result.passed``, so ``assert check(...)`` works in tests.

The report is short, plain ASCII (the book's PDF is built with xelatex, its HTML is
static), with lines of at most 80 characters. A failure names the case, the inputs
(shapes and dtypes, values when small), what was expected and what came back (wrong
type, wrong tuple length, wrong shape or dtype, NaN, wrong value with its largest
absolute error, an input modified in place), and a hint when it recognises a known
mistake. An exception raised by the reader's function is caught and reported with the
case that triggered it; it never crashes the notebook.

The random inputs come from a local :class:`torch.Generator` seeded per checker: two
runs see the same inputs, and the global random state is never touched.

Checkers of Chapter 1 (*The generative modeling problem*):

=================  ==========================================================
``gaussian_mle``   ``fn(x) -> (mean, cov)``, maximum-likelihood Gaussian
``linear_path``    ``fn(x0, x1, t) -> (x_t, u_t)``, straight path and velocity
``kl_gaussians``   ``fn(mu_p, var_p, mu_q, var_q) -> kl``, diagonal Gaussians
``standardize``    ``fn(x) -> (z, mean, std)``, per-axis standardization
=================  ==========================================================

Checkers of the chapter *Evaluating generative models*:

=====================  ======================================================
``mmd2_unbiased``      ``fn(x, y, bandwidth) -> mmd2``, unbiased MMD^2,
                       Gaussian kernel
``bits_per_dim``       ``fn(nll_nats, dim, bin_width) -> bpd``, a float (a
                       0-dim tensor is accepted too)
``frechet_gaussians``  ``fn(mu1, cov1, mu2, cov2) -> frechet``, squared
                       2-Wasserstein distance between Gaussians (FID)
=====================  ======================================================

Checkers of the chapter *Variational autoencoders*:

===================  ========================================================
``iwae_bound``       ``fn(log_w) -> bound``, the importance-weighted bound from
                     log-weights ``(K, B)``
``ppca_posterior``   ``fn(W, b, noise_var, x)`` returns ``(mean, cov)``, the
                     exact posterior of probabilistic PCA
``vector_quantize``  ``fn(z_e, codebook)`` returns ``(indices, z_q)``, the
                     nearest code of each vector
===================  ========================================================

Checkers of Appendix A (*Probability theory*):

========================  ===================================================
``gaussian_conditional``  ``fn(mean, cov, x_b) -> (mean_a, cov_a)``, the
                          Gaussian conditional given the last ``len(x_b)``
                          coordinates
``kl_mvn``                ``fn(mean_p, cov_p, mean_q, cov_q) -> kl``,
                          full-covariance Gaussians
``self_normalized_is``    ``fn(log_w, fx) -> (estimate, ess)``, self-
                          normalized importance sampling and its effective
                          sample size
========================  ===================================================

Checkers of the chapter *Sampling and Markov chain Monte Carlo*:

========================  ==========================================================
``mh_transition_matrix``  ``fn(target, proposal) -> P``, the exact
                          Metropolis-Hastings transition matrix on ``S`` states
``leapfrog``              ``fn(grad_log_prob, x, p, step_size, n_steps) -> (x, p)``,
                          ``n_steps`` leapfrog steps (half kick, drift, half kick)
``autocorrelation``       ``fn(x) -> rho``, the biased sample autocorrelation of one
                          chain at the lags ``0, ..., T-1``
``gibbs_sweep_2d``        ``fn(x, rho, noise) -> x``, one systematic-scan Gibbs sweep
                          for the bivariate Gaussian with correlation ``rho``
========================  ==========================================================

Checkers of the chapter *Energy-based models*:

=======================  ===========================================================
``grid_log_normalizer``  ``fn(energies, cell_area) -> log_z``, the log of the grid
                         sum of ``exp(-E)`` times the cell area
``langevin_step``        ``fn(grad_energy, x, step_size, noise, xi) -> x_new``, one
                         Langevin step with noise scale ``noise``
=======================  ===========================================================

Checkers of the chapter *Normalizing flows*:

==============  ==============================================================
``rq_spline``   ``fn(x, x_knots, y_knots, derivatives) -> (y, log_deriv)``, the
                rational-quadratic spline through given knots and its log-slope
``made_masks``  ``fn(in_degrees, hidden_degrees) -> (mask_hidden, mask_out)``,
                the bool masks of a one-hidden-layer MADE
==============  ==============================================================

Checkers of the chapter *Score matching and denoising*:

==========================  ========================================================
``noised_mixture_score``    ``fn(x, weights, means, variances, sigma) -> score``, the
                            score of an isotropic Gaussian mixture noised at ``sigma``
``annealed_langevin_step``  ``fn(x, score, sigma, sigma_last, eps, z) -> x_new``, one
                            step of annealed Langevin dynamics at level ``sigma``
==========================  ========================================================

Checkers of the chapter *Denoising diffusion probabilistic models*:

======================  ========================================================
``ddpm_posterior``      ``fn(x0, x_t, alpha_bar_t, alpha_bar_prev) -> (mean,
                        var)``, the forward posterior (alpha bars ``(B, 1)``)
``ddpm_v_conversions``  ``fn(x_t, v, alpha_bar) -> (eps, x0)``, predictions
                        from a velocity (alpha bar ``(B, 1)``)
======================  ========================================================

Checkers of the chapter *Flow matching and rectified flow*:

=====================  ======================================================
``vp_path``            ``fn(x0, x1, t) -> (x_t, u_t)``, the variance-preserving
                       path and its conditional velocity
``velocity_from_eps``  ``fn(x_t, eps, t) -> v``, the linear path's velocity
                       from a noise prediction
=====================  ======================================================

A new checker is a :class:`Checker` (a reference function, a function that makes the
:class:`Case` list from a generator, the names of the outputs, and optional
hints, each a :class:`Hint`) passed to :func:`register`. The checkers of a chapter live
in a submodule named after it (``gmbook/exercises/problem.py``,
``gmbook/exercises/evaluation.py``, ...), imported below so that they are registered.

Example:
    >>> import torch
    >>> from gmbook.exercises import check
    >>> def my_gaussian_mle(x):
    ...     mean = x.mean(dim=0)
    ...     xc = x - mean                       # (n, d)
    ...     return mean, xc.T @ xc / x.shape[0]
    >>> check("gaussian_mle", my_gaussian_mle)
    PASSED gaussian_mle: 9/9 cases (6 random, 3 edge).
    >>> def unbiased(x):
    ...     return x.mean(dim=0), torch.cov(x.T)
    >>> result = check("gaussian_mle", unbiased)
    >>> bool(result)
    False
    >>> print(result)
    FAILED gaussian_mle on case 1/9 (random: n=...).
      input:    x (..., 2) float64
      problem:  cov is wrong: max abs error ...
      hint:     You divided by n - 1 (the unbiased estimator, also torch.cov's
                default). The maximum-likelihood covariance divides by n.
      9 of 9 cases failed: 1, 2, 3, 4, 5, 6, 7, 8, 9.
"""

from gmbook.exercises._framework import (
    Case,
    Checker,
    CheckResult,
    Hint,
    available,
    check,
    get_checker,
    register,
)

# The chapters' checkers register themselves on import.
from gmbook.exercises import (  # noqa: E402, F401  isort: skip
    ddpm,
    densities,
    ebm,
    evaluation,
    flow_matching,
    flows,
    probability,
    problem,
    sampling,
    score,
    vae,
)

__all__ = [
    "Case",
    "CheckResult",
    "Checker",
    "Hint",
    "available",
    "check",
    "get_checker",
    "register",
]
