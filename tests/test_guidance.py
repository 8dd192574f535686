"""Tests of gmbook.guidance: the exact conditional structure of the labelled toys, guidance
as predictions, the tilted target, and the class-conditional EDM."""

from __future__ import annotations

import math

import pytest
import torch

from gmbook import samplers
from gmbook._random import randn
from gmbook.data import EightGaussians, TwoMoons
from gmbook.guidance import (ConditionalEDM, GridDensity, LabelledMixture, LabelledMLP,
                             autoguidance, cfg, classifier_guidance, dps, guidance_interval,
                             guided_gaussian_mean, histogram_kl, renoise, repaint, replacement,
                             tilted_density)
from gmbook.sde import EDM

f64 = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


@pytest.fixture(scope="module")
def moons():
    return LabelledMixture.from_toy(TwoMoons())


@pytest.fixture(scope="module")
def eight():
    return LabelledMixture.from_toy(EightGaussians())


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- exact structure


def test_from_toy_matches_the_toys(moons, eight):
    """The labelled mixtures are the toys' densities (eq-guid-cond-mixture): same log-density
    as the toys' own ``log_prob``, classes of weight 1/2 and 1/8, and the labels of
    ``sample_with_labels`` agree with the Bayes classifier on almost every point."""
    for toy, mix, classes in ((TwoMoons(), moons, 2), (EightGaussians(), eight, 8)):
        x, y = toy.sample_with_labels(3000, generator=gen(1), dtype=f64)
        torch.testing.assert_close(mix.log_prob(x), toy.log_prob(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(mix.class_weights(), torch.full((classes,), 1 / classes,
                                                                   dtype=f64))
        assert (mix.classify(x) == y).double().mean() > 0.99


def test_restrict_is_the_class(moons):
    """p(x | c) of eq-guid-cond-mixture: pi_c p(x | c) summed over classes is p(x), and a
    class's samples carry its label."""
    x = moons.sample(500, generator=gen(2), dtype=f64)
    pi = moons.class_weights()
    total = torch.logsumexp(torch.stack([pi[c].log() + moons.log_prob(x, label=c)
                                         for c in range(2)]), 0)
    torch.testing.assert_close(total, moons.log_prob(x), atol=1e-10, rtol=0)
    xc, yc = moons.restrict(1).sample_with_labels(200, generator=gen(3))
    assert bool((yc == 1).all()) and (moons.classify(xc) == 1).double().mean() > 0.99
    assert moons.restrict(1) is moons.restrict(1)   # cached: one scorecard floor per class


@pytest.mark.parametrize("path,times", [(samplers.VEPath(3.0), (0.02, 0.3, 1.0, 3.0)),
                                        (samplers.VPPath(), (0.01, 0.2, 0.6, 0.95))])
def test_bayes_rule_for_scores(moons, path, times):
    """Bayes' rule for scores, eq-guid-bayes-score: the exact conditional score (the
    package's mixture denoiser on the class's components) equals the unconditional score
    plus the gradient of the exact noised classifier (eq-guid-classifier, by autograd), at
    every noise level and for both moons."""
    x = 1.5 * randn((300, 2), dtype=f64, generator=gen(4))
    for t in times:
        tt = torch.tensor(t, dtype=f64)
        s_u = moons.prediction(path).score(x, tt)
        for c in range(2):
            s_c = moons.prediction(path, c).score(x, tt)
            g = moons.classifier_grad(x, c, tt, path)
            scale = s_c.abs().max()
            torch.testing.assert_close(s_u + g, s_c, atol=1e-9 * scale, rtol=1e-9)
            assert g.abs().max() > 1e-3 * scale   # the classifier term is not negligible


def test_classifier_sums_to_one_and_is_calibrated(moons):
    """The exact noised classifier p_t(c | x_t) of eq-guid-classifier sums to 1 over the
    classes and matches a Monte Carlo estimate: among labelled pairs (x_t, c) drawn by
    noising the data, the frequency of c = 0 in each bin of predicted probability equals
    the bin's mean prediction (calibration), within 4 standard errors. Without the noise
    variance in the classifier (the clean classifier at noisy points) the bins fail."""
    path = samplers.VEPath(3.0)
    t = torch.tensor(0.4, dtype=f64)
    x0, y = moons.sample_with_labels(40000, generator=gen(5), dtype=f64)
    xt = x0 + 0.4 * randn(x0.shape, like=x0, generator=gen(6))
    probs = moons.class_log_probs(xt, t, path).exp()
    torch.testing.assert_close(probs.sum(1), torch.ones(len(xt), dtype=f64))

    def worst(p0):
        z = 0.0
        edges = torch.linspace(0, 1, 11, dtype=f64)
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (p0 >= lo) & (p0 < hi)
            if int(m.sum()) < 200:
                continue
            freq = (y[m] == 0).double().mean()
            se = math.sqrt(float(p0[m].mean() * (1 - p0[m].mean())) / int(m.sum()))
            z = max(z, abs(float(freq - p0[m].mean())) / se)
        return z

    assert worst(probs[:, 0]) < 4
    assert worst(moons.class_log_probs(xt).exp()[:, 0]) > 8   # the clean classifier fails


def test_slice_posterior_is_bayes(moons):
    """eq-guid-slice-posterior: the exact posterior of x_2 given x_1 = y is the 1-D slice of
    the joint density, p(x_1 = y, x_2) / p(x_1 = y), checked against the mixture's own
    log-density on a fine grid of x_2 (normalised by the trapezoid rule)."""
    y = 0.3
    post = moons.slice_posterior(0, y)
    x2 = torch.linspace(-3, 3, 6001, dtype=f64)
    joint = moons.log_prob(torch.stack([torch.full_like(x2, y), x2], 1)).exp()
    ref = joint / torch.trapezoid(joint, x2)
    torch.testing.assert_close(post.log_prob(x2[:, None]).exp(), ref, atol=1e-6, rtol=1e-6)
    assert post.dim == 1 and abs(float(post.weights.sum()) - 1) < 1e-12


# --------------------------------------------------------------------------- guidance


def _const_pred(kind, value, path):
    return samplers.Prediction(lambda x, t: value.expand_as(x).to(x), kind, path)


def test_cfg_formula():
    """eq-guid-cfg: the guided prediction is D_u + w (D_c - D_u) in x0, hence (weights summing
    to 1) (1 - w) s_u + w s_c in score, whatever kinds the two predictions are."""
    path = samplers.VPPath()
    x = randn((6, 2), dtype=f64, generator=gen(7))
    t = torch.full((6,), 0.4, dtype=f64)
    u = samplers.Prediction(lambda x, t: 0.3 * x + 1.0, "eps", path)
    c = samplers.Prediction(lambda x, t: -x + torch.tensor([0.5, -2.0], dtype=f64), "score",
                            path)
    for w in (0.0, 1.0, 2.5, 8.0):
        g = cfg(u, c, w)
        expected = (1 - w) * u.score(x, t) + w * c.score(x, t)
        torch.testing.assert_close(g.score(x, t), expected)
        torch.testing.assert_close(g.x0_eps(x, t)[0],
                                   (1 - w) * u.x0_eps(x, t)[0] + w * c.x0_eps(x, t)[0])



def test_cfg_at_weights_zero_and_one_calls_one_prediction():
    """eq-guid-cfg at w = 0 is the unconditional prediction and at w = 1 the conditional one:
    cfg then calls only that prediction (half the network evaluations) and returns it
    exactly; at any other weight it calls both, once each."""
    path = samplers.VEPath(3.0)
    x = randn((4, 2), dtype=f64, generator=gen(8))
    t = torch.full((4,), 0.5, dtype=f64)
    calls = {"u": 0, "c": 0}

    def counted(name, f):
        def fn(x, t):
            calls[name] += 1
            return f(x)
        return samplers.Prediction(fn, "x0", path)

    u = counted("u", lambda x: 0.5 * x)
    c = counted("c", lambda x: 0.5 * x + 1.0)
    for w, expected, want in ((0.0, {"u": 1, "c": 0}, 0.5 * x),
                              (1.0, {"u": 0, "c": 1}, 0.5 * x + 1.0),
                              (3.0, {"u": 1, "c": 1}, 0.5 * x + 3.0)):
        calls.update(u=0, c=0)
        out = cfg(u, c, w).x0_eps(x, t)[0]
        assert calls == expected, (w, calls)
        torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


def test_autoguidance_and_interval():
    """eq-guid-auto is cfg with the weak model in the unconditional's place; eq-guid-interval
    guides inside [lo, hi] of sigma_t / alpha_t and is the conditional model outside."""
    path = samplers.VEPath(3.0)
    x = randn((4, 2), dtype=f64, generator=gen(8))
    good = _const_pred("x0", torch.tensor([1.0, 0.0], dtype=f64), path)
    weak = _const_pred("x0", torch.tensor([0.0, 2.0], dtype=f64), path)
    t = torch.full((4,), 0.7, dtype=f64)
    torch.testing.assert_close(autoguidance(good, weak, 3.0).x0_eps(x, t)[0],
                               torch.tensor([[3.0, -4.0]], dtype=f64).expand(4, 2))
    g = guidance_interval(weak, good, 3.0, lo=0.5, hi=1.0)
    for level, want in ((0.7, [3.0, -4.0]), (0.3, [1.0, 0.0]), (2.0, [1.0, 0.0])):
        out = g.x0_eps(x, torch.full((4,), level, dtype=f64))[0]
        torch.testing.assert_close(out, torch.tensor([want], dtype=f64).expand(4, 2))
    mixed = g.fn(x, torch.tensor([0.7, 0.3, 1.0, 1.5], dtype=f64))
    torch.testing.assert_close(mixed[:, 0], torch.tensor([3.0, 1.0, 3.0, 1.0], dtype=f64))


def test_classifier_guidance_is_cfg_with_exact_scores(moons):
    """With the exact noised classifier, classifier guidance of weight w on the exact
    unconditional denoiser (eq-guid-classifier-guidance) is CFG of weight w on the exact
    denoisers (eq-guid-cfg): Bayes' rule, eq-guid-bayes-score."""
    path = samplers.VPPath()
    x = randn((200, 2), dtype=f64, generator=gen(9))
    t = torch.full((200,), 0.3, dtype=f64)
    for w in (0.0, 1.0, 4.0):
        cg = classifier_guidance(moons.prediction(path),
                                 lambda x, t: moons.classifier_grad(x, 1, t[0], path), w)
        ref = cfg(moons.prediction(path), moons.prediction(path, 1), w)
        torch.testing.assert_close(cg.x0_eps(x, t)[0], ref.x0_eps(x, t)[0], atol=1e-8,
                                   rtol=1e-8)


def _moments(x):
    m = x.mean(0)
    return m, torch.cov(x.T)


def test_cfg_at_weight_one_samples_the_exact_conditional(moons):
    """Guided sampling with exact scores at w = 1 samples the exact conditional (eq-guid-cfg
    with w = 1 is p(x | c)): the mean and covariance of 4000 samples of the lower moon match
    the class mixture's (eq-guid-cond-mixture) within 4 standard errors, and 99% are
    classified into the class. The sampler starts from the class's noised marginal at
    sigma_max. The same test rejects w = 0 (the unconditional model) and w = 3, so its
    tolerance is tight enough to see a wrong weight."""
    path = samplers.VEPath(3.0)
    grid = samplers.karras_grid(path, 24, sigma_min=0.02, sigma_max=3.0)
    cls = moons.restrict(1)
    mean = cls.weights @ cls.means
    d = cls.means - mean
    cov = (d * cls.weights[:, None]).T @ d + torch.diag(cls.weights @ cls.variances)
    n = 4000
    # the start is the class's own noised marginal at sigma = 3 (N(0, 10 I) would not do:
    # its mean is the data's, 0, not the class's, and the sampler keeps part of the offset)
    x_T = cls.sample(n, generator=gen(10), dtype=f64) + 3 * randn((n, 2), dtype=f64,
                                                                  generator=gen(20))

    def run(w):
        pred = cfg(moons.prediction(path), moons.prediction(path, 1), w)
        return samplers.dpm_solver_pp_2m(pred, x_T, grid).samples

    def ok(x):
        m, c = _moments(x)
        se_m = (cov.diagonal() / n).sqrt()
        se_c = ((cov.diagonal()[:, None] * cov.diagonal()[None] + cov**2) / n).sqrt()
        return bool(((m - mean).abs() < 4 * se_m).all() and ((c - cov).abs() < 4 * se_c).all())

    x1 = run(1.0)
    assert ok(x1)
    assert (moons.classify(x1) == 1).double().mean() > 0.99
    assert not ok(run(0.0)) and not ok(run(3.0))


def test_guided_sampler_overshoots_the_tilted_mean():
    """[prop-guid-not-tilted] With p(x) = N(0, a^2), p(x | c) = N(mu, b^2), b < a, and exact
    scores, classifier-free guidance (eq-guid-cfg) at w = 4 run by the probability-flow ODE
    from the prior's mean at sigma = 1e4 ends at the mean [eq-guid-overshoot]: strictly
    between the tilted target's mean m (eq-guid-tilted) and w mu, and equal to the
    integral of m_sigma [eq-guid-guided-gaussian] against K that guided_gaussian_mean
    computes by quadrature. At w = 1 the same run ends at mu (no overshoot), so the test can
    tell the two apart. The reverse SDE (eta = 1, kappa = 1), run by Euler-Maruyama from the
    same start, ends at the mean that the same quadrature gives with kappa = 1 (within 4
    standard errors of 20 000 runs), which is strictly below the ODE's (kappa = 1/2) and
    above m: the samplers differ under guidance, as part (3) of the proposition says, and the
    quadrature decreases in eta towards m."""
    a, b, mu = 1.0, 0.5, 1.0
    path = samplers.VEPath(1e4)
    one = torch.ones(1, dtype=f64)

    def gauss(mean, var):
        return samplers.mixture_prediction(one, torch.tensor([[mean]], dtype=f64),
                                           torch.tensor([[var]], dtype=f64), path)

    grid = samplers.karras_grid(path, 400, sigma_min=1e-3, sigma_max=1e4)
    x0 = torch.zeros(1, 1, dtype=f64)

    def end(w):
        return samplers.dpm_solver_pp_2m(cfg(gauss(0.0, a * a), gauss(mu, b * b), w), x0,
                                         grid).samples.item()

    w = 4.0
    lam = (1 - w) / a**2 + w / b**2
    m = w * mu / (b * b * lam)
    mean = guided_gaussian_mean(a, b, mu, w)   # eta = 0: kappa = 1/2
    got = end(w)
    assert m + 0.2 < got < w * mu - 2
    assert abs(got - mean) < 0.01 * (got - m)
    assert abs(end(1.0) - mu) < 1e-3
    # the reverse SDE, eta = 1: kappa = 1
    n = 20_000
    x = samplers.euler_maruyama(cfg(gauss(0.0, a * a), gauss(mu, b * b), w),
                                torch.zeros(n, 1, dtype=f64), grid, eta=1.0,
                                generator=gen(3)).samples[:, 0]
    se = float(x.std()) / n**0.5
    sde_mean = guided_gaussian_mean(a, b, mu, w, eta=1.0)
    assert m + 0.05 < sde_mean < mean - 0.1
    assert abs(float(x.mean()) - sde_mean) < 4 * se + 0.01 * (sde_mean - m)
    # part (3): strictly decreasing in eta, towards m
    eta2, far = (guided_gaussian_mean(a, b, mu, w, eta=e) for e in (2.0, 30.0))
    assert m < far < eta2 < sde_mean and far - m < 0.01 * (sde_mean - m)



@pytest.mark.parametrize("kwargs, match", [
    (dict(a=0.5, b=1.0), "smaller than a"),        # b > a: the tilted variance blows up
    (dict(a=1.0, b=1.0), "smaller than a"),        # b = a: no class information
    (dict(w=0.5), "at least 1"),                   # w < 1: not guidance
    (dict(eta=-1.0), "eta"),
    (dict(points=10), "points"),
])
def test_guided_gaussian_mean_rejects_bad_arguments(kwargs, match):
    """guided_gaussian_mean ([eq-guid-overshoot]) is defined for b < a (the class narrower
    than the prior), w >= 1, eta >= 0 and a fine quadrature: outside, a clear ValueError."""
    args = dict(a=1.0, b=0.5, mu=1.0, w=4.0) | kwargs
    with pytest.raises(ValueError, match=match):
        guided_gaussian_mean(**args)

def test_dps_on_a_gaussian_prior():
    """eq-guid-dps on a Gaussian prior N(m, s^2 I) with the linear observation y = x_1 +
    sigma_y eta: with Tweedie's covariance the guided probability-flow ODE samples the
    closed-form posterior (x_1 ~ N(m_1 + k (y - m_1), k sigma_y^2), k = s^2 / (s^2 +
    sigma_y^2); x_2 ~ N(m_2, s^2)) within 4 standard errors; plain DPS, which ignores the
    spread of x_0 given x_t, does not (its x_1 is far too concentrated)."""
    m, s2, sy, yv = torch.tensor([0.5, -0.3], dtype=f64), 0.8, 0.3, 1.2
    path = samplers.VEPath(80.0)

    def denoise(x, t):   # the exact denoiser of N(m, s2 I): affine in x
        sig2 = append(t, x) ** 2
        return m + s2 / (s2 + sig2) * (x - m)

    def append(t, x):
        return torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))

    prior = samplers.Prediction(denoise, "x0", path)
    A, y = torch.tensor([[1.0, 0.0]], dtype=f64), torch.tensor([yv], dtype=f64)
    k = s2 / (s2 + sy**2)
    mean = torch.tensor([m[0] + k * (yv - m[0]), m[1]], dtype=f64)
    var = torch.tensor([k * sy**2, s2], dtype=f64)
    n = 20000
    grid = samplers.karras_grid(path, 48, sigma_min=0.002, sigma_max=80.0)
    x_T = m + math.sqrt(80.0**2 + s2) * randn((n, 2), dtype=f64, generator=gen(21))

    def ok(x):
        se_m, se_v = (var / n).sqrt(), var * math.sqrt(2 / n)
        return bool(((x.mean(0) - mean).abs() < 4 * se_m).all()
                    and ((x.var(0) - var).abs() < 4 * se_v).all())

    exact = samplers.dpm_solver_pp_2m(dps(prior, A, y, sy, tweedie=True), x_T, grid).samples
    assert ok(exact)
    plain = samplers.dpm_solver_pp_2m(dps(prior, A, y, sy), x_T, grid).samples
    assert not ok(plain) and float(plain[:, 0].var()) < 0.5 * float(var[0])


