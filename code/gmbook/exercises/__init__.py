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

.. checker-table-start

Checkers of Chapter 1, *The generative modeling problem*:

================  ======================================================================
``gaussian_mle``  ``fn(x) -> (mean, cov)``, maximum-likelihood mean and (biased)
                  covariance, ``(d,)`` and ``(d, d)``
``kl_gaussians``  ``fn(mu_p, var_p, mu_q, var_q) -> kl``, KL(p || q) for diagonal
                  Gaussians, summed over the last dim, ``(B,)``
``linear_path``   ``fn(x0, x1, t) -> (x_t, u_t)``, ``x_t = (1 - t) x0 + t x1`` and ``u_t
                  = x1 - x0``, both ``(B, *D)``
``standardize``   ``fn(x) -> (z, mean, std)``, ``z = (x - mean) / std`` per axis with
                  the population std, ``(n, d)``
================  ======================================================================

Checkers of the chapter *Modeling continuous random variables*:

================  ======================================================================
``em_step_1d``    ``fn(x, weights, means, variances) -> (weights, means, variances)``,
                  one EM iteration for a 1-D mixture of ``K`` Gaussians. ``x`` ``(n,)``;
                  ``weights``, ``means``, ``variances`` ``(K,)``
``kde_log_prob``  ``fn(x, data, bandwidth) -> log_prob``, log of the Gaussian KDE of
                  ``data`` ``(n, D)`` at ``x`` ``(m, D)``, shape ``(m,)``: ``logsumexp_i
                  log N(x; data_i, h^2 I) - log n``
``log_sum_exp``   ``fn(a) -> lse``, :math:`\log \sum_k e^{a_k}` over the last dimension,
                  shape ``a.shape[:-1]``
================  ======================================================================

Checkers of the chapter *Sampling and Markov chain Monte Carlo*:

========================  ==============================================================
``autocorrelation``       ``fn(x) -> rho``, the biased sample autocorrelation rho_0,
                          ..., rho_{T-1} of one chain ``x`` ``(T,)``, in the dtype of
                          ``x`` (:func:`gmbook.mcmc.autocorrelation`)
``gibbs_sweep_2d``        ``fn(x, rho, noise) -> x``, one systematic-scan Gibbs sweep
                          (first coordinate, then second) for the bivariate Gaussian
                          with unit variances and correlation ``rho``, from states ``x``
                          ``(C, 2)`` with standard normal ``noise`` ``(C, 2)``
                          (:func:`gmbook.mcmc.gibbs_sweep_gaussian`)
``leapfrog``              ``fn(grad_log_prob, x, p, step_size, n_steps) -> (x, p)``,
                          ``n_steps`` leapfrog steps of size ``step_size`` from ``(x,
                          p)``, each ``(C, D)`` (:func:`gmbook.mcmc.leapfrog`)
``mh_transition_matrix``  ``fn(target, proposal) -> P``, the exact Metropolis-Hastings
                          matrix ``(S, S)`` of a positive target ``(S,)`` and a
                          row-stochastic proposal ``(S, S)``
                          (:func:`gmbook.mcmc.mh_transition_matrix`)
========================  ==============================================================

Checkers of the chapter *Energy-based models*:

=======================  ===============================================================
``grid_log_normalizer``  ``fn(energies, cell_area) -> log_z``, :math:`\log \sum_g
                         e^{-E(g)} \Delta A` over all entries of ``energies`` (eq.
                         ``eq-ebm-grid``), a 0-dim tensor in the dtype of ``energies``
``langevin_step``        ``fn(grad_energy, x, step_size, noise, xi) -> x_new``, one step
                         of eq. ``eq-ebm-langevin``, :math:`x - h \nabla E(x) + \sigma
                         \sqrt{2h}\, \xi`, shape ``(B, D)``
=======================  ===============================================================

Checkers of the chapter *Evaluating generative models*:

=====================  =================================================================
``bits_per_dim``       ``fn(nll_nats, dim, bin_width) -> bpd``, negative log-likelihood
                       in nats per data point -> bits per dimension. ``nll / (dim ln
                       2)`` for continuous data (``bin_width=None``); for discrete data
                       dequantized with uniform noise over bins of width ``bin_width``,
                       the probability of a bin is about the density times
                       ``bin_width**dim``, so ``(nll - dim ln(bin_width)) / (dim ln 2)``
