r"""Tests of :mod:`gmbook.flow_matching`: the claims of ``book/diffusion/flow_matching.md``."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from gmbook.flow_matching import (
    FlowMatching,
    couple,
    eps_from_velocity,
    gaussian_path,
    gaussian_velocity,
    mixture_velocity,
    odeint,
    path_coefficients,
    reflow_pairs,
    sample_times,
    score_from_velocity,
    solver_nfe,
    velocity_from_eps,
    velocity_from_score,
)
from gmbook.nets import MLP
from gmbook.samplers import SamplePath

F64 = torch.float64


class _Field(nn.Module):
    """Wrap a closed-form velocity ``u(x, t)`` as a network for :class:`FlowMatching`."""

    def __init__(self, u):
        super().__init__()
        self.u = u
        self.dummy = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, x, t):
        return self.u(x, t) + 0 * self.dummy


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_conditional_velocity_is_time_derivative(path):
    r"""eq-fm-conditional-velocity: u_t(x | x0, x1) = d/dt x_t, by autograd (jvp)."""
    x0, x1 = torch.randn(2, 8, 3, dtype=F64)
    t = torch.rand(8, dtype=F64)
    dxdt = torch.autograd.functional.jvp(
        lambda s: gaussian_path(x0, x1, s, path).x_t, t, torch.ones_like(t))[1]
    torch.testing.assert_close(dxdt, gaussian_path(x0, x1, t, path).u_t)


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_path_endpoints(path):
    r"""eq-fm-gaussian-path: x_0 is the noise and x_1 the data (the book's convention)."""
    x0, x1 = torch.randn(2, 5, 2, dtype=F64)
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    for k, target in ((0, x0), (1, x1)):
        t = ends[k].expand(5)
        torch.testing.assert_close(gaussian_path(x0, x1, t, path).x_t, target)
    c = path_coefficients(torch.rand(7, dtype=F64), "vp")
    torch.testing.assert_close(c.alpha**2 + c.sigma**2, torch.ones(7, dtype=F64))


# ---------------------------------------------------------------- FM = CFM


def _mixture(n, means, std, generator):
    k = torch.randint(len(means), (n,), generator=generator)
    return means[k] + std * torch.randn(n, 2, generator=generator, dtype=F64)


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_cfm_and_fm_losses_have_equal_gradients(path):
    r"""thm-fm-cfm (eq-fm-fm-loss, eq-fm-cfm-loss): the gradients of the conditional and the
    marginal flow-matching losses agree, on a Gaussian mixture whose marginal velocity is in
    closed form (eq-fm-marginal-velocity). A wrong marginal velocity must not agree."""
    g = torch.Generator().manual_seed(1)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], dtype=F64)
    std, n = 0.3, 400_000
    x1 = _mixture(n, means, std, g)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    t = 0.02 + 0.96 * torch.rand(n, generator=g, dtype=F64)
    s = gaussian_path(x0, x1, t, path)
    net = MLP(2, hidden=16, depth=2, time_dim=8).to(F64)

    def grad(target):
        net.zero_grad()
        ((net(s.x_t, t) - target) ** 2).sum(1).mean().backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    g_cfm = grad(s.u_t)
    g_fm = grad(mixture_velocity(means, std, path)(s.x_t, t))
    g_wrong = grad(mixture_velocity(means, 2 * std, path)(s.x_t, t))
    rel = float((g_cfm - g_fm).norm() / g_fm.norm())
    rel_wrong = float((g_wrong - g_fm).norm() / g_fm.norm())
    assert rel < 0.03, rel
    assert rel_wrong > 5 * rel, (rel, rel_wrong)