def test_replacement_is_exact_only_for_independent_coordinates():
    """eq-guid-replacement: on a Gaussian prior with independent coordinates, inpainting by
    replacement samples the exact posterior (the known coordinate at y, the unknown one
    with its prior marginal); with correlated coordinates (correlation 0.8) the unknown
    coordinate's mean misses the posterior mean rho * y by many standard errors, which
    diffusion posterior sampling with Tweedie's covariance (eq-guid-dps) hits."""
    path = samplers.VEPath(80.0)
    n = 20000
    grid = samplers.karras_grid(path, 48, sigma_min=0.002, sigma_max=80.0)
    x_T = 80.0 * randn((n, 2), dtype=f64, generator=gen(23))
    y = torch.tensor([1.5, 0.0], dtype=f64)
    mask = torch.tensor([1.0, 0.0], dtype=f64)
    for rho in (0.0, 0.8):
        cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=f64)

        def denoise(x, t, cov=cov):   # E[x0 | x] for x0 ~ N(0, cov), x = x0 + t eps
            s2 = float(torch.as_tensor(t).reshape(-1)[0]) ** 2
            return x @ torch.linalg.solve(cov + s2 * torch.eye(2, dtype=f64), cov)

        prior = samplers.Prediction(denoise, "x0", path)
        x = samplers.dpm_solver_pp_2m(replacement(prior, mask, y), x_T, grid).samples
        assert float((x[:, 0] - 1.5).abs().max()) < 1e-3
        se = math.sqrt((1 - rho**2) / n)
        miss = abs(float(x[:, 1].mean()) - rho * 1.5) / se
        assert (miss < 4) if rho == 0 else (miss > 20)
        if rho:
            post = dps(prior, mask[None], y[:1], 1e-3, tweedie=True)
            x = samplers.dpm_solver_pp_2m(post, x_T, grid).samples
            assert abs(float(x[:, 1].mean()) - rho * 1.5) < 4 * se


