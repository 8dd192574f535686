"""Tests of gmbook.few_step: flow maps, consistency models, progressive distillation."""

from __future__ import annotations

import math

import pytest
import torch

from gmbook import samplers
from gmbook.few_step import (ConsistencyModel, consistency_coefficients, consistency_loss,
                             MeanFlow, flow_map_pairs, meanflow_target,
                             trajectory_distillation_loss,
                             curriculum, ddim_target, flow_map, gaussian_flow_map,
                             level_probabilities, multistep_consistency,
                             progressive_distillation_loss, pseudo_huber, teacher_step)
from gmbook.nets import MLP
from gmbook.sde import EDM, edm_coefficients

F64 = torch.float64
MEAN = torch.tensor([0.5, -1.0], dtype=F64)
VAR = torch.tensor([0.3, 2.0], dtype=F64)


def gaussian_pred(path):
    """The exact denoiser of N(MEAN, diag VAR): a one-component mixture."""
    return samplers.mixture_prediction(torch.ones(1, dtype=F64), MEAN[None], VAR[None], path)


def bimodal_pred(path, var=0.1):
    """The exact denoiser of 1/2 N(-1, var) + 1/2 N(1, var) in 1-D."""
    return samplers.mixture_prediction(torch.full((2,), 0.5, dtype=F64),
                                       torch.tensor([[-1.0], [1.0]], dtype=F64),
                                       torch.full((2, 1), var, dtype=F64), path)


@pytest.mark.parametrize("path", [samplers.VEPath(10.0), samplers.VPPath()],
                         ids=["ve", "vp"])
def test_flow_map_of_gaussian_data_is_closed_form(path):
    """[eq-fs-flow-map] [eq-fs-gaussian-flow-map] The adaptive solve of the probability-flow
    ODE with the exact denoiser of Gaussian data agrees with the closed-form affine map, on
    the VE and the VP path."""
    t, s = (3.0, 0.01) if isinstance(path, samplers.VEPath) else (0.9, 0.05)
    x = 2.0 * torch.randn(200, 2, dtype=F64)
    got = flow_map(gaussian_pred(path), x, t, s)
    want = gaussian_flow_map(x, t, s, MEAN, VAR, path)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert (want - x).abs().max() > 0.5   # the map moves the points


def test_flow_map_is_self_consistent():
    """[eq-fs-flow-map] Along one trajectory of a bimodal (non-Gaussian) mixture, the map to
    the smallest level is the same from every point: Phi_{t'->s}(Phi_{t->t'}(x)) =
    Phi_{t->s}(x); and the Gaussian map composes the same way."""
    pred = bimodal_pred(samplers.VEPath(10.0))
    x = 3.0 * torch.randn(300, 1, dtype=F64)
    direct = flow_map(pred, x, 3.0, 0.01)
    via = flow_map(pred, flow_map(pred, x, 3.0, 0.7), 0.7, 0.01)
    torch.testing.assert_close(via, direct, atol=1e-6, rtol=0)
    assert (direct.abs() - 1).abs().median() < 0.3    # it lands on the modes
    ve = samplers.VEPath(10.0)
    x2 = torch.randn(50, 2, dtype=F64)
    torch.testing.assert_close(
        gaussian_flow_map(gaussian_flow_map(x2, 3.0, 0.7, MEAN, VAR, ve), 0.7, 0.01, MEAN,
                          VAR, ve),
        gaussian_flow_map(x2, 3.0, 0.01, MEAN, VAR, ve), atol=1e-12, rtol=0)


def test_boundary_condition_is_exact():
    """[eq-fs-cm-param] f(x, sigma_min) = x bit for bit whatever the network; just above
    sigma_min the network acts; for sigma_min -> 0 the scalings are EDM's."""
    cm = ConsistencyModel(MLP(2, hidden=16, time_dim=8, time_scale=1.0), sigma_min=0.002)
    x = torch.randn(64, 2)
    assert torch.equal(cm(x, torch.full((64,), 0.002)), x)
    assert not torch.allclose(cm(x, torch.full((64,), 0.01)), x, atol=1e-4)
    sig = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=F64)
    for c_cm, c_edm in zip(consistency_coefficients(sig, 0.7, 1e-12), edm_coefficients(sig, 0.7)):
        torch.testing.assert_close(c_cm, c_edm, atol=1e-10, rtol=0)


