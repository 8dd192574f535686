"""Tests of gmbook.problem and the claims of Chapter 1 (book/foundations/problem.md)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from gmbook.data import TwoMoons
from gmbook.nets import MLP
from gmbook.problem import (GridDensity, empirical_velocity, euler, fit_gaussian_reverse_kl,
                            gaussian_moments, kl_monte_carlo, linear_path)


def _random_gaussian(d: int, g: torch.Generator) -> MultivariateNormal:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)
    return MultivariateNormal(torch.randn(d, generator=g, dtype=torch.float64), cov)


def test_nll_decomposes_into_entropy_plus_kl():
    """eq-nll-decomposition (thm-mle-kl): E_p[-log q] = H(p) + KL(p || q), by Monte Carlo."""
    g = torch.Generator().manual_seed(1)
    p, q = _random_gaussian(3, g), _random_gaussian(3, g)
    x = p.sample((200_000,))
    nll = -q.log_prob(x)
    se = nll.std() / math.sqrt(len(nll))
    expected = p.entropy() + kl_divergence(p, q)
    assert abs(nll.mean() - expected) < 4 * se


def test_kl_monte_carlo_matches_closed_form():
    """eq-kl: the Monte Carlo KL estimate agrees with the Gaussian closed form within 4 s.e."""
    g = torch.Generator().manual_seed(2)
    p, q = _random_gaussian(2, g), _random_gaussian(2, g)
    est, se = kl_monte_carlo(p.log_prob, q.log_prob, p.sample((100_000,)))
    assert abs(est - kl_divergence(p, q)) < 4 * se
    assert se > 0


def _bimodal(n: int) -> torch.Tensor:
    """A non-Gaussian 2-D sample: two correlated clusters."""
    lab = torch.rand(n) < 0.3
    centres = torch.where(lab[:, None], torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.5]))
    return centres + torch.randn(n, 2) @ torch.tensor([[0.5, 0.2], [0.0, 0.3]])


def test_moment_matching_minimises_the_cross_entropy():
    """prop-moment-matching: sample moments minimise E_data[-log q] over Gaussians q.

    The gradient at the moments vanishes and every perturbation of mean or covariance does
    worse, on non-Gaussian data."""
    x = _bimodal(5000).double()
    m, S = gaussian_moments(x)
    mean = m.clone().requires_grad_(True)
    tril = torch.linalg.cholesky(S).requires_grad_(True)
    nll = -MultivariateNormal(mean, scale_tril=tril).log_prob(x).mean()
    nll.backward()
    assert mean.grad.abs().max() < 1e-8
    assert torch.tril(tril.grad).abs().max() < 1e-8
    best = nll.item()
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        dm = 0.05 * torch.randn(2, generator=g, dtype=torch.float64)
        a = 0.05 * torch.randn(2, 2, generator=g, dtype=torch.float64)
        S2 = S + a @ a.T - 0.5 * (a @ a.T).trace() / 2 * torch.eye(2, dtype=torch.float64)
        if torch.linalg.eigvalsh(S2).min() <= 0:
            continue
        assert -MultivariateNormal(m + dm, S2).log_prob(x).mean() > best


def test_gaussian_moments_is_biased_covariance():
    """prop-moment-matching: the maximum-likelihood covariance divides by n, not n - 1."""
    x = torch.randn(50, 3, dtype=torch.float64)
    m, S = gaussian_moments(x)
    torch.testing.assert_close(m, x.mean(0))
    torch.testing.assert_close(S, torch.cov(x.T, correction=0))


def test_reverse_kl_fit_recovers_a_gaussian_target():
    """eq-reverse-kl: minimising KL(q || p) over Gaussians recovers a Gaussian target p."""
    target = MultivariateNormal(torch.tensor([1.0, -0.5]),
                                torch.tensor([[0.5, 0.3], [0.3, 0.4]]))
    g = torch.Generator().manual_seed(4)
    q, losses = fit_gaussian_reverse_kl(target.log_prob, torch.zeros(2), steps=1500,
                                        batch_size=1024, lr=0.01, generator=g)
    torch.testing.assert_close(q.mean.detach(), target.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(q.covariance().detach(), target.covariance_matrix,
                               atol=0.05, rtol=0)
    assert abs(sum(losses[-100:]) / 100) < 0.02  # KL(q || p) ~ 0 at the optimum


def test_forward_kl_covers_mass_and_reverse_kl_seeks_a_mode():
    """eq-kl, eq-reverse-kl (the forward/reverse KL paragraph of Chapter 1): on two well
    separated modes, the forward-KL Gaussian (moment matching, prop-moment-matching) spans
    both and puts much of its mass in the empty gap; the reverse-KL Gaussian sits on one mode
    with about that mode's spread. Each fit wins on its own divergence. Swapping the
    directions (or the roles in kl_monte_carlo) fails every assertion below."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    means = torch.tensor([[-3.0, 0.0], [3.0, 0.0]])
    target = MixtureSameFamily(Categorical(torch.ones(2)),
                               Independent(Normal(means, 0.5 * torch.ones(2, 2)), 1))
    data = target.sample((20_000,))
    m, S = gaussian_moments(data)
    forward = MultivariateNormal(m, S)
    g = torch.Generator().manual_seed(6)
    q, _ = fit_gaussian_reverse_kl(target.log_prob, torch.tensor([1.0, 0.5]), steps=400,
                                   batch_size=256, lr=0.03, generator=g)
    with torch.no_grad():
        reverse = q.distribution()
        # mass-covering: the forward fit spans both modes (sd along the axis ~ 3)
        assert forward.covariance_matrix[0, 0].sqrt() > 2.5
        # mode-seeking: the reverse fit is on the mode at +3 with that mode's spread 0.5
        assert abs(reverse.mean[0] - 3.0) < 0.2
        assert 0.35 < reverse.covariance_matrix[0, 0].sqrt() < 0.65
        # mass in the gap |x_1| < 1.5, which holds about 1e-3 of the target's mass
        gap = lambda d: (d.sample((20_000,))[:, 0].abs() < 1.5).float().mean()
        assert gap(forward) > 0.3 and gap(reverse) < 0.01
        # each fit is better on its own criterion, by many standard errors
        fwd_of = lambda d: kl_monte_carlo(target.log_prob, d.log_prob, data)
        rev_of = lambda d: kl_monte_carlo(d.log_prob, target.log_prob, d.sample((20_000,)))
        (f_f, f_f_se), (f_r, f_r_se) = fwd_of(forward), fwd_of(reverse)
        (r_f, r_f_se), (r_r, r_r_se) = rev_of(forward), rev_of(reverse)
        assert f_r - f_f > 10 * math.hypot(f_f_se, f_r_se)
        assert r_f - r_r > 10 * math.hypot(r_f_se, r_r_se)