``frechet_gaussians``  ``fn(mu1, cov1, mu2, cov2) -> frechet``, squared 2-Wasserstein
                       (Frechet) distance between Gaussians, 0-dim. ``|mu1 - mu2|^2 +
                       tr(cov1 + cov2 - 2 (cov1^{1/2} cov2 cov1^{1/2})^{1/2})``, the
                       formula of the FID (Heusel et al., 2017)
``mmd2_unbiased``      ``fn(x, y, bandwidth) -> mmd2``, unbiased MMD^2 with a Gaussian
                       kernel (Gretton et al., 2012), 0-dim. ``k(a, b) = exp(-|a - b|^2
                       / (2 bandwidth^2))``; the within-set averages skip the diagonal
                       ``i = j``, the cross average keeps every pair
=====================  =================================================================

Checkers of the chapter *Variational autoencoders*:

===================  ===================================================================
``iwae_bound``       ``fn(log_w) -> bound``, :math:`\log \frac1K \sum_k e^{\log w_k}`
                     over the first dimension of ``log_w`` ``(K, B)`` (eq.
                     ``eq-vae-iwae``), shape ``(B,)``
``ppca_posterior``   ``fn(W, b, noise_var, x) -> (mean, cov)``, the posterior of
                     :math:`x = W z + b + \sigma \epsilon`, :math:`z \sim \mathcal N(0,
                     I)` (eq. ``eq-vae-linear-posterior``): mean :math:`M^{-1} W^\top (x
                     - b)` ``(B, L)`` and covariance :math:`\sigma^2 M^{-1}` ``(L, L)``,
                     with :math:`M = W^\top W + \sigma^2 I`
``vector_quantize``  ``fn(z_e, codebook) -> (indices, z_q)``, the nearest code
                     (Euclidean) of each row of ``z_e`` ``(B, d)`` among the rows of
                     ``codebook`` ``(K, d)``: int64 indices ``(B,)`` and the codes ``(B,
                     d)``
===================  ===================================================================

Checkers of the chapter *Normalizing flows*:

==============  ========================================================================
``made_masks``  ``fn(in_degrees, hidden_degrees) -> (mask_hidden, mask_out)``, the masks
                ``(H, D)`` and ``(D, H)`` of a one-hidden-layer MADE, float32 zeros and
                ones (:func:`gmbook.flows.made_masks`, converted)
``rq_spline``   ``fn(x, x_knots, y_knots, derivatives) -> (y, log_deriv)``, the
                rational-quadratic spline through the knots ``(K + 1,)`` at points ``x``
                ``(B,)`` inside them, and its log-derivative
                (:func:`gmbook.flows.spline_from_knots`)
==============  ========================================================================

Checkers of the chapter *Neural ODEs and continuous normalizing flows*:

========================  ==============================================================
``exact_divergence``      ``fn(f, x) -> divergence``, the divergence :math:`\nabla\cdot
                          f = \operatorname{tr} \nabla_x f` at the points ``x`` ``(B,
                          D)``, shape ``(B,)``, by ``D`` backward passes (eq.
                          ``eq-cnf-icov``; :func:`gmbook.score.divergence`)