def test_cd_loss_vanishes_for_the_exact_consistency_function():
    """[eq-fs-cm-loss] [eq-fs-gaussian-flow-map] For Gaussian data, the exact consistency
    function Phi_{sigma -> sigma_min} makes the distillation loss vanish with an exact teacher
    step (dopri5), and a map with the wrong exponent (the variance ratio without its square
    root) does not. So does any fixed map of the exact one (here 1% wider): the loss alone
    cannot pin the function, the boundary condition f(x, sigma_min) = x does. Heun's teacher
    step leaves a loss that falls as the levels get finer."""
    ve = samplers.VEPath(10.0)
    smin = 0.002
    cm = ConsistencyModel(MLP(2, hidden=8, time_dim=8), sigma_min=smin, sigma_max=5.0)
    levels = cm.levels(12)

    def exact(x, sigma):
        return gaussian_flow_map(x, sigma, smin, MEAN, VAR, ve)

    def wider(x, sigma):
        return MEAN + 1.01 * (exact(x, sigma) - MEAN)

    def off(x, sigma):
        ratio = (VAR + smin**2) / (VAR + sigma[:, None] ** 2)
        return MEAN + ratio * (x - MEAN)

    x0 = MEAN + VAR.sqrt() * torch.randn(256, 2, dtype=F64)
    kw = dict(teacher=gaussian_pred(ve), generator=torch.Generator().manual_seed(1))
    exact_loss = consistency_loss(exact, x0, levels, solver=samplers.dopri5, **kw)
    kw["generator"] = torch.Generator().manual_seed(1)
    off_loss = consistency_loss(off, x0, levels, solver=samplers.dopri5, **kw)
    kw["generator"] = torch.Generator().manual_seed(1)
    wider_loss = consistency_loss(wider, x0, levels, solver=samplers.dopri5, **kw)
    assert exact_loss < 1e-12 and wider_loss < 1e-12 and off_loss > 1e-3
    heun = [consistency_loss(exact, x0, cm.levels(n), teacher=gaussian_pred(ve),
                             generator=torch.Generator().manual_seed(2)) for n in (6, 12)]
    assert 0 < heun[1] < heun[0] / 8


def test_teacher_step_per_row():
    """[eq-fs-cm-loss] The teacher's step with different times per row: with the adaptive
    solver it is the closed-form flow map of Gaussian data, row by row."""
    ve = samplers.VEPath(10.0)
    x = 2 * torch.randn(40, 2, dtype=F64)
    t = torch.tensor([2.0, 1.0, 0.5, 3.0], dtype=F64).repeat(10)
    s = t / 2
    got = teacher_step(gaussian_pred(ve), x, t, s, solver=samplers.dopri5)
    torch.testing.assert_close(got, gaussian_flow_map(x, t, s, MEAN, VAR, ve), atol=1e-6,
                               rtol=0)


def test_teacher_step_heun_with_row_times_is_heun_row_by_row():
    """[eq-fs-cm-loss] The default teacher step (Heun, every row with its own times, in one
    batched call per slope) is samplers.heun's step taken row by row, on a bimodal mixture
    whose field is not affine; not an Euler step."""
    ve = samplers.VEPath(10.0)
    pred = bimodal_pred(ve)
    x = 3 * torch.randn(40, 1, dtype=F64)
    t = torch.tensor([2.0, 1.0, 0.5, 3.0], dtype=F64).repeat(10)
    s = t * torch.tensor([0.5, 0.8, 0.1, 0.9], dtype=F64).repeat_interleave(10)
    got = teacher_step(pred, x, t, s)
    want = torch.cat([samplers.heun(pred, x[i:i + 1], torch.stack([t[i], s[i]])).samples
                      for i in range(40)])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    euler = teacher_step(pred, x, t, s, solver=samplers.euler)  # grouped by pair
    assert (got - euler).abs().max() > 1e-2   # the corrector is taken