def test_linear_path_of_gaussians_is_gaussian():
    """eq-linear-path, prob-ex-path-gaussian: X_t has mean t mu, covariance (1-t)^2 I + t^2 Sigma."""
    mu = torch.tensor([2.0, -1.0], dtype=torch.float64)
    sigma = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    n, t = 400_000, 0.3
    x0 = torch.randn(n, 2, dtype=torch.float64)
    x1 = MultivariateNormal(mu, sigma).sample((n,))
    xt, _ = linear_path(x0, x1, torch.full((n,), t, dtype=torch.float64))
    torch.testing.assert_close(xt.mean(0), t * mu, atol=0.01, rtol=0)
    expected = (1 - t) ** 2 * torch.eye(2, dtype=torch.float64) + t**2 * sigma
    torch.testing.assert_close(torch.cov(xt.T), expected, atol=0.01, rtol=0)


@pytest.mark.parametrize("shape", [(2,), (3, 4, 4)])
def test_linear_path_velocity_is_time_derivative(shape):
    """eq-linear-path: u_t is the time derivative of x_t, for vectors and images."""
    x0, x1 = torch.randn(2, 5, *shape, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    _, dxdt = torch.autograd.functional.jvp(lambda s: linear_path(x0, x1, s)[0], t,
                                            torch.ones_like(t))
    torch.testing.assert_close(dxdt, linear_path(x0, x1, t)[1])
    torch.testing.assert_close(linear_path(x0, x1, torch.zeros(5, dtype=torch.float64))[0], x0)
    torch.testing.assert_close(linear_path(x0, x1, torch.ones(5, dtype=torch.float64))[0], x1)


def test_empirical_velocity_transports_noise_along_the_path():
    """eq-empirical-velocity: the ODE with the exact field keeps the law of X_t at every t.

    Particles started from N(0, I) and moved to time t have the mean and covariance of
    (1 - t) X0 + t X1 with X1 uniform over the data; at t = 1 they sit on data points,
    each about equally often."""
    data = torch.tensor([[-2.0, 0.0], [1.0, 1.5], [2.0, -1.0]], dtype=torch.float64)
    z = torch.randn(20_000, 2, dtype=torch.float64)
    steps, t = 400, 0.5
    path = euler(lambda x, s: empirical_velocity(x, s, data), z, steps, return_path=True)
    xt = path[int(t * steps)]
    m, c = data.mean(0), torch.cov(data.T, correction=0)
    torch.testing.assert_close(xt.mean(0), t * m, atol=0.03, rtol=0)
    expected = (1 - t) ** 2 * torch.eye(2, dtype=torch.float64) + t**2 * c
    torch.testing.assert_close(torch.cov(xt.T), expected, atol=0.05, rtol=0)
    dist, idx = torch.cdist(path[-1], data).min(dim=1)
    assert dist.median() < 0.05
    freq = torch.bincount(idx, minlength=3).double() / len(idx)
    torch.testing.assert_close(freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02,
                               rtol=0)


def test_empirical_velocity_of_one_point_is_straight():
    """eq-empirical-velocity: with a single data point the field is (x1 - x) / (1 - t)."""
    x1 = torch.tensor([[0.5, -2.0]])
    x = torch.randn(7, 2)
    torch.testing.assert_close(empirical_velocity(x, 0.3, x1), (x1 - x) / 0.7)


def test_empirical_velocity_is_accurate_in_float32_near_t_one():
    """eq-empirical-velocity near t = 1: the logits divide by 2 (1 - t)^2 = 8e-6 at t = 0.998
    (the last step of a 500-step Euler solve), so float32 squared distances by the matmul
    identity would err by order 1 in them. Float32 inputs must give the float64 field."""
    g = torch.Generator().manual_seed(5)
    data = TwoMoons().sample(1000, generator=g).double()
    t = 0.998
    x = t * data[:300] + (1 - t) * torch.randn(300, 2, generator=g, dtype=torch.float64)
    exact = empirical_velocity(x, t, data)
    fast = empirical_velocity(x.float(), t, data.float())
    assert fast.dtype == torch.float32
    # Same (float32-rounded) inputs computed in float64: agreement to float32 output
    # rounding; the float32 matmul cdist of old erred by 1e-2 here.
    rounded = empirical_velocity(x.float().double(), t, data.float().double())
    torch.testing.assert_close(fast.double(), rounded, atol=1e-5, rtol=0)
    # The rounding of the inputs themselves costs a few 1e-7 relative, times the field's
    # slope 1 / (1 - t) = 500.
    assert (fast.double() - exact).abs().max() < 1e-3


def test_euler_is_exact_for_a_constant_field():
    """Euler's method integrates a constant velocity exactly, with any number of steps."""
    x0 = torch.randn(4, 2)
    for steps in (1, 3):
        torch.testing.assert_close(euler(lambda x, t: torch.ones_like(x), x0, steps), x0 + 1)


def test_grid_density_integrates_to_one():
    """eq-grid-normalizer: the grid-normalised density integrates to 1 over its box, checked
    on a finer grid, for a random network."""
    torch.manual_seed(5)
    model = GridDensity(MLP(2, 1, hidden=16, depth=2), lims=(-3.0, 3.0), n=64)
    fine = GridDensity(model.net, lims=(-3.0, 3.0), n=400)
    with torch.no_grad():
        mass = (model.log_prob(fine.grid).exp().sum() * math.exp(fine.log_cell_area)).item()
    assert abs(mass - 1) < 1e-2


def test_grid_density_of_a_quadratic_is_gaussian():
    """eq-energy-density, eq-grid-normalizer: f(x) = -|x|^2 / 2 gives log Z = log(2 pi)."""

    class Quadratic(torch.nn.Module):
        def forward(self, x):
            return -0.5 * (x**2).sum(dim=1)

    model = GridDensity(Quadratic(), lims=(-6.0, 6.0), n=200)
    assert abs(model.log_normalizer().item() - math.log(2 * math.pi)) < 1e-4
    x = model.sample(20_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), torch.zeros(2), atol=0.03, rtol=0)
    torch.testing.assert_close(x.var(0), torch.ones(2), atol=0.05, rtol=0)


