"""Tests of gmbook.gans: the game's optimum, the losses and penalties, spectral normalization,
the Dirac-GAN's dynamics, the GAN model and its training loop, mode coverage."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gmbook.data import GaussianGrid
from gmbook.gans import (GAN, SNLinear, clip_weights, critic_loss_wgan, d_loss_bce,
                         d_loss_hinge, dirac_eigenvalues, dirac_field, dirac_jacobian,
                         dirac_max_step, dirac_trajectory, g_loss_nonsaturating,
                         g_loss_saturating, g_loss_wgan, gan_value, gradient_penalty,
                         js_divergence, mlp_gan, mode_coverage, optimal_discriminator,
                         power_iteration, r1_penalty, spectral_norm, train_gan)
from gmbook.nets import MLP
from gmbook.train import EMA

F64 = torch.float64
LOG4 = math.log(4.0)


def normal_logpdf(mean: float, std: float):
    dist = torch.distributions.Normal(torch.tensor(mean, dtype=F64), torch.tensor(std, dtype=F64))
    return dist.log_prob


def mixture_1d():
    """q = 0.5 N(-2, 0.7^2) + 0.5 N(1.5, 0.5^2): its log-density and a sampler."""
    means, stds = torch.tensor([-2.0, 1.5], dtype=F64), torch.tensor([0.7, 0.5], dtype=F64)
    comp = torch.distributions.Normal(means, stds)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(2, dtype=F64)), comp)
    return mix.log_prob, mix.sample


# --------------------------------------------------------------------------- the optimum


def test_value_at_the_optimal_discriminator_is_twice_js_minus_log4():
    """[thm-gan-optimal-d] [eq-gan-optimal-d] [eq-gan-value] [eq-gan-js] With p = N(0, 1) and q
    a two-component mixture, the Monte Carlo value V(D*, G) of the optimal discriminator D* = p
    / (p + q) equals 2 JS(p, q) - log 4 with JS by quadrature, within 4 standard errors (about
    0.002; JS - log 4 or 2 JS - log 2 would miss by 0.3 or more). Any other discriminator
    (shifted or scaled logits) has a smaller value on the same samples."""
    log_p = normal_logpdf(0.0, 1.0)
    log_q, sample_q = mixture_1d()
    n = 200_000
    x_real = torch.randn(n, dtype=F64)
    x_fake = sample_q((n,))
    logit_real = log_p(x_real) - log_q(x_real)
    logit_fake = log_p(x_fake) - log_q(x_fake)
    value = float(gan_value(logit_real, logit_fake))
    terms = torch.cat([-torch.nn.functional.softplus(-logit_real),
                       -torch.nn.functional.softplus(logit_fake)])
    se = math.sqrt(float(terms[:n].var() + terms[n:].var()) / n)
    js = js_divergence(log_p, log_q, -12.0, 12.0)
    assert 0.2 < js < math.log(2) - 0.1  # a middle value: the test can tell the constants
    assert abs(value - (2 * js - LOG4)) < 4 * se, (value, 2 * js - LOG4, se)
    for change in (lambda t: t + 0.5, lambda t: t - 0.5, lambda t: 1.5 * t, lambda t: 0.5 * t):
        assert float(gan_value(change(logit_real), change(logit_fake))) < value
    # D* itself: p / (p + q), between 0 and 1
    x = torch.linspace(-4, 4, 101, dtype=F64)
    d_star = optimal_discriminator(log_p(x), log_q(x))
    torch.testing.assert_close(d_star, log_p(x).exp() / (log_p(x).exp() + log_q(x).exp()))


def test_js_divergence_by_quadrature_limits():
    """[thm-gan-optimal-d] [eq-gan-js] JS(p, p) = 0; JS of two Gaussians 40 standard deviations
    apart is log 2 (disjoint supports: the saturation of the original GAN); JS is symmetric, and
    equals the closed form for two uniforms U(0, 1), U(0.5, 1.5): half the mass shared, JS =
    log(2) / 2."""
    p, q = normal_logpdf(0.0, 1.0), normal_logpdf(1.0, 1.0)
    assert abs(js_divergence(p, p, -10, 10)) < 1e-12
    far = normal_logpdf(40.0, 1.0)
    assert abs(js_divergence(p, far, -10, 50, nodes=40_001) - math.log(2)) < 1e-9
    assert abs(js_divergence(p, q, -10, 11) - js_divergence(q, p, -10, 11)) < 1e-12

    def uniform(a):
        return lambda x: torch.where((x >= a) & (x <= a + 1), 0.0, -math.inf).to(F64)

    js = js_divergence(uniform(0.0), uniform(0.5), -0.5, 2.0, nodes=250_001)
    assert abs(js - math.log(2) / 2) < 1e-4


def test_losses_against_torch_and_by_hand():
    """[eq-gan-value] [eq-gan-saturating] [eq-gan-nonsaturating] [eq-gan-wgan]
    [eq-gan-hinge] The discriminator's loss is torch's binary cross-entropy with labels 1 on
    data and 0 on samples; the two generator losses are E log(1 - D) and -E log D; the
    saturating one has a vanishing gradient where D rejects the samples (logit -10) and the
    non-saturating one a gradient of about -1; the hinge and WGAN losses on hand values."""
    r = torch.randn(50, 1, dtype=F64)
    f = torch.randn(70, dtype=F64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    want = bce(r.flatten(), torch.ones(50, dtype=F64)) + bce(f, torch.zeros(70, dtype=F64))
    torch.testing.assert_close(d_loss_bce(r, f), want)
    d = torch.sigmoid(f)
    torch.testing.assert_close(g_loss_saturating(f), torch.log1p(-d).mean())
    torch.testing.assert_close(g_loss_nonsaturating(f), -torch.log(d).mean())
    far = torch.full((4,), -10.0, dtype=F64, requires_grad=True)
    (g_sat,) = torch.autograd.grad(g_loss_saturating(far), far)
    (g_ns,) = torch.autograd.grad(g_loss_nonsaturating(far), far)
    assert float(g_sat.abs().max()) < 1e-5 * 1.2   # sigmoid(-10) / 4 = 1.1e-5
    torch.testing.assert_close(g_ns, torch.full_like(g_ns, -0.25), atol=2e-5, rtol=0)
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert float(d_loss_hinge(real, fake)) == pytest.approx(0.25 + 0.5)
    assert float(critic_loss_wgan(real, fake)) == pytest.approx(-1.0 - 1.25)
    assert float(g_loss_wgan(fake)) == pytest.approx(1.0)


def test_gradient_penalty_of_a_linear_critic():
    """[eq-gan-gp] For a linear critic f(x) = w.x + b the input gradient is w everywhere, so
    the penalty is (|w| - 1)^2 = 16 for w = (3, 4), whatever the interpolates, and its
    gradient in w is 2 (|w| - 1) w / |w|. For f(x) = |x|^2 / 2 (gradient x) with real = fake
    the interpolates are the points: E(|x| - 1)^2."""
    critic = nn.Linear(2, 1).double()
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.randn(64, 2, dtype=F64), 5 * torch.randn(64, 2, dtype=F64)
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gp, torch.tensor(16.0, dtype=F64))
    (grad,) = torch.autograd.grad(gp, critic.weight)
    torch.testing.assert_close(grad, torch.tensor([[2 * 4 * 3 / 5, 2 * 4 * 4 / 5]], dtype=F64))

    def quadratic(x):
        return 0.5 * x.square().sum(1)

    want = ((real.norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gradient_penalty(quadratic, real, real), want)


def test_r1_penalty_of_linear_and_quadratic_discriminators():
    """[eq-gan-r1] R1 = E_p |grad D(x)|^2: |w|^2 = 25 for a linear D with w = (3, 4), and
    a^2 E|x|^2 for D(x) = a |x|^2 / 2."""
    lin = nn.Linear(2, 1).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
    x = torch.randn(128, 2, dtype=F64)
    torch.testing.assert_close(r1_penalty(lin, x), torch.tensor(25.0, dtype=F64))
    a = 0.7
    torch.testing.assert_close(r1_penalty(lambda y: 0.5 * a * y.square().sum(1), x),
                               a**2 * x.square().sum(1).mean())


def test_clip_weights():
    """[eq-gan-clip] Every parameter is clamped to [-c, c]; those inside are unchanged."""
    net = MLP(2, 1, hidden=8, depth=2)
    before = [p.detach().clone() for p in net.parameters()]
    clip_weights(net, 0.05)
    for b, p in zip(before, net.parameters()):
        torch.testing.assert_close(p, b.clamp(-0.05, 0.05))
        assert p.abs().max() <= 0.05


# --------------------------------------------------------------------------- spectral norm


def matrix_with_singular_values(s: list[float], m: int, n: int) -> torch.Tensor:
    u, _ = torch.linalg.qr(torch.randn(m, m, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64))
    k = len(s)
    return u[:, :k] @ torch.diag(torch.tensor(s, dtype=F64)) @ v[:, :k].t()


def test_power_iteration_converges_at_the_rate_of_the_gap():
    """[prop-gan-power] [eq-gan-power-iteration] sigma_hat <= sigma_1 at every iteration, and
    the error sigma_1 - sigma_hat_k falls by (sigma_2 / sigma_1)^4 per iteration (0.8^4 = 0.41
    here; a rate (sigma_2 / sigma_1)^2 = 0.64 would fail), reaching
    torch.linalg.matrix_norm(ord=2) to 1e-12."""
    s = [3.0, 2.4, 1.0, 0.5, 0.1]
    w = matrix_with_singular_values(s, 12, 7)
    sigma1 = float(torch.linalg.matrix_norm(w, ord=2))
    assert sigma1 == pytest.approx(3.0, abs=1e-12)
    u0 = torch.randn(12, dtype=F64)
    errors = []
    for k in range(1, 41):
        sigma, u, v = power_iteration(w, u0, k)
        assert float(sigma) <= sigma1 + 1e-12
        errors.append(sigma1 - float(sigma))
        torch.testing.assert_close(u.norm(), torch.tensor(1.0, dtype=F64))
    rates = [errors[k + 1] / errors[k] for k in range(12, 20)]
    for rate in rates:
        assert rate == pytest.approx(0.8**4, rel=0.02)
    assert abs(errors[-1]) < 1e-12


def test_sn_linear_tracks_the_largest_singular_value_across_steps():
    """[eq-gan-sn] [eq-gan-power-iteration] One iteration per training pass with a
    persistent u: after 60 passes the normalized weight has spectral norm 1 to 1e-6; in eval
    mode u does not move; the gradient reaches the weight; a leaky-ReLU MLP with spectral
    normalization has input gradients of norm at most 1; :func:`spectral_norm` keeps the
    function up to the per-layer scales."""
    torch.manual_seed(1)
    layer = SNLinear(16, 32, generator=torch.Generator().manual_seed(0)).double()
    x = torch.randn(5, 16, dtype=F64)
    for _ in range(60):
        layer(x)
    w_sn = layer.weight / layer.sigma()
    assert float(torch.linalg.matrix_norm(w_sn.detach(), ord=2)) == pytest.approx(1.0, abs=1e-6)
    layer.eval()
    u = layer.u.clone()
    layer(x)
    assert torch.equal(layer.u, u)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0

    net = MLP(2, 1, hidden=32, depth=3, activation=lambda: nn.LeakyReLU(0.2)).double()
    linears = sum(isinstance(m, nn.Linear) for m in net.modules())
    spectral_norm(net, generator=torch.Generator().manual_seed(0))
    assert sum(isinstance(m, SNLinear) for m in net.modules()) == linears == 4
    assert not any(isinstance(m, nn.Linear) for m in net.modules())
    for _ in range(100):
        net(torch.randn(8, 2, dtype=F64))
    net.eval()
    y = (3 * torch.randn(500, 2, dtype=F64)).requires_grad_(True)
    (g,) = torch.autograd.grad(net(y).sum(), y)
    assert float(g.norm(dim=1).max()) <= 1 + 1e-6


# --------------------------------------------------------------------------- Dirac-GAN


@pytest.mark.parametrize("loss", ["gan", "wgan"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.5])
def test_dirac_jacobian_and_eigenvalues_match_autograd(loss, gamma):
    """[eq-gan-dirac-field] [eq-gan-dirac-jacobian] [eq-gan-dirac-updates] The autograd
    Jacobian of the vector field at (0, 0) is the closed form; the closed-form eigenvalues of
    the flow are its eigenvalues; those of the simultaneous and alternating updates are the
    eigenvalues of the one-step maps of dirac_trajectory, differentiated by finite
    differences (the map is linear to first order)."""
    def field(w):
        return torch.stack(dirac_field(w[0], w[1], loss=loss, gamma=gamma))

    jac = torch.autograd.functional.jacobian(field, torch.zeros(2, dtype=F64))
    torch.testing.assert_close(jac, dirac_jacobian(loss=loss, gamma=gamma))

    def close(a, b, tol):
        a = sorted(a.tolist(), key=lambda z: (round(z.real, 6), z.imag))
        b = sorted(b.tolist(), key=lambda z: (round(z.real, 6), z.imag))
        assert all(abs(x - y) < tol for x, y in zip(a, b)), (a, b)

    close(torch.linalg.eigvals(jac), dirac_eigenvalues(loss=loss, gamma=gamma), 1e-12)
    eps, h = 1e-7, 0.3
    for scheme in ("simultaneous", "alternating"):
        cols = [dirac_trajectory(eps * e0, eps * e1, h=h, steps=1, scheme=scheme, loss=loss,
                                 gamma=gamma)[1] / eps for e0, e1 in ((1, 0), (0, 1))]
        step = torch.stack(cols, dim=1)  # (2, 2): the linearised one-step map
        close(torch.linalg.eigvals(step), dirac_eigenvalues(loss=loss, gamma=gamma,
                                                            scheme=scheme, h=h), 1e-6)


def test_dirac_field_is_the_games_gradient_in_the_chapters_sign_convention():
    """[eq-gan-dirac-field] [eq-gan-value] The field follows Mescheder et al.'s sign: with
    the chapter's convention (a logit that scores data), the Dirac-GAN's logit is -psi * x,
    and the field is (-dV/dtheta, dV/dpsi - gamma psi) for the package's gan_value of the
    data logit -psi * 0 and the sample logit -psi * theta."""
    g = torch.Generator().manual_seed(3)
    gamma = 0.3
    for theta0, psi0 in (3 * torch.randn(8, 2, generator=g, dtype=F64)).tolist():
        theta = torch.tensor(theta0, dtype=F64, requires_grad=True)
        psi = torch.tensor(psi0, dtype=F64, requires_grad=True)
        value = gan_value((-psi * 0.0).reshape(1), (-psi * theta).reshape(1))
        d_theta, d_psi = torch.autograd.grad(value, (theta, psi))
        v_theta, v_psi = dirac_field(theta.detach(), psi.detach(), gamma=gamma)
        torch.testing.assert_close(v_theta, -d_theta, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(v_psi, d_psi - gamma * psi.detach(), rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("loss", ["gan", "wgan"])
def test_dirac_field_turns_around_the_equilibrium(loss):
    """[eq-gan-dirac-field] (fig-gan-dirac-field) Without R1 the field is orthogonal to
    (theta, psi) at every point, so the continuous flow conserves theta^2 + psi^2 for any f,
    and one simultaneous step multiplies theta^2 + psi^2 by 1 + h^2 f'(psi theta)^2 exactly;
    R1 adds the inward component -gamma psi^2 to (theta, psi) . v."""
    g = torch.Generator().manual_seed(4)
    w = 3 * torch.randn(2, 50, generator=g, dtype=F64)
    v_theta, v_psi = dirac_field(w[0], w[1], loss=loss)
    radial = w[0] * v_theta + w[1] * v_psi
    assert radial.abs().max() < 1e-12 * (1 + w.square().sum(0)).max()
    v_theta, v_psi = dirac_field(w[0], w[1], loss=loss, gamma=0.3)
    torch.testing.assert_close(w[0] * v_theta + w[1] * v_psi, -0.3 * w[1] ** 2)
    h = 0.4
    for theta0, psi0 in w.T[:10].tolist():
        step = dirac_trajectory(theta0, psi0, h=h, steps=1, loss=loss)
        fprime = math.exp(-math.log1p(math.exp(psi0 * theta0))) if loss == "gan" else 1.0
        ratio = step[1].square().sum() / step[0].square().sum()
        assert abs(ratio.item() - (1 + h**2 * fprime**2)) < 1e-10


def test_dirac_simultaneous_gd_diverges_and_alternating_circles():
    """[prop-gan-dirac] [eq-gan-dirac-updates] Without R1, simultaneous gradient play moves away
    from the equilibrium at every step size, at the rate of its eigenvalues' modulus sqrt(1 +
    h^2 a^2) near it; alternating play stays on an orbit (eigenvalues of modulus 1): after 2000
    steps it is neither nearer than half nor farther than twice its start."""
    a = 0.5
    for h in (0.05, 0.2, 1.0):
        traj = dirac_trajectory(1e-3, 0.0, h=h, steps=200, scheme="simultaneous")
        r = traj.norm(dim=1)
        assert bool((r[1:] > r[:-1]).all())
        modulus = float(dirac_eigenvalues(scheme="simultaneous", h=h).abs()[0])
        assert modulus == pytest.approx(math.sqrt(1 + h**2 * a**2), rel=1e-12)
        assert float(r[20] / r[0]) == pytest.approx(modulus**20, rel=1e-3)
    traj = dirac_trajectory(0.5, 0.0, h=0.2, steps=2000, scheme="alternating")
    r = traj.norm(dim=1)
    assert 0.25 < float(r.min()) and float(r.max()) < 1.0
    assert torch.allclose(dirac_eigenvalues(scheme="alternating", h=0.2).abs(),
                          torch.ones(2, dtype=F64))


@pytest.mark.parametrize("gamma", [0.3, 1.5])
def test_dirac_r1_converges_below_the_step_the_eigenvalues_allow(gamma):
    """[prop-gan-dirac] [eq-gan-dirac-updates] [eq-gan-r1] With R1 the simultaneous updates
    converge to the equilibrium for h = 0.9 h_max and leave its neighbourhood for h = 1.1 h_max,
    with h_max from the eigenvalues (gamma / a^2 = 1.2 for gamma = 0.3 < 2a; 2 / |lambda_-| for
    gamma = 1.5 > 2a: 1.53); at h_max an eigenvalue has modulus 1."""
    h_max = dirac_max_step(gamma=gamma)
    want = 1.2 if gamma == 0.3 else 4 / (1.5 + math.sqrt(1.25))
    assert h_max == pytest.approx(want, rel=1e-12)
    assert float(dirac_eigenvalues(gamma=gamma, scheme="simultaneous", h=h_max).abs().max()) \
        == pytest.approx(1.0, abs=1e-12)
    ok = dirac_trajectory(0.3, 0.2, h=0.9 * h_max, steps=1500, gamma=gamma)
    assert float(ok[-1].norm()) < 1e-6
    bad = dirac_trajectory(1e-4, 1e-4, h=1.1 * h_max, steps=1500, gamma=gamma)
    r = bad.norm(dim=1).nan_to_num(nan=math.inf)  # it may overflow
    assert float(r.max()) > 1e-2
    assert dirac_max_step(gamma=0.0) == 0.0


@pytest.mark.parametrize("loss", ["gan", "wgan"])
def test_dirac_alternating_r1_converges_iff_the_jury_condition_holds(loss):
    """[prop-gan-dirac] (item 4) [eq-gan-dirac-updates] With R1 (gamma > 0), alternating
    updates converge locally iff h^2 a^2 + 2 h gamma < 4: on a grid of gamma and h the
    package's eigenvalues have modulus < 1 exactly where the condition holds; at its root
    h_alt the largest modulus is 1; the nonlinear iterates converge at 0.9 h_alt and leave
    the equilibrium at 1.1 h_alt; h_alt > h_max iff gamma < 2a / sqrt(3)."""
    a = 0.5 if loss == "gan" else 1.0
    gammas = [0.05, 0.3, 0.55, 0.9, 1.5, 2.5]
    for gamma in gammas:
        h_alt = (math.sqrt(gamma**2 + 4 * a**2) - gamma) / a**2
        for h in torch.linspace(0.02, 2.5 * h_alt, 97, dtype=F64).tolist():
            if abs(h - h_alt) < 1e-9:
                continue
            radius = float(dirac_eigenvalues(loss=loss, gamma=gamma, scheme="alternating",
                                             h=h).abs().max())
            assert (radius < 1) == (h**2 * a**2 + 2 * h * gamma < 4), (gamma, h, radius)
        edge = dirac_eigenvalues(loss=loss, gamma=gamma, scheme="alternating", h=h_alt)
        assert float(edge.abs().max()) == pytest.approx(1.0, abs=1e-12)
        ok = dirac_trajectory(0.3, 0.2, h=0.9 * h_alt, steps=3000, scheme="alternating",
                              loss=loss, gamma=gamma)
        assert float(ok[-1].norm()) < 1e-4 * float(ok[0].norm())
        bad = dirac_trajectory(1e-4, 1e-4, h=1.1 * h_alt, steps=3000, scheme="alternating",
                               loss=loss, gamma=gamma)
        assert float(bad.norm(dim=1).nan_to_num(nan=math.inf).max()) > 1e-2
        wider = h_alt > dirac_max_step(loss=loss, gamma=gamma)
        assert wider == (gamma < 2 * a / math.sqrt(3)), (gamma, h_alt)


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("kw", [dict(loss="nonsaturating"), dict(loss="saturating"),
                                dict(loss="wgan", gp_weight=10.0), dict(loss="hinge",
                                                                         spectral=True),
                                dict(loss="nonsaturating", r1_weight=1.0)],
                         ids=["ns", "sat", "wgan-gp", "hinge-sn", "ns-r1"])
def test_gan_losses_train_the_right_player(kw):
    """[eq-gan-value] The discriminator's loss does not reach the generator (its samples are
    detached) and the generator's loss reaches the generator; sampling is reproducible with a
    generator and has the shape (n, *shape)."""
    gan = mlp_gan(latent_dim=3, hidden=16, depth=2, **kw)
    x = torch.randn(32, 2)
    gan.discriminator_loss(x, penalty_scale=2.0).backward()
    assert all(p.grad is None for p in gan.generator.parameters())
    assert any(p.grad is not None for p in gan.discriminator.parameters())
    gan.zero_grad()
    gan.generator_loss(32).backward()
    assert all(p.grad is not None for p in gan.generator.parameters())
    s1 = gan.sample(7, generator=torch.Generator().manual_seed(3))
    s2 = gan.sample(7, generator=torch.Generator().manual_seed(3))
    assert s1.shape == (7, 2) and torch.equal(s1, s2)


def test_mlp_gan_tanh_output_for_images():
    """mlp_gan(tanh=True) squashes the generator's output of the same weights into (-1, 1),
    the range of the digits (shape (n, dim) with dim = 64 for the 8x8 images)."""
    torch.manual_seed(0)
    plain = mlp_gan(dim=64, latent_dim=4, hidden=16, depth=2)
    torch.manual_seed(0)
    squashed = mlp_gan(dim=64, latent_dim=4, hidden=16, depth=2, tanh=True)
    z = 3 * torch.randn(50, 4)
    x, y = plain.sample(50, z=z), squashed.sample(50, z=z)
    assert y.shape == (50, 64) and bool((y.abs() < 1).all())
    assert x.abs().max() > 1  # the plain generator leaves the range
    torch.testing.assert_close(y, torch.tanh(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(loss="nonsaturating", r1_weight=0.5),
                                dict(loss="wgan", gp_weight=10.0)], ids=["r1", "gp"])
def test_penalty_scale_of_lazy_regularization(kw):
    """[eq-gan-r1] [eq-gan-gp] penalty_scale multiplies the penalty of the discriminator's
    loss: 0 leaves the plain loss, and the loss is affine in the scale (so that lazy
    regularization every k steps at scale k has the same mean weight)."""
    gan = mlp_gan(latent_dim=3, hidden=16, depth=2, **kw).double()
    x = torch.randn(64, 2, dtype=F64)

    def loss(scale):
        return gan.discriminator_loss(x, generator=torch.Generator().manual_seed(0),
                                      penalty_scale=scale).item()

    l0, l1, l3 = loss(0.0), loss(1.0), loss(3.0)
    assert l1 - l0 > 1e-6
    assert l3 - l0 == pytest.approx(3 * (l1 - l0), rel=1e-9)


@pytest.mark.parametrize("loss", ["nonsaturating", "wgan", "hinge"])
def test_discriminator_loss_is_the_loss_of_its_two_batches(loss):
    """[eq-gan-value] [eq-gan-wgan] [eq-gan-hinge] The discriminator's loss, computed in one
    pass over data and generated points, is the loss of the scores of the two batches taken
    separately: the data's ``x`` against ``G(z)`` for the same latents."""
    gan = mlp_gan(latent_dim=3, hidden=16, depth=2, loss=loss).double()
    x = torch.randn(40, 2, dtype=F64)
    got = gan.discriminator_loss(x, generator=torch.Generator().manual_seed(4))
    fake = gan.sample(40, generator=torch.Generator().manual_seed(4))
    real_s, fake_s = gan.score(x), gan.score(fake)
    want = {"nonsaturating": d_loss_bce, "wgan": critic_loss_wgan,
            "hinge": d_loss_hinge}[loss](real_s, fake_s)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_train_gan_counts_checkpoints_and_reproducibility():
    """train_gan: n_critic discriminator updates per generator update; checkpoints at the
    asked steps, step 0 being the initial weights and the last the EMA's average; the same
    seed gives the same run and leaves the global RNG alone."""
    torch.manual_seed(0)
    gan = mlp_gan(latent_dim=2, hidden=16, depth=2)
    init = {k: v.clone() for k, v in gan.generator.state_dict().items()}
    ema = EMA(gan.generator, 0.9)
    data = torch.randn(500, 2)
    state = torch.get_rng_state()
    hist = train_gan(gan, data, steps=20, batch_size=32, n_critic=3, ema=ema,
                     checkpoints=[0, 10, 20], seed=5, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(hist.d_losses) == 60 and len(hist.g_losses) == hist.steps == 20
    assert [c.step for c in hist.checkpoints] == [0, 10, 20]
    for k, v in init.items():
        assert torch.equal(hist.checkpoints[0].generator[k], v)
    for k, v in ema.shadow.items():
        assert torch.equal(hist.checkpoints[-1].generator[k], v)
    assert hist.cpu_seconds > 0
    torch.manual_seed(0)
    again = mlp_gan(latent_dim=2, hidden=16, depth=2)
    hist2 = train_gan(again, data, steps=20, batch_size=32, n_critic=3, seed=5,
                      progress=False)
    assert hist2.d_losses == hist.d_losses
    torch.manual_seed(0)
    decayed = train_gan(mlp_gan(latent_dim=2, hidden=16, depth=2), data, steps=20,
                        batch_size=32, n_critic=3, seed=5, schedule="linear", progress=False)
    assert decayed.d_losses[:3] == hist.d_losses[:3]  # the first step has the full rate
    assert decayed.d_losses[3:] != hist.d_losses[3:]
    hist.checkpoints[0].load_into(again)
    for k, v in init.items():
        assert torch.equal(again.generator.state_dict()[k], v)


def test_a_gan_learns_a_shifted_gaussian():
    """[eq-gan-nonsaturating] A small non-saturating GAN moves its samples from about 0 to
    data N((2, -1), 0.5^2 I) in 300 steps: mean within 0.4 (a sixth of the way) and spread
    within 50%."""
    torch.manual_seed(0)
    gan = mlp_gan(latent_dim=2, hidden=32, depth=2)
    target = torch.tensor([2.0, -1.0])
    train_gan(gan, lambda n: target + 0.5 * torch.randn(n, 2), steps=300, batch_size=128,
              lr=2e-3, seed=1, progress=False)
    s = gan.sample(4000, generator=torch.Generator().manual_seed(0))
    assert float((s.mean(0) - target).norm()) < 0.4
    assert float(s.std(0).mean()) == pytest.approx(0.5, rel=0.5)


def test_mode_coverage_counts_modes_and_three_sigma_fraction():
    """Data of the grid cover its 25 modes with 1 - exp(-9/2) = 98.9% of the points within 3
    standard deviations (to 3 standard errors); dropping a mode's points leaves 24; points
    halfway between modes are never high-quality."""
    grid = GaussianGrid()
    _, mu, var = grid.mixture()
    x, labels = grid.sample_with_labels(10_000, generator=torch.Generator().manual_seed(0))
    cov = mode_coverage(x, mu, var)
    p = 1 - math.exp(-4.5)
    assert cov.covered == cov.modes == 25
    assert abs(cov.high_quality - p) < 3 * math.sqrt(p * (1 - p) / 10_000)
    assert int(cov.counts.sum()) == round(cov.high_quality * 10_000)
    assert mode_coverage(x[labels != 7], mu, var).covered == 24
    mid = (mu[:-1] + mu[1:]) / 2
    assert mode_coverage(mid.float(), mu, var).high_quality == 0.0


BAD = [
    (lambda: d_loss_bce(torch.zeros(3, 2), torch.zeros(3)), ValueError, r"shape \(B,\)"),
    (lambda: g_loss_wgan(torch.zeros(3, dtype=torch.long)), TypeError, "floating-point"),
    (lambda: optimal_discriminator(torch.zeros(3), torch.zeros(4)), ValueError, "same shape"),
    (lambda: js_divergence(lambda x: x, lambda x: x, 1.0, 0.0), ValueError, "low < high"),
    (lambda: js_divergence(lambda x: x, lambda x: x, 0.0, 1.0, nodes=10), ValueError, "odd"),
    (lambda: gradient_penalty(lambda x: x.sum(1), torch.zeros(3, 2), torch.zeros(4, 2)),
     ValueError, "same shape"),
    (lambda: clip_weights(nn.Linear(2, 2), 0.0), ValueError, "c must be > 0"),
    (lambda: power_iteration(torch.zeros(3, 2), torch.ones(2)), ValueError, r"shape \(3,\)"),
    (lambda: power_iteration(torch.ones(3, 2), torch.ones(3), 0), ValueError, "iterations"),
    (lambda: dirac_field(torch.zeros(2), torch.zeros(3)), ValueError, "same shape"),
    (lambda: dirac_jacobian(loss="hinge"), ValueError, "loss must be one of"),
    (lambda: dirac_eigenvalues(scheme="simultaneous"), ValueError, "needs a step size"),
    (lambda: dirac_eigenvalues(gamma=-1.0), ValueError, "gamma must be >= 0"),
    (lambda: dirac_trajectory(0.0, 0.0, h=0.1, steps=3, scheme="adam"), ValueError, "scheme"),
    (lambda: GAN(nn.Linear(2, 2), "d", latent_dim=2), TypeError, "discriminator must be"),
    (lambda: mlp_gan(loss="lsgan"), ValueError, "loss must be one of"),
    (lambda: mlp_gan(tanh=1), TypeError, "tanh"),
    (lambda: mlp_gan().sample(0), ValueError, "n must be a positive int"),
    (lambda: mlp_gan().sample(2, z=torch.zeros(2, 3)), ValueError, r"z must have shape"),
    (lambda: train_gan(mlp_gan(), torch.zeros(4, 2), steps=2, betas=(0.5, 1.0)), ValueError,
     "betas"),
    (lambda: train_gan(mlp_gan(), torch.zeros(4, 2), steps=2, schedule="cosine"), ValueError,
     "schedule"),
    (lambda: train_gan(mlp_gan(), torch.zeros(4, 2), steps=2, checkpoints=[3]), ValueError,
     "checkpoints"),
    (lambda: train_gan(mlp_gan(), torch.zeros(4, 2), steps=2, seed=0,
                       generator=torch.Generator()), ValueError, "not both"),
    (lambda: mode_coverage(torch.zeros(5, 2), torch.zeros(3, 2), torch.zeros(3, 2)),
     ValueError, "variances must be positive"),
    (lambda: mode_coverage(torch.zeros(5, 2), torch.zeros(3, 2), torch.ones(3, 2),
                           min_fraction=0.0), ValueError, "min_fraction"),
]


@pytest.mark.parametrize("call, error, match", BAD)
def test_argument_checks(call, error, match):
    with pytest.raises(error, match=match):
        call()
