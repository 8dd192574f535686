r"""Checkers of the chapter *Autoregressive models and sequences*."""

from __future__ import annotations

import torch
from torch import Tensor

from gmbook import sequences
from gmbook.exercises._framework import DTYPES, Case, Checker, Hint, fmt_dtype, randint, register

__all__: list[str] = []


# -- hmm_log_likelihood ------------------------------------------------------------------


def _hmm_log_likelihood(log_pi: Tensor, log_A: Tensor, log_e: Tensor) -> Tensor:  # noqa: N803
    r"""Reference: the log-likelihood :math:`\log p(x_{1:T})` of a hidden Markov model by the
    forward algorithm in log space (eq. ``eq-seq-forward``), from the log initial law
    ``log_pi`` ``(K,)``, the log transition matrix ``log_A`` ``(K, K)`` (row: from, column:
    to) and the log emission densities ``log_e`` ``(B, T, K)``, :math:`\log e_t(k) = \log
    p(x_t \mid s_t = k, x_{t-1})`; returns ``(B,)``."""
    log_alpha = log_pi + log_e[:, 0]  # (B, K)
    for t in range(1, log_e.shape[1]):
        log_alpha = torch.logsumexp(log_alpha[:, :, None] + log_A, dim=1) + log_e[:, t]
    return torch.logsumexp(log_alpha, dim=-1)


def _hmm_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, t, n = randint(generator, 1, 4), randint(generator, 2, 9), randint(generator, 2, 4)
        log_pi = torch.randn(n, generator=generator, dtype=f64).log_softmax(0)
        log_a = torch.randn(n, n, generator=generator, dtype=f64).log_softmax(1)
        log_e = 2 * torch.randn(b, t, n, generator=generator, dtype=f64) - 1
        cases.append(Case(f"B={b}, T={t}, K={n}, {fmt_dtype(dtype)}",
                          (log_pi.to(dtype), log_a.to(dtype), log_e.to(dtype))))
    # an asymmetric chain: a transposed matrix gives another answer
    log_a = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=f64).log()
    log_pi = torch.tensor([0.2, 0.8], dtype=f64).log()
    log_e = torch.tensor([[[-0.5, -3.0], [-2.0, -0.3], [-0.1, -4.0], [-1.0, -1.0]]],
                         dtype=f64)
    cases += [
        Case("an asymmetric 2-state chain, T=4, float64", (log_pi, log_a, log_e), edge=True),
        Case("T=1: the initial law times the first emission, float64",
             (log_pi, log_a, log_e[:, :1]), edge=True),
        Case("a long sequence, T=400, emissions near exp(-30) (underflows as densities), "
             "float64", (log_pi, log_a,
                         -30 + torch.randn(2, 400, 2, generator=generator, dtype=f64)),
             edge=True),
        Case("a transition of probability 0 (log A = -inf), float64",
             (log_pi, torch.tensor([[0.0, -float("inf")], [-0.7, -0.7]], dtype=f64),
              log_e), edge=True),
    ]
    return cases


def _hmm_in_densities(log_pi, log_A, log_e):  # noqa: N803
    alpha = log_pi.exp() * log_e[:, 0].exp()
    for t in range(1, log_e.shape[1]):
        alpha = (alpha @ log_A.exp()) * log_e[:, t].exp()
    return alpha.sum(-1).log()


def _hmm_transposed(log_pi, log_A, log_e):  # noqa: N803
    return _hmm_log_likelihood(log_pi, log_A.T, log_e)


def _hmm_no_initial(log_pi, log_A, log_e):  # noqa: N803
    return _hmm_log_likelihood(torch.zeros_like(log_pi), log_A, log_e)


def _hmm_viterbi(log_pi, log_A, log_e):  # noqa: N803
    log_alpha = log_pi + log_e[:, 0]
    for t in range(1, log_e.shape[1]):
        log_alpha = (log_alpha[:, :, None] + log_A).amax(dim=1) + log_e[:, t]
    return log_alpha.amax(dim=-1)