def test_grid_density_is_zero_outside_its_box():
    model = GridDensity(MLP(2, 1, hidden=8, depth=1), lims=(-1.0, 1.0), n=8)
    lp = model.log_prob(torch.tensor([[0.0, 0.0], [1.5, 0.0]]))
    assert torch.isfinite(lp[0]) and lp[1] == -math.inf


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="hi > lo"):
        GridDensity(MLP(2, 1), lims=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        GridDensity(MLP(2, 1), n=4).log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="same shape"):
        linear_path(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"t must have shape"):
        linear_path(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        empirical_velocity(torch.zeros(2, 2), 1.0, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="steps"):
        euler(lambda x, t: x, torch.zeros(2, 2), 0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        gaussian_moments([[0.0, 1.0]])


def test_grid_density_log_prob_with_a_given_log_z():
    """eq-grid-normalizer: log_prob with a log Z computed once equals log_prob computing it,
    bit for bit, and a log Z that is not a scalar tensor is refused."""
    torch.manual_seed(6)
    model = GridDensity(MLP(2, 1, hidden=8, depth=1), lims=(-2.0, 2.0), n=32)
    x = torch.tensor([[0.0, 0.5], [1.0, -1.0], [3.0, 0.0]])
    with torch.no_grad():
        log_z = model.log_normalizer()
        assert torch.equal(model.log_prob(x, log_z=log_z), model.log_prob(x))
    with pytest.raises(TypeError, match="log_z"):
        model.log_prob(x, log_z=1.0)


def test_kl_monte_carlo_accepts_evaluated_log_densities():
    """eq-kl: log-densities given as their values at the samples give the same estimate as
    the callables; values of the wrong shape are refused."""
    g = torch.Generator().manual_seed(3)
    p, q = _random_gaussian(2, g), _random_gaussian(2, g)
    x = p.sample((1000,))
    by_calls = kl_monte_carlo(p.log_prob, q.log_prob, x)
    by_values = kl_monte_carlo(p.log_prob(x), q.log_prob, x)
    assert all(torch.equal(a, b) for a, b in zip(by_calls, by_values))
    with pytest.raises(ValueError, match="log_p"):
        kl_monte_carlo(p.log_prob(x[:10]), q.log_prob, x)
