"""The checkers of ``gmbook.exercises.sequences`` (the sequence chapter): their references
are right.

The generic tests (``tests/test_checkers_registry.py``) check that each reference passes its
own cases and that each hint fires on its mistake; these check the references themselves
against facts that do not retype their formulas.
"""

from __future__ import annotations

import itertools
import math

import torch

from gmbook.exercises import check, get_checker
from gmbook.sequences import RegimeSwitching

F64 = torch.float64


def test_hmm_log_likelihood_reference_sums_over_every_path():
    """[eq-seq-forward] The forward algorithm equals the brute-force sum over all K^T regime
    paths of pi(s_1) e_1(s_1) prod_t A(s_{t-1}, s_t) e_t(s_t), for an asymmetric chain."""
    ref = get_checker("hmm_log_likelihood").reference
    g = torch.Generator().manual_seed(0)
    k, t = 3, 5
    log_pi = torch.randn(k, generator=g, dtype=F64).log_softmax(0)
    log_a = torch.randn(k, k, generator=g, dtype=F64).log_softmax(1)
    log_e = torch.randn(2, t, k, generator=g, dtype=F64)
    total = torch.zeros(2, dtype=F64)
    for path in itertools.product(range(k), repeat=t):
        lp = log_pi[path[0]] + log_e[:, 0, path[0]]
        for i in range(1, t):
            lp = lp + log_a[path[i - 1], path[i]] + log_e[:, i, path[i]]
        total += lp.exp()
    torch.testing.assert_close(ref(log_pi, log_a, log_e), total.log(), rtol=0, atol=1e-12)


def test_hmm_log_likelihood_reference_is_the_process_likelihood():
    """[eq-seq-forward] With the regime-switching process's own initial law, transition
    matrix and emission densities, the reference gives RegimeSwitching.log_prob."""
    ref = get_checker("hmm_log_likelihood").reference
    proc = RegimeSwitching()
    x = proc.sample(4, 50, generator=torch.Generator().manual_seed(1), dtype=F64,
                    return_regimes=False)
    got = ref(proc.initial_law.log(), proc.transition_matrix.log(),
              proc.emission_log_probs(x))
    torch.testing.assert_close(got, proc.log_prob(x), rtol=0, atol=1e-10)


def test_top_p_filter_reference_keeps_the_smallest_nucleus():
    """[eq-seq-top-p] On p = (0.5, 0.3, 0.15, 0.05): top_p = 0.7 keeps the first two tokens
    (mass 0.8, the first alone has 0.5 < 0.7) renormalised to (0.625, 0.375); top_p = 0.8
    still keeps two (0.8 >= 0.8); top_p = 0.81 keeps three."""
    ref = get_checker("top_p_filter").reference
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=F64).log()
    q = ref(logits, 0.7).exp()
    torch.testing.assert_close(q, torch.tensor([[0.625, 0.375, 0.0, 0.0]], dtype=F64))
    assert int((ref(logits, 0.8) > -math.inf).sum()) == 2
    q3 = ref(logits, 0.81).exp()
    torch.testing.assert_close(q3, torch.tensor([[0.5, 0.3, 0.15, 0.0]], dtype=F64) / 0.95)


def test_top_p_filter_reference_on_random_rows():
    """[eq-seq-top-p] On random rows the kept set is a set of most probable tokens whose mass
    reaches top_p, no smaller such set exists, and the kept probabilities are p / p(S)."""
    ref = get_checker("top_p_filter").reference
    g = torch.Generator().manual_seed(2)
    logits = 2 * torch.randn(50, 9, generator=g, dtype=F64)
    p = logits.softmax(-1)
    for top_p in (0.3, 0.75, 0.95):
        q = ref(logits, top_p).exp()
        for row_p, row_q in zip(p, q):
            kept = row_q > 0
            mass = row_p[kept].sum()
            assert mass >= top_p - 1e-12
            if (~kept).any():
                assert row_p[kept].min() >= row_p[~kept].max()
            n = int(kept.sum())
            assert row_p.sort(descending=True).values[:n - 1].sum() < top_p
            torch.testing.assert_close(row_q[kept], row_p[kept] / mass)


def test_the_solutions_of_the_chapter_pass():
    """The chapter's solutions, as written there, pass their checkers."""
    def forward(log_pi, log_A, log_e):  # noqa: N803
        log_alpha = log_pi + log_e[:, 0]
        for t in range(1, log_e.shape[1]):
            log_alpha = torch.logsumexp(log_alpha[:, :, None] + log_A, dim=1) + log_e[:, t]
        return torch.logsumexp(log_alpha, dim=-1)

    def nucleus(logits, top_p):
        log_p = logits.log_softmax(-1)
        sorted_lp, order = log_p.sort(dim=-1, descending=True)
        before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()
        keep = torch.zeros_like(before, dtype=torch.bool)
        keep = keep.scatter(-1, order, before < top_p)
        return logits.masked_fill(~keep, -math.inf).log_softmax(-1)

    assert check("hmm_log_likelihood", forward)
    assert check("top_p_filter", nucleus)
