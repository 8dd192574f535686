"""Tests of ``gmbook.ebm`` and the checkers of ``gmbook.exercises.ebm``: the claims of the
chapter "Energy-based models" (book/foundations/ebm.md).

Each test of a claim names its label in square brackets in its docstring. The
two-dimensional models are normalised on a grid, which gives exact gradients and exact
samples to compare the contrastive estimates with.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gmbook import ebm as ebm_module
from gmbook.ebm import (EBM, NCE, NEGATIVES, ais, contrastive_loss, energy_mlp, langevin,
                        nce_loss)
from gmbook.exercises import check, get_checker
from gmbook.exercises import ebm as ex
from gmbook.mcmc import ula

F64 = torch.float64


def _flat_grad(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


@pytest.fixture
def small_ebm() -> EBM:
    torch.manual_seed(3)
    return EBM(energy_mlp(hidden=16, depth=2), base_std=2.0).double()


def test_grid_negative_phase_is_the_gradient_of_log_z(small_ebm):
    """[thm-ebm-gradient] On the grid, d log Z / d theta = -sum_g softmax(-E)_g dE(g)/d theta
    exactly, so the contrastive gradient with the model's exact expectation as negative phase
    equals the gradient of the grid NLL [eq-ebm-grad]."""
    grid = small_ebm.grid_density(lims=(-3.5, 3.5), n=48).double()
    params = list(small_ebm.parameters())
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = _flat_grad(grid.loss(x), params)
    cells = grid.grid.to(F64)
    w = torch.softmax(-small_ebm.energy(cells), 0).detach()          # model cell masses
    phases = small_ebm.energy(x).mean() - (w * small_ebm.energy(cells)).sum()
    torch.testing.assert_close(_flat_grad(phases, params), exact, rtol=1e-9, atol=1e-12)


def test_contrastive_gradient_with_model_samples_matches_exact(small_ebm):
    """[eq-ebm-grad] The contrastive surrogate [eq-ebm-contrastive] with negatives drawn from
    the model (exact grid samples) estimates the exact NLL gradient within Monte Carlo error,
    and negatives from another distribution do not."""
    grid = small_ebm.grid_density(lims=(-3.5, 3.5), n=64).double()
    params = list(small_ebm.parameters())
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    exact = _flat_grad(grid.loss(x), params)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        x_model = grid.sample(200_000, generator=gen).to(F64)
    est = _flat_grad(contrastive_loss(small_ebm.energy, x, x_model), params)
    rel = ((est - exact).norm() / exact.norm()).item()
    assert rel < 0.03
    x_uniform = 7 * torch.rand(200_000, 2, generator=gen, dtype=F64) - 3.5
    wrong = _flat_grad(contrastive_loss(small_ebm.energy, x, x_uniform), params)
    assert ((wrong - exact).norm() / exact.norm()).item() > 5 * rel


def test_grid_density_integrates_to_one(small_ebm):
    """[eq-ebm-grid] The grid-normalised density integrates to 1 over its box, also when
    integrated on a finer grid than the one that normalised it."""
    grid = small_ebm.grid_density(lims=(-3.5, 3.5), n=128).double()
    n_fine = 400
    h = 7.0 / n_fine
    c = -3.5 + h * (torch.arange(n_fine, dtype=F64) + 0.5)
    gx, gy = torch.meshgrid(c, c, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with torch.no_grad():
        mass = (grid.log_prob(pts).exp() * h * h).sum().item()
    assert abs(mass - 1) < 2e-3
    with torch.no_grad():
        coarse = small_ebm.grid_density(lims=(-3.5, 3.5), n=8).double()
        assert abs((coarse.log_prob(pts).exp() * h * h).sum().item() - 1) > 5e-3


def test_base_term_makes_the_energy_confining():
    """[eq-ebm-base] The base adds |x|^2 / (2 s0^2) to the network's output."""
    torch.manual_seed(0)
    net = energy_mlp(hidden=8, depth=1)
    plain, based = EBM(net), EBM(net, base_std=2.0)
    x = torch.randn(10, 2)
    torch.testing.assert_close(based.energy(x) - plain.energy(x), (x**2).sum(1) / 8)