def test_marginal_velocity_is_conditional_expectation():
    r"""eq-fm-marginal-velocity: u_t(x) = E[u_t(x | x0, x1) | x_t = x]; for a one-component
    mixture it is the Gaussian velocity, and regressing u_t(x|.) on x_t recovers it."""
    m, s = 1.5, 0.5
    u_mix = mixture_velocity(torch.tensor([[m, m]], dtype=F64), s)
    u_gauss = gaussian_velocity(m, s)
    x, t = torch.randn(50, 2, dtype=F64), torch.rand(50, dtype=F64)
    torch.testing.assert_close(u_mix(x, t), u_gauss(x, t))
    # Monte Carlo: conditional velocities of points landing near a fixed x_t.
    g = torch.Generator().manual_seed(0)
    n = 2_000_000
    x0 = torch.randn(n, 1, generator=g, dtype=F64)
    x1 = m + s * torch.randn(n, 1, generator=g, dtype=F64)
    tt = torch.full((n,), 0.6, dtype=F64)
    ps = gaussian_path(x0, x1, tt)
    near = (ps.x_t[:, 0] - 0.4).abs() < 0.01
    mc = float(ps.u_t[near, 0].mean())
    exact = float(gaussian_velocity(m, s)(torch.tensor([[0.4]], dtype=F64),
                                           torch.tensor([0.6], dtype=F64)))
    assert abs(mc - exact) < 0.02, (mc, exact)


# ---------------------------------------------------------------- transport


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_euler_transports_gaussian_to_gaussian(path):
    r"""eq-fm-ode with eq-fm-marginal-velocity: Euler integration of the closed-form velocity
    from N(0, 1) to N(m, s^2) lands on the target, x(1) = m + s x(0)."""
    x0 = torch.tensor([[-1.0], [0.0], [1.0], [2.5]], dtype=F64)
    x1 = odeint(gaussian_velocity(2.0, 0.5, path), x0, steps=2000, solver="euler")
    torch.testing.assert_close(x1, 2.0 + 0.5 * x0, atol=2e-3, rtol=0)
    z = torch.randn(100_000, 1, dtype=F64)
    y = odeint(gaussian_velocity(-1.0, 2.0, path), z, steps=500, solver="euler")
    assert abs(float(y.mean()) + 1.0) < 0.03 and abs(float(y.std()) - 2.0) < 0.03


@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("heun", 2)])
def test_solver_orders(solver, order):
    r"""eq-fm-ode: on x' = x cos(t) (solution x0 exp(sin t)) the global error of a solver of
    order p falls by 2^p when the step is halved."""
    f = lambda x, t: x * torch.cos(t)[:, None]  # noqa: E731
    x0 = torch.ones(1, 1, dtype=F64)
    exact = math.exp(math.sin(1.0))
    e1 = abs(float(odeint(f, x0, steps=40, solver=solver)) - exact)
    e2 = abs(float(odeint(f, x0, steps=80, solver=solver)) - exact)
    assert 0.8 * 2**order < e1 / e2 < 1.25 * 2**order, e1 / e2
    assert abs(float(odeint(f, x0, solver="dopri5", rtol=1e-9, atol=1e-9)) - exact) < 1e-7
    assert solver_nfe(solver, 5) == 5 * (1 if solver == "euler" else 2)


