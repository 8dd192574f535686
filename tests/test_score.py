r"""Tests of :mod:`gmbook.score` and the claims of the chapter *Score matching and denoising*."""

from __future__ import annotations

import math

import pytest
import torch

from gmbook.data import TwoMoons
from gmbook.densities import GaussianMixture
from gmbook.nets import MLP
from gmbook.samplers import Prediction, SamplePath, VEPath, langevin_corrector
from gmbook.score import (
    NCSN,
    annealed_langevin,
    denoising_score_matching,
    divergence,
    explicit_score_matching,
    geometric_sigmas,
    implicit_score_matching,
    langevin,
    mixture_posterior_mean,
    mixture_score,
    noised_mixture,
    sliced_score_matching,
    tweedie,
)

F64 = torch.float64


class LinearScore(torch.nn.Module):
    r"""The score of a Gaussian model, :math:`s(x) = -P (x - m)`."""

    def __init__(self, p: torch.Tensor, m: torch.Tensor) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(p.clone())
        self.m = torch.nn.Parameter(m.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x - self.m) @ self.p.T


def _gaussian(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return torch.randn(d, generator=g, dtype=F64), a @ a.T / d + 0.5 * torch.eye(d, dtype=F64)


def _small_mixture() -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]], dtype=F64)
    covs = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]]), 0.5 * torch.eye(2),
                        torch.tensor([[0.6, -0.2], [-0.2, 0.4]])]).to(F64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=F64), means, covs)


# ------------------------------------------------------------------ ISM = ESM + constant


def _ism_closed_form(p, m, mu, cov):
    r""":math:`J_\mathrm{ISM} = -\operatorname{tr} P + \tfrac12 \operatorname{tr}(P \Sigma P^\top)
    + \tfrac12 \|P(\mu - m)\|^2` for :math:`s = -P(x - m)`, by hand."""
    d = p @ (mu - m)
    return -torch.trace(p) + 0.5 * torch.trace(p @ cov @ p.T) + 0.5 * d @ d


def _esm_closed_form(p, m, mu, cov):
    r""":math:`\tfrac12 \mathbb E\|-P(x - m) + \Sigma^{-1}(x - \mu)\|^2` for
    :math:`x \sim \mathcal N(\mu, \Sigma)`, by hand: the error is affine in :math:`x`."""
    prec = torch.linalg.inv(cov)
    a = prec - p  # error = a (x - mu) + P (m - mu)
    b = p @ (m - mu)
    return 0.5 * torch.trace(a @ cov @ a.T) + 0.5 * b @ b


def test_ism_and_esm_differ_by_a_constant_gaussian():
    r"""thm-sm-ism, eq-sm-ism: for Gaussian data and a Gaussian model, ISM - ESM is the same
    constant :math:`-\tfrac12 \mathbb E\|\nabla \log p\|^2 = -\tfrac12 \operatorname{tr}
    \Sigma^{-1}` for every parameter; checked on the package's Monte Carlo estimators with a
    large sample and on closed forms."""
    mu, cov = _gaussian(3, 1)
    const = -0.5 * torch.trace(torch.linalg.inv(cov))
    x = torch.distributions.MultivariateNormal(mu, cov).sample((200_000,))
    true = LinearScore(torch.linalg.inv(cov), mu)
    g = torch.Generator().manual_seed(3)
    diffs = []
    for _ in range(4):
        p = torch.randn(3, 3, generator=g, dtype=F64)
        m = torch.randn(3, generator=g, dtype=F64)
        model = LinearScore(p, m)
        closed = _ism_closed_form(p, m, mu, cov) - _esm_closed_form(p, m, mu, cov)
        torch.testing.assert_close(closed, const, rtol=1e-10, atol=1e-10)
        with torch.no_grad():
            esm = explicit_score_matching(model, x, true)
        ism = implicit_score_matching(model, x).detach()
        diffs.append(float(ism - esm))
        torch.testing.assert_close(ism, _ism_closed_form(p, m, mu, cov), rtol=0.03, atol=0.03)
    assert max(diffs) - min(diffs) < 0.05 * abs(float(const)) + 0.05
    assert abs(sum(diffs) / 4 - float(const)) < 0.05