def test_langevin_on_a_quadratic_energy_recovers_its_gaussian():
    """[eq-ebm-langevin] Langevin on E(x) = x^T A x / 2 samples N(0, A^-1) up to the ULA
    bias [eq-samp-ula-var]: in the eigenbasis each variance is lam^-1 / (1 - h lam / 2)."""
    a = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=F64)

    def energy(x):
        return 0.5 * ((x @ a) * x).sum(1)

    h = 0.2
    x0 = torch.zeros(40_000, 2, dtype=F64)
    x = langevin(energy, x0, 300, h, generator=torch.Generator().manual_seed(0))
    lam, vec = torch.linalg.eigh(a)
    predicted = vec @ torch.diag(1 / lam / (1 - h * lam / 2)) @ vec.T
    cov = torch.cov(x.T)
    se = math.sqrt(2 / 40_000) * predicted.abs().max().item()
    assert (cov - predicted).abs().max().item() < 5 * se
    assert (cov - torch.linalg.inv(a)).abs().max().item() > 5 * se   # the bias is visible
    assert x.mean(0).abs().max().item() < 5 * math.sqrt(predicted.max().item() / 40_000)


def test_langevin_noise_scale_is_ula_on_the_tempered_energy():
    """[eq-ebm-langevin] With noise sigma, Langevin is ULA with step h sigma^2 on E / sigma^2:
    the same noise draws give the same chain."""
    def energy(x):
        return (x**4).sum(1) / 4 + x[:, 0] * x[:, 1]

    sigma, h = 0.5, 0.02
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    ours = langevin(energy, x0, 40, h, noise=sigma, generator=torch.Generator().manual_seed(2))
    ref = ula(lambda x: -energy(x) / sigma**2, x0, 40, h * sigma**2,
              generator=torch.Generator().manual_seed(2)).samples[-1]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_langevin_noise_schedule_and_zero_noise():
    """A per-step noise schedule is used step by step; noise 0 is gradient descent."""
    def energy(x):
        return 0.5 * (x**2).sum(1)

    x0 = torch.ones(3, 2, dtype=F64)
    torch.testing.assert_close(langevin(energy, x0, 5, 0.1, noise=0.0), x0 * 0.9**5)
    a = langevin(energy, x0, 3, 0.1, noise=[0.0, 0.0, 0.0])
    torch.testing.assert_close(a, x0 * 0.9**3)
    with pytest.raises(ValueError, match="one per step"):
        langevin(energy, x0, 3, 0.1, noise=[1.0, 1.0])


def test_contrastive_loss_value_and_penalty():
    """[eq-ebm-contrastive] mean E(x+) - mean E(x-), plus alpha (mean E(x+)^2 + mean E(x-)^2)."""
    def energy(x):
        return x.sum(1)

    xp = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    xn = torch.tensor([[3.0, 0.0]])
    assert contrastive_loss(energy, xp, xn).item() == pytest.approx(2.0 - 3.0)
    assert contrastive_loss(energy, xp, xn, reg=0.5).item() == pytest.approx(
        -1.0 + 0.5 * ((9 + 1) / 2 + 9))


