"""Tests of ``gmbook.vae`` and the checkers of ``gmbook.exercises.vae``: the claims of the
chapter "Variational autoencoders" (book/latent/vae.md).

Each test of a claim names its label in square brackets in its docstring. The exact claims
are checked on the linear-Gaussian model, where the marginal, the posterior and the ELBO
have closed forms, in float64 and to tolerances near rounding (1e-9 and below), so that a
wrong sign, a missing factor of 1/2 or sigma^2 fails by orders of magnitude. The Monte
Carlo claims (the KL term, the gradient estimators, the IWAE bound) are checked within a
few standard errors of estimates whose standard errors are small next to the effect a
wrong formula would have. Every random draw comes from a seeded ``torch.Generator``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from gmbook.exercises import CheckResult, available, check
from gmbook.exercises import vae as ex
from gmbook.probability import gaussian_conditional, gaussian_kl
from gmbook.vae import (
    VAE,
    VQVAE,
    AutoregressiveDecoder,
    GaussianDecoder,
    GaussianEncoder,
    LinearGaussianVAE,
    VectorQuantizer,
    aggregate_log_prob,
    kl_standard_normal,
    latent_log_joint_grid,
    log_marginal_quadrature,
    optimize_posteriors,
    rate_split,
    reconstruction_gradients,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_model(d: int = 5, lat: int = 2, noise_var: float = 0.3, seed: int = 0,
                 shape: tuple[int, ...] | None = None) -> LinearGaussianVAE:
    """A linear-Gaussian VAE in float64 with random W, b, sigma^2 and a random encoder."""
    g = gen(seed)
    model = LinearGaussianVAE(d, lat, shape=shape).double()
    with torch.no_grad():
        model.decoder.net.weight.copy_(torch.randn(d, lat, generator=g, dtype=F64))
        model.decoder.net.bias.copy_(torch.randn(d, generator=g, dtype=F64))
        model.decoder.log_std.fill_(0.5 * math.log(noise_var))
        model.encoder.linear.weight.copy_(0.3 * torch.randn(lat, d, generator=g, dtype=F64))
        model.encoder.linear.bias.copy_(torch.randn(lat, generator=g, dtype=F64))
        model.encoder.log_var.copy_(torch.randn(lat, generator=g, dtype=F64) - 1)
    return model


def random_spd(n: int, g: torch.Generator) -> Tensor:
    a = torch.randn(n, n, generator=g, dtype=F64)
    return a @ a.T / n + 0.2 * torch.eye(n, dtype=F64)


def mean_se(v: Tensor) -> tuple[float, float]:
    v = v.detach().double()
    return float(v.mean()), float(v.std()) / math.sqrt(v.numel())


# --------------------------------------------------------------------------- the KL term


def test_kl_term_equals_its_monte_carlo_estimate_and_the_general_formula():
    """[eq-vae-kl] The closed-form KL term equals the Monte Carlo average of log q - log p
    (within 4 standard errors of 4e5 draws) and the full-covariance formula of Appendix A."""
    g = gen(1)
    mean = torch.tensor([[1.0, -0.5, 0.2], [0.0, 2.0, -1.0]], dtype=F64)
    log_var = torch.tensor([[-1.0, 1.0, 0.3], [0.5, -2.0, 0.0]], dtype=F64)
    kl = kl_standard_normal(mean, log_var)
    std = (0.5 * log_var).exp()
    for b in range(2):
        z = mean[b] + std[b] * torch.randn(400_000, 3, generator=g, dtype=F64)
        q = torch.distributions.Normal(mean[b], std[b])
        p = torch.distributions.Normal(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
        m, se = mean_se((q.log_prob(z) - p.log_prob(z)).sum(1))
        assert abs(m - float(kl[b])) < 4 * se, (m, se, float(kl[b]))
        full = gaussian_kl(mean[b], torch.diag(log_var[b].exp()), torch.zeros(3, dtype=F64),
                           torch.eye(3, dtype=F64))
        torch.testing.assert_close(kl[b], full, rtol=1e-12, atol=1e-12)
    assert float(kl_standard_normal(torch.zeros(4), torch.zeros(4))) == 0.0


# --------------------------------------------------------------------------- the ELBO


def test_elbo_plus_kl_to_the_posterior_is_log_px_for_any_gaussian_q():
    """[thm-vae-elbo] [eq-vae-elbo-gap] [eq-vae-linear-elbo] For the linear-Gaussian model and
    random full-covariance Gaussians q, ELBO(q) + KL(q || p(z|x)) = log p(x) to 1e-10, the
    ELBO is below log p(x), and it equals log p(x) at the exact posterior."""
    model = linear_model(d=6, lat=3, seed=2)
    g = gen(3)
    x = torch.randn(4, 6, generator=g, dtype=F64) * 2
    with torch.no_grad():
        log_px = model.log_prob(x)
        post_mean, post_cov = model.posterior(x)
        for _ in range(5):
            q_mean = post_mean + torch.randn(4, 3, generator=g, dtype=F64)
            q_cov = random_spd(3, g)
            elbo = model.elbo_exact(x, q_mean, q_cov)
            kl = gaussian_kl(q_mean, q_cov.expand(4, 3, 3), post_mean, post_cov.expand(4, 3, 3))
            torch.testing.assert_close(elbo + kl, log_px, rtol=0, atol=1e-10)
            assert bool((elbo < log_px).all())
        at_posterior = model.elbo_exact(x, post_mean, post_cov)
    torch.testing.assert_close(at_posterior, log_px, rtol=0, atol=1e-10)


def test_monte_carlo_elbo_matches_the_closed_form():
    """[eq-vae-elbo-terms] [eq-vae-reparam] [eq-vae-linear-elbo] The VAE's reparameterized
    estimate (reconstruction by sampling, KL in closed form) averages to the closed-form ELBO
    of the encoder's q, and its two terms add up to the ELBO."""
    model = linear_model(d=5, lat=2, seed=4)
    x = torch.randn(3, 5, generator=gen(5), dtype=F64)
    with torch.no_grad():
        terms = model.elbo_terms(x, samples=200_000, generator=gen(6))
        exact = model.elbo_exact(x)
        per_draw = model.elbo_terms(x[:1], samples=1, generator=gen(7))
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl)
    # the spread of one-draw estimates gives the standard error of the 2e5-draw average
    with torch.no_grad():
        draws = torch.stack([model.elbo_terms(x, generator=gen(100 + i)).elbo
                             for i in range(400)])
    se = draws.std(0) / math.sqrt(200_000)
    assert bool(((terms.elbo - exact).abs() < 5 * se + 1e-12).all()), (terms.elbo, exact, se)
    assert per_draw.kl_per_dim.shape == (1, 2)