def test_ism_is_minimised_by_the_gaussian_fit():
    r"""thm-sm-ism (exercise sm-ex-gaussian): for the linear score model :math:`s = -P(x - m)`
    the package's empirical ISM objective is stationary exactly at the Gaussian fit of the
    sample, :math:`m = \bar x`, :math:`P = \hat\Sigma^{-1}` (divisor ``n``), and not at the
    population parameters or at a rescaled precision."""
    mu, cov = _gaussian(2, 2)
    x = torch.distributions.MultivariateNormal(mu, cov).sample((500,))
    mean = x.mean(0)
    emp_cov = (x - mean).T @ (x - mean) / len(x)

    def grads(p, m):
        model = LinearScore(p, m)
        implicit_score_matching(model, x).backward()
        return model.p.grad, model.m.grad

    gp, gm = grads(torch.linalg.inv(emp_cov), mean)
    assert gp.abs().max() < 1e-10 and gm.abs().max() < 1e-10
    gp, gm = grads(torch.linalg.inv(cov), mu)  # population values: off by sampling error
    assert max(gp.abs().max(), gm.abs().max()) > 1e-3
    gp, _ = grads(1.3 * torch.linalg.inv(emp_cov), mean)
    assert gp.abs().max() > 0.1


def test_ism_trace_matches_autograd_jacobian():
    r"""eq-sm-ism: the trace term of an MLP score is the trace of its autograd Jacobian."""
    net = MLP(3, hidden=16, depth=2).double()
    x = torch.randn(5, 3, dtype=F64)
    ism = implicit_score_matching(net, x)
    jac = torch.stack([torch.autograd.functional.jacobian(net, xi[None])[0, :, 0] for xi in x])
    expected = (torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1)
                + 0.5 * net(x).pow(2).sum(-1)).mean()
    torch.testing.assert_close(ism, expected)


# --------------------------------------------------------------------------- sliced SM


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("vr", [True, False])
def test_sliced_estimator_is_unbiased_for_the_trace(distribution, vr):
    r"""eq-sm-hutchinson, eq-sm-ssm: averaged over many directions, the sliced objective
    equals the implicit one (Monte Carlo, tolerance of 5 standard errors)."""
    net = MLP(4, hidden=16, depth=2).double()
    x = torch.randn(8, 4, dtype=F64)
    ism = float(implicit_score_matching(net, x).detach())
    g = torch.Generator().manual_seed(0)
    vals = torch.tensor([
        float(sliced_score_matching(net, x, projections=1, distribution=distribution,
                                    variance_reduction=vr, generator=g).detach())
        for _ in range(2000)
    ])
    se = float(vals.std()) / math.sqrt(len(vals))
    assert abs(float(vals.mean()) - ism) < 5 * se + 1e-12
    assert se > 0  # the estimator is random


def test_sliced_many_projections_is_close_and_differentiable():
    r"""eq-sm-ssm: with many projections the estimate approaches ISM, and gradients flow."""
    net = MLP(2, hidden=16, depth=2).double()
    x = torch.randn(16, 2, dtype=F64)
    ism = implicit_score_matching(net, x)
    ssm = sliced_score_matching(net, x, projections=4000,
                                generator=torch.Generator().manual_seed(1))
    assert abs(float((ssm - ism).detach())) < 0.05 * abs(float(ism.detach())) + 0.05
    ssm.backward()
    assert all(p.grad is not None for p in net.parameters())


# ------------------------------------------------------------------------- DSM, Tweedie


def test_dsm_is_minimised_by_the_noised_score_mixture():
    r"""thm-sm-dsm, eq-sm-dsm: on a Gaussian mixture the DSM objective of the exact noised
    score (closed form, eq-sm-mixture-score) is lower than that of perturbed scores, and
    DSM - ESM(noised) is the same constant for all of them (Monte Carlo)."""
    gmm = _small_mixture()
    sigma = 0.5
    noisy = noised_mixture(gmm, sigma)
    x = gmm.sample(400_000, generator=torch.Generator().manual_seed(0))

    def exact(z):
        return mixture_score(noisy, z)

    candidates = {"exact": exact, "scaled": lambda z: 1.2 * exact(z),
                  "shifted": lambda z: exact(z) + torch.tensor([0.3, -0.2], dtype=F64)}
    dsm, gaps = {}, {}
    for name, s in candidates.items():
        g = torch.Generator().manual_seed(5)  # common random numbers
        dsm[name] = float(denoising_score_matching(s, x, sigma, generator=g))
        xn = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(5),
                                     dtype=F64)
        gaps[name] = dsm[name] - float(explicit_score_matching(s, xn, exact))
    assert dsm["exact"] < dsm["scaled"] - 0.01
    assert dsm["exact"] < dsm["shifted"] - 0.01
    spread = max(gaps.values()) - min(gaps.values())
    assert spread < 0.02 * abs(gaps["exact"]) + 0.01