def test_multistep_consistency_with_the_exact_map_reproduces_the_data():
    """[eq-fs-cm-multistep] [eq-fs-flow-map] Three-step consistency sampling with the exact
    flow map of a bimodal mixture, started from the exact noised marginal, returns the
    data's law at sigma_min (a large sigma_min = 0.3, so that the re-noising's
    sqrt(tau^2 - sigma_min^2) matters): mean, variance and the two modes' masses."""
    smin, var = 0.3, 0.1
    pred = bimodal_pred(samplers.VEPath(10.0), var)
    n = 20_000
    g = torch.Generator().manual_seed(3)
    data = torch.where(torch.rand(n, 1, generator=g, dtype=F64) < 0.5, -1.0, 1.0) \
        + math.sqrt(var) * torch.randn(n, 1, generator=g, dtype=F64)
    x = data + 5.0 * torch.randn(n, 1, generator=g, dtype=F64)   # exact p at sigma = 5

    def f(x, sigma):
        return flow_map(pred, x, float(sigma[0]), smin, rtol=1e-6, atol=1e-6)

    out = multistep_consistency(f, x, [5.0, 1.5, 0.4], sigma_min=smin, generator=g)
    want_var = 1 + var + smin**2        # the mixture at sigma_min
    se_var = want_var * math.sqrt(2 / n)
    assert abs(float(out.mean())) < 4 * math.sqrt(want_var / n)
    assert abs(float(out.var()) - want_var) < 3 * se_var
    assert abs(float((out > 0).double().mean()) - 0.5) < 4 * 0.5 / math.sqrt(n)
    # the density between the modes: the mass in (-0.25, 0.25)
    sd = math.sqrt(var + smin**2)
    ncdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    mass = ncdf((0.25 + 1) / sd) - ncdf((-0.25 + 1) / sd)     # both modes, by symmetry
    got = float((out.abs() < 0.25).double().mean())
    assert abs(got - mass) < 4 * math.sqrt(mass / n)


def test_ddim_target_round_trip():
    """[eq-fs-pd-target] One DDIM step (gmbook.samplers.ddim) with the target as its
    prediction lands on the given point, on the VE path (also to sigma = 0) and the VP
    path."""
    for path, t, s in ((samplers.VEPath(10.0), 2.0, 0.7), (samplers.VEPath(10.0), 1.0, 0.0),
                       (samplers.VPPath(), 0.8, 0.3)):
        x_t, x_s = torch.randn(2, 30, 2, dtype=F64)
        target = ddim_target(path, x_t, x_s, t, s)
        pred = samplers.Prediction(lambda x, tt: target, "x0", path)
        out = samplers.ddim(pred, x_t, torch.tensor([t, s], dtype=F64)).samples
        torch.testing.assert_close(out, x_s, atol=1e-12, rtol=0)


def test_progressive_distillation_loss():
    """[eq-fs-pd-loss] [eq-fs-pd-target] For a point mass the teacher's DDIM steps are exact,
    so two steps are one and the DDIM target is the point itself: a student whose denoiser
    returns the point has zero loss; one that returns another point does not."""
    mu = torch.tensor([[0.3, -0.2]], dtype=F64)
    teacher = samplers.mixture_prediction(torch.ones(1, dtype=F64), mu,
                                          torch.zeros(1, 2, dtype=F64), samplers.VEPath(3.0))

    class Const(torch.nn.Module):   # F such that D = c_skip x + c_out F = point
        def __init__(self, point):
            super().__init__()
            self.point = point

        def forward(self, z, c_noise):
            sigma = (4 * c_noise).exp()
            c_skip, c_out, c_in, _ = edm_coefficients(sigma)
            x = z / c_in.reshape(-1, 1) if c_in.ndim else z / c_in
            c_skip = c_skip.reshape(-1, 1) if c_skip.ndim else c_skip
            c_out = c_out.reshape(-1, 1) if c_out.ndim else c_out
            return (self.point - c_skip * x) / c_out

    x = mu.expand(64, 2)
    grid = EDM(MLP(2, hidden=8, time_dim=8), sigma_max=3.0).grid(4)
    good = EDM(Const(mu), sigma_max=3.0).double()
    bad = EDM(Const(mu + 0.1), sigma_max=3.0).double()
    g = torch.Generator().manual_seed(0)
    assert progressive_distillation_loss(good, teacher, x, grid, generator=g) < 1e-20
    assert progressive_distillation_loss(bad, teacher, x, grid, generator=g) > 1e-3