def test_linear_model_marginal_and_posterior():
    """[prop-vae-linear-posterior] [eq-vae-linear-marginal] [eq-vae-linear-posterior] The
    marginal is N(b, W W^T + sigma^2 I), and the posterior equals the Gaussian conditional of
    the joint Gaussian of (z, x) (Appendix A)."""
    model = linear_model(d=4, lat=2, noise_var=0.5, seed=8)
    x = torch.randn(3, 4, generator=gen(9), dtype=F64)
    w, b, s2 = model.W.detach(), model.b.detach(), model.noise_var.item()
    with torch.no_grad():
        want = MultivariateNormal(b, w @ w.T + s2 * torch.eye(4, dtype=F64)).log_prob(x)
        torch.testing.assert_close(model.log_prob(x), want, rtol=0, atol=1e-12)
        joint_mean = torch.cat([torch.zeros(2, dtype=F64), b])
        joint_cov = torch.block_diag(torch.eye(2, dtype=F64), s2 * torch.eye(4, dtype=F64))
        joint_cov[2:, 2:] += w @ w.T
        joint_cov[2:, :2] = w
        joint_cov[:2, 2:] = w.T
        mean, cov = model.posterior(x)
        for i in range(3):
            m_ref, c_ref = gaussian_conditional(joint_mean, joint_cov, [2, 3, 4, 5], x[i])
            torch.testing.assert_close(mean[i], m_ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(cov, c_ref, rtol=0, atol=1e-12)


def test_quadrature_over_the_latent_plane_gives_the_exact_marginal():
    """[eq-vae-marginal] For a 2-D latent, summing p(x|z) p(z) over a grid of the latent plane
    gives log p(x) of the linear-Gaussian model to 1e-6."""
    model = linear_model(d=3, lat=2, noise_var=0.4, seed=10)
    x = model.b.detach() + torch.randn(5, 3, generator=gen(11), dtype=F64)
    with torch.no_grad():
        quad = log_marginal_quadrature(model, x, lims=7.0, n=401)
        torch.testing.assert_close(quad, model.log_prob(x), rtol=0, atol=1e-6)
        z, log_joint, log_cell = latent_log_joint_grid(model, x[:1], lims=1.0, n=3,
                                                        center=torch.tensor([1.0, -2.0]))
    assert z.shape == (9, 2) and log_joint.shape == (1, 9)
    torch.testing.assert_close(z[0], torch.tensor([0.0, -3.0], dtype=F64))
    assert math.isclose(log_cell, 0.0, abs_tol=1e-12)  # cells of side 1


def test_ppca_maximises_the_likelihood_and_its_elbo_is_tight():
    """[prop-vae-linear-tight] [eq-vae-diagonal-gap] The closed-form PPCA solution is a
    stationary point of the average log-likelihood (gradient below 1e-8), beats perturbed
    parameters, has orthogonal columns, and its diagonal encoder's ELBO equals log p(x)."""
    g = gen(12)
    x = torch.randn(400, 6, generator=g, dtype=F64) @ random_spd(6, g) + 1.0
    model = LinearGaussianVAE.ppca(x, 2)
    ll = model.log_prob(x).mean()
    grads = torch.autograd.grad(ll, [model.decoder.net.weight, model.decoder.net.bias,
                                     model.decoder.log_std])
    assert max(float(gr.abs().max()) for gr in grads) < 1e-8
    with torch.no_grad():
        wtw = model.W.T @ model.W
        assert float((wtw - torch.diag(wtw.diagonal())).abs().max()) < 1e-10
        gap = model.log_prob(x) - model.elbo_exact(x)
        assert float(gap.abs().max()) < 1e-9
        assert float(model.diagonal_gap()) < 1e-12
        for _ in range(5):
            other = LinearGaussianVAE.ppca(x, 2)
            other.decoder.net.weight.add_(0.05 * torch.randn(6, 2, generator=g, dtype=F64))
            other.decoder.log_std.add_(0.05)
            assert float(other.log_prob(x).mean()) < float(ll)


def test_diagonal_gap_is_the_best_a_diagonal_encoder_can_do():
    """[prop-vae-linear-tight] [eq-vae-diagonal-gap] For a decoder with non-orthogonal
    columns, the best diagonal q (posterior mean, variances sigma^2 / M_jj) has the gap of
    eq-vae-diagonal-gap at every x; it is positive, and random diagonal q do worse."""
    model = linear_model(d=5, lat=3, seed=13)
    x = torch.randn(4, 5, generator=gen(14), dtype=F64)
    g = gen(15)
    with torch.no_grad():
        mean, log_var = model.best_diagonal_posterior(x)
        best = model.elbo_exact(x, mean, torch.diag_embed(log_var.exp()))
        gap = model.log_prob(x) - best
        torch.testing.assert_close(gap, model.diagonal_gap().expand(4), rtol=0, atol=1e-10)
        assert float(model.diagonal_gap()) > 1e-3
        for _ in range(20):
            m = mean + 0.1 * torch.randn(4, 3, generator=g, dtype=F64)
            lv = log_var + 0.2 * torch.randn(4, 3, generator=g, dtype=F64)
            assert bool((model.elbo_exact(x, m, torch.diag_embed(lv.exp())) < best).all())


def test_optimized_posteriors_close_the_amortisation_gap():
    """[eq-vae-gaps] Starting from a poor encoder, per-point optimisation of a diagonal q
    reaches the best diagonal ELBO, so the remaining gap is the approximation gap
    eq-vae-diagonal-gap (to 0.01 nats); the amortisation gap it removes is positive."""
    model = linear_model(d=5, lat=2, seed=16)
    x = torch.randn(6, 5, generator=gen(17), dtype=F64)
    m, lv = optimize_posteriors(model, x, steps=400, lr=0.05, samples=64, generator=gen(18))
    with torch.no_grad():
        log_px = model.log_prob(x)
        enc = model.elbo_exact(x)
        opt = model.elbo_exact(x, m, torch.diag_embed(lv.exp()))
        approximation = model.diagonal_gap()
    assert bool((opt > enc + 0.1).all())               # the amortisation gap was real
    assert float((log_px - opt - approximation).abs().max()) < 0.01
    assert model.encoder.linear.weight.grad is None    # the model was not trained


# --------------------------------------------------------------------------- IWAE


def test_iwae_bound_is_non_decreasing_in_k_and_approaches_log_px():
    """[thm-vae-iwae] [eq-vae-iwae] For a linear-Gaussian model with an encoder wider than
    the posterior (bounded weights), the average of L_K over 4000 repetitions rises with K
    (each step by more than minus three standard errors), L_1 matches the exact ELBO, and
    L_256 is within 0.01 nats of log p(x), far closer than the ELBO."""
    model = linear_model(d=4, lat=2, noise_var=0.5, seed=19)
    x = torch.randn(1, 4, generator=gen(20), dtype=F64) + model.b.detach()
    with torch.no_grad():
        mean, cov = model.posterior(x)
        q = (mean + 0.3, (cov.diagonal() * 2).log().expand(1, 2))  # wider and shifted
        log_px = float(model.log_prob(x))
        elbo = float(model.elbo_exact(x, q[0], torch.diag_embed(q[1].exp())))
        xs = x.expand(4000, 4)
        qs = (q[0].expand(4000, 2), q[1].expand(4000, 2))
        g = gen(21)
        means, ses = [], []
        for k in (1, 2, 4, 16, 64, 256):
            m, se = mean_se(model.iwae_bound(xs, k, chunk=64, posterior=qs, generator=g))
            means.append(m)
            ses.append(se)
    assert log_px - elbo > 0.3                          # a loose ELBO to start from
    assert abs(means[0] - elbo) < 4 * ses[0]
    for a, b, sa, sb in zip(means, means[1:], ses, ses[1:]):
        assert b - a > -3 * math.hypot(sa, sb), means
    assert means[-1] - means[0] > 0.25
    assert -4 * ses[-1] - 0.01 < log_px - means[-1] < 0.01, (log_px, means)


def test_log_weights_average_to_the_marginal():
    """[eq-vae-iwae] The importance weights w = p(x, z) / q(z | x) are unbiased for p(x): the
    average of 2e5 weights matches exp(log p(x)) within 4 standard errors."""
    model = linear_model(d=3, lat=2, noise_var=0.6, seed=22)
    x = torch.randn(1, 3, generator=gen(23), dtype=F64) + model.b.detach()
    with torch.no_grad():
        mean, cov = model.posterior(x)
        q = (mean, (2 * cov.diagonal()).log().expand(1, 2))
        w = model.log_weights(x, 200_000, posterior=q, generator=gen(24))[:, 0].exp()
    m, se = mean_se(w)
    assert abs(m - model.log_prob(x).exp().item()) < 4 * se


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("estimator", ["reparam", "score"])
def test_gradient_estimators_of_the_reconstruction_term_are_unbiased(estimator):
    """[eq-vae-reparam] [eq-vae-score-function] Both estimators of the gradient of
    E_q[log p(x|z)] with respect to the posterior mean and standard deviation average to the
    exact gradient of the linear-Gaussian model, W^T (x - b - W mu) / sigma^2 and
    -s_j |W_j|^2 / sigma^2, within 4 standard errors of 4e5 draws."""
    model = linear_model(d=4, lat=2, noise_var=0.5, seed=25)
    x = torch.randn(1, 4, generator=gen(26), dtype=F64)
    eps = torch.randn(400_000, 2, generator=gen(27), dtype=F64)
    gm, gs = reconstruction_gradients(model, x, eps, estimator=estimator)
    with torch.no_grad():
        mu, log_var = model.encode(x)
        s = (0.5 * log_var[0]).exp()
        w, b, s2 = model.W, model.b, model.noise_var
        want_mean = w.T @ (x[0] - b - w @ mu[0]) / s2
        want_std = -s * w.square().sum(0) / s2
    for got, want in ((gm, want_mean), (gs, want_std)):
        se = got.std(0) / math.sqrt(got.shape[0])
        assert bool(((got.mean(0) - want).abs() < 4 * se).all()), (got.mean(0), want, se)


def test_score_function_estimator_has_the_larger_variance_here():
    """[eq-vae-score-function] On the linear-Gaussian model the score-function estimates of
    the gradient with respect to the mean have a larger variance than the reparameterization
    estimates, with or without a baseline, and the baseline reduces it."""
    model = linear_model(d=8, lat=2, seed=28)
    x = torch.randn(1, 8, generator=gen(29), dtype=F64)
    eps = torch.randn(20_000, 2, generator=gen(30), dtype=F64)
    score = reconstruction_gradients(model, x, eps, estimator="score")[0]
    with torch.no_grad():
        base = float(model.elbo_terms(x, samples=10_000, generator=gen(31)).reconstruction)
    with_base = reconstruction_gradients(model, x, eps, estimator="score", baseline=base)[0]
    rep = reconstruction_gradients(model, x, eps)[0]
    assert float(with_base.var(0).sum()) < float(score.var(0).sum())
    assert float(with_base.var(0).sum()) > 3 * float(rep.var(0).sum())


# --------------------------------------------------------------------------- rate, beta, free bits


def test_rate_splits_into_information_and_aggregate_kl():
    """[prop-vae-rate-split] [eq-vae-rate-split] [eq-vae-aggregate] For 40 random diagonal
    posteriors, the mean KL to the prior equals the mutual information (estimated separately,
    as the mean KL from each q_i to the aggregate mixture) plus KL(q(z) || p(z)), within 4
    combined standard errors; the information is at most log n."""
    g = gen(32)
    n = 40
    mean = 1.5 * torch.randn(n, 2, generator=g, dtype=F64)
    log_var = torch.randn(n, 2, generator=g, dtype=F64) - 1
    split = rate_split(mean, log_var, samples=100_000, generator=gen(33))
    assert math.isclose(split.rate, float(kl_standard_normal(mean, log_var).mean()))
    # I_q(x; z) = mean_i E_{q_i}[log q_i(z) - log q(z)], from independent draws
    i = torch.arange(n).repeat_interleave(2000)
    z = mean[i] + (0.5 * log_var[i]).exp() * torch.randn(len(i), 2, generator=g, dtype=F64)
    own = torch.distributions.Normal(mean[i], (0.5 * log_var[i]).exp()).log_prob(z).sum(1)
    mi, mi_se = mean_se(own - aggregate_log_prob(z, mean, log_var))
    assert abs(split.rate - (mi + split.aggregate_kl.mean)) < 4 * math.hypot(
        mi_se, split.aggregate_kl.se)
    assert abs(split.mutual_information - mi) < 4 * math.hypot(mi_se, split.aggregate_kl.se)
    assert 0 < split.mutual_information <= math.log(n)


def test_aggregate_posterior_is_a_normalised_mixture():
    """[eq-vae-aggregate] exp(aggregate_log_prob) integrates to 1 over the plane (grid sum),
    and with one posterior it is that posterior's density."""
    g = gen(34)
    mean = torch.randn(5, 2, generator=g, dtype=F64)
    log_var = torch.randn(5, 2, generator=g, dtype=F64) * 0.3 - 1
    t = torch.linspace(-7, 7, 561, dtype=F64)
    zz = torch.cartesian_prod(t, t)
    mass = aggregate_log_prob(zz, mean, log_var).exp().sum() * (t[1] - t[0]) ** 2
    assert abs(float(mass) - 1) < 1e-8
    one = aggregate_log_prob(zz[:10], mean[:1], log_var[:1])
    ref = torch.distributions.Normal(mean[0], (0.5 * log_var[0]).exp()).log_prob(zz[:10]).sum(1)
    torch.testing.assert_close(one, ref, rtol=0, atol=1e-12)


def _vae(seed: int = 0, **options) -> VAE:
    torch.manual_seed(seed)
    return VAE(GaussianEncoder(3, 2, hidden=16), GaussianDecoder(2, 3, hidden=16),
               shape=(3,), **options).double()


def test_beta_and_free_bits_change_only_the_kl_term():
    """[eq-vae-beta] [eq-vae-free-bits] With the same draws, the loss is -(reconstruction -
    beta KL); with free bits, a coordinate whose batch-mean KL is below lambda contributes
    exactly lambda and no gradient, so the encoder's gradient is that of the reconstruction
    alone."""
    x = torch.randn(32, 3, generator=gen(35), dtype=F64)
    model = _vae(beta=2.5)
    torch.manual_seed(1)
    loss = model.loss(x)
    torch.manual_seed(1)
    terms = model.elbo_terms(x)
    torch.testing.assert_close(loss, -(terms.reconstruction.mean() - 2.5 * terms.kl.mean()))

    fb = _vae(free_bits=1e3)
    torch.manual_seed(2)
    loss = fb.loss(x)
    torch.manual_seed(2)
    rec = fb.elbo_terms(x).reconstruction.mean()
    torch.testing.assert_close(loss, -(rec - 2 * 1e3))
    params = list(fb.encoder.parameters())
    torch.manual_seed(3)
    g_fb = torch.autograd.grad(fb.loss(x), params)
    torch.manual_seed(3)
    g_rec = torch.autograd.grad(-fb.elbo_terms(x).reconstruction.mean(), params)
    for a, b in zip(g_fb, g_rec):
        torch.testing.assert_close(a, b)
    fb.free_bits = 0.0
    torch.manual_seed(3)
    g_plain = torch.autograd.grad(fb.loss(x), params)
    assert any(not torch.allclose(a, b) for a, b in zip(g_plain, g_rec))


def _whitened(n: int, d: int, seed: int, scales: Tensor | None = None) -> Tensor:
    """n points in R^d whose biased sample covariance is exactly diag(scales)^2 (I if None),
    with mean 1.5."""
    raw = torch.randn(n, d, generator=gen(seed), dtype=F64)
    raw = raw - raw.mean(0)
    chol = torch.linalg.cholesky(raw.T @ raw / n)
    white = raw @ torch.linalg.inv(chol).T  # sample covariance I
    return 1.5 + (white if scales is None else white * scales)


def _collapsed(x: Tensor, lat: int) -> LinearGaussianVAE:
    """The best decoder that ignores z (W = 0, b = mean, sigma^2 = mean variance) with the
    encoder equal to the prior."""
    model = LinearGaussianVAE(x.shape[1], lat).double()
    with torch.no_grad():
        model.decoder.net.weight.zero_()
        model.decoder.net.bias.copy_(x.mean(0))
        model.decoder.log_std.fill_(0.5 * math.log(float(x.var(0, correction=0).mean())))
        model.encoder.linear.weight.zero_()
        model.encoder.linear.bias.zero_()
        model.encoder.log_var.zero_()
    return model


def test_collapse_is_the_elbo_optimum_exactly_when_z_is_not_needed():
    """[prop-vae-collapse] Data with an isotropic sample covariance: the best marginal of the
    linear-Gaussian model ignores z (the closed-form PPCA fit has W = 0 and the prior as
    encoder), the collapsed model's ELBO equals its log-likelihood, and 50 random models
    (random W, noise, offset and encoder, some near the optimum) all have a strictly lower
    average ELBO. With anisotropic data the hypothesis fails, and so does the conclusion:
    the PPCA model's ELBO beats the best collapsed model's by more than 0.1 nats."""
    x = _whitened(300, 4, seed=36)
    ppca = LinearGaussianVAE.ppca(x, 2)
    collapsed = _collapsed(x, 2)
    with torch.no_grad():
        assert float(ppca.W.abs().max()) < 1e-6          # the ML fit ignores z
        assert float(ppca.elbo_terms(x, samples=4, generator=gen(37)).kl.max()) < 1e-10
        best = float(collapsed.elbo_exact(x).mean())
        assert abs(best - float(collapsed.log_prob(x).mean())) < 1e-10
        assert abs(best - float(ppca.elbo_exact(x).mean())) < 1e-8
        g = gen(38)
        for i in range(50):
            other = linear_model(d=4, lat=2, noise_var=0.5 + float(torch.rand(1, generator=g)),
                                 seed=100 + i)
            if i % 2:  # near the optimum: the optimal b and sigma^2 with a small W
                other.decoder.net.bias.copy_(x.mean(0))
                other.decoder.log_std.copy_(collapsed.decoder.log_std)
                other.decoder.net.weight.mul_(0.05)
            assert float(other.elbo_exact(x).mean()) < best - 1e-6, i
    x2 = _whitened(300, 4, seed=39, scales=torch.tensor([3.0, 1.5, 0.5, 0.5], dtype=F64))
    with torch.no_grad():
        gain = float(LinearGaussianVAE.ppca(x2, 2).elbo_exact(x2).mean()
                     - _collapsed(x2, 2).elbo_exact(x2).mean())
    assert gain > 0.1, gain


def test_beta_and_free_bits_objectives_are_looser_bounds_and_small_beta_is_none():
    """[eq-vae-beta] [eq-vae-free-bits] [thm-vae-elbo] The training objective -loss, for a
    model whose ELBO equals log p(x) (PPCA with the exact posterior), averaged over 40,000
    rows: with beta = 1 and no free bits it matches log p(x) within 5 standard errors; with
    beta in {2, 4} or free bits lambda in {1.65, 5} (above the KL of one coordinate, or of
    both) it is at most the ELBO estimated from the
    same draws (exactly) and clearly below log p(x), a looser lower bound; with beta = 0.25
    it is clearly above log p(x), no bound at all."""
    data = _whitened(400, 6, seed=40,
                     scales=torch.tensor([3.0, 2.0, 0.6, 0.5, 0.5, 0.4], dtype=F64))
    model = LinearGaussianVAE.ppca(data, 2)
    x = data[:8].repeat(5000, 1)                                  # (40000, 6)
    with torch.no_grad():
        log_px = float(model.log_prob(x).mean())
        assert abs(float(model.elbo_exact(x).mean()) - log_px) < 1e-9  # a tight ELBO
        rec = model.elbo_terms(x, generator=gen(41)).reconstruction
        se = float(rec.std()) / math.sqrt(len(rec))
        kl = model.elbo_terms(x[:8], generator=gen(42)).kl_per_dim.mean(0)
    assert 1.0 < float(kl.min()) < 1.65 < float(kl.max()) < 5  # lambda = 1.65 splits them

    def objective(beta: float, free_bits: float, seed: int) -> tuple[float, float]:
        model.beta, model.free_bits = beta, free_bits
        with torch.no_grad():
            torch.manual_seed(seed)
            value = -float(model.loss(x))
            torch.manual_seed(seed)
            elbo_same_draws = float(model.elbo_terms(x).elbo.mean())
        model.beta, model.free_bits = 1.0, 0.0
        return value, elbo_same_draws

    value, elbo = objective(1.0, 0.0, 43)
    assert abs(value - elbo) < 1e-9 and abs(value - log_px) < 5 * se
    for beta, free_bits in [(2.0, 0.0), (4.0, 0.0), (1.0, 1.65), (1.0, 5.0), (2.0, 1.65)]:
        value, elbo = objective(beta, free_bits, 44)
        assert value <= elbo + 1e-12, (beta, free_bits)
        assert value < log_px - 5 * se - 0.01, (beta, free_bits, value, log_px)
    value, _ = objective(0.25, 0.0, 45)
    assert value > log_px + 5 * se + 0.01, (value, log_px)


# --------------------------------------------------------------------------- the models


@pytest.mark.parametrize("shape", [(2,), (1, 3, 3)])
def test_vae_contract(shape):
    """loss is a finite scalar with gradients for both networks; sample, elbo, iwae_bound and
    encode have the documented shapes; a generator makes sampling reproducible without
    touching the global RNG."""
    d = math.prod(shape)
    torch.manual_seed(0)
    model = VAE(GaussianEncoder(d, 2, hidden=8), GaussianDecoder(2, d, hidden=8), shape=shape)
    x = torch.randn(6, *shape)
    loss = model.loss(x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    state = torch.get_rng_state()
    a = model.sample(4, generator=gen(1))
    b = model.sample(4, generator=gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (4, *shape) and torch.equal(a, b)
    assert model.sample(3, noise=False, generator=gen(2)).shape == (3, *shape)
    assert model.elbo(x).shape == (6,)
    assert model.iwae_bound(x, 5, chunk=2).shape == (6,)
    assert model.log_weights(x, 5).shape == (5, 6)
    assert [t.shape for t in model.encode(x)] == [(6, 2), (6, 2)]
    model.k = 3
    assert model.loss(x).shape == ()


def test_autoregressive_decoder_is_a_normalised_density_and_samples():
    """The autoregressive decoder's p(x | z) integrates to 1 over the plane for a fixed z,
    depends on z, and its pairwise log_prob_matrix agrees with log_prob."""
    torch.manual_seed(0)
    dec = AutoregressiveDecoder(2, 2, components=3, hidden=8).double()
    t = torch.linspace(-12, 12, 481, dtype=F64)
    xx = torch.cartesian_prod(t, t)
    z = torch.tensor([[0.3, -0.7]], dtype=F64)
    with torch.no_grad():
        lp = dec.log_prob(xx, z.expand(len(xx), 2))
        mass = float(lp.exp().sum() * (t[1] - t[0]) ** 2)
        assert abs(mass - 1) < 1e-4
        other = dec.log_prob(xx[:50], torch.tensor([[-1.0, 2.0]], dtype=F64).expand(50, 2))
        assert float((other - lp[:50]).abs().max()) > 1e-3
        zs = torch.randn(4, 2, dtype=F64)
        mat = dec.log_prob_matrix(xx[:3], zs)
        for j in range(4):
            torch.testing.assert_close(mat[:, j], dec.log_prob(xx[:3], zs[j].expand(3, 2)))
        assert dec.sample(zs, generator=gen(3)).shape == (4, 2)


def test_gaussian_decoder_pairwise_log_prob_matches_log_prob():
    """log_prob_matrix of the Gaussian decoder (one network call per latent) equals log_prob
    on every pair."""
    torch.manual_seed(0)
    dec = GaussianDecoder(2, 3, hidden=8).double()
    x = torch.randn(4, 3, dtype=F64)
    z = torch.randn(5, 2, dtype=F64)
    with torch.no_grad():
        mat = dec.log_prob_matrix(x, z)
        for j in range(5):
            torch.testing.assert_close(mat[:, j], dec.log_prob(x, z[j].expand(4, 2)))


def test_vector_quantizer_straight_through():
    """[eq-vae-vq] The quantiser outputs the nearest code; the backward pass copies the
    gradient to z_e unchanged (straight-through); the codebook term moves only the codes and
    the commitment term only the encoder outputs."""
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 3).double()
    z_e = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    z_q, idx, codebook_loss, commitment_loss = vq(z_e)
    brute = ((z_e.detach()[:, :, None, :] - vq.codebook.detach()) ** 2).sum(-1).argmin(-1)
    assert torch.equal(idx, brute) and idx.dtype == torch.int64
    torch.testing.assert_close(z_q.detach(), vq.codebook.detach()[idx])
    upstream = torch.randn(4, 2, 3, dtype=F64)
    (grad,) = torch.autograd.grad((z_q * upstream).sum(), z_e)
    torch.testing.assert_close(grad, upstream)
    g_code = torch.autograd.grad(codebook_loss, [vq.codebook, z_e], allow_unused=True)
    assert g_code[1] is None and float(g_code[0].abs().sum()) > 0
    g_commit = torch.autograd.grad(commitment_loss, [vq.codebook, z_e], allow_unused=True)
    assert g_commit[0] is None
    want = 2 * (z_e - vq.codebook[idx]).detach() / 4
    torch.testing.assert_close(g_commit[1], want)


def test_vqvae_loss_in_a_hand_computed_case_and_its_gradient_paths():
    """[eq-vae-vq] Codebook = the encoder's outputs of the batch shifted by a small vector c,
    so that each output's nearest code is its own: the loss is the squared reconstruction
    error plus (1 + beta_c) M |c|^2 (codebook and commitment terms M |c|^2 each). The
    codebook's gradient does not depend on the decoder and vanishes at c = 0 (it comes from
    the codebook term only); the encoder's gradient (beta_c = 0) is that of the decoder
    applied to z_e + c, the straight-through path; at c = 0 the gradients equal a plain
    autoencoder's. Tokens are int64 (B, M), the prior a distribution, samples shaped like
    data."""
    torch.manual_seed(0)
    b, m, d = 10, 3, 2
    model = VQVAE((1, 4, 4), positions=m, codes=b * m, code_dim=d, hidden=8,
                  commitment=0.3).double()
    x = torch.randn(b, 1, 4, 4, generator=gen(1), dtype=F64)
    with torch.no_grad():
        z_e = model.encoder(x.flatten(1)).reshape(b * m, d)
    spread = torch.cdist(z_e, z_e) + 1e3 * torch.eye(b * m, dtype=F64)
    c = torch.tensor([0.3, -0.2], dtype=F64) * float(spread.min()) / 2
    assert float(c.norm()) < float(spread.min()) / 2

    def loss_and_grads(shift: Tensor, commitment: float):
        with torch.no_grad():
            model.quantizer.codebook.copy_(z_e + shift)
        model.commitment = commitment
        model.zero_grad()
        loss = model.loss(x)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}

    loss, _ = loss_and_grads(c, 0.3)
    with torch.no_grad():
        recon = (x - model.reconstruct(x)).square().flatten(1).sum(1).mean()
    torch.testing.assert_close(loss, recon + 1.3 * m * c.square().sum(), rtol=0, atol=1e-10)
    assert torch.equal(model.encode(x), torch.arange(b * m).reshape(b, m))

    # gradient paths
    _, grads = loss_and_grads(c, 0.0)
    code_grad = grads["quantizer.codebook"]
    assert float(code_grad.abs().max()) > 1e-6
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen(2), dtype=F64))
    _, grads2 = loss_and_grads(c, 0.0)
    torch.testing.assert_close(grads2["quantizer.codebook"], code_grad, rtol=0, atol=1e-12)
    model.zero_grad()
    z = model.encoder(x.flatten(1)).reshape(b, m, d) + c   # straight-through, c constant
    (x.flatten(1) - model.decoder(z.reshape(b, -1))).square().sum(1).mean().backward()
    for name, p in model.encoder.named_parameters():
        torch.testing.assert_close(grads2["encoder." + name], p.grad, rtol=0, atol=1e-10)
    _, grads0 = loss_and_grads(torch.zeros(d, dtype=F64), 0.3)
    assert float(grads0["quantizer.codebook"].abs().max()) < 1e-12
    model.zero_grad()
    plain = model.decoder(model.encoder(x.flatten(1)))        # a plain autoencoder
    (x.flatten(1) - plain).square().sum(1).mean().backward()
    for name, p in model.named_parameters():
        if not name.startswith("quantizer"):
            torch.testing.assert_close(grads0[name], p.grad, rtol=0, atol=1e-10)

    tokens = model.encode(x)
    assert tokens.shape == (b, m) and tokens.dtype == torch.int64
    assert model.decode(tokens).shape == (b, 1, 4, 4)
    usage = model.fit_prior(x)
    assert usage.shape == (b * m,) and math.isclose(float(usage.sum()), 1.0, rel_tol=1e-6)
    assert model.sample(7, generator=gen(3)).shape == (7, 1, 4, 4)