def test_mixture_score_matches_autograd():
    r"""eq-sm-mixture-score: the closed form equals autograd of the mixture's log-density."""
    gmm = _small_mixture()
    x = torch.randn(50, 2, dtype=F64).requires_grad_(True)
    (g,) = torch.autograd.grad(gmm.log_prob(x).sum(), x)
    torch.testing.assert_close(mixture_score(gmm, x.detach()), g)


def test_two_moons_mixture_is_the_density():
    r"""The explicit mixture of ``TwoMoons.mixture`` is the density of ``log_prob``, for
    equal and unequal moon weights; its score matches autograd of ``log_prob``."""
    for upper in (0.5, 0.8):
        moons = TwoMoons(upper=upper)
        w, mu, var = moons.mixture()
        gmm = GaussianMixture(w, mu, torch.diag_embed(var))
        x = moons.sample(300, dtype=F64, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(gmm.log_prob(x), moons.log_prob(x), rtol=1e-9, atol=1e-9)
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(moons.log_prob(xg).sum(), xg)
        torch.testing.assert_close(mixture_score(gmm, x), g, rtol=1e-7, atol=1e-7)


def test_unequal_moons_sample_their_weights():
    r"""``TwoMoons(upper=0.8)`` puts 80% of its points on the upper moon."""
    moons = TwoMoons(upper=0.8)
    x, y = moons.sample_with_labels(20_000, generator=torch.Generator().manual_seed(0))
    frac = float((y == 0).double().mean())
    assert abs(frac - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 20_000)
    assert abs(float((moons.nearest_moon(x) == 0).double().mean()) - 0.8) < 0.02
    with pytest.raises(ValueError, match="upper"):
        TwoMoons(upper=1.0)


def test_tweedie_is_the_exact_posterior_mean_gaussian():
    r"""eq-sm-tweedie: for Gaussian data :math:`\mathcal N(\mu, \Sigma)` Tweedie's formula with
    the exact noised score gives the Gaussian posterior mean
    :math:`\mu + \Sigma(\Sigma + \sigma^2 I)^{-1}(\tilde x - \mu)`, computed by conditioning
    the joint Gaussian of :math:`(x, \tilde x)`."""
    from gmbook.probability import gaussian_conditional

    mu, cov = _gaussian(3, 4)
    sigma = 0.7
    eye = torch.eye(3, dtype=F64)
    joint_mean = torch.cat([mu, mu])
    joint_cov = torch.cat([torch.cat([cov, cov], 1), torch.cat([cov, cov + sigma**2 * eye], 1)])
    xt = torch.randn(6, 3, dtype=F64)
    noisy_score = -(xt - mu) @ torch.linalg.inv(cov + sigma**2 * eye)
    got = tweedie(xt, noisy_score, sigma)
    for i in range(6):
        values = torch.cat([torch.full((3,), float("nan"), dtype=F64), xt[i]])
        mean, _ = gaussian_conditional(joint_mean, joint_cov, [3, 4, 5], values[3:])
        torch.testing.assert_close(got[i], mean)


def test_tweedie_on_a_mixture_matches_bayes():
    r"""eq-sm-tweedie: on a Gaussian mixture, Tweedie with the exact noised score equals the
    posterior mean computed component by component with Bayes' rule, and a Monte Carlo
    estimate of :math:`\mathbb E[x \mid \tilde x]` from the joint sample."""
    gmm = _small_mixture()
    sigma = 0.8
    xt = torch.randn(40, 2, dtype=F64)
    tw = tweedie(xt, mixture_score(noised_mixture(gmm, sigma), xt), sigma)
    torch.testing.assert_close(tw, mixture_posterior_mean(gmm, xt, sigma))
    # Monte Carlo: average x over joint samples whose noisy point falls near a query point
    x = gmm.sample(400_000, generator=torch.Generator().manual_seed(1))
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(2),
                                    dtype=F64)
    q = torch.tensor([[0.0, 0.0]], dtype=F64)
    near = (noisy - q).norm(dim=1) < 0.05
    mc = x[near].mean(0)
    se = x[near].std(0) / math.sqrt(int(near.sum()))
    exact = mixture_posterior_mean(gmm, q, sigma)[0]
    assert ((mc - exact).abs() < 5 * se + 0.01).all()