register(
    Checker(
        name="hmm_log_likelihood",
        reference=_hmm_log_likelihood,
        generate=_hmm_cases,
        outputs=("log_p",),
        hints=[
            Hint("A product of T densities underflows to 0 (log 0 = -inf) on long sequences: "
                 "run the recursion on log alpha, with torch.logsumexp in place of the sum.",
                 wrong=_hmm_in_densities),
            Hint("A[j, k] is the probability of going from j to k: alpha_t(k) sums "
                 "alpha_{t-1}(j) A[j, k] over j, the previous regime (the first index).",
                 wrong=_hmm_transposed),
            Hint("The recursion starts from alpha_1(k) = pi_k e_1(k): the initial law "
                 "log_pi is missing.", wrong=_hmm_no_initial),
            Hint("This is the Viterbi recursion (a max over paths), not the likelihood (a sum "
                 "over paths): use logsumexp, not max.", wrong=_hmm_viterbi),
        ],
    )
)


# -- top_p_filter ------------------------------------------------------------------------


def _top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    r"""Reference: the log-probabilities of nucleus (top-p) sampling, eq. ``eq-seq-top-p``:
    keep the smallest set of most probable tokens whose probability reaches ``top_p``,
    renormalise, and give the others ``-inf``; ``logits`` ``(B, V)``, result ``(B, V)``
    (:func:`gmbook.sequences.decoding_log_probs`)."""
    return sequences.decoding_log_probs(logits, top_p=top_p)


def _top_p_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64
    cases = []
    for k in range(6):
        dtype = DTYPES[k % 2]
        b, v = randint(generator, 1, 5), randint(generator, 3, 12)
        p = round(float(0.3 + 0.65 * torch.rand((), generator=generator, dtype=f64)), 3)
        logits = 2 * torch.randn(b, v, generator=generator, dtype=f64)
        cases.append(Case(f"B={b}, V={v}, top_p={p}, {fmt_dtype(dtype)}",
                          (logits.to(dtype), p)))
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=f64)
    cases += [
        Case("p = (0.5, 0.3, 0.15, 0.05), top_p=0.7: the first two reach 0.8 >= 0.7, "
             "float64", (probs.log(), 0.7), edge=True),
        Case("p = (0.5, 0.3, 0.15, 0.05) as unnormalised logits (+3), top_p=0.5: the "
             "first token alone reaches 0.5, float64", (probs.log() + 3.0, 0.5), edge=True),
        Case("top_p=1: every token is kept, float64",
             (torch.tensor([[1.0, -2.0, 0.5]], dtype=f64), 1.0), edge=True),
        Case("tokens in shuffled order, top_p=0.9, float64",
             (probs[:, [2, 0, 3, 1]].log(), 0.9), edge=True),
    ]
    return cases


def _top_p_exclusive(logits, top_p):
    log_p = logits.log_softmax(-1)
    sorted_lp, order = log_p.sort(dim=-1, descending=True)
    keep = sorted_lp.exp().cumsum(-1) < top_p  # drops the token that crosses top_p
    keep[..., 0] = True
    mask = torch.zeros_like(keep).scatter(-1, order, keep)
    return logits.masked_fill(~mask, -float("inf")).log_softmax(-1)


def _top_p_unnormalised(logits, top_p):
    log_p = logits.log_softmax(-1)
    keep = _top_p_filter(logits, top_p) > -float("inf")
    return log_p.masked_fill(~keep, -float("inf"))


def _top_p_least_probable(logits, top_p):
    log_p = logits.log_softmax(-1)
    sorted_lp, order = log_p.sort(dim=-1)  # increasing: the least probable first
    before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()
    keep = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before < top_p)
    return logits.masked_fill(~keep, -float("inf")).log_softmax(-1)


register(
    Checker(
        name="top_p_filter",
        reference=_top_p_filter,
        generate=_top_p_cases,
        outputs=("log_q",),
        hints=[
            Hint("Keep the token whose probability makes the running total reach top_p: "
                 "the nucleus is the smallest set with mass >= top_p, so a token is kept "
                 "when the mass of the tokens *more* probable than it is still below top_p.",
                 wrong=_top_p_exclusive),
            Hint("The kept probabilities must be renormalised to sum to one: divide by their "
                 "total (log_softmax over the kept logits).", wrong=_top_p_unnormalised),
            Hint("Sort in decreasing order of probability: the nucleus holds the *most* "
                 "probable tokens.", wrong=_top_p_least_probable),
        ],
    )
)