# --------------------------------------------------------------------------- RePaint


@pytest.mark.parametrize("path, s, t", [(samplers.VPPath(), 0.3, 0.6),
                                        (samplers.VEPath(80.0), 0.5, 2.0),
                                        (samplers.VPPath(), 0.0, 0.4)])
def test_renoise_is_the_forward_transition(path, s, t):
    """eq-guid-renoise: x_t | x_s has mean (alpha_t / alpha_s) x_s and variance sigma_t^2 -
    (alpha_t / alpha_s)^2 sigma_s^2 (Monte Carlo, 4 standard errors), and composed with the
    path's marginal at s it gives the marginal at t, N(alpha_t x_0, sigma_t^2): a variance
    sigma_t^2 - sigma_s^2 (right only on VE) or a mean without the ratio fails on VP."""
    n = 200_000
    x_s = torch.full((n, 1), 0.7, dtype=f64)
    x_t = renoise(path, x_s, s, t, generator=gen(31))
    ts, tt = torch.tensor(s, dtype=f64), torch.tensor(t, dtype=f64)
    r = float(path.alpha(tt) / path.alpha(ts))
    var = float(path.sigma(tt) ** 2 - r**2 * path.sigma(ts) ** 2)
    assert abs(float(x_t.mean()) - 0.7 * r) < 4 * math.sqrt(var / n)
    assert abs(float(x_t.var()) - var) < 4 * var * math.sqrt(2 / n)
    x0 = torch.full((n, 1), 0.7, dtype=f64)
    x_s = path.marginal(x0, ts.expand(n), generator=gen(32))[0]
    x_t = renoise(path, x_s, s, t, generator=gen(33))
    a_t, s_t = float(path.alpha(tt)), float(path.sigma(tt))
    assert abs(float(x_t.mean()) - 0.7 * a_t) < 4 * s_t / math.sqrt(n)
    assert abs(float(x_t.var()) / s_t**2 - 1) < 4 * math.sqrt(2 / n)
    torch.testing.assert_close(renoise(path, x_s[:5], t, t, generator=gen(1)), x_s[:5])