def test_tweedie_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        tweedie(torch.zeros(3, 2), torch.zeros(3, 3), 0.5)
    with pytest.raises(ValueError, match="> 0"):
        tweedie(torch.zeros(3, 2), torch.zeros(3, 2), -1.0)


# ---------------------------------------------------------------- Langevin and annealing


def test_langevin_with_exact_score_samples_a_gaussian():
    r"""eq-sm-langevin: Langevin with a Gaussian's score reaches it (up to the ULA bias)."""
    prec = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    mu = torch.tensor([1.0, -1.0], dtype=F64)
    x = langevin(lambda z: -(z - mu) @ prec, torch.zeros(20_000, 2, dtype=F64), 1500, 0.01,
                 generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), mu, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), torch.linalg.inv(prec), atol=0.05, rtol=0)


def test_annealed_langevin_recovers_unequal_weights():
    r"""eq-sm-annealed: on a 1-D mixture with weights 0.8/0.2 and modes far apart, plain
    Langevin with the exact score keeps the starting split (0.5), annealed Langevin with the
    exact noised scores recovers the weights."""
    means = torch.tensor([[-4.0], [4.0]], dtype=F64)
    gmm = GaussianMixture(torch.tensor([0.8, 0.2], dtype=F64), means,
                          torch.full((2, 1, 1), 0.25, dtype=F64))
    g = torch.Generator().manual_seed(0)
    x0 = 8 * torch.rand(4000, 1, generator=g, dtype=F64) - 4
    plain = langevin(lambda z: mixture_score(gmm, z), x0, 500, 0.01, generator=g)
    assert abs(float((plain < 0).double().mean()) - 0.5) < 0.05
    sigmas = geometric_sigmas(10.0, 0.05, 10)
    levels = [noised_mixture(gmm, float(s)) for s in sigmas]
    x0 = 10 * torch.randn(4000, 1, generator=g, dtype=F64)
    out = annealed_langevin(lambda z, i: mixture_score(levels[i], z), x0, sigmas,
                            steps_per_level=100, eps=1e-3, generator=g, return_path=True)
    assert isinstance(out, SamplePath) and out.states.shape == (11, 4000, 1)
    assert out.nfe == 10 * 100 + 1 and torch.equal(out.states[-1], out.samples)
    assert abs(float((out.samples < 0).double().mean()) - 0.8) < 0.03


def test_geometric_sigmas():
    r"""eq-sm-ladder: decreasing, constant ratio, right ends."""
    s = geometric_sigmas(4.0, 0.01, 7)
    assert s.dtype == F64 and s.shape == (7,)
    torch.testing.assert_close(s[[0, -1]], torch.tensor([4.0, 0.01], dtype=F64))
    ratio = s[:-1] / s[1:]
    torch.testing.assert_close(ratio, ratio[0].expand(6))
    with pytest.raises(ValueError):
        geometric_sigmas(0.1, 1.0, 5)


class _ExactNoisePredictor(torch.nn.Module):
    r"""The optimal NCSN network for a Gaussian mixture: :math:`f(\tilde x, t) =
    -\mathbb E[\varepsilon \mid \tilde x] = (\mathbb E[x \mid \tilde x] - \tilde x)/\sigma`,
    from the exact posterior mean (Bayes' rule per component), with :math:`\sigma` decoded
    from the NCSN time :math:`t = \log(\sigma_1/\sigma) / \log(\sigma_1/\sigma_L)`."""

    def __init__(self, gmm: GaussianMixture, sigmas: torch.Tensor) -> None:
        super().__init__()
        self.gmm, self.top, self.bottom = gmm, float(sigmas[0]), float(sigmas[-1])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        sigma = self.top * (self.bottom / self.top) ** float(t[0])
        assert torch.allclose(t, t[0].expand_as(t))  # one level per call in this test
        return (mixture_posterior_mean(self.gmm, x, sigma) - x) / sigma