@pytest.mark.parametrize("negatives", NEGATIVES)
def test_ebm_loss_and_negatives(negatives):
    """Each kind of negative gives a scalar loss; CD starts at the data (k steps of noise 0
    and a tiny step stay there), PCD writes its chains into the buffer."""
    torch.manual_seed(0)
    model = EBM(energy_mlp(hidden=8, depth=1), negatives=negatives, k=2, step_size=1e-3,
                noise=0.0, buffer_size=64, generator=torch.Generator().manual_seed(1))
    x = torch.randn(16, 2)
    before = model.buffer.clone()
    loss = model.loss(x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    neg = model.sample_negatives(x)
    assert neg.shape == x.shape
    if negatives == "cd":
        assert (neg - x).abs().max().item() < 0.1
    if negatives == "pcd":
        assert not torch.equal(model.buffer, before)
    else:
        assert torch.equal(model.buffer, before)


def test_ebm_sample_and_grid_density_shapes():
    """``sample`` returns (n, D) points and ``grid_density`` a normalised GridDensity."""
    torch.manual_seed(0)
    model = EBM(energy_mlp(hidden=8, depth=1), k=3, generator=torch.Generator().manual_seed(0))
    assert model.sample(7).shape == (7, 2)
    assert model.sample(4, steps=2, noise=[1.0, 0.5]).shape == (4, 2)
    dens = model.grid_density(n=32)
    with torch.no_grad():
        total = (dens.log_prob(dens.grid).exp() * math.exp(dens.log_cell_area)).sum().item()
    assert total == pytest.approx(1.0, abs=1e-5)


def test_training_reduces_the_contrastive_loss_towards_the_data():
    """A few hundred PCD updates move the energy down on the data relative to noise."""
    from gmbook.data import TwoMoons
    from gmbook.train import fit

    torch.manual_seed(0)
    moons = TwoMoons()
    model = EBM(energy_mlp(hidden=32, depth=2), k=10, step_size=0.005, reg=0.1, base_std=2.0,
                generator=torch.Generator().manual_seed(1))
    fit(model, moons.sample, steps=200, batch_size=128, lr=2e-3, seed=2, progress=False)
    data = moons.sample(500, generator=torch.Generator().manual_seed(3))
    noise = 6 * torch.rand(500, 2, generator=torch.Generator().manual_seed(4)) - 3
    with torch.no_grad():
        assert model.energy(data).mean() < model.energy(noise).mean() - 0.5


def test_pcd_counts_the_steps_of_its_chains():
    """The buffer records the Langevin steps each state has run since it was last started
    from noise: k per visit, reset to k at a restart; without restarts every visited state
    has run a multiple of k steps."""
    torch.manual_seed(0)
    model = EBM(energy_mlp(hidden=8, depth=1), k=3, step_size=1e-3, buffer_size=16,
                reinit=0.0, generator=torch.Generator().manual_seed(1))
    x = torch.randn(64, 2)
    for _ in range(5):
        model.sample_negatives(x)
    steps = model.buffer_steps
    assert steps.sum().item() > 0 and bool((steps % 3 == 0).all())
    assert steps.max().item() <= 5 * 3
    model.reinit = 1.0                      # every chain restarts: one visit each
    model.sample_negatives(x)
    assert set(model.buffer_steps.unique().tolist()) <= {3} | set(steps.unique().tolist())


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_energy_mlp_input_grad_is_the_autograd_gradient(depth):
    """[eq-ebm-langevin] The closed-form input gradient of the energy network (the chain rule
    written out, silu'(h) = s(h) + silu(h)(1 - s(h))) equals autograd's, and so does
    ``EBM.energy_grad`` with the base term [eq-ebm-base]; the Langevin chains that use it
    are those of autograd through ``EBM.energy``, draw for draw."""
    net = energy_mlp(hidden=16, depth=depth, seed=0).double()
    with torch.no_grad():                  # non-zero output weights: a gradient to check
        net.out.weight.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    z = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(net(z).sum(), z)
    torch.testing.assert_close(net.input_grad(x), expected, rtol=1e-12, atol=1e-12)
    model = EBM(net, negatives="cd", k=5, base_std=2.0, step_size=0.05)
    z = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model.energy(z).sum(), z)
    torch.testing.assert_close(model.energy_grad(x), expected, rtol=1e-12, atol=1e-12)
    assert (model.energy_grad(x) - net.input_grad(x) - x / 4).abs().max().item() < 1e-12
    auto = langevin(model.energy, x, 5, 0.05, generator=torch.Generator().manual_seed(3))
    model.generator = torch.Generator().manual_seed(3)   # the same draws as `auto`
    fast = model.sample_negatives(x)          # CD-5 from x: the closed-form gradient
    torch.testing.assert_close(fast, auto, rtol=1e-10, atol=1e-10)


