"""The checkers of ``gmbook.exercises.guidance`` (the guidance chapter): their references
are right.

The generic tests (``tests/test_checkers_registry.py``) check that each reference passes
its own cases and that each hint fires on its mistake; these check the references
themselves against facts that do not retype their formulas.
"""

from __future__ import annotations

import torch

from gmbook.exercises import get_checker
from gmbook.samplers import VEPath, mixture_prediction

f64 = torch.float64


def test_cfg_score_reference_interpolates_the_two_scores():
    """[eq-guid-cfg] With the exact denoisers of two Gaussians, the reference's guided score
    is the unconditional score at w = 0, the conditional one at w = 1 (the scores of the
    package's Predictions), and affine in w: the value at w = 3 is 3 times the value at 1
    minus 2 times the value at 0."""
    ref = get_checker("cfg_score").reference
    path = VEPath(10.0)
    one = torch.ones(1, dtype=f64)
    pu = mixture_prediction(one, torch.tensor([[0.0, 0.0]], dtype=f64),
                            torch.tensor([[1.0, 1.0]], dtype=f64), path)
    pc = mixture_prediction(one, torch.tensor([[1.0, -1.0]], dtype=f64),
                            torch.tensor([[0.25, 0.5]], dtype=f64), path)
    x = torch.tensor([[0.3, 0.2], [-1.0, 2.0]], dtype=f64)
    sigma = torch.tensor([0.7, 2.0], dtype=f64)
    xu, xc = pu.x0_eps(x, sigma)[0], pc.x0_eps(x, sigma)[0]
    s0, s1, s3 = (ref(x, xu, xc, sigma, w) for w in (0.0, 1.0, 3.0))
    torch.testing.assert_close(s0, pu.score(x, sigma))
    torch.testing.assert_close(s1, pc.score(x, sigma))
    torch.testing.assert_close(s3, 3 * s1 - 2 * s0)


def test_classifier_grad_reference_is_the_gradient_of_bayes_rule():
    """[eq-guid-classifier] [eq-guid-bayes-score] The reference's gradient matches central
    finite differences of log p_sigma(c | x) computed independently with
    torch.distributions (class k noised to N(mu_k, (v + sigma^2) I)), and it is the
    difference of the class's score and the mixture's score."""
    ref = get_checker("noised_classifier_grad").reference
    means = torch.tensor([[-1.0, 0.5], [1.2, -0.3]], dtype=f64)
    weights = torch.tensor([0.3, 0.7], dtype=f64)
    var, sigma = 0.4, 0.8
    s2 = var + sigma**2

    def log_post(x, c):
        comp = torch.stack([torch.distributions.Normal(means[k], s2**0.5).log_prob(x).sum(-1)
                            + weights[k].log() for k in range(2)], -1)
        return comp[..., c] - torch.logsumexp(comp, -1)

    x = torch.tensor([[0.1, 0.2], [-2.0, 1.0], [3.0, -1.0]], dtype=f64)
    h = 1e-5
    for c in (0, 1):
        g = ref(x, means, var, weights, sigma, c)
        fd = torch.stack([(log_post(x + h * e, c) - log_post(x - h * e, c)) / (2 * h)
                          for e in torch.eye(2, dtype=f64)], -1)
        torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)
        z = x.clone().requires_grad_(True)
        mix = torch.logsumexp(torch.stack(
            [torch.distributions.Normal(means[k], s2**0.5).log_prob(z).sum(-1)
             + weights[k].log() for k in range(2)], -1), -1)
        (score_mix,) = torch.autograd.grad(mix.sum(), z)
        torch.testing.assert_close(g, (means[c] - x) / s2 - score_mix)
