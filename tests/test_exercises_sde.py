"""The checkers of ``gmbook.exercises.sde`` (the SDE chapter): their references are right.

The generic tests (``tests/test_checkers_registry.py``) check that each reference passes
its own cases and that each hint fires on its mistake; these check the references
themselves against facts that do not retype their formulas.
"""

from __future__ import annotations

import math

import torch

from gmbook.exercises import check, get_checker


def _vp(lam: float) -> tuple[float, float]:
    """alpha, sigma of the variance-preserving path at half log-SNR lam."""
    return math.sqrt(1 / (1 + math.exp(-2 * lam))), math.sqrt(1 / (1 + math.exp(2 * lam)))


def test_exp_step_reference_follows_a_single_points_path_exactly():
    """[prop-sde-ddim-exp] With one data point the exact denoiser is constant, and the
    first-order exponential integrator [eq-sde-ddim-exp] lands on the point's own noising
    path x_s = alpha_s x0 + sigma_s eps for any step, large or small."""
    ref = get_checker("ddim_exp_step").reference
    x0 = torch.tensor([[0.7, -1.3, 2.0]], dtype=torch.float64)
    eps = torch.tensor([[1.1, 0.4, -0.6]], dtype=torch.float64)
    for lam_t, lam_s in ((-3.0, -2.9), (-3.0, 0.0), (-1.0, 6.0)):
        (a_t, s_t), (a_s, s_s) = _vp(lam_t), _vp(lam_s)
        got = ref(a_t * x0 + s_t * eps, x0, lam_t, lam_s)
        torch.testing.assert_close(got, a_s * x0 + s_s * eps, rtol=1e-12, atol=1e-12)


def test_exp_step_reference_is_first_order_for_a_moving_denoiser():
    """[prop-sde-ddim-exp] For Gaussian data N(0, I) on the VP path (x0_hat = alpha x, the
    probability-flow solution keeps x_t = x_T: the marginals are all N(0, I)), the step's
    error with x0_hat frozen at the left end is O(h^2): halving h divides it by about 4."""
    ref = get_checker("ddim_exp_step").reference
    x = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    errs = []
    for h in (0.2, 0.1, 0.05):
        a_t, _ = _vp(0.0)
        errs.append((ref(x, a_t * x, 0.0, h) - x).norm().item())
    assert 3.5 < errs[0] / errs[1] < 4.5 and 3.5 < errs[1] / errs[2] < 4.5, errs


def test_karras_reference_ends_and_spacing():
    """[eq-sde-karras-grid] sigma_max first, sigma_min last before the final 0, equal steps
    in sigma^(1/rho), and rho = 1 is evenly spaced in sigma."""
    ref = get_checker("karras_sigmas").reference
    s = ref(6, 0.01, 20.0, 3.0)
    assert s.shape == (7,) and s.dtype == torch.float64 and s[-1] == 0
    torch.testing.assert_close(s[[0, 5]], torch.tensor([20.0, 0.01], dtype=torch.float64))
    d = torch.diff(s[:-1] ** (1 / 3))
    torch.testing.assert_close(d, d[0].expand_as(d))
    torch.testing.assert_close(ref(5, 1.0, 5.0, 1.0)[:-1],
                               torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))


def test_edm_reference_gives_unit_variance_and_the_best_skip():
    """[prop-sde-edm-unit] For y of variance sigma_d^2 and x = y + sigma n, the reference's
    c_in x and (y - c_skip x) / c_out have unit variance, and moving c_skip by 10% in either
    direction increases the variance of y - c x."""
    ref = get_checker("edm_coefficients").reference
    g = torch.Generator().manual_seed(0)
    sd = 0.5
    y = sd * torch.randn(200_000, generator=g, dtype=torch.float64)
    n = torch.randn(200_000, generator=g, dtype=torch.float64)
    for sigma in (0.05, 0.5, 5.0):
        c_skip, c_out, c_in, _ = ref(torch.tensor([sigma], dtype=torch.float64), sd)
        x = y + sigma * n
        assert abs((c_in * x).var().item() - 1) < 0.02
        assert abs(((y - c_skip * x) / c_out).var().item() - 1) < 0.02
        best = (y - c_skip * x).var()
        for c in (0.9 * c_skip, 1.1 * c_skip):
            assert (y - c * x).var() > best


def test_checkers_reject_the_chapters_classic_mistakes():
    """A noise-prediction step in place of the data-prediction one fails
    [eq-sde-ddim-exp]."""
    def eps_form(x_t, x0_hat, lam_t, lam_s):
        (a_t, s_t), (a_s, s_s) = _vp(lam_t), _vp(lam_s)
        return a_s / a_t * x_t - s_s * math.expm1(lam_s - lam_t) * x0_hat

    assert not check("ddim_exp_step", eps_form).passed
