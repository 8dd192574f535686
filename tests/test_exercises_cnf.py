"""The checkers of ``gmbook.exercises.cnf`` (the CNF chapter): their references are right.

The generic tests (``tests/test_checkers_registry.py``) check that each reference passes
its own cases and that each hint fires on its mistake; these check the references
themselves against facts that do not retype their formulas.
"""

from __future__ import annotations

import torch

from gmbook.exercises import check, get_checker


def test_exact_divergence_reference_is_the_trace_of_a_linear_field():
    """[eq-cnf-icov] The divergence of v(x) = A x + b is tr A at every point, whatever b."""
    ref = get_checker("exact_divergence").reference
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    got = ref(lambda z: z @ a.T + b, x)
    torch.testing.assert_close(got, torch.trace(a).expand(7), rtol=1e-12, atol=1e-12)


def test_exact_divergence_reference_matches_a_finite_difference_jacobian():
    """[eq-cnf-icov] For a nonlinear field the divergence is the sum of the central
    differences (f_i(x + h e_i) - f_i(x - h e_i)) / 2h, to O(h^2)."""
    ref = get_checker("exact_divergence").reference
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 3, generator=g, dtype=torch.float64)
    u = torch.randn(3, 6, generator=g, dtype=torch.float64)

    def f(z):
        return torch.tanh(z @ w.T) @ u.T

    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    h = 1e-5
    fd = sum((f(x + h * e)[:, i] - f(x - h * e)[:, i]) / (2 * h)
             for i, e in enumerate(torch.eye(3, dtype=torch.float64)))
    torch.testing.assert_close(ref(f, x), fd, rtol=1e-8, atol=1e-8)


def test_hutchinson_variances_reference_matches_monte_carlo():
    """[eq-cnf-hutchinson-var] The empirical variance of eps^T A eps over 200,000 probes
    of each kind matches the reference for a non-symmetric A, within 3%."""
    ref = get_checker("hutchinson_variances").reference
    g = torch.Generator().manual_seed(2)
    a = torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    gauss, rad = ref(a)
    eps = torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    for probes, want in ((eps, gauss), (eps.sign(), rad)):
        est = torch.einsum("ni,ij,nj->n", probes, a[0], probes)
        torch.testing.assert_close(est.mean(), torch.trace(a[0]), rtol=0, atol=0.05)
        assert abs(est.var().item() / want.item() - 1) < 0.03, (est.var(), want)


def test_symmetric_formula_without_symmetrising_fails_the_checker():
    """A reader who squares the entries of A instead of its symmetric part fails."""
    def wrong(jacobian):
        g = 2 * (jacobian**2).sum((-1, -2))
        return g, g - 2 * (torch.diagonal(jacobian, dim1=-2, dim2=-1) ** 2).sum(-1)

    assert not check("hutchinson_variances", wrong)