def test_renoise_is_ddpms_forward_step():
    """eq-guid-renoise on a discrete DDPM schedule from step k - 1 to step k is DDPM's
    q(x_k | x_{k-1}) = N(sqrt(1 - beta_k) x_{k-1}, beta_k I), beta_k = 1 - abar_k /
    abar_{k-1} (the noise drawn the same way)."""
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=f64), 0)
    path = samplers.DiscreteVPPath(ab)
    x = torch.randn(7, 3, dtype=f64)
    k = 40
    beta = 1 - float(ab[k] / ab[k - 1])   # steps k and k + 1 of the schedule (1-based)
    got = renoise(path, x, k / 100, (k + 1) / 100, generator=gen(5))
    z = randn(x.shape, like=x, generator=gen(5))
    torch.testing.assert_close(got, math.sqrt(1 - beta) * x + math.sqrt(beta) * z)


def test_repaint_without_resampling_is_a_replacement_step(moons):
    """eq-guid-repaint with U = 1: one step from the same state with the same noise equals
    Euler-Maruyama on replacement (eq-guid-replacement) on the unknown coordinate, and
    the known coordinate is the fresh draw alpha_s y + sigma_s xi (xi the generator's next
    normal draw) where replacement carries the state's own noise; on a whole grid U = 1
    makes K network calls and ends exactly at y on the known coordinate."""
    path = samplers.VEPath(80.0)
    pred = moons.prediction(path)
    mask, y = torch.tensor([1.0, 0.0], dtype=f64), torch.tensor([0.3, 0.0], dtype=f64)
    x = 1.5 * torch.randn(400, 2, dtype=f64)
    step = torch.tensor([1.2, 0.8], dtype=f64)
    rp = repaint(pred, x, step, mask=mask, y=y, resample=1,
                 sampler=samplers.euler_maruyama, generator=gen(8)).samples
    rep = samplers.euler_maruyama(replacement(pred, mask, y), x, step,
                                  generator=gen(8)).samples
    torch.testing.assert_close(rp[:, 1], rep[:, 1], rtol=1e-12, atol=1e-12)
    g = gen(8)
    randn(x.shape, like=x, generator=g)                  # the step's noise
    xi = randn(x.shape, like=x, generator=g)[:, 0]
    torch.testing.assert_close(rp[:, 0], 0.3 + 0.8 * xi)
    assert float((rep[:, 0] - rp[:, 0]).abs().max()) > 0.1   # replacement's differs
    grid = samplers.karras_grid(path, 12, sigma_min=0.02, sigma_max=80.0)
    out = repaint(pred, x, grid, mask=mask, y=y, resample=1, generator=gen(9))
    assert out.nfe == 12 and bool((out.samples[:, 0] == 0.3).all())
    out = repaint(pred, x, grid, mask=mask, y=y, resample=3, jump=2, generator=gen(9),
                  return_path=True)
    assert out.nfe == 3 * 11 + 1 and out.states.shape == (13, 400, 2)
    torch.testing.assert_close(out.states[-1], out.samples)