def test_odeint_backwards_and_path():
    r"""eq-fm-ode: integrating forwards then backwards returns to the start."""
    u = gaussian_velocity(1.0, 0.3)
    x0 = torch.randn(6, 2, dtype=F64)
    path = odeint(u, x0, steps=200, solver="heun", return_path=True)
    assert path.shape == (201, 6, 2)
    back = odeint(u, path[-1], t0=1.0, t1=0.0, steps=200, solver="heun")
    torch.testing.assert_close(back, x0, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- conversions


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_conversions_round_trip_and_score(path):
    r"""eq-fm-conversions: velocity <-> noise <-> score round-trip in float64, and the
    score obtained from the exact Gaussian velocity is the exact Gaussian score."""
    x, t = torch.randn(20, 2, dtype=F64), 0.05 + 0.9 * torch.rand(20, dtype=F64)
    v = torch.randn(20, 2, dtype=F64)
    torch.testing.assert_close(velocity_from_eps(x, eps_from_velocity(x, v, t, path), t,
                                                 path), v)
    torch.testing.assert_close(velocity_from_score(x, score_from_velocity(x, v, t, path), t,
                                                   path), v)
    m, s = 0.7, 0.4
    c = path_coefficients(t, path)
    var = (c.alpha**2 * s**2 + c.sigma**2)[:, None]
    exact = -(x - c.alpha[:, None] * m) / var
    got = score_from_velocity(x, gaussian_velocity(m, s, path)(x, t), t, path)
    torch.testing.assert_close(got, exact)


def test_conversions_agree_with_ddpm():
    r"""eq-fm-conversions and eq-fm-vp-path: on the VP path with alpha_bar = alpha_t^2 the
    noise, score and v-prediction conversions agree with those of the DDPM chapter, and
    the velocity is -pi/2 times DDPM's v-prediction."""
    ddpm = pytest.importorskip("gmbook.ddpm")
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(16, 2, generator=g, dtype=F64)  # data
    eps = torch.randn(16, 2, generator=g, dtype=F64)  # noise = x0 of this chapter
    t = 0.05 + 0.9 * torch.rand(16, generator=g, dtype=F64)
    s = gaussian_path(eps, x1, t, "vp")
    alpha_bar = (path_coefficients(t, "vp").alpha ** 2)[:, None]  # (B, 1)
    v_ddpm = ddpm.v_from_eps(x1, eps, alpha_bar)
    torch.testing.assert_close(s.u_t, -0.5 * math.pi * v_ddpm)
    torch.testing.assert_close(eps_from_velocity(s.x_t, s.u_t, t, "vp"),
                               ddpm.eps_from_v(s.x_t, v_ddpm, alpha_bar))
    torch.testing.assert_close(score_from_velocity(s.x_t, s.u_t, t, "vp"),
                               ddpm.score_from_eps(eps, alpha_bar))
    torch.testing.assert_close(ddpm.x0_from_eps(s.x_t, eps, alpha_bar), x1)


# ---------------------------------------------------------------- couplings


def test_ot_coupling_is_optimal_and_a_permutation():
    r"""eq-fm-coupling: the minibatch OT coupling is the cheapest permutation (brute force
    over all 6! permutations), and every coupling keeps both marginals."""
    x0, x1 = torch.randn(2, 6, 2, dtype=F64)
    a, b = couple(x0, x1, "ot")
    torch.testing.assert_close(b, x1)
    best = min(float(((x0[list(p)] - x1) ** 2).sum())
               for p in itertools.permutations(range(6)))
    assert abs(float(((a - x1) ** 2).sum()) - best) < 1e-9
    for kind in ("independent", "ot", "sort"):
        a, _ = couple(x0, x1, kind, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a[a[:, 0].argsort()], x0[x0[:, 0].argsort()])


def test_sort_coupling_is_monotone_along_its_direction():
    r"""eq-fm-coupling: the sort coupling matches the k-th smallest projections, so the
    pairs' projections are ordered alike (and it costs less than independent pairs)."""
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(2, 500, 2, dtype=F64)
    theta = torch.randn(2, generator=torch.Generator().manual_seed(3), dtype=F64)
    a, b = couple(x0, x1 + 3.0, "sort", generator=g)
    pa, pb = a @ theta, b @ theta
    assert bool((pa[pb.argsort()].diff() >= 0).all())
    assert float(((a - b) ** 2).sum()) < float(((x0 - x1 - 3.0) ** 2).sum())


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
@pytest.mark.parametrize("coupling", ["independent", "ot", "sort"])
def test_model_contract(shape, coupling):
    r"""The model's verbs: a scalar loss, samples of shape (n, *D), deterministic given x0."""
    d = math.prod(shape)
    model = FlowMatching(MLP(d, hidden=16, depth=1, time_dim=8), shape=shape,
                         coupling=coupling, time_sampling="logit_normal")
    x = torch.randn(8, *shape)
    loss = model.loss(x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for solver in ("euler", "midpoint", "heun"):
        assert model.sample(5, steps=3, solver=solver).shape == (5, *shape)
    path = model.sample(5, steps=3, return_path=True)
    assert isinstance(path, SamplePath) and path.states.shape == (4, 5, *shape)
    assert path.nfe == 3 and path.x0_preds.shape == (3, 5, *shape)
    torch.testing.assert_close(path.states[-1], path.samples)
    x0, x1 = reflow_pairs(model, 4, steps=3)
    torch.testing.assert_close(model.sample(4, x0=x0, steps=3, solver="midpoint"), x1)
    with pytest.raises(ValueError):
        model.loss(torch.randn(8, d + 1))
    with pytest.raises(ValueError):
        FlowMatching(MLP(2, time_dim=8), shape=(2,), coupling="exact")
    with pytest.raises(TypeError):
        FlowMatching("net", shape=(2,))


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_log_prob_of_exact_gaussian_flow(path):
    r"""eq-fm-change-of-variables: with the exact velocity from N(0, I) to N(m, s^2 I), the
    instantaneous change of variables gives the target's log-density."""
    m, s = 0.5, 0.6
    model = FlowMatching(_Field(gaussian_velocity(m, s, path)), shape=(2,), path=path)
    x = m + s * torch.randn(50, 2, dtype=F64)
    exact = (-0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(model.log_prob(x, steps=200), exact, atol=1e-4, rtol=0)
    wrong = FlowMatching(_Field(gaussian_velocity(m, 1.2 * s, path)), shape=(2,), path=path)
    assert float((wrong.log_prob(x, steps=50) - exact).abs().max()) > 0.05


def test_logit_normal_times():
    r"""eq-fm-time-weighting: logit-normal times are in (0, 1), symmetric around 1/2, and
    concentrated in the middle (P(|t - 1/2| < 1/4) = P(|z| < log 3) ~ 0.727)."""
    t = sample_times(200_000, "logit_normal", generator=torch.Generator().manual_seed(0),
                     dtype=F64)
    assert float(t.min()) > 0 and float(t.max()) < 1
    assert abs(float(t.mean()) - 0.5) < 0.005
    frac = float(((t - 0.5).abs() < 0.25).to(F64).mean())
    p = math.erf(math.log(3) / math.sqrt(2))
    assert abs(frac - p) < 0.005, (frac, p)


# ---------------------------------------------------------------- sampling through gmbook.samplers


def _euler_by_hand(v, x, steps):
    """Euler's rule written out in flow-matching time, x <- x + h v(x, k h)."""
    h = 1.0 / steps
    for k in range(steps):
        x = x + h * v(x, torch.full((x.shape[0],), k * h, dtype=x.dtype))
    return x


def _midpoint_by_hand(v, x, steps):
    """The midpoint rule written out in flow-matching time."""
    h = 1.0 / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), k * h, dtype=x.dtype)
        x = x + h * v(x + 0.5 * h * v(x, t), t + 0.5 * h)
    return x


@pytest.mark.parametrize("path", ["linear", "vp"])
@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_sample_runs_the_common_samplers(path, solver):
    r"""eq-fm-ode: ``FlowMatching.sample`` goes through :mod:`gmbook.samplers` in the
    diffusion time 1 - t, with the velocity's sign flipped, and gives the numbers of Euler's
    and the midpoint rule written out in flow-matching time (float32 rounding)."""
    torch.manual_seed(1)
    model = FlowMatching(MLP(2, hidden=32, depth=2, time_dim=8), shape=(2,), path=path)
    x0 = torch.randn(300, 2)
    by_hand = {"euler": _euler_by_hand, "midpoint": _midpoint_by_hand}[solver]
    with torch.no_grad():
        for steps in (1, 3, 7):
            want = by_hand(model.velocity, x0, steps)
            got = model.sample(300, x0=x0, steps=steps, solver=solver)
            torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    # on a field that depends on time, in float64: equal up to the float32 rounding of the
    # times gmbook.samplers.euler hands over (3e-8), and a time not reversed (the sampler
    # fed t instead of 1 - t) would be far off
    exact = FlowMatching(_Field(gaussian_velocity(2.0, 0.5, path)), shape=(2,), path=path)
    x0 = x0.double()
    got = exact.sample(300, x0=x0, steps=3, solver=solver)
    with torch.no_grad():
        want = by_hand(exact.velocity, x0, 3)
        wrong = by_hand(lambda x, t: exact.velocity(x, 1 - t), x0, 3)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert float((wrong - got).abs().max()) > 0.1


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_prediction_converts_the_exact_velocity(path):
    r"""eq-fm-conversions: the model's :class:`~gmbook.samplers.Prediction` on the samplers'
    path (t = 1 - t_FM) turns the exact Gaussian velocity into the exact score
    -(x - alpha m) / (alpha^2 s^2 + sigma^2), and its velocity is -u at t_FM = 1 - t."""
    m, s = 0.5, 0.6
    u = gaussian_velocity(m, s, path)
    model = FlowMatching(_Field(u), shape=(2,), path=path)
    pred = model.prediction()
    x = torch.randn(40, 2, dtype=F64)
    t = 0.05 + 0.9 * torch.rand(40, dtype=F64)  # samplers' time
    c = path_coefficients(1 - t, path)
    exact = -(x - c.alpha[:, None] * m) / (c.alpha**2 * s**2 + c.sigma**2)[:, None]
    torch.testing.assert_close(pred.score(x, t), exact)
    torch.testing.assert_close(pred.velocity(x, t), -u(x, 1 - t))


def test_dopri5_sampling_and_common_signature():
    r"""eq-fm-ode: the exact Gaussian flow maps x0 to m + s x0; the adaptive reference and a
    sampler passed as a function (the common signature) both land there."""
    from gmbook import samplers

    m, s = 2.0, 0.5
    model = FlowMatching(_Field(gaussian_velocity(m, s)), shape=(1,))
    x0 = torch.tensor([[-1.0], [0.0], [1.0]], dtype=F64)
    path = model.sample(3, x0=x0, solver="dopri5", return_path=True)
    torch.testing.assert_close(path.samples, m + s * x0, atol=1e-4, rtol=0)
    assert path.nfe > 6
    got = model.sample(3, x0=x0, steps=400, solver=samplers.midpoint)
    torch.testing.assert_close(got, m + s * x0, atol=1e-4, rtol=0)


def test_log_prob_tolerances_reach_the_adaptive_solver():
    r"""eq-fm-change-of-variables: ``log_prob`` passes ``rtol``/``atol`` to dopri5 (a loose
    tolerance is measurably less accurate than a tight one on the exact Gaussian flow)."""
    m, s = 0.5, 0.6
    model = FlowMatching(_Field(gaussian_velocity(m, s, "vp")), shape=(2,), path="vp")
    x = m + s * torch.randn(50, 2, dtype=F64)
    exact = (-0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(1)
    tight = (model.log_prob(x, solver="dopri5", rtol=1e-9, atol=1e-9) - exact).abs().max()
    loose = (model.log_prob(x, solver="dopri5", rtol=1e-2, atol=1e-2) - exact).abs().max()
    assert float(tight) < 1e-6 < float(loose), (float(tight), float(loose))


def test_odeint_scalar_time_gives_the_same_numbers():
    r"""eq-fm-ode: with ``scalar_t`` the MLP sees one 0-dim time per call (its time branch
    runs once) and the solution is that of (B,) times, to float32 rounding."""
    torch.manual_seed(2)
    net = MLP(2, hidden=32, depth=2, time_dim=8)
    x0 = torch.randn(100, 2)
    seen = []

    def f(x, t):
        seen.append(t.ndim)
        return net(x, t)

    with torch.no_grad():
        a = odeint(f, x0, steps=4, solver="midpoint", scalar_t=True)
        assert set(seen) == {0}
        b = odeint(net, x0, steps=4, solver="midpoint")
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
