"""The checkers of ``gmbook.exercises.gans`` (the GAN chapter): their references are right.

The generic tests (``tests/test_checkers_registry.py``) check that each reference passes
its own cases and that each hint fires on its mistake; these check the references
themselves against facts that do not retype their formulas.
"""

from __future__ import annotations

import math

import torch

from gmbook.exercises import check, get_checker


def test_optimal_discriminator_reference_maximises_the_pointwise_value():
    """[eq-gan-optimal-d] D* maximises p log D + q log(1 - D) at each point: a grid search
    over D in (0, 1) finds no larger value, and D* = 1/2 where p = q."""
    ref = get_checker("optimal_discriminator").reference
    log_p = torch.tensor([-1.0, -3.0, 0.2, -2.0], dtype=torch.float64)
    log_q = torch.tensor([-2.5, -0.5, 0.2, -2.0 + math.log(3.0)], dtype=torch.float64)
    d_star = ref(log_p, log_q)
    d = torch.linspace(1e-4, 1 - 1e-4, 20001, dtype=torch.float64)[:, None]
    values = log_p.exp() * d.log() + log_q.exp() * (1 - d).log()  # (grid, 4)
    best = d[values.argmax(0), 0]
    torch.testing.assert_close(d_star, best, rtol=0, atol=1e-4)
    assert d_star[2].item() == 0.5
    torch.testing.assert_close(d_star[3], torch.tensor(0.25, dtype=torch.float64))


def test_optimal_discriminator_far_in_the_tails_is_finite():
    """[eq-gan-optimal-d] Log-densities near -1000 (both densities underflow to 0) still
    give the ratio of the densities: sigmoid(log p - log q)."""
    ref = get_checker("optimal_discriminator").reference
    got = ref(torch.tensor([-1000.0], dtype=torch.float64),
              torch.tensor([-1000.0 - math.log(4.0)], dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor([0.8], dtype=torch.float64))


def test_dirac_spectral_radius_matches_the_growth_of_the_iterates():
    """[eq-gan-dirac-updates] The radius is the growth per step of the linearised
    simultaneous updates: sqrt(1 + h^2 a^2) with a = 1/2 and no R1 (a = 1 would give
    sqrt(1 + h^2)), and 1 for alternating updates with h a < 2."""
    ref = get_checker("dirac_spectral_radius").reference
    for h in (0.1, 0.7, 1.5):
        assert abs(ref(h, 0.0, False) - math.sqrt(1 + h**2 / 4)) < 1e-12
        assert abs(ref(h, 0.0, True) - 1.0) < 1e-12


def test_dirac_spectral_radius_is_the_eigenvalue_of_the_composed_steps():
    """[eq-gan-dirac-updates] For alternating updates with R1 the radius is the largest
    eigenvalue modulus of the product of the discriminator's and the generator's step
    matrices, computed here by torch.linalg.eigvals."""
    ref = get_checker("dirac_spectral_radius").reference
    a = 0.5
    for h, gamma in ((0.3, 0.2), (1.2, 1.5), (2.5, 0.4)):
        g_step = torch.tensor([[1.0, -h * a], [0.0, 1.0]], dtype=torch.float64)
        d_step = torch.tensor([[1.0, 0.0], [h * a, 1.0 - h * gamma]], dtype=torch.float64)
        want = torch.linalg.eigvals(d_step @ g_step).abs().max().item()
        assert abs(ref(h, gamma, True) - want) < 1e-12


def test_power_iteration_step_reference_on_a_diagonal_matrix():
    """[eq-gan-power-iteration] For W = diag(3, 1) and u = (1, 1): v = (3, 1)/sqrt(10),
    W v = (9, 1)/sqrt(10), so sigma = sqrt(82/10) and u' = (9, 1)/sqrt(82)."""
    ref = get_checker("power_iteration_step").reference
    w = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    sigma, u, v = ref(w, torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert abs(sigma.item() - math.sqrt(8.2)) < 1e-12
    torch.testing.assert_close(u, torch.tensor([9.0, 1.0], dtype=torch.float64) / math.sqrt(82))
    torch.testing.assert_close(v, torch.tensor([3.0, 1.0], dtype=torch.float64) / math.sqrt(10))


def test_power_iteration_step_estimate_never_exceeds_the_spectral_norm():
    """[eq-gan-power-iteration] sigma-hat <= sigma_1 = matrix_norm(W, 2) for random W."""
    ref = get_checker("power_iteration_step").reference
    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        w = torch.randn(5, 3, generator=g, dtype=torch.float64)
        sigma, _, _ = ref(w, torch.randn(5, generator=g, dtype=torch.float64))
        assert sigma.item() <= torch.linalg.matrix_norm(w, 2).item() + 1e-12


def test_wrong_answers_fail_with_their_hints():
    """The naive p / (p + q) fails on the tails case; 1 + h lambda for alternating updates
    fails; forgetting to normalize u fails."""
    naive = check("optimal_discriminator", lambda lp, lq: lp.exp() / (lp.exp() + lq.exp()))
    assert not naive and "sigmoid(log p - log q)" in naive.message

    def always_simultaneous(h, gamma, alternating):
        lam = torch.linalg.eigvals(torch.tensor([[0.0, -0.5], [0.5, -gamma]],
                                                dtype=torch.float64))
        return (1 + h * lam).abs().max().item()

    res = check("dirac_spectral_radius", always_simultaneous)
    assert not res and "triangular" in res.message

    def unnormalized(w, u):
        v = w.T @ u
        v = v / v.norm()
        return (w @ v).norm(), w @ v, v

    res = check("power_iteration_step", unnormalized)
    assert not res and "unit length" in res.message