def test_repaint_removes_replacements_bias_in_the_mean():
    """eq-guid-repaint on the Gaussian prior of the replacement test (correlation 0.8, x_1 =
    1.5 observed exactly; posterior x_2 ~ N(1.2, 0.36)), exact scores, Euler-Maruyama on
    16 levels: replacement's mean of x_2 misses 1.2 by more than 20 standard errors; RePaint
    with U = 100 resamplings (jump 1) hits it within 4, and U = 5 lies in between. What is
    true of the variance: RePaint's is short of 0.36 by 3% to 25% (and by more than 3
    standard errors; 14% in this run): with many resamplings each level reaches the
    stationary law of its discretised re-noise / step pair, whose variance is too small by
    a term of the order of the step's relative noise increment, not the posterior's."""
    path = samplers.VEPath(80.0)
    rho, n = 0.8, 5000
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=f64)

    def denoise(x, t):   # E[x0 | x] for x0 ~ N(0, cov), x = x0 + t eps
        s2 = float(torch.as_tensor(t).reshape(-1)[0]) ** 2
        return x @ torch.linalg.solve(cov + s2 * torch.eye(2, dtype=f64), cov)

    prior = samplers.Prediction(denoise, "x0", path)
    grid = samplers.karras_grid(path, 16, sigma_min=0.002, sigma_max=80.0)
    x_T = 80.0 * randn((n, 2), dtype=f64, generator=gen(23))
    y, mask = torch.tensor([1.5, 0.0], dtype=f64), torch.tensor([1.0, 0.0], dtype=f64)
    mean, var = rho * 1.5, 1 - rho**2
    se_m, se_v = math.sqrt(var / n), var * math.sqrt(2 / n)
    rep = samplers.euler_maruyama(replacement(prior, mask, y), x_T, grid,
                                  generator=gen(24)).samples
    assert abs(float(rep[:, 1].mean()) - mean) > 20 * se_m

    def run(u):
        return repaint(prior, x_T, grid, mask=mask, y=y, resample=u,
                       sampler=samplers.euler_maruyama, generator=gen(24)).samples[:, 1]

    x100, x5 = run(100), run(5)
    assert abs(float(x100.mean()) - mean) < 4 * se_m
    assert float(rep[:, 1].mean()) + 10 * se_m < float(x5.mean()) < mean - 10 * se_m
    assert 0.75 * var < float(x100.var()) < min(0.97 * var, var - 3 * se_v)


