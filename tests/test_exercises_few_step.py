"""The checkers of ``gmbook.exercises.few_step`` (the chapter on one- and two-step
generation): their references are right.

The generic tests (``tests/test_checkers_registry.py``) check that each reference passes its
own cases and that each hint fires on its mistake; these check the references themselves
against facts that do not retype their formulas.
"""

from __future__ import annotations

import torch

from gmbook import samplers
from gmbook.exercises import check, get_checker
from gmbook.few_step import flow_map
from gmbook.sde import edm_coefficients

F64 = torch.float64


def test_gaussian_flow_map_reference_is_the_ode_solution():
    """[eq-fs-gaussian-flow-map] [eq-fs-flow-map] The reference agrees with an adaptive solve
    of the probability-flow ODE with the exact denoiser of the Gaussian, and it carries the
    marginal at t to the marginal at s (variance v + s^2 per coordinate)."""
    ref = get_checker("gaussian_flow_map").reference
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.3, -1.0], dtype=F64)
    var = torch.tensor([0.2, 1.5], dtype=F64)
    pred = samplers.mixture_prediction(torch.ones(1, dtype=F64), mean[None], var[None],
                                       samplers.VEPath(5.0))
    x = mean + (var + 4.0).sqrt() * torch.randn(50_000, 2, generator=g, dtype=F64)
    got = ref(x, 2.0, 0.1, mean, var)
    torch.testing.assert_close(got[:200], flow_map(pred, x[:200], 2.0, 0.1), atol=1e-6, rtol=0)
    torch.testing.assert_close(got.var(0), var + 0.01, rtol=0.03, atol=0)


def test_consistency_coefficients_reference_gives_the_boundary_condition():
    """[eq-fs-cm-param] At sigma_min the reference's c_skip is 1 and c_out is 0, so that
    f(x, sigma_min) = x; far from sigma_min it approaches EDM's coefficients."""
    ref = get_checker("consistency_coefficients").reference
    c_skip, c_out = ref(torch.tensor([0.01], dtype=F64), 0.7, 0.01)
    assert c_skip.item() == 1.0 and c_out.item() == 0.0
    sigma = torch.tensor([50.0, 200.0], dtype=F64)
    skip, out = ref(sigma, 0.7, 0.01)
    edm_skip, edm_out = edm_coefficients(sigma, 0.7)[:2]
    torch.testing.assert_close(out, edm_out, rtol=1e-3, atol=0)
    assert ((skip - edm_skip).abs() < 1e-6).all()
    assert not (skip == edm_skip).all()


def test_edm_coefficients_fail_the_consistency_checker():
    """A reader who copies EDM's coefficients (no shift by sigma_min) fails."""
    def edm(sigma, sigma_data, sigma_min):
        return edm_coefficients(sigma, sigma_data)[:2]

    assert not check("consistency_coefficients", edm)
