"""Tests of gmbook.few_step that pin each formula's values: written after a mutation check
found wrong constants, swapped arguments and missing stop-gradients that the shape and limit
tests of test_few_step.py let through."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from gmbook import samplers
from gmbook._random import rand, randn
from gmbook.few_step import (ConsistencyModel, MeanFlow, consistency_coefficients,
                             consistency_loss, gaussian_flow_map, level_probabilities,
                             progressive_distillation_loss, pseudo_huber,
                             trajectory_distillation_loss)
from gmbook.nets import MLP
from gmbook.sde import EDM

F64 = torch.float64
MEAN = torch.tensor([0.5, -1.0], dtype=F64)
VAR = torch.tensor([0.3, 2.0], dtype=F64)


class _Zero(nn.Module):
    """F = 0 (so f = c_skip x), recording the network's inputs."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=F64))
        self.seen = []

    def forward(self, h, c_noise):
        self.seen.append((h.detach().clone(), torch.as_tensor(c_noise).detach().clone()))
        return 0 * h + self.w


def test_consistency_coefficients_at_a_large_sigma_min():
    """[eq-fs-cm-param] With sigma_min = 0.5 (where sigma and sigma - sigma_min differ by far
    more than a tolerance): at sigma = 1, sigma_d = 0.5 the scalings are c_skip = 1/2,
    c_out = 0.25 / sqrt(1.25), c_in = 1 / sqrt(1.25), c_noise = 0; and, independently,
    c_in gives the noisy input unit variance for data of standard deviation sigma_d."""
    c_skip, c_out, c_in, c_noise = consistency_coefficients(
        torch.tensor([1.0], dtype=F64), sigma_data=0.5, sigma_min=0.5)
    want = (0.5, 0.25 / math.sqrt(1.25), 1 / math.sqrt(1.25), 0.0)
    for got, w in zip((c_skip, c_out, c_in, c_noise), want):
        assert abs(float(got) - w) < 1e-12
    n = 200_000
    g = torch.Generator().manual_seed(0)
    x0 = 0.5 * torch.randn(n, dtype=F64, generator=g)
    for sig in (0.6, 1.0, 3.0):
        c_in = consistency_coefficients(sig, sigma_data=0.5, sigma_min=0.5)[2]
        xs = x0 + sig * torch.randn(n, dtype=F64, generator=g)
        assert abs(float((c_in * xs).var()) - 1) < 4 * math.sqrt(2 / n)


def test_consistency_model_feeds_the_network_c_in_x_and_c_noise():
    """[eq-fs-cm-param] f(x, sigma) = c_skip x + c_out F(c_in x; c_noise): with F = 0 the
    output is c_skip x, and the network sees c_in x and log(sigma) / 4."""
    net = _Zero()
    cm = ConsistencyModel(net, sigma_data=0.5, sigma_min=0.002).double()
    x = torch.randn(16, 2, dtype=F64)
    out = cm(x, 2.0)
    c_skip, _, c_in, c_noise = consistency_coefficients(2.0, 0.5, 0.002)
    torch.testing.assert_close(out, c_skip * x, atol=1e-14, rtol=0)
    h, t = net.seen[-1]
    torch.testing.assert_close(h, x / math.sqrt(4 + 0.25), atol=1e-14, rtol=0)
    assert abs(float(t) - math.log(2.0) / 4) < 1e-14


def test_pseudo_huber_with_c_not_one():
    """[eq-fs-pseudo-huber] sqrt(|a - b|^2 + c^2) - c with c = 0.1 (c = 1 cannot tell c
    from c^2): at |a - b| = 0.5 it is sqrt(0.26) - 0.1; near 0 it is |a - b|^2 / (2c)."""
    a = torch.zeros(2, 2, dtype=F64)
    b = torch.tensor([[0.3, 0.4], [3e-4, 4e-4]], dtype=F64)
    d = pseudo_huber(a, b, 0.1)
    assert abs(float(d[0]) - (math.sqrt(0.26) - 0.1)) < 1e-12
    assert abs(float(d[1]) / (25e-8 / 0.2) - 1) < 1e-5


def test_consistency_training_vanishes_for_a_point_mass():
    """[eq-fs-cm-loss] For a point mass mu the exact consistency function on the VE path is
    f(x, sigma) = mu + (sigma_min / sigma)(x - mu); both levels of consistency training share
    one z, so f(x_0 + sigma_{n+1} z, sigma_{n+1}) = f(x_0 + sigma_n z, sigma_n) = mu +
    sigma_min z and the loss is 0 (with independent noises it is about 2 D sigma_min^2)."""
    smin = 0.2
    cm = ConsistencyModel(MLP(2, hidden=8, time_dim=8), sigma_min=smin, sigma_max=5.0)
    mu = torch.tensor([0.3, -0.7], dtype=F64)

    def exact(x, sigma):
        return mu + (smin / sigma)[:, None] * (x - mu)

    for opts in (dict(), dict(weighting="ict", level_sampling="lognormal")):
        loss = consistency_loss(exact, mu.expand(512, 2), cm.levels(10),
                                generator=torch.Generator().manual_seed(0), **opts)
        assert float(loss) < 1e-20