def test_repaint_variance_shortfall_is_the_steps():
    """eq-guid-repaint on the Gaussian prior above: with the exact reverse transition of
    that Gaussian in place of Euler-Maruyama's step, U = 100 passes on 16 levels give the
    posterior's variance 0.36 within 4 standard errors, clearly more than Euler-Maruyama:
    the shortfall of the previous test is the discretised step's, not RePaint's."""
    path = samplers.VEPath(80.0)
    rho, n = 0.8, 5000
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=f64)
    eye = torch.eye(2, dtype=f64)

    def denoise(x, t):
        s2 = float(torch.as_tensor(t).reshape(-1)[0]) ** 2
        return x @ torch.linalg.solve(cov + s2 * eye, cov)

    def exact_step(pred, x, grid, *, generator=None, return_path=False):
        # x_t' | x_t for x0 ~ N(0, cov), x_t = x0 + t eps: Gaussian regression of the
        # less noisy state on the noisier one
        t, tn = float(grid[0]), float(grid[1])
        p_, q_ = cov + tn**2 * eye, cov + t**2 * eye
        b = p_ @ torch.linalg.inv(q_)
        v = p_ - b @ p_
        z = randn(x.shape, like=x, generator=generator)
        chol = torch.linalg.cholesky(v) if tn > 0 else torch.zeros_like(v)
        return samplers.SamplePath(x @ b.T + z @ chol.T, grid, 1)

    prior = samplers.Prediction(denoise, "x0", path)
    grid = samplers.karras_grid(path, 16, sigma_min=0.002, sigma_max=80.0)
    x_T = 80.0 * randn((n, 2), dtype=f64, generator=gen(23))
    kw = dict(mask=torch.tensor([1.0, 0.0], dtype=f64), y=torch.tensor([1.5, 0.0], dtype=f64),
              resample=100, generator=gen(24))
    ex = repaint(prior, x_T, grid, sampler=exact_step, **kw).samples[:, 1]
    em = repaint(prior, x_T, grid, sampler=samplers.euler_maruyama, **kw).samples[:, 1]
    var = 1 - rho**2
    se_v = var * math.sqrt(2 / n)
    assert abs(float(ex.var()) - var) < 4 * se_v
    assert float(ex.var()) > float(em.var()) + 4 * se_v


def test_repaint_known_coordinates_on_vp():
    """eq-guid-repaint on a VP path: after a step to t' the known coordinate is
    alpha_t' y + sigma_t' xi with alpha_t' < 1 (a draw that leaves alpha out fails)."""
    path = samplers.VPPath()
    pred = samplers.mixture_prediction(*TwoMoons().mixture(), path)
    mask, y = torch.tensor([1.0, 0.0], dtype=f64), torch.tensor([0.3, 0.0], dtype=f64)
    x = torch.randn(400, 2, dtype=f64)
    step = torch.tensor([0.9, 0.6], dtype=f64)
    rp = repaint(pred, x, step, mask=mask, y=y, resample=1,
                 sampler=samplers.euler_maruyama, generator=gen(8)).samples
    g = gen(8)
    randn(x.shape, like=x, generator=g)                  # the step's noise
    xi = randn(x.shape, like=x, generator=g)[:, 0]
    t = torch.tensor(0.6, dtype=f64)
    a, s = float(path.alpha(t)), float(path.sigma(t))
    assert a < 0.9
    torch.testing.assert_close(rp[:, 0], a * 0.3 + s * xi)


def test_repaint_with_one_observation_per_point_equals_the_shared_one(moons):
    """An observation given once per point (mask and y of shape (B, *D)) runs the same
    arithmetic as one shared observation broadcast over the batch; two different
    observations in one batch give each point the known value of its own."""
    path = samplers.VEPath(3.0)
    p = moons.prediction(path)
    x = 3.0 * torch.randn(6, 2, dtype=f64, generator=torch.Generator().manual_seed(0))
    grid = torch.tensor([3.0, 1.0, 0.3, 0.0], dtype=f64)
    mask, y = torch.tensor([1.0, 0.0], dtype=f64), torch.tensor([0.5, 0.0], dtype=f64)
    shared = repaint(p, x, grid, mask=mask, y=y, resample=3,
                     generator=torch.Generator().manual_seed(1)).samples
    each = repaint(p, x, grid, mask=mask.expand(6, 2), y=y.expand(6, 2), resample=3,
                   generator=torch.Generator().manual_seed(1)).samples
    torch.testing.assert_close(each, shared, rtol=0, atol=0)
    ys = torch.tensor([[0.5, 0.0]] * 3 + [[-1.0, 0.0]] * 3, dtype=f64)
    out = repaint(p, x, grid, mask=mask.expand(6, 2), y=ys, resample=3,
                  generator=torch.Generator().manual_seed(1)).samples
    torch.testing.assert_close(out[:, 0], ys[:, 0])  # sigma = 0 at the end: y exactly


def test_repaint_argument_checks(moons):
    path = samplers.VEPath()
    p = moons.prediction(path)
    x, grid = torch.zeros(4, 2, dtype=f64), torch.tensor([1.0, 0.5, 0.0], dtype=f64)
    mask, y = torch.tensor([1.0, 0.0], dtype=f64), torch.zeros(2, dtype=f64)
    with pytest.raises(TypeError, match="resample"):
        repaint(p, x, grid, mask=mask, y=y, resample=2.0)
    with pytest.raises(ValueError, match="jump"):
        repaint(p, x, grid, mask=mask, y=y, jump=0)
    with pytest.raises(ValueError, match="mask"):
        repaint(p, x, grid, mask=torch.tensor([0.5, 0.0], dtype=f64), y=y)
    with pytest.raises(ValueError, match="shape of one point"):
        repaint(p, x, grid, mask=torch.ones(3, dtype=f64), y=torch.ones(3, dtype=f64))
    with pytest.raises(ValueError, match="decreasing"):
        repaint(p, x, grid.flip(0), mask=mask, y=y)
    with pytest.raises(TypeError, match="sampler"):
        repaint(p, x, grid, mask=mask, y=y, sampler="ddim")
    with pytest.raises(ValueError, match="s <= t"):
        renoise(path, x, 1.0, 0.5)
    with pytest.raises(TypeError, match="path"):
        renoise("ve", x, 0.5, 1.0)