def test_energy_mlp_seed_fixes_the_weights_without_touching_the_global_rng():
    """``energy_mlp(seed=s)`` gives the same weights whatever ran before, and leaves the
    caller's global random state as it was."""
    torch.manual_seed(0)
    a = energy_mlp(seed=7)
    torch.rand(5)
    state = torch.random.get_rng_state()
    b = energy_mlp(seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(energy_mlp(seed=8).layers[0].weight, a.layers[0].weight)


class _Quadratic(nn.Module):
    """E(x) = sum_j (x_j - mu_j)^2 / (2 sigma_j^2): a Gaussian family for NCE."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(2, dtype=F64))
        self.log_sigma = nn.Parameter(torch.zeros(2, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * ((x - self.mu) / self.log_sigma.exp()) ** 2).sum(1)


@pytest.mark.parametrize("nu", [1.0, 4.0])
def test_nce_recovers_a_gaussian_and_its_log_normalizer(nu):
    """[thm-ebm-nce] NCE [eq-ebm-nce] on Gaussian data with a Gaussian family recovers the
    mean, the scales and, through the learned constant c, log Z = log(2 pi sigma_1 sigma_2)
    of the unnormalised model exp(-E) (here E has no normaliser; a missing log nu would
    shift c by log 4 for nu = 4)."""
    from gmbook.train import fit

    mu, sigma = torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([0.7, 1.5], dtype=F64)
    gen = torch.Generator().manual_seed(0)

    def data(n):
        return mu + sigma * torch.randn(n, 2, generator=gen, dtype=F64)

    model = NCE(EBM(_Quadratic(), buffer_size=1), noise_std=2.5, nu=nu,
                generator=torch.Generator().manual_seed(1)).double()
    fit(model, data, steps=1500, batch_size=1024, lr=0.05, schedule="cosine", seed=2,
        progress=False)
    net = model.ebm.net
    torch.testing.assert_close(net.mu.detach(), mu, atol=0.05, rtol=0)
    torch.testing.assert_close(net.log_sigma.exp().detach(), sigma, atol=0.05, rtol=0)
    log_z = math.log(2 * math.pi) + sigma.log().sum().item()
    assert abs(model.log_z.item() - log_z) < 0.05


def test_nce_loss_is_minimised_by_the_normalised_truth():
    """[thm-ebm-nce] With the model fixed to the true log-density up to a constant c, the
    NCE loss [eq-ebm-nce] on a large sample is smallest at c = log Z: the objective
    normalises the model."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 2, generator=gen, dtype=F64)
    y = 2.0 * torch.randn(400_000, 2, generator=gen, dtype=F64)
    log_q = torch.distributions.Normal(torch.zeros((), dtype=F64), 2.0)

    def noise_lp(u):
        return log_q.log_prob(u).sum(1)

    log_z = math.log(2 * math.pi)
    cs = [log_z - 0.3, log_z - 0.1, log_z, log_z + 0.1, log_z + 0.3]
    losses = [nce_loss(lambda u, c=c: -0.5 * (u**2).sum(1) - c, x, y, noise_lp).item()
              for c in cs]
    assert min(range(5), key=losses.__getitem__) == 2
    assert losses[0] > losses[2] + 1e-3 and losses[4] > losses[2] + 1e-3


@pytest.mark.parametrize("temperatures", [1, 5])
def test_ais_is_unbiased_for_a_gaussian_normalizer(temperatures):
    """[prop-ebm-ais] The AIS weights [eq-ebm-ais] average to Z = 2 pi / sqrt(det A) of
    f(x) = exp(-(x - m)^T A (x - m) / 2) from p0 = N(0, 3^2 I), with one temperature (plain
    importance sampling) and with five; the mean of log w is below log Z (Jensen)."""
    a = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=F64)
    m = torch.tensor([1.0, -0.5], dtype=F64)

    def log_f(x):
        d = x - m
        return -0.5 * ((d @ a) * d).sum(1)

    s0 = 3.0
    def log_p0(x):
        return (-0.5 * (x**2).sum(1) / s0**2 - 2 * math.log(s0) - math.log(2 * math.pi))

    gen = torch.Generator().manual_seed(0)
    x0 = s0 * torch.randn(20_000, 2, generator=gen, dtype=F64)
    betas = torch.linspace(0, 1, temperatures + 1)
    out = ais(log_f, x0, log_p0, betas, 0.1, generator=gen)
    z = 2 * math.pi / math.sqrt(torch.linalg.det(a).item())
    w = out.log_weights.exp()
    se = w.std().item() / math.sqrt(w.numel())
    assert abs(w.mean().item() - z) < 4 * se and se < 0.05 * z
    assert abs(out.log_z - math.log(z)) < 4 * out.log_z_se
    lw = out.log_weights
    assert lw.mean().item() < math.log(z) - 4 * lw.std().item() / math.sqrt(lw.numel())
    assert out.samples.shape == (20_000, 2) and 0 < out.acceptance <= 1