def test_curriculum_values():
    """[eq-fs-curriculum] iCT's curriculum doubles in log2(s1/s0) + 1 equal stages from
    s0 + 1 to s1 + 1 levels; CM's grows as a square root from s0 to s1 + 1."""
    total = 8000
    ns = [curriculum(k, total) for k in range(0, total, 1000)]
    assert ns == [11, 21, 41, 81, 161, 321, 641, 1281]
    cm = [curriculum(k, total, kind="cm") for k in (0, total // 4, total - 1)]
    assert cm[0] == 2 and cm[2] == 151
    assert cm[1] == math.ceil(math.sqrt(0.25 * (151**2 - 4) + 4) - 1) + 1 == 76


def test_lognormal_level_probabilities_match_sampling():
    """[eq-fs-lognormal-levels] The log-normal interval probabilities are the frequencies
    with which ln(sigma) ~ N(P_mean, P_std^2), conditioned on the levels' range, falls in
    each interval."""
    levels = ConsistencyModel(MLP(2, hidden=8, time_dim=8), sigma_max=80.0).levels(20)
    p = level_probabilities(levels, "lognormal", p_mean=-1.1, p_std=2.0)
    sig = (-1.1 + 2.0 * torch.randn(400_000, dtype=F64)).exp()
    sig = sig[(sig >= levels[0]) & (sig < levels[-1])]
    freq = torch.bincount(torch.searchsorted(levels, sig, right=True) - 1,
                          minlength=19).double() / len(sig)
    torch.testing.assert_close(p, freq, atol=3e-3, rtol=0)
    assert p[0] < p[8] and float(p.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(level_probabilities(levels), torch.full((19,), 1 / 19,
                                                                        dtype=F64))


def test_pseudo_huber_limits():
    """[eq-fs-pseudo-huber] Quadratic, ||a - b||^2 / (2c), near 0; linear, ||a - b|| - c,
    far away."""
    a = torch.zeros(2, 2, dtype=F64)
    b = torch.tensor([[3e-3, 4e-3], [30.0, 40.0]], dtype=F64)
    d = pseudo_huber(a, b, 1.0)
    assert d[0] == pytest.approx(25e-6 / 2, rel=1e-4)
    assert d[1] == pytest.approx(50.0 - 1.0, rel=1e-3)


def test_consistency_training_step_learns():
    """[eq-fs-cm-loss] Consistency training (no teacher, stop-gradient target) and
    distillation give a finite loss whose gradient reaches the network; the one-step sample
    of a consistency model has the model's shape."""
    cm = ConsistencyModel(MLP(2, hidden=16, time_dim=8, time_scale=1.0))
    x = torch.randn(32, 2)
    for opts in (dict(), dict(distance="pseudo_huber", weighting="ict",
                              level_sampling="lognormal"),
                 dict(teacher=samplers.mixture_prediction(
                     torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64),
                     torch.ones(1, 2, dtype=F64), samplers.VEPath(3.0)))):
        cm.zero_grad()
        loss = cm.loss(x, n_levels=11, **opts)
        loss.backward()
        assert torch.isfinite(loss) and cm.net.out.weight.grad.abs().sum() > 0
    assert cm.sample(7, sigmas=[3.0, 0.5]).shape == (7, 2)


def test_argument_checks():
    """[eq-fs-flow-map] Wrong arguments raise clear errors."""
    pred = gaussian_pred(samplers.VEPath(10.0))
    x = torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="s < t"):
        flow_map(pred, x, 1.0, 2.0)
    with pytest.raises(TypeError, match="Prediction"):
        flow_map(lambda x, t: x, x, 2.0, 1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        consistency_coefficients(0.001, sigma_min=0.002)
    with pytest.raises(ValueError, match="increasing"):
        consistency_loss(lambda x, s: x, x, torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="VE path"):
        consistency_loss(lambda x, s: x, x, torch.tensor([0.5, 1.0]),
                         teacher=gaussian_pred(samplers.VPPath()))
    with pytest.raises(ValueError, match="decreasing"):
        multistep_consistency(lambda x, s: x, x, [1.0, 2.0])
    with pytest.raises(ValueError, match="kind"):
        curriculum(0, 10, kind="edm")
    with pytest.raises(ValueError, match="step"):
        curriculum(10, 10)
    with pytest.raises(TypeError, match="net"):
        ConsistencyModel("mlp")


def test_trajectory_distillation_on_exact_pairs():
    """[eq-fs-kd-loss] [eq-fs-gaussian-flow-map] The teacher's trajectories are the
    closed-form flow map of Gaussian data at every level, and the exact consistency function
    has zero regression loss on them; a map with the wrong exponent does not."""
    ve, smin = samplers.VEPath(10.0), 0.002
    cm = ConsistencyModel(MLP(2, hidden=8, time_dim=8), sigma_min=smin, sigma_max=3.0)
    levels = cm.levels(6)
    x = math.sqrt(10.0) * torch.randn(300, 2, dtype=F64)
    states = flow_map_pairs(gaussian_pred(ve), x, levels, rtol=1e-9, atol=1e-9)
    for i, sig in enumerate(levels.tolist()):
        torch.testing.assert_close(states[i], gaussian_flow_map(x, 3.0, sig, MEAN, VAR, ve),
                                   atol=1e-6, rtol=0)

    def exact(x, sigma):
        return gaussian_flow_map(x, sigma, smin, MEAN, VAR, ve)

    def off(x, sigma):
        return MEAN + (VAR + smin**2) / (VAR + sigma[:, None] ** 2) * (x - MEAN)

    g = torch.Generator().manual_seed(0)
    assert trajectory_distillation_loss(exact, states, levels, generator=g) < 1e-10
    assert trajectory_distillation_loss(off, states, levels, generator=g) > 1e-2


def test_meanflow_identity_for_gaussian_data():
    """[eq-fs-meanflow] [eq-fs-gaussian-flow-map] The exact average velocity of Gaussian data
    on the linear path, u = (z - Phi_{t->r}(z)) / (t - r), satisfies the MeanFlow identity
    with the exact velocity: the target equals u; a wrong average (over twice the interval)
    does not."""
    lin = samplers.LinearPath()
    pred = gaussian_pred(lin)
    z = torch.randn(64, 2, dtype=F64)
    t = 0.3 + 0.6 * torch.rand(64, dtype=F64)
    r = t * torch.rand(64, dtype=F64)

    def u_exact(zz, rr, tt):
        return (zz - gaussian_flow_map(zz, tt, rr, MEAN, VAR, lin)) / (tt - rr)[:, None]

    def u_wrong(zz, rr, tt):
        return (zz - gaussian_flow_map(zz, tt, rr, MEAN, VAR, lin)) / (2 * (tt - rr)[:, None])

    v = torch.cat([pred.velocity(z[i:i + 1], t[i]) for i in range(64)])
    torch.testing.assert_close(meanflow_target(u_exact, z, r, t, v), u_exact(z, r, t),
                               atol=1e-7, rtol=0)
    assert (meanflow_target(u_wrong, z, r, t, v) - u_wrong(z, r, t)).abs().max() > 1e-2


def test_meanflow_model_trains_and_samples():
    """[eq-fs-meanflow] The MeanFlow loss is finite with a gradient; sampling takes one
    call per step and maps noise to points of the data's shape."""
    mf = MeanFlow(MLP(4, 2, hidden=16))
    loss = mf.loss(torch.randn(32, 2))
    loss.backward()
    assert torch.isfinite(loss) and mf.net.out.weight.grad.abs().sum() > 0
    assert mf.sample(6, steps=2).shape == (6, 2)
    with pytest.raises(ValueError, match="equal"):
        MeanFlow(MLP(4, 2, hidden=8), equal=1.0)


def test_one_denoiser_call_collapses_but_the_flow_map_does_not():
    """[prop-fs-one-call] [prop-fs-gaussian] From the exact noised marginal of Gaussian data
    at t = 3, one call of the exact denoiser returns samples of variance v^2 / (v + t^2)
    (the law of total covariance), while the flow map to s = 0.002 returns the data's
    variance v + s^2; for the two moons' mixture the one-call samples are also narrower than
    the data on both axes."""
    ve = samplers.VEPath(3.0)
    pred = gaussian_pred(ve)
    g = torch.Generator().manual_seed(5)
    n = 40_000
    x = MEAN + (VAR + 9.0).sqrt() * torch.randn(n, 2, generator=g, dtype=F64)
    one = pred.x0_eps(x, torch.tensor(3.0, dtype=F64))[0]
    want = VAR**2 / (VAR + 9.0)
    assert ((one.var(0) - want).abs() < 4 * want * math.sqrt(2 / n)).all(), one.var(0)
    mapped = gaussian_flow_map(x, 3.0, 0.002, MEAN, VAR, ve)
    torch.testing.assert_close(mapped.var(0), VAR + 0.002**2, rtol=0.03, atol=0)
    from gmbook.data import TwoMoons
    moons = TwoMoons()
    mix = samplers.mixture_prediction(*moons.mixture(), ve)
    data = moons.sample(4000, generator=g).to(F64)
    noisy = data + 3.0 * torch.randn(4000, 2, generator=g, dtype=F64)
    one_moons = mix.x0_eps(noisy, torch.tensor(3.0, dtype=F64))[0]
    assert (one_moons.var(0) < 0.5 * data.var(0)).all()