def test_dps_differentiates_the_exact_mixture_denoiser(moons):
    """The differentiable exact denoiser equals the package's mixture denoiser, and its
    Jacobian is Tweedie's (eq-sm-tweedie differentiated): d x0 / dx = (I + sigma^2
    Hess log p_t(x)) / alpha, the Hessian of the mixture's log-density taken by autograd, so
    that dps can run on the exact prior of the toys."""
    path = samplers.VPPath()
    x = randn((50, 2), dtype=f64, generator=gen(22))
    t = torch.full((50,), 0.4, dtype=f64)
    smooth = moons.prediction(path, differentiable=True)
    torch.testing.assert_close(smooth.x0_eps(x, t)[0], moons.prediction(path).x0_eps(x, t)[0])
    a, s = float(path.alpha(t[0])), float(path.sigma(t[0]))
    for xi in x[:5]:
        jac = torch.autograd.functional.jacobian(lambda z: smooth.fn(z[None], t[:1])[0], xi)
        hess = torch.autograd.functional.hessian(
            lambda z: moons.log_prob(z[None], t[0], path)[0], xi)
        torch.testing.assert_close(jac, (torch.eye(2, dtype=f64) + s * s * hess) / a)
    out = dps(moons.prediction(path, differentiable=True), torch.tensor([[1.0, 0.0]], dtype=f64),
              torch.tensor([0.3], dtype=f64), 0.1).x0_eps(x, t)[0]
    assert out.shape == x.shape and bool(torch.isfinite(out).all())



@pytest.mark.parametrize("tweedie", [False, True])
def test_dps_with_one_observation_per_sample(moons, tweedie):
    """eq-guid-dps with one observation per sample, y of shape (B, m): each row is guided by
    its own y, exactly as a batch of one with that y alone (the half-masked digits of the
    chapter); a y with the wrong number of rows is refused."""
    path = samplers.VEPath(3.0)
    pred = moons.prediction(path, differentiable=True)
    A = torch.tensor([[1.0, 0.0]], dtype=f64)
    x = randn((6, 2), dtype=f64, generator=gen(24))
    t = torch.full((6,), 0.7, dtype=f64)
    ys = torch.linspace(-1.0, 1.0, 6, dtype=f64)[:, None]            # (6, 1)
    batch = dps(pred, A, ys, 0.2, tweedie=tweedie).x0_eps(x, t)[0]
    rows = torch.cat([dps(pred, A, ys[i], 0.2, tweedie=tweedie).x0_eps(x[i:i + 1], t[:1])[0]
                      for i in range(6)])
    torch.testing.assert_close(batch, rows)
    same = dps(pred, A, ys[0], 0.2, tweedie=tweedie).x0_eps(x, t)[0]
    assert not torch.allclose(batch[1:], same[1:])                 # the rows' own y matter
    with pytest.raises(ValueError, match="rows"):
        dps(pred, A, ys[:4], 0.2).x0_eps(x, t)
    with pytest.raises(ValueError, match="shape"):
        dps(pred, A, torch.zeros(6, 2, dtype=f64), 0.2)


# --------------------------------------------------------------------------- tilted target


def test_tilted_density_of_two_gaussians():
    """eq-guid-tilted on a case with a closed form: for p(x | c) = N(m1, s1^2 I) and
    p(x) = N(m2, s2^2 I), p(x | c)^w p(x)^(1 - w) is Gaussian with precision
    w / s1^2 + (1 - w) / s2^2 and mean (w m1 / s1^2 + (1 - w) m2 / s2^2) / precision; the
    gridded density's moments and its samples' match it, for w = 0, 1 and 3."""
    m1, s1 = torch.tensor([1.0, -0.5], dtype=f64), 0.5
    m2, s2 = torch.tensor([0.0, 0.0], dtype=f64), 1.0

    def gauss(m, s):
        return lambda x: -0.5 * ((x - m) ** 2).sum(1) / s**2 - 2 * math.log(s)

    for w in (0.0, 1.0, 3.0):
        dens = tilted_density(gauss(m1, s1), gauss(m2, s2), w, lo=(-5, -5), hi=(5, 5),
                              bins=300)
        prec = w / s1**2 + (1 - w) / s2**2
        mean = (w * m1 / s1**2 + (1 - w) * m2 / s2**2) / prec
        m, c = dens.mean_cov()
        torch.testing.assert_close(m, mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(c, torch.eye(2, dtype=f64) / prec, atol=1e-4, rtol=0)
        x = dens.sample(20000, generator=gen(11), dtype=f64)
        assert ((x.mean(0) - mean).abs() < 4 / math.sqrt(prec * 20000)).all()
        assert abs(float(x.var(0).mean()) * prec - 1) < 0.05
        assert x.shape == (20000, 2)
    total = dens.log_prob(dens.centres().reshape(-1, 2)).exp().sum() * dens.cell_area
    assert abs(float(total) - 1) < 1e-10
    several = tilted_density(gauss(m1, s1), gauss(m2, s2), [0.0, 3.0], lo=(-5, -5),
                             hi=(5, 5), bins=300)
    torch.testing.assert_close(several[1].log_mass, dens.log_mass)


def test_histogram_kl_sees_a_shift():
    """histogram_kl is about (cells - 1) / (2 n) for a sample of the density itself, far
    larger for a shifted sample, and infinite for a point outside the box."""
    lp = (lambda x: -0.5 * (x**2).sum(1))
    dens = tilted_density(lp, lp, 2.0, lo=(-4, -4), hi=(4, 4), bins=200)
    own = histogram_kl(dens.sample(5000, generator=gen(12)), dens, coarsen=20)
    shifted = histogram_kl(dens.sample(5000, generator=gen(13)) + 0.5, dens, coarsen=20)
    assert own < 0.02 and shifted > 5 * own
    assert histogram_kl(torch.tensor([[10.0, 0.0]]), dens) == math.inf


# --------------------------------------------------------------------------- the model


class _Ignore(torch.nn.Module):
    """A LabelledMLP-compatible network that ignores the labels."""

    classes = 2

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, labels):
        return self.net(x, t)