def test_functions_reject_bad_arguments():
    """Public functions raise TypeError or ValueError with a clear message."""
    model = _vae()
    with pytest.raises(TypeError, match="floating-point"):
        kl_standard_normal(torch.zeros(2, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        kl_standard_normal(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        model.loss(torch.zeros(4, 2, dtype=F64))
    with pytest.raises(TypeError, match="x must be"):
        model.elbo([1.0, 2.0])
    with pytest.raises(ValueError, match="posterior must be"):
        model.elbo_terms(torch.zeros(4, 3, dtype=F64), posterior=(torch.zeros(4, 3),
                                                                 torch.zeros(4, 3)))
    with pytest.raises(ValueError, match="k must be"):
        model.iwae_bound(torch.zeros(2, 3, dtype=F64), 0)
    with pytest.raises(ValueError, match="decoder.latent_dim"):
        VAE(GaussianEncoder(3, 2), GaussianDecoder(4, 3), shape=(3,))
    with pytest.raises(ValueError, match="beta"):
        VAE(GaussianEncoder(3, 2), GaussianDecoder(2, 3), shape=(3,), beta=-1.0)
    with pytest.raises(TypeError, match="shape"):
        VAE(GaussianEncoder(3, 2), GaussianDecoder(2, 3), shape=3)
    with pytest.raises(ValueError, match="std must be"):
        GaussianDecoder(2, 3, std="full")
    with pytest.raises(ValueError, match="2-D latent"):
        log_marginal_quadrature(VAE(GaussianEncoder(3, 3), GaussianDecoder(3, 3), shape=(3,)),
                                torch.zeros(1, 3))
    with pytest.raises(ValueError, match="estimator"):
        reconstruction_gradients(model, torch.zeros(1, 3, dtype=F64), torch.zeros(5, 2),
                                 estimator="pathwise")
    with pytest.raises(ValueError, match="one data point"):
        reconstruction_gradients(model, torch.zeros(2, 3, dtype=F64), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="latent_dim must be < D"):
        LinearGaussianVAE.ppca(torch.zeros(10, 3), 3)
    with pytest.raises(ValueError, match="give both"):
        linear_model().elbo_exact(torch.zeros(2, 5, dtype=F64), q_mean=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="indices must be"):
        VQVAE((4,), positions=2).decode(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="z_e must have shape"):
        VectorQuantizer(4, 3).nearest(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"mean and log_var must both be \(n, L\)"):
        rate_split(torch.zeros(3, 2), torch.zeros(3))


# --------------------------------------------------------------------------- checkers


def reader_iwae_bound(log_w: Tensor) -> Tensor:
    m = log_w.max(dim=0).values
    return m + torch.log(torch.exp(log_w - m).mean(dim=0))


def reader_ppca_posterior(W, b, noise_var, x):
    # the push-through form: W^T (W W^T + s2 I)^-1 (x - b), cov I - W^T (W W^T + s2 I)^-1 W
    c = W @ W.T + noise_var * torch.eye(W.shape[0], dtype=W.dtype)
    gain = torch.linalg.solve(c, W).T                   # (L, D)
    return (x - b) @ gain.T, torch.eye(W.shape[1], dtype=W.dtype) - gain @ W


def reader_vector_quantize(z_e, codebook):
    d2 = (z_e.square().sum(1, keepdim=True) - 2 * z_e @ codebook.T
          + codebook.square().sum(1))
    idx = d2.argmin(1)
    return idx, codebook.index_select(0, idx)


CHECKERS = ["iwae_bound", "ppca_posterior", "vector_quantize"]
READERS = {"iwae_bound": reader_iwae_bound,
           "ppca_posterior": reader_ppca_posterior,
           "vector_quantize": reader_vector_quantize}


def test_vae_checkers_are_registered():
    assert set(CHECKERS) <= set(available())


@pytest.mark.parametrize("name", CHECKERS)
def test_vae_checkers_pass_reference_and_reader_solutions(name):
    """[eq-vae-iwae] [eq-vae-linear-posterior] [eq-vae-vq] Each checker passes its own
    reference and a correct solution written differently."""
    for fn in (getattr(ex, "_" + name), READERS[name]):
        result = check(name, fn)
        assert isinstance(result, CheckResult)
        assert result.passed and not result.failures, result.message


def test_vae_checker_references_agree_with_the_package():
    """[eq-vae-iwae] [eq-vae-linear-posterior] [eq-vae-vq] The references equal
    VAE.iwae_bound (from the same log-weights), LinearGaussianVAE.posterior and
    VectorQuantizer.nearest."""
    model = linear_model(d=5, lat=2, seed=40)
    x = torch.randn(3, 5, generator=gen(41), dtype=F64)
    with torch.no_grad():
        lw = model.log_weights(x, 16, generator=gen(42))
        bound = model.iwae_bound(x, 16, generator=gen(42))
        torch.testing.assert_close(ex._iwae_bound(lw), bound, rtol=0, atol=1e-12)
        mean, cov = ex._ppca_posterior(model.W, model.b, float(model.noise_var), x)
        ref_mean, ref_cov = model.posterior(x)
    torch.testing.assert_close(mean, ref_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(cov, ref_cov, rtol=0, atol=1e-12)
    vq = VectorQuantizer(7, 3).double()
    z = torch.randn(9, 3, generator=gen(43), dtype=F64)
    idx, z_q = ex._vector_quantize(z, vq.codebook.detach())
    assert torch.equal(idx, vq.nearest(z))


WRONG = [
    ("iwae_bound", ex._iwae_mean_of_logs, "bound is wrong", "that is the ELBO"),
    ("iwae_bound", ex._iwae_no_log_k, "bound is wrong", "subtract log(K)"),
    ("iwae_bound", ex._iwae_naive, "very negative log-weights", "use torch.logsumexp"),
    ("iwae_bound", ex._iwae_max, "bound is wrong", "only the dominant term"),
    ("iwae_bound", lambda lw: torch.logsumexp(lw, 1) - math.log(lw.shape[1]),
     "bound has shape", "reduce over the K samples"),
    ("ppca_posterior", ex._post_not_centred, "mean is wrong", "Centre the observation"),
    ("ppca_posterior", ex._post_no_noise_in_m, "mean is wrong",
     "M = W^T W + noise_var * I"),
    ("ppca_posterior", ex._post_cov_no_scale, "cov is wrong", "not M^-1"),
    ("ppca_posterior", ex._post_prior_cov, "cov is wrong", "the prior's, I"),
    ("ppca_posterior", ex._post_precision, "cov is wrong", "its inverse"),
    ("vector_quantize", ex._vq_argmax, "indices is wrong", "FARTHEST code"),
    ("vector_quantize", ex._vq_dot, "indices is wrong", "different lengths"),
    ("vector_quantize", ex._vq_identity, "z_q is wrong", "codebook[indices]"),
    ("vector_quantize", lambda z, c: (ex._vector_quantize(z, c)[0].double(),
                                      ex._vector_quantize(z, c)[1]),
     "indices has dtype", "int64"),
]


@pytest.mark.parametrize("name,fn,where,hint", WRONG,
                         ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)])
def test_vae_checkers_reject_wrong_answers_with_the_hint(name, fn, where, hint):
    """[eq-vae-iwae] [eq-vae-linear-posterior] [eq-vae-vq] A plausible wrong answer fails,
    the report names the problem and gives the matching hint (ASCII, at most 80 columns)."""
    result = check(name, fn)
    assert not result.passed and result.failures, result.message
    flat = " ".join(result.message.split())
    for fragment in (where, "hint:", hint):
        assert " ".join(fragment.split()) in flat, f"{fragment!r} not in:\n{result.message}"
    assert result.message.isascii()
    assert all(len(line) <= 80 for line in result.message.splitlines()), result.message