``hutchinson_variances``  ``fn(jacobian) -> (gaussian, rademacher)``, the variances of
                          one probe of Hutchinson's estimate :math:`\varepsilon^\top A
                          \varepsilon` of :math:`\operatorname{tr} A` for Gaussian and
                          for Rademacher probes, each of shape ``(B,)``, for Jacobians
                          ``(B, D, D)`` (eq. ``eq-cnf-hutchinson-var``;
                          :func:`gmbook.cnf.hutchinson_variance`)
========================  ==============================================================

Checkers of the chapter *Score matching and denoising*:

==========================  ============================================================
``annealed_langevin_step``  ``fn(x, score, sigma, sigma_last, eps, z) -> x_new``, one
                            step of eq. ``eq-sm-annealed``, :math:`x + \alpha s +
                            \sqrt{2\alpha}\, z` with :math:`\alpha = \epsilon \sigma^2 /
                            \sigma_L^2`, shape ``(B, D)``
``noised_mixture_score``    ``fn(x, weights, means, variances, sigma) -> score``, the
                            score of :math:`\sum_k \pi_k \mathcal N(\mu_k, (v_k +
                            \sigma^2) I)` (eq. ``eq-sm-mixture-score`` with isotropic
                            components), shape ``(B, D)``
==========================  ============================================================

Checkers of the chapter *Denoising diffusion probabilistic models*:

======================  ================================================================
``ddpm_posterior``      ``fn(x0, x_t, alpha_bar_t, alpha_bar_prev) -> (mean, var)``,
                        mean ``(B, D)`` and variance ``(B, 1)`` of :math:`q(x_s \mid
                        x_t, x_0)` (eq. ``eq-ddpm-posterior``), alpha bars of shape
                        ``(B, 1)``
``ddpm_v_conversions``  ``fn(x_t, v, alpha_bar) -> (eps, x0)``, ``(eps, x0)`` from a
                        velocity prediction (eq. ``eq-ddpm-conversions``), ``alpha_bar``
                        of shape ``(B, 1)``
======================  ================================================================

Checkers of the chapter *Diffusion as stochastic differential equations*:

====================  ==================================================================
``ddim_exp_step``     ``fn(x_t, x0_hat, lam_t, lam_s) -> x_s``, one step of the
                      first-order exponential integrator in half log-SNR (eq.
                      ``eq-sde-ddim-exp``) from :math:`\lambda_t` to :math:`\lambda_s >
                      \lambda_t` on the variance-preserving path, ``x_t`` and ``x0_hat``
                      of shape ``(B, D)``: the package's DDIM step
                      (:func:`gmbook.samplers.ddim` with ``eta = 0``) with :math:`\hat
                      x_0` held fixed
``edm_coefficients``  ``fn(sigma, sigma_data) -> (c_skip, c_out, c_in, c_noise)``, EDM's
                      preconditioning coefficients (eq. ``eq-sde-edm-precond``) at noise
                      levels ``sigma`` ``(B,)`` for data of standard deviation
                      ``sigma_data``: ``(c_skip, c_out, c_in, c_noise)``, each of the
                      shape of ``sigma`` (:func:`gmbook.sde.edm_coefficients`)
``karras_sigmas``     ``fn(steps, sigma_min, sigma_max, rho) -> sigmas``, the noise
                      levels of EDM's time grid (eq. ``eq-sde-karras-grid``), ``steps``
                      levels from ``sigma_max`` down to ``sigma_min``, uniform in
                      :math:`\sigma^{1/\rho}`, then a final 0: float64, shape ``(steps +
                      1,)`` (:func:`gmbook.samplers.karras_grid` on the path
                      :math:`\sigma_t = t`)
====================  ==================================================================

Checkers of the chapter *Guidance and conditional generation*:

==========================  ============================================================
``cfg_score``               ``fn(x, x0_uncond, x0_cond, sigma, w) -> score``, the
                            classifier-free guided score (eq. ``eq-guid-cfg``, weight
                            ``w``, 0 the unconditional and 1 the conditional model) on
                            the path :math:`x_\sigma = x_0 + \sigma\epsilon` at ``x``
                            ``(B, D)``, from the two denoised estimates ``(B, D)`` at
                            noise levels ``sigma`` ``(B,)``: the score of
                            :func:`gmbook.guidance.cfg`, :math:`(\hat x_0^{(w)} -
                            x)/\sigma^2`
``noised_classifier_grad``  ``fn(x, means, var, weights, sigma, c) -> grad``, the
                            gradient of the noised classifier :math:`\nabla_x \log
                            p_\sigma(c \mid x)` (eq. ``eq-guid-classifier``) of a
                            mixture of two isotropic Gaussians, class :math:`k` being
                            :math:`\mathcal N(\mu_k, v I)` with probability
                            :math:`\pi_k`, noised by :math:`x_\sigma = x_0 +
                            \sigma\epsilon`: ``x`` ``(B, D)``, ``means`` ``(2, D)``,
                            ``weights`` ``(2,)``; returns ``(B, D)``
                            (:meth:`gmbook.guidance.LabelledMixture.classifier_grad`)
==========================  ============================================================

Checkers of the chapter *Flow matching and rectified flow*:

=====================  =================================================================
``velocity_from_eps``  ``fn(x_t, eps, t) -> v``, the linear path's velocity from a noise
                       prediction (:func:`gmbook.flow_matching.velocity_from_eps`)
``vp_path``            ``fn(x0, x1, t) -> (x_t, u_t)``, the variance-preserving path and
                       its conditional velocity
                       (:func:`gmbook.flow_matching.gaussian_path` with ``path="vp"``)
=====================  =================================================================

Checkers of the chapter *Generation in one or two steps*:

============================  ==========================================================
``consistency_coefficients``  ``fn(sigma, sigma_data, sigma_min) -> (c_skip, c_out)``,
                              the skip and output scalings ``(c_skip, c_out)`` of a
                              consistency model, each of the shape of ``sigma`` ``(B,)``
                              (eq. ``eq-fs-cm-param``;
                              :func:`gmbook.few_step.consistency_coefficients`)
``gaussian_flow_map``         ``fn(x, t, s, mean, var) -> x_s``, the flow map from level
                              ``t`` to level ``s`` of the probability-flow ODE on the VE
                              path for Gaussian data with mean ``mean`` and variances
                              ``var``, shape ``(B, D)`` (eq.
                              ``eq-fs-gaussian-flow-map``;
                              :func:`gmbook.few_step.gaussian_flow_map`)
============================  ==========================================================

Checkers of the chapter *Generative adversarial networks*:

=========================  =============================================================
``dirac_spectral_radius``  ``fn(h, gamma, alternating) -> radius``, the spectral radius
                           (largest eigenvalue modulus) of one step of gradient play on
                           the Dirac-GAN with the GAN loss (:math:`a = f'(0) = 1/2`) and
                           R1 weight ``gamma``, linearised at the equilibrium:
                           simultaneous or alternating updates of step ``h`` (eq.
                           ``eq-gan-dirac-updates``;
                           :func:`gmbook.gans.dirac_eigenvalues`)