def test_conditional_edm_loss_is_edms():
    """ConditionalEDM's loss is EDM's (eq-sde-edm-loss) when the labels are ignored: the same
    value from the same noise (the dropout draws first)."""
    from gmbook.nets import MLP

    net = MLP(2, hidden=16, time_dim=8)
    x = randn((32, 2), generator=gen(14))
    y = torch.randint(0, 2, (32,), generator=gen(15))
    cond = ConditionalEDM(_Ignore(net), p_uncond=0.3)
    g = gen(16)
    torch.rand(32, generator=g)   # the dropout's draws
    torch.testing.assert_close(cond.loss(x, y, generator=gen(16)), EDM(net).loss(x, generator=g))


def test_conditional_edm_uses_the_null_label():
    """The unconditional denoiser is the null label's (index ``classes``); label dropout
    trains it: with p_uncond = 0 its embedding gets no gradient."""
    net = LabelledMLP(2, 2, hidden=16, time_dim=8)
    model = ConditionalEDM(net, p_uncond=0.0)
    x = randn((8, 2), generator=gen(17))
    before = model.denoise(x, 0.5, 0)
    with torch.no_grad():
        for e in net.label_embed:
            e.weight[2] += 1.0
    torch.testing.assert_close(model.denoise(x, 0.5, 0), before)
    assert not torch.allclose(model.denoise(x, 0.5), before)
    model.loss(x, torch.randint(0, 2, (8,), generator=gen(18))).backward()
    assert float(net.label_embed[0].weight.grad[2].abs().sum()) == 0
    assert float(net.label_embed[0].weight.grad[:2].abs().sum()) > 0
    out = model.sample(5, label=1, w=3.0, steps=3, generator=gen(19))
    assert out.shape == (5, 2) and bool(torch.isfinite(out).all())


# --------------------------------------------------------------------------- checks


def test_argument_checks(moons):
    path = samplers.VEPath()
    p = moons.prediction(path)
    with pytest.raises(TypeError):
        cfg(p, "not a prediction", 2.0)
    with pytest.raises(ValueError):
        cfg(p, moons.prediction(samplers.VPPath()), 2.0)
    with pytest.raises(ValueError):
        guidance_interval(p, p, 2.0, lo=1.0, hi=0.5)
    with pytest.raises(TypeError):
        classifier_guidance(p, 3.0, 1.0)
    with pytest.raises(ValueError):
        moons.restrict(2)
    with pytest.raises(ValueError):
        moons.log_prob(torch.zeros(3, 2), 0.5)   # a time without a path
    with pytest.raises(TypeError):
        LabelledMixture.from_toy("moons")
    with pytest.raises(ValueError):
        tilted_density(lambda x: x[:, 0], lambda x: x[:, 0], 1.0, lo=(1, 1), hi=(0, 2))
    with pytest.raises(ValueError):
        ConditionalEDM(LabelledMLP(2, 2, hidden=8, time_dim=4), p_uncond=1.0)
    with pytest.raises(ValueError):
        ConditionalEDM(LabelledMLP(2, 2, hidden=8, time_dim=4)).denoise(torch.zeros(3, 2),
                                                                        0.5, 2)
    with pytest.raises(TypeError):
        GridDensity((0, 0), (1, 1), torch.zeros(2, 2)).log_prob("x")


def test_labelled_mlp_time_scale_reaches_the_embedding():
    """``LabelledMLP(time_scale=s)`` passes s to its MLP's embedding ``e(s t)``: with the same
    weights, the network with scale s at time t equals the default (s = 1000) at s t / 1000."""
    torch.manual_seed(0)
    default = LabelledMLP(2, 3, hidden=8, depth=2, time_dim=6).double()
    slow = LabelledMLP(2, 3, hidden=8, depth=2, time_dim=6, time_scale=1.0).double()
    slow.load_state_dict(default.state_dict())
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1])
    torch.testing.assert_close(slow(x, t, labels), default(x, t / 1000, labels))
    assert not torch.allclose(slow(x, t, labels), default(x, t, labels))
    with pytest.raises(ValueError, match="time_scale"):
        LabelledMLP(2, 2, time_scale=0.0)


@pytest.mark.parametrize("grad", [False, True])
def test_labelled_mlp_one_time_is_the_same_function(grad):
    """A sampler's call (one time for the batch) takes LabelledMLP's folded path (the time
    branch and the label embeddings folded into the biases, rows in chunks); it is the same
    function as the per-row path, with one label or a label per row, with and without
    autograd, across a chunk boundary."""
    from gmbook.nets import FOLD_CHUNK

    torch.manual_seed(0)
    net = LabelledMLP(3, 4, hidden=16, depth=3, time_dim=8, time_scale=1.0).double()
    n = FOLD_CHUNK + 5
    x = torch.randn(n, 3, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    for labels in (torch.tensor(2), torch.tensor(4), torch.randint(5, (n,))):
        per_row = net(x, t.expand(n).clone(), labels.expand(n).clone())   # (B,) times
        with torch.set_grad_enabled(grad):
            z = x.clone().requires_grad_(grad)
            folded = net(z, t, labels)
            torch.testing.assert_close(folded, per_row)
            if grad:
                (g,) = torch.autograd.grad(folded.square().sum(), z)
                zr = x.clone().requires_grad_(True)
                (gr,) = torch.autograd.grad(net(zr, t.expand(n).clone(),
                                                labels.expand(n).clone()).square().sum(), zr)
                torch.testing.assert_close(g, gr)