def test_ais_samples_the_target_with_many_temperatures():
    """[eq-ebm-ais] With many temperatures the weights are far more even than those of plain
    importance sampling from the same draws, log Z is accurate, and the final states are
    distributed as the target N(m, A^-1)."""
    a = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=F64)
    m = torch.tensor([1.0, -0.5], dtype=F64)

    def log_f(x):
        d = x - m
        return -0.5 * ((d @ a) * d).sum(1)

    def log_p0(x):
        return -0.5 * (x**2).sum(1) / 4 - 2 * math.log(2.0) - math.log(2 * math.pi)

    gen = torch.Generator().manual_seed(1)
    x0 = 2 * torch.randn(4000, 2, generator=gen, dtype=F64)
    out = ais(log_f, x0, log_p0, torch.linspace(0, 1, 101), 0.2, mcmc_steps=2, generator=gen)
    plain = ais(log_f, x0, log_p0, [0.0, 1.0], 0.2, generator=gen)
    assert out.log_weights.std().item() < 0.5 * plain.log_weights.std().item()
    z = 2 * math.pi / math.sqrt(torch.linalg.det(a).item())
    assert abs(out.log_z - math.log(z)) < 0.03
    torch.testing.assert_close(out.samples.mean(0), m, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(out.samples.T), torch.linalg.inv(a), atol=0.05, rtol=0)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: EBM("net"), TypeError, "net must be an nn.Module"),
        (lambda: EBM(energy_mlp(), negatives="gibbs"), ValueError, "negatives must be one of"),
        (lambda: EBM(energy_mlp(), k=0), ValueError, "k must be a positive int"),
        (lambda: EBM(energy_mlp(), reinit=1.5), ValueError, r"reinit must be in \[0, 1\]"),
        (lambda: EBM(energy_mlp(), init_lims=(1.0, -1.0)), ValueError, "init_lims"),
        (lambda: EBM(energy_mlp(), base_std=0.0), ValueError, "base_std must be > 0"),
        (lambda: EBM(energy_mlp(dim=3), dim=3).grid_density(), ValueError, "dim == 2"),
        (lambda: langevin("E", torch.zeros(2, 2), 3, 0.1), TypeError, "energy must be a callable"),
        (lambda: langevin(lambda x: x.sum(1), torch.zeros(2), 3, 0.1), ValueError,
         r"x0 must have shape \(B, D\)"),
        (lambda: langevin(lambda x: x.sum(1), torch.zeros(2, 2), 3, -0.1), ValueError,
         "step_size must be > 0"),
        (lambda: langevin(lambda x: x, torch.zeros(2, 2), 3, 0.1), ValueError,
         r"must map \(C, D\) to \(C,\)"),
        (lambda: contrastive_loss(lambda x: x.sum(1), torch.zeros(2, 2), torch.zeros(2, 3)),
         ValueError, r"x_neg must have the dimension D = 2"),
        (lambda: contrastive_loss(lambda x: x.sum(1), torch.zeros(2, 2), torch.zeros(2, 2),
                                  reg=-1.0), ValueError, "reg must be >= 0"),
        (lambda: langevin(lambda x: x.sum(1), torch.zeros(2, 2), 3, 0.1, grad="g"), TypeError,
         "grad must be None or a callable"),
        (lambda: energy_mlp(seed=-1), ValueError, "seed must be an int >= 0"),
        (lambda: energy_mlp().input_grad(torch.zeros(2, 3)), ValueError,
         r"x must have shape \(B, 2\)"),
        (lambda: NCE(energy_mlp()), TypeError, "ebm must be an EBM"),
        (lambda: NCE(EBM(energy_mlp()), nu=0.0), ValueError, "nu must be > 0"),
        (lambda: nce_loss(lambda x: x.sum(1), torch.zeros(2, 2), torch.zeros(3, 3),
                          lambda x: x.sum(1)), ValueError, r"x_noise must have the dimension D = 2"),
        (lambda: nce_loss(lambda x: x, torch.zeros(2, 2), torch.zeros(3, 2),
                          lambda x: x.sum(1)), ValueError, r"map \(B, D\) to \(B,\)"),
        (lambda: ais(lambda x: x.sum(1), torch.zeros(4, 2), lambda x: x.sum(1), [0.0, 0.5],
                     0.1), ValueError, "betas must increase strictly from 0 to 1"),
        (lambda: ais(lambda x: x.sum(1), torch.zeros(4, 2), lambda x: x.sum(1), [0.0, 1.0],
                     0.0), ValueError, "step_size must be > 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, exc, match):
    """Wrong types, shapes and values raise TypeError or ValueError naming the argument."""
    with pytest.raises(exc, match=match):
        call()


def test_module_exports():
    """``__all__`` lists the public names."""
    assert set(ebm_module.__all__) == {"AISResult", "EBM", "EnergyMLP", "NCE", "NEGATIVES", "ais",
                                       "contrastive_loss", "energy_mlp", "langevin",
                                       "nce_loss"}


# --------------------------------------------------------------------------- checkers


@pytest.mark.parametrize("name", ["grid_log_normalizer", "langevin_step"])
def test_checkers_accept_the_reference(name):
    """The reference implementation passes its own checker."""
    reference = {"grid_log_normalizer": ex._grid_log_normalizer,
                 "langevin_step": ex._langevin_step}[name]
    assert check(name, reference)


@pytest.mark.parametrize(
    "name,wrong",
    [
        ("grid_log_normalizer", ex._grid_no_area),
        ("grid_log_normalizer", ex._grid_wrong_sign),
        ("grid_log_normalizer", ex._grid_naive),
        ("grid_log_normalizer", ex._grid_mean),
        ("langevin_step", ex._ls_ascent),
        ("langevin_step", ex._ls_no_two),
        ("langevin_step", ex._ls_linear_noise),
        ("langevin_step", ex._ls_half_step),
    ],
)
def test_checkers_reject_known_mistakes_with_their_hint(name, wrong):
    """Every known mistake fails, and the report shows the hint written for it."""
    result = check(name, wrong)
    assert not result
    (hint,) = [h for h in get_checker(name).hints if h.wrong is wrong]
    report = " ".join(str(result).split())
    assert " ".join(hint.text.split())[:40] in report