``optimal_discriminator``  ``fn(log_p, log_q) -> d_star``, the optimal discriminator
                           :math:`D^* = p / (p + q)` from the two log-densities at the
                           same points ``(B,)`` (eq. ``eq-gan-optimal-d``;
                           :func:`gmbook.gans.optimal_discriminator`), computed without
                           overflow
``power_iteration_step``   ``fn(weight, u) -> (sigma, u, v)``, one step of power
                           iteration for the largest singular value of ``weight`` ``(m,
                           n)`` from ``u`` ``(m,)``: :math:`v = W^\top u / \|W^\top
                           u\|`, :math:`u' = W v / \|W v\|`, :math:`\hat\sigma = u'^\top
                           W v` (eq. ``eq-gan-power-iteration``;
                           :func:`gmbook.gans.power_iteration`)
=========================  =============================================================

Checkers of the chapter *Autoregressive models and sequences*:

======================  ================================================================
``hmm_log_likelihood``  ``fn(log_pi, log_A, log_e) -> log_p``, the log-likelihood
                        :math:`\log p(x_{1:T})` of a hidden Markov model by the forward
                        algorithm in log space (eq. ``eq-seq-forward``), from the log
                        initial law ``log_pi`` ``(K,)``, the log transition matrix
                        ``log_A`` ``(K, K)`` (row: from, column: to) and the log
                        emission densities ``log_e`` ``(B, T, K)``, :math:`\log e_t(k) =
                        \log p(x_t \mid s_t = k, x_{t-1})`; returns ``(B,)``
``top_p_filter``        ``fn(logits, top_p) -> log_q``, the log-probabilities of nucleus
                        (top-p) sampling, eq. ``eq-seq-top-p``: keep the smallest set of
                        most probable tokens whose probability reaches ``top_p``,
                        renormalise, and give the others ``-inf``; ``logits`` ``(B,
                        V)``, result ``(B, V)``
                        (:func:`gmbook.sequences.decoding_log_probs`)
======================  ================================================================

Checkers of Appendix A, *Probability theory*:

========================  ==============================================================
``gaussian_conditional``  ``fn(mean, cov, x_b) -> (mean_a, cov_a)``, ``X_a | X_b = x_b``
                          with ``b`` the last ``m = len(x_b)`` coordinates
``kl_mvn``                ``fn(mean_p, cov_p, mean_q, cov_q) -> kl``, KL(p || q) between
                          full-covariance Gaussians, a 0-dim tensor