def test_ncsn_score_of_the_exact_noise_predictor_is_the_noised_score():
    r"""eq-sm-ncsn-loss, eq-sm-tweedie: with the exact optimal network (it predicts
    :math:`-\mathbb E[\varepsilon \mid \tilde x]`), ``NCSN.score`` at every level equals the
    exact score of the noised mixture (eq-sm-mixture-score on :math:`p_{\sigma_i}`); a wrong
    power of sigma or a wrong time map fails it."""
    gmm = _small_mixture()
    sigmas = geometric_sigmas(3.0, 0.2, 5)
    model = NCSN(_ExactNoisePredictor(gmm, sigmas), sigmas, dim=2).double()
    x = 2 * torch.randn(64, 2, dtype=F64)
    for level in range(5):
        exact = mixture_score(noised_mixture(gmm, float(sigmas[level])), x)
        torch.testing.assert_close(model.score(x, level), exact, rtol=1e-6, atol=1e-8)


def test_ncsn_contract_and_loss_scale():
    r"""eq-sm-ncsn-loss: an untrained NCSN with zero output has loss :math:`D/2` (the
    :math:`\sigma^2`-weighted DSM puts every level on the scale of unit noise); a level given
    per point agrees with the same level given once; sample has the right shape and is
    reproducible."""
    net = MLP(2, hidden=16, time_dim=8, zero_init_last=True)
    model = NCSN(net, geometric_sigmas(3.0, 0.05, 5), dim=2)
    x = torch.randn(20_000, 2)
    assert abs(float(model.loss(x).detach()) - 1.0) < 0.03
    torch.nn.init.normal_(net.out.weight)
    z = torch.randn(4, 2)
    torch.testing.assert_close(model.score(z, torch.full((4,), 2)), model.score(z, 2))
    assert not torch.allclose(model.score(z, 1), model.score(z, 2))
    torch.testing.assert_close(model.prediction().score(z, model.sigmas[2]), model.score(z, 2))
    a = model.sample(3, steps_per_level=2, generator=torch.Generator().manual_seed(0))
    b = model.sample(3, steps_per_level=2, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 2) and torch.equal(a, b)
    with pytest.raises(ValueError, match="decreasing"):
        NCSN(net, [0.1, 1.0], dim=2)