def test_consistency_loss_stop_gradient_equals_a_frozen_target():
    """[eq-fs-cm-loss] target=None is f under a stop-gradient: its parameter gradient is the
    gradient with a frozen copy of the model as the target (no gradient through the
    target)."""
    cm = ConsistencyModel(MLP(2, hidden=16, time_dim=8, time_scale=1.0)).double()
    frozen = copy.deepcopy(cm).requires_grad_(False)
    x = torch.randn(64, 2, dtype=F64)
    grads = []
    for target in (None, frozen):
        cm.zero_grad()
        cm.loss(x, n_levels=11, target=target,
                generator=torch.Generator().manual_seed(0)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in cm.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-14)


def test_consistency_loss_levels_and_ict_weight():
    """[eq-fs-cm-loss] [eq-fs-lognormal-levels] With f the identity and x_0 = 0, a row's
    squared distance is (sigma_{n+1} - sigma_n)^2 |z|^2: the iCT loss is the mean of
    (sigma_{n+1} - sigma_n) |z|^2 over the rows' recorded levels, and the interval n is
    drawn with the log-normal probabilities (frequencies within 4 standard errors)."""
    levels = torch.tensor([0.05, 0.2, 0.6, 1.5, 4.0], dtype=F64)
    seen = []

    def ident(x, sigma):
        seen.append(sigma.detach().clone())
        return x

    n = 100_000
    x = torch.zeros(n, 1, dtype=F64)
    loss = consistency_loss(ident, x, levels, weighting="ict", level_sampling="lognormal",
                            generator=torch.Generator().manual_seed(0))
    s_lo, s_hi = seen
    # the same generator's draws, in the loss's order: u (the levels), then z
    g = torch.Generator().manual_seed(0)
    rand((n,), dtype=F64, generator=g)
    z2 = randn(x.shape, like=x, generator=g).square().sum(1)
    torch.testing.assert_close(loss, ((s_hi - s_lo) * z2).mean(), rtol=1e-12, atol=0)
    p = level_probabilities(levels, "lognormal")
    idx = torch.searchsorted(levels, s_lo)
    freq = torch.bincount(idx, minlength=len(p)).double() / n
    assert bool(((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-12).all())
    assert bool((s_hi == levels[idx + 1]).all())


def test_consistency_model_sample_rescales_the_prior():
    """[eq-fs-cm-multistep] Starting below sigma_max, the prior is rescaled to the
    marginal's scale sqrt(tau_1^2 + sigma_d^2): with F = 0, sample(sigmas=[1]) is
    c_skip(1) * prior * sqrt(1 + sd^2) / sqrt(sigma_max^2 + sd^2) draw for draw."""
    cm = ConsistencyModel(_Zero(), sigma_data=0.5, sigma_max=3.0).double()
    out = cm.sample(1000, sigmas=[1.0], generator=torch.Generator().manual_seed(1))
    prior = cm.prior(1000, generator=torch.Generator().manual_seed(1))
    c_skip = consistency_coefficients(1.0, 0.5, cm.sigma_min)[0]
    want = c_skip * prior * math.sqrt(1 + 0.25) / math.sqrt(9 + 0.25)
    torch.testing.assert_close(out, want, atol=1e-14, rtol=0)


def test_trajectory_distillation_level_choice():
    """[eq-fs-kd-loss] Levels i > 1 only (sigma_min is never an input), the top level with
    probability top + (1 - top) / (N - 1), each other with (1 - top) / (N - 1); top = 0.8
    (0.5 would not tell top from 1 - top)."""
    levels = torch.tensor([0.002, 0.1, 0.5, 1.0, 2.0, 3.0], dtype=F64)
    seen = []

    def rec(x, sigma):
        seen.append(sigma.detach().clone())
        return x

    states = torch.zeros(6, 10, 1, dtype=F64)
    b = 100_000
    trajectory_distillation_loss(rec, states, levels, batch=b, top=0.8,
                                 generator=torch.Generator().manual_seed(0))
    idx = torch.searchsorted(levels, seen[0])
    assert bool((idx >= 1).all())
    freq = torch.bincount(idx, minlength=6).double() / b
    p = torch.tensor([0, 0.04, 0.04, 0.04, 0.04, 0.84], dtype=F64)
    assert bool(((freq - p).abs() <= 4 * (p * (1 - p) / b).sqrt() + 1e-12).all())


def test_progressive_distillation_loss_value():
    """[eq-fs-pd-loss] [eq-fs-pd-target] With K = 1 (grid 3 -> 1 -> 0.3) and Gaussian data
    (DDIM is not exact for it, so one teacher step differs from two): the loss is
    mean_rows (|D(x_t; 3) - x~_0|^2 / D) / c_out(3)^2, with x_t = x + 3 eps from the same
    generator, x_s two DDIM steps of the teacher, and x~_0 = (x_s - 0.1 x_t) / 0.9 (the
    VE form of the target)."""
    ve = samplers.VEPath(3.0)
    teacher = samplers.mixture_prediction(torch.ones(1, dtype=F64), MEAN[None], VAR[None], ve)
    student = EDM(MLP(2, hidden=16, time_dim=8), sigma_max=3.0, sigma_data=0.5).double()
    grid = torch.tensor([3.0, 1.0, 0.3], dtype=F64)
    x = MEAN + VAR.sqrt() * torch.randn(64, 2, dtype=F64)
    with torch.no_grad():
        loss = progressive_distillation_loss(student, teacher, x, grid,
                                             generator=torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        rand((64,), dtype=F64, generator=g)
        x_t = x + 3.0 * randn(x.shape, like=x, generator=g)
        x_s = samplers.ddim(teacher, x_t, grid).samples
        target = (x_s - 0.1 * x_t) / 0.9
        c_out2 = 9 * 0.25 / (9 + 0.25)
        want = ((student.denoise(x_t, torch.full((64,), 3.0, dtype=F64)) - target) ** 2
                ).mean(1).mean() / c_out2
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=0)
    one = samplers.ddim(teacher, x_t, grid[[0, 2]]).samples
    assert (one - x_s).abs().max() > 1e-2   # two steps are not one here


class _PointMassU(nn.Module):
    """The exact average velocity of a point mass mu on the linear path: (z - mu) / t."""

    def __init__(self, mu):
        super().__init__()
        self.mu = mu
        self.w = nn.Parameter(torch.zeros((), dtype=F64))
        self.h = None

    def forward(self, h):
        self.h = h.detach().clone()
        return (h[:, :2] - self.mu) / h[:, 2:3] + 0 * self.w


def test_meanflow_loss_vanishes_for_a_point_mass_and_orders_the_times():
    """[eq-fs-meanflow] For a point mass the conditional velocity eps - x is the marginal
    one, the trajectories are straight and u = (z - mu) / t exactly: the MeanFlow loss is 0
    (with x - eps for the velocity it is not). The times the network sees have r <= t
    (t - r >= 0), with r = t on a fraction `equal` of the rows."""
    mu = torch.tensor([0.4, -0.3], dtype=F64)
    net = _PointMassU(mu)
    mf = MeanFlow(net, adaptive_p=0.0, equal=0.5).double()
    b = 20_000
    loss = mf.loss(mu.expand(b, 2), generator=torch.Generator().manual_seed(0))
    assert float(loss.detach()) < 1e-20
    gap = net.h[:, 3]
    assert bool((gap >= 0).all()) and float(gap.max()) > 0.1
    frac = float((gap == 0).double().mean())
    assert abs(frac - 0.5) < 4 * 0.5 / math.sqrt(b)


def test_meanflow_adaptive_weight_is_stop_gradient():
    """[eq-fs-meanflow] With one row, the adaptive loss err / sg(err + 1e-3) has the value
    and the gradient of the plain loss divided by (err + 1e-3)."""
    mf = MeanFlow(MLP(4, 2, hidden=16)).double()
    x = torch.randn(1, 2, dtype=F64)
    out = []
    for p in (0.0, 1.0):
        mf.adaptive_p = p
        mf.zero_grad()
        loss = mf.loss(x, generator=torch.Generator().manual_seed(0))
        loss.backward()
        out.append((loss.detach(), torch.cat([q.grad.flatten() for q in mf.parameters()])))
    (l0, g0), (l1, g1) = out
    torch.testing.assert_close(l1, l0 / (l0 + 1e-3), rtol=1e-12, atol=0)
    torch.testing.assert_close(g1, g0 / (l0 + 1e-3), rtol=1e-8, atol=1e-12)


class _GaussU(nn.Module):
    """The exact average velocity of N(MEAN, diag VAR) on the linear path."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, h):
        z, t = h[:, :2], h[:, 2]
        r = t - h[:, 3]
        phi = gaussian_flow_map(z, t, r, MEAN, VAR, samplers.LinearPath())
        return (z - phi) / (t - r)[:, None] + 0 * self.w


def test_meanflow_sample_with_the_exact_average_velocity_is_the_flow_map():
    """[eq-fs-meanflow] With the exact u, one jump z_0 = z_1 - u(z_1, 0, 1) and three jumps
    both land on the closed-form flow map Phi_{1 -> 0} of the noise (the data's law)."""
    mf = MeanFlow(_GaussU()).double()
    noise = torch.randn(500, 2, dtype=F64)
    want = gaussian_flow_map(noise, 1.0, 0.0, MEAN, VAR, samplers.LinearPath())
    for steps in (1, 3):
        torch.testing.assert_close(mf.sample(500, steps=steps, x=noise), want, atol=1e-10,
                                   rtol=0)