``self_normalized_is``    ``fn(log_w, fx) -> (estimate, ess)``, self-normalized estimate
                          and effective sample size, both 0-dim
========================  ==============================================================

Checkers of Appendix B, *Brownian motion and stochastic calculus*:

=================  =====================================================================
``em_step``        ``fn(f, g, x, t, h, dw) -> x_new``, one Euler-Maruyama step :math:`x
                   + f(x, t) h + g(x, t) \Delta W` (``eq-sc-em``), shape of ``x``
``ou_transition``  ``fn(x0, t, theta, sigma) -> (mean, var)``, mean and variance of
                   :math:`x_t \mid x_0` for :math:`\mathrm d x = -\theta x\, \mathrm d t
                   + \sigma\, \mathrm d W` (``eq-sc-ou-transition``), shapes of ``x0``
=================  =====================================================================

.. checker-table-end

A new checker is a :class:`Checker` (a reference function, a function that makes the
:class:`Case` list from a generator, the names of the outputs, and optional
hints, each a :class:`Hint`) passed to :func:`register`. The checkers of a chapter live
in a submodule named after it (``gmbook/exercises/problem.py``,
``gmbook/exercises/evaluation.py``, ...), imported below so that they are registered. The
table above is generated from the registry: after adding a checker, run
``python -m gmbook.exercises --write``.

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
    cnf,
    ddpm,
    densities,
    ebm,
    evaluation,
    few_step,
    flow_matching,
    flows,
    gans,
    guidance,
    probability,
    problem,
    sampling,
    score,
    sde,
    sequences,
    stochastic,
    vae,
)



def checker_table() -> str:
    r"""The reST tables of every registered checker, one table per chapter module.

    Each row gives the checker's name, the signature of its reference (``fn(args) ->
    outputs``) and the first sentence of its reference's docstring. The package docstring
    holds a copy (``python -m gmbook.exercises --write`` refreshes it).
    """
    import inspect
    import re
    import sys
    import textwrap

    by_module: dict[str, list[str]] = {}
    for name in available():
        by_module.setdefault(get_checker(name).reference.__module__, []).append(name)
    blocks = []
    for module in sorted(by_module, key=lambda m: _CHAPTER_ORDER.index(m.rsplit(".", 1)[-1])
                         if m.rsplit(".", 1)[-1] in _CHAPTER_ORDER else 99):
        title = (sys.modules[module].__doc__ or module).strip().splitlines()[0]
        title = title.replace("Checkers of ", "").rstrip(".")
        title = title.split(" (``")[0]
        rows = []
        for name in by_module[module]:
            checker = get_checker(name)
            args = ", ".join(inspect.signature(checker.reference).parameters)
            outs = checker.outputs[0] if len(checker.outputs) == 1 else \
                "(" + ", ".join(checker.outputs) + ")"
            doc = " ".join((inspect.getdoc(checker.reference) or "").split())
            doc = doc.removeprefix("Reference:").strip()
            # The first sentence: a full stop before a capital, not the "eq." of a citation.
            first = re.split(r"(?<!\beq)(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z])", doc)[0].rstrip(".,")
            rows.append((f"``{name}``", f"``fn({args}) -> {outs}``, {first}"))
        w1 = max(len(a) for a, _ in rows)
        w2 = 86 - w1
        rule = "=" * w1 + "  " + "=" * w2
        lines = [f"Checkers of {title}:", "", rule]
        for a, b in rows:
            wrapped = textwrap.wrap(b, w2, break_on_hyphens=False,
                                    break_long_words=False) or [""]
            lines.append(f"{a:<{w1}}  {wrapped[0]}".rstrip())
            lines += [" " * (w1 + 2) + more for more in wrapped[1:]]
        lines.append(rule)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


_CHAPTER_ORDER = ["problem", "densities", "sampling", "ebm", "evaluation", "vae", "flows",
                  "cnf", "score", "ddpm", "sde", "guidance", "flow_matching", "few_step",
                  "gans", "sequences", "probability", "stochastic"]

__all__ = [
    "Case",
    "CheckResult",
    "Checker",
    "Hint",
    "available",
    "check",
    "checker_table",
    "get_checker",
    "register",
]