def test_argument_errors():
    net = MLP(2, hidden=8)
    with pytest.raises(TypeError, match="callable"):
        implicit_score_matching("net", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        denoising_score_matching(net, torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match="same shape"):
        explicit_score_matching(lambda z: z[:, :1], torch.zeros(3, 2), net)
    with pytest.raises(ValueError, match="rademacher"):
        sliced_score_matching(net, torch.zeros(3, 2), distribution="uniform")
    with pytest.raises(ValueError, match="sigma"):
        denoising_score_matching(net, torch.zeros(3, 2), torch.ones(4))
    with pytest.raises(ValueError, match="decreasing"):
        annealed_langevin(lambda z, i: z, torch.zeros(3, 2), [0.1, 0.5])
    with pytest.raises(TypeError, match="GaussianMixture"):
        mixture_score("gmm", torch.zeros(3, 2))
    with pytest.raises(ValueError, match="same shape"):
        divergence(torch.zeros(3, 1), torch.zeros(3, 2))


def test_ncsn_sample_is_annealed_langevin_by_hand():
    r"""eq-sm-annealed, eq-sm-tweedie: ``NCSN.sample`` (through
    :func:`gmbook.samplers.annealed_langevin`) equals a hand-written loop of the annealed
    update with the same random stream: start :math:`\sqrt{1 + \sigma_1^2}\, z`, then
    :math:`x + \alpha_i s(x, \sigma_i) + \sqrt{2\alpha_i}\, \xi` with :math:`\alpha_i =
    \epsilon \sigma_i^2 / \sigma_L^2`, then :math:`x + \sigma_L^2 s(x, \sigma_L)`; a wrong
    step-size power, noise scale or Tweedie step fails it."""
    torch.manual_seed(1)
    model = NCSN(MLP(2, hidden=16, depth=2, time_dim=8), geometric_sigmas(2.0, 0.1, 4), dim=2)
    model.requires_grad_(False)
    steps, eps = 5, 1e-2
    path = model.sample(50, steps_per_level=steps, eps=eps, return_path=True,
                        generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    sig = [float(s) for s in model.sigmas]
    x = torch.randn(50, 2, generator=g) * math.sqrt(1 + sig[0] ** 2)
    ends = []
    for i, s in enumerate(sig):
        alpha = eps * s**2 / sig[-1] ** 2
        for _ in range(steps):
            x = x + alpha * model.score(x, i) + math.sqrt(2 * alpha) * torch.randn(
                x.shape, generator=g)
        ends.append(x)
    x = x + sig[-1] ** 2 * model.score(x, len(sig) - 1)
    torch.testing.assert_close(path.samples, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(path.states[:-1], torch.stack(ends), rtol=1e-5, atol=1e-5)
    assert path.nfe == 4 * steps + 1 and path.times.shape == (5,) and path.times[-1] == 0
    torch.testing.assert_close(path.times[:-1], model.sigmas.double())
    plain = model.sample(50, steps_per_level=steps, eps=eps, denoise=False,
                         generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(plain, torch.stack(ends)[-1], rtol=1e-5, atol=1e-5)


def test_ncsn_loss_takes_a_generator():
    r"""eq-sm-ncsn-loss: the loss draws its levels and noise from ``generator``
    (reproducible, and different from another seed)."""
    model = NCSN(MLP(2, hidden=16, time_dim=8), geometric_sigmas(3.0, 0.05, 5), dim=2)
    x = torch.randn(64, 2)
    a, b, c = (model.loss(x, generator=torch.Generator().manual_seed(k)) for k in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_langevin_corrector_keeps_the_noised_gaussian():
    r"""eq-sm-langevin on :math:`p_t`: with the exact noise prediction of Gaussian data
    :math:`\mathcal N(m, s^2)` on the VE path, the corrector at :math:`t = \sigma` leaves
    :math:`\mathcal N(m, s^2 + \sigma^2)` invariant (up to the ULA bias of a small step), and
    moves a wrong start (:math:`\mathcal N(0, 1)`) there."""
    m, s, sigma = 1.5, 0.5, 0.8
    var = s**2 + sigma**2

    def eps_hat(x, t):  # E[eps | x_t] = sigma (x - m) / (s^2 + sigma^2)
        t = t.reshape(-1, 1)
        return t * (x - m) / (s**2 + t**2)

    pred = Prediction(eps_hat, "eps", VEPath(5.0))
    x = torch.randn(20_000, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = langevin_corrector(pred, x, sigma, steps=400, step_size=0.02,
                             generator=torch.Generator().manual_seed(1), return_path=True)
    assert out.nfe == 400 and out.states.shape == (401, 20_000, 1)
    assert abs(float(out.samples.mean()) - m) < 0.03
    assert abs(float(out.samples.var()) - var) < 0.03
    with pytest.raises(ValueError, match="one time"):
        langevin_corrector(pred, x, torch.tensor([0.5, 0.4]), step_size=0.1)


def test_annealed_sampler_final_step_is_the_x0_prediction():
    r"""eq-sm-tweedie: the last step of :func:`gmbook.samplers.annealed_langevin` is the
    prediction's :math:`\hat x_0` at the smallest level; with zero Langevin steps the
    sampler returns exactly Tweedie's formula applied to its start."""
    gmm = _small_mixture()
    sigmas = geometric_sigmas(2.0, 0.3, 3)
    x = torch.randn(40, 2, dtype=F64)
    out = annealed_langevin(lambda z, i: mixture_score(noised_mixture(gmm, float(sigmas[i])), z),
                            x, sigmas, steps_per_level=0)
    torch.testing.assert_close(out, mixture_posterior_mean(gmm, x, float(sigmas[-1])))
