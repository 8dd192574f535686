"""Tests of gmbook.cnf: the chapter "Neural ODEs and continuous normalizing flows"."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from gmbook.cnf import (
    _ACTIVATION_LIPSCHITZ,
    CNF,
    draw_probe,
    gronwall_bound,
    hutchinson_divergence,
    hutchinson_variance,
    integrate,
    lipschitz_upper_bound,
    odeint,
    odeint_adjoint,
)
from gmbook.flow_matching import gaussian_velocity
from gmbook.nets import MLP
from gmbook.score import divergence

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _field(dim: int = 2, hidden: int = 16, gain: float = 1.0) -> MLP:
    net = MLP(dim, hidden=hidden, depth=2, time_dim=8).double()
    with torch.no_grad():
        net.out.weight.mul_(gain)
    return net


class _Wrap(nn.Module):
    """A closed-form field as a module (for CNF)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fn(x, t.expand(x.shape[0]) if t.ndim == 0 else t) + 0 * self.dummy


def _jacobians(net: MLP, x: Tensor, t: float) -> Tensor:
    return torch.stack([torch.autograd.functional.jacobian(
        lambda z: net(z[None], torch.tensor(t, dtype=x.dtype))[0], xi) for xi in x])


def test_icov_matches_discrete_change_of_variables_of_small_euler_step():
    """[eq-cnf-icov] Over a short time h the log-density change of the augmented ODE equals
    the discrete change of variables of the Euler step x -> x + h v(x, t),
    -log|det(I + h dv/dx)|, up to O(h^2) (a sign or a factor 2 is off by O(h))."""
    net = _field(gain=3.0)
    x = torch.randn(64, 2, dtype=torch.float64)
    t, h = 0.3, 1e-4
    with torch.no_grad():
        sol = integrate(net, x, t0=t, t1=t + h, solver="midpoint", steps=4, scalar_t=True)
    jac = _jacobians(net, x, t)  # (B, 2, 2)
    eye = torch.eye(2, dtype=torch.float64)
    discrete = -torch.linalg.slogdet(eye + h * jac)[1]
    err = (sol.delta_logp - discrete).abs()
    # a wrong sign or factor errs by about |discrete|; the O(h^2) remainder is far smaller
    assert float(err.max()) < 0.01 * float(discrete.abs().mean())


def test_icov_gaussian_transport_closed_form():
    """[eq-cnf-icov] Along the exact velocity from N(0, 1) to N(m, s^2) (flow matching's
    eq-fm-marginal-velocity), the CNF's log-density is the target Gaussian's."""
    m, s = 1.5, 0.4
    model = CNF(_Wrap(gaussian_velocity(m, s)), dim=2, solver="dopri5", rtol=1e-9, atol=1e-9)
    x = torch.randn(50, 2, dtype=torch.float64) * 0.6 + m
    want = torch.distributions.Normal(m, s).log_prob(x).sum(1)
    torch.testing.assert_close(model.log_prob(x), want, atol=1e-6, rtol=0)
    z = model.sample(4000, generator=torch.Generator().manual_seed(1))
    assert abs(float(z.mean()) - m) < 0.03 and abs(float(z.std()) - s) < 0.02


def test_icov_density_integrates_to_one_on_a_grid():
    """[eq-cnf-icov] exp(log_prob) of a random CNF integrates to 1 on a grid (the same
    density with the divergence's sign flipped does not)."""
    model = CNF(_field(gain=10.0), dim=2, solver="midpoint", steps=12)
    g = torch.linspace(-7, 7, 141, dtype=torch.float64)
    xx = torch.cartesian_prod(g, g)
    with torch.no_grad():
        sol = model.solve(xx)
    cell = float(g[1] - g[0]) ** 2
    base = -0.5 * (sol.x**2).sum(1) - math.log(2 * math.pi)
    mass = float((base - sol.delta_logp).exp().sum()) * cell
    wrong = float((base + sol.delta_logp).exp().sum()) * cell
    half = float((base - 0.5 * sol.delta_logp).exp().sum()) * cell
    assert abs(mass - 1) < 1e-3
    assert abs(wrong - 1) > 0.03 and abs(half - 1) > 0.01


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_hutchinson_unbiased_with_the_variance_formula(kind):
    """[eq-cnf-hutchinson, eq-cnf-hutchinson-var] One-probe estimates average to the exact
    divergence and their variance is 2||S||_F^2 (Gaussian) or 2 sum_{i!=j} S_ij^2
    (Rademacher), S the symmetric part of the Jacobian ([prop-cnf-hutchinson])."""
    net = _field(dim=3, gain=2.0)
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)
    m = 20_000
    xr = x.repeat(m, 1).requires_grad_(True)  # (m * 4, 3)
    v = net(xr, t)
    eps = draw_probe(tuple(xr.shape), kind, like=xr, generator=torch.Generator().manual_seed(2))
    est = hutchinson_divergence(v, xr, eps, create_graph=False).view(m, 4)
    xg = x.clone().requires_grad_(True)
    exact = divergence(net(xg, t), xg, create_graph=False).detach()
    var = hutchinson_variance(_jacobians(net, x, 0.5), kind)
    assert bool(((est.mean(0) - exact).abs() < 4 * (var / m).sqrt()).all())
    torch.testing.assert_close(est.var(0), var, rtol=0.06, atol=0)
    gauss, rad = (hutchinson_variance(_jacobians(net, x, 0.5), k) for k in ("gaussian",
                                                                           "rademacher"))
    assert bool((rad < gauss).all())


@torch.no_grad()
def test_hutchinson_along_a_path_is_one_quadratic_form():
    """[prop-cnf-hutchinson] With the probe fixed along a solve, the estimated log-density
    change is eps^T A eps for one matrix A (the path does not depend on eps): the probes
    e_1, e_2 and e_1 + e_2 give S = sym(A), its trace is the exact change, every
    Rademacher estimate is tr S + 2 S_12 eps_1 eps_2, and Gaussian estimates have the mean
    tr S and the variance 2 ||S||_F^2 of eq-cnf-hutchinson-var."""
    net = _field(dim=2, gain=2.0)
    x = torch.randn(1, 2, dtype=torch.float64)
    opts = dict(t0=1.0, t1=0.0, solver="midpoint", steps=16)

    def change(probe: Tensor) -> Tensor:
        xr = x.expand(len(probe), 2)
        return integrate(net, xr, divergence="gaussian", probe=probe, **opts).delta_logp

    e = torch.eye(2, dtype=torch.float64)
    s11, s22, both = change(torch.stack([e[0], e[1], e[0] + e[1]]))
    s12 = (both - s11 - s22) / 2
    exact = integrate(net, x, divergence="exact", **opts).delta_logp[0]
    torch.testing.assert_close(s11 + s22, exact, rtol=1e-10, atol=1e-10)
    assert abs(float(s12)) > 1e-2  # a non-trivial off-diagonal part
    g = torch.Generator().manual_seed(3)
    signs = draw_probe((400, 2), "rademacher", like=x, generator=g)
    torch.testing.assert_close(change(signs), exact + 2 * s12 * signs[:, 0] * signs[:, 1],
                               rtol=1e-10, atol=1e-10)
    est = change(draw_probe((20_000, 2), "gaussian", like=x, generator=g))
    var = 2 * (s11**2 + s22**2 + 2 * s12**2)
    assert abs(float(est.mean() - exact)) < 4 * float((var / len(est)).sqrt())
    assert abs(float(est.var() / var) - 1) < 0.05


def test_hutchinson_variance_zero_for_rademacher_on_a_diagonal_jacobian():
    """[eq-cnf-hutchinson-var] Rademacher probes are exact for a diagonal Jacobian."""
    a = torch.diag(torch.tensor([1.0, -2.0, 0.5]))
    assert float(hutchinson_variance(a, "rademacher")) == 0.0
    assert float(hutchinson_variance(a, "gaussian")) == pytest.approx(2 * 5.25)


@pytest.mark.parametrize("divergence_kind", ["exact", "rademacher"])
def test_adjoint_gradients_equal_backpropagated_gradients(divergence_kind):
    """[eq-cnf-adjoint] The adjoint method's gradients of the likelihood (parameters and
    inputs) match backpropagation through the same solver (20 midpoint steps; the two differ
    by the solver's error, about 1e-5 relative here, see the next test)."""
    x = torch.randn(16, 2, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(3)
        model = CNF(_field(gain=2.0), dim=2, solver="midpoint", steps=20,
                    adjoint=adjoint, divergence=divergence_kind)
        xi = x.clone().requires_grad_(True)
        loss = model.loss(xi, generator=torch.Generator().manual_seed(4))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()] +
                               [xi.grad.flatten()]))
    err = float((grads[1] - grads[0]).abs().max() / grads[0].abs().max())
    assert err < 1e-4


def test_adjoint_fixed_step_converges_to_backprop():
    """[eq-cnf-adjoint] With a fixed-step solver the adjoint gradient differs from
    backpropagation by the solver's error: small, and smaller with more steps."""
    a = torch.tensor([[0.3, -1.0], [0.8, -0.2]], dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(8, 2, dtype=torch.float64)
    f = lambda x, t: torch.tanh(x @ a.T) * (1 + t)  # noqa: E731
    errs = []
    for steps in (10, 40):
        (g_back,) = torch.autograd.grad(odeint(
            f, x0, steps=steps, solver="midpoint", scalar_t=True).pow(2).sum(), a)
        (g_adj,) = torch.autograd.grad(odeint_adjoint(
            f, x0, (a,), steps=steps, solver="midpoint").pow(2).sum(), a)
        errs.append(float((g_adj - g_back).abs().max() / g_back.abs().max()))
    assert errs[1] < 1e-3 and errs[1] < errs[0] / 8  # second order: 16x smaller


def test_gronwall_bound_tight_for_linear_field():
    """[thm-cnf-gronwall] For v(x) = L x the flow is e^{L t} x: the bound is attained."""
    lip = 0.7
    x, y = torch.randn(2, 32, 2, dtype=torch.float64)
    sol_x = integrate(lambda z, t: lip * z, x, density=False, solver="dopri5",
                      rtol=1e-10, atol=1e-10)
    sol_y = integrate(lambda z, t: lip * z, y, density=False, solver="dopri5",
                      rtol=1e-10, atol=1e-10)
    ratio = (sol_x.x - sol_y.x).norm(dim=1) / (x - y).norm(dim=1)
    torch.testing.assert_close(ratio, torch.full_like(ratio, gronwall_bound(lip)),
                               rtol=1e-7, atol=0)
    assert gronwall_bound(lip, 1.0, 0.0) == gronwall_bound(lip)


def test_gronwall_bound_holds_for_an_mlp_flow():
    """[thm-cnf-gronwall] lipschitz_upper_bound dominates every Jacobian's spectral norm of an
    MLP field, and the flow's distortion (both directions) stays below e^{L}."""
    net = _field(gain=2.0)
    lip = lipschitz_upper_bound(net)
    x = torch.randn(64, 2, dtype=torch.float64) * 2
    for t in (0.0, 0.5, 1.0):
        assert float(torch.linalg.matrix_norm(_jacobians(net, x[:16], t), ord=2).max()) <= lip
    y = x + 1e-3 * torch.randn_like(x)
    for t0, t1 in ((0.0, 1.0), (1.0, 0.0)):
        fx = integrate(net, x, t0=t0, t1=t1, density=False, steps=20, scalar_t=True).x
        fy = integrate(net, y, t0=t0, t1=t1, density=False, steps=20, scalar_t=True).x
        ratio = ((fx - fy).norm(dim=1) / (x - y).norm(dim=1)).detach()
        assert float(ratio.max()) <= gronwall_bound(lip)
        assert float(ratio.max()) > 1.05  # the field does stretch


def test_lipschitz_upper_bound_is_attained_by_an_aligned_linear_mlp():
    """[thm-cnf-gronwall] For an MLP with identity activations whose layers are diagonal, the
    field is x -> diag(6, 0.5) x + b(t): its Lipschitz constant (the largest Jacobian entry,
    6) equals the product of the layers' spectral norms (3 * 2), so the bound is attained; a
    wrong activation constant or a forgotten layer would miss 6."""
    net = MLP(2, hidden=2, depth=1, activation=nn.Identity, time_dim=8).double()
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.diag(torch.tensor([3.0, 0.5])))
        net.out.weight.copy_(torch.diag(torch.tensor([2.0, 1.0])))
    jac = _jacobians(net, torch.randn(4, 2, dtype=torch.float64), 0.3)
    torch.testing.assert_close(jac, torch.diag(torch.tensor([6.0, 0.5], dtype=torch.float64))
                               .expand(4, 2, 2))
    assert lipschitz_upper_bound(net) == pytest.approx(6.0, rel=1e-12)


def test_lipschitz_upper_bound_uses_the_largest_silu_slope():
    """[thm-cnf-gronwall] A 1-D MLP with one SiLU unit and unit weights is x -> SiLU(x + b) + c;
    its Lipschitz constant, the largest slope of SiLU, measured by autograd on a fine grid, is
    what lipschitz_upper_bound returns (1.0998..., not 1)."""
    net = MLP(1, hidden=1, depth=1, time_dim=0).double()
    with torch.no_grad():
        net.layers[0].weight.fill_(1.0)
        net.out.weight.fill_(1.0)
    x = torch.linspace(-10, 10, 200_001, dtype=torch.float64).requires_grad_(True)[:, None]
    (slope,) = torch.autograd.grad(net(x).sum(), x)
    assert lipschitz_upper_bound(net) == pytest.approx(float(slope.abs().max()), rel=1e-6)
    assert lipschitz_upper_bound(net) > 1.09


def test_regularisers_integrated_backwards_are_positive_and_exact():
    """[eq-cnf-regularisers] CNF.loss integrates the penalties from t = 1 back to 0. For
    v(x) = a x and x_1 = x: x_t = e^{a (t - 1)} x, so the kinetic term is
    int_0^1 a^2 e^{2a(t-1)} |x|^2 dt = a (1 - e^{-2a}) |x|^2 / 2 and the Jacobian term is
    D a^2, both positive whichever the direction of integration."""
    a = 0.7
    f = lambda z, t: a * z  # noqa: E731
    x = torch.randn(16, 2, dtype=torch.float64)
    back = integrate(f, x, t0=1.0, t1=0.0, regularise=True, solver="midpoint", steps=400)
    kin = a * (1 - math.exp(-2 * a)) * (x**2).sum(1) / 2
    torch.testing.assert_close(back.kinetic, kin, rtol=1e-5, atol=0)
    torch.testing.assert_close(back.jacobian, torch.full((16,), 2 * a**2,
                                                         dtype=torch.float64))
    torch.testing.assert_close(back.x, math.exp(-a) * x, rtol=1e-5, atol=0)
    model = CNF(_Wrap(f), dim=2, kinetic=1.0, jacobian=1.0, solver="midpoint", steps=400)
    plain = CNF(_Wrap(f), dim=2, solver="midpoint", steps=400)
    extra = float((model.loss(x) - plain.loss(x)).detach())
    assert extra == pytest.approx(float(kin.mean()) + 2 * a**2, rel=1e-5)


def test_regularisers_closed_forms():
    """[eq-cnf-regularisers] For v(x) = A x + c integrated over [0, 1/2]: the Jacobian term is
    ||A||_F^2 / 2 (exactly, and on average with Gaussian probes); the kinetic energy is
    int ||A x_t + c||^2 dt, here checked against a fine trapezoid rule on the path."""
    a = torch.tensor([[0.2, -0.5], [0.4, 0.1]], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    f = lambda z, t: z @ a.T + c  # noqa: E731
    x = torch.randn(2000, 2, dtype=torch.float64)
    sol = integrate(f, x, t1=0.5, regularise=True, solver="midpoint", steps=50)
    torch.testing.assert_close(sol.jacobian, torch.full((2000,), 0.5 * float((a**2).sum()),
                                                        dtype=torch.float64))
    hut = integrate(f, x, t1=0.5, regularise=True, divergence="gaussian", steps=50,
                    generator=torch.Generator().manual_seed(5))
    assert abs(float(hut.jacobian.detach().mean()) - 0.5 * float((a**2).sum())) < 0.03
    diff = (hut.delta_logp - sol.delta_logp).detach()  # unbiased, with sd 0.5 (2 ||S||_F^2)^(1/2)
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / 2000**0.5
    sd = 0.5 * float(hutchinson_variance(a, "gaussian")) ** 0.5
    assert abs(float(diff.std()) / sd - 1) < 0.06
    path = integrate(f, x[:8], t1=0.5, density=False, steps=200).x  # end point only
    states = odeint(f, x[:8], t1=0.5, steps=400, solver="midpoint", return_path=True)
    speed2 = ((states @ a.T + c) ** 2).sum(-1)  # (401, 8)
    kin = (0.5 / 400) * (speed2[1:] + speed2[:-1]).sum(0) / 2
    torch.testing.assert_close(sol.kinetic[:8], kin, rtol=1e-4, atol=0)
    torch.testing.assert_close(path, states[-1], rtol=1e-5, atol=1e-6)


def test_cnf_dopri5_counts_nfe_and_trains():
    """The model's verbs: loss (a graph to the parameters), dopri5's NFE, shapes."""
    model = CNF(MLP(2, hidden=16, time_dim=8), dim=2, solver="dopri5", rtol=1e-3, atol=1e-3)
    loss = model.loss(torch.randn(32, 2))
    loss.backward()
    assert model.last_nfe >= 6 and next(model.parameters()).grad is not None
    assert model.sample(7, generator=torch.Generator().manual_seed(0)).shape == (7, 2)
    reg = CNF(MLP(2, hidden=16, time_dim=8), dim=2, kinetic=0.1, jacobian=0.1, steps=3,
              divergence="rademacher")
    assert reg.loss(torch.randn(8, 2)).ndim == 0


def test_odeint_is_the_flow_matching_solver():
    """The solver lives in gmbook.cnf (the earlier chapter) and flow matching re-exports it."""
    import gmbook.flow_matching as fm

    assert fm.odeint is odeint and odeint.__module__ == "gmbook.cnf"


def test_argument_checks():
    """Public functions reject bad arguments with TypeError / ValueError."""
    net = MLP(2, hidden=8, time_dim=4)
    with pytest.raises(TypeError):
        CNF("net", dim=2)
    with pytest.raises(ValueError):
        CNF(net, dim=2, divergence="hutch")
    with pytest.raises(ValueError):
        CNF(net, dim=2, kinetic=-1.0)
    with pytest.raises(ValueError):
        CNF(net, dim=2).log_prob(torch.randn(3, 3))
    with pytest.raises(TypeError):
        integrate(net, [[0.0, 1.0]])
    with pytest.raises(ValueError):
        integrate(net, torch.randn(3, 2), t0=0.5, t1=0.5)
    with pytest.raises(ValueError):
        draw_probe((3, 2), "uniform")
    with pytest.raises(ValueError):
        hutchinson_variance(torch.randn(2, 3))
    with pytest.raises(ValueError):
        hutchinson_divergence(torch.randn(3, 2), torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError):
        gronwall_bound(-1.0)
    with pytest.raises(TypeError):
        lipschitz_upper_bound(nn.Linear(2, 2))
    with pytest.raises(TypeError):
        odeint_adjoint(lambda x, t: x, torch.ones(2), [torch.ones(1)])


# Tests added after a mutation check: each one fails for a plausible wrong formula that the
# tests above let through (a solver's time argument, averaging probes, the probe kind drawn,
# the two regularisers' weights, the activations' constants).
@pytest.mark.parametrize("solver, want", [("euler", 0.375), ("midpoint", 0.5), ("heun", 0.5)])
def test_fixed_step_solvers_on_x_dot_equals_t(solver, want):
    """[eq-cnf-ode] dx/dt = t from 0 over [0, 1] in 4 steps (h = 1/4): Euler sums h t_k at the
    left ends, 0.375; midpoint and Heun integrate a linear function exactly, 0.5; backwards
    from 1 to 0, the mirror values."""
    f = lambda x, t: t[:, None].expand_as(x)  # noqa: E731
    x0 = torch.zeros(3, 1, dtype=F64)
    out = odeint(f, x0, steps=4, solver=solver)
    assert float((out - want).abs().max()) < 1e-14
    back = odeint(f, x0, t0=1.0, t1=0.0, steps=4, solver=solver)
    assert float((back + (1 - want if solver == "euler" else 0.5)).abs().max()) < 1e-14


@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun"])
def test_fixed_step_solvers_on_a_time_dependent_linear_ode(solver):
    """[eq-cnf-ode] dx/dt = t x, one step h from 0: Euler x (no change, f(x, 0) = 0), midpoint
    x (1 + h^2/2), Heun x (1 + h^2/2): the time argument at the right place."""
    h = 0.3
    x0 = torch.ones(2, 1, dtype=F64)
    out = odeint(lambda x, t: t[:, None] * x, x0, t1=h, steps=1, solver=solver)
    want = 1.0 if solver == "euler" else 1 + h * h / 2
    assert float((out - want).abs().max()) < 1e-14


def test_hutchinson_averages_several_probes():
    """[eq-cnf-hutchinson] With the M = D probes sqrt(D) e_i (so that the mean of eps eps^T is
    I) the estimate is the trace exactly; with two copies of one probe it is that probe's
    estimate, not twice it."""
    d = 3
    net = MLP(d, hidden=16, depth=2, time_dim=8).double()
    x = torch.randn(5, d, dtype=F64, requires_grad=True)
    t = torch.tensor(0.4, dtype=F64)
    probes = math.sqrt(d) * torch.eye(d, dtype=F64)[:, None, :].expand(d, 5, d)
    est = hutchinson_divergence(net(x, t), x, probes, create_graph=False)
    exact = divergence(net(x, t), x, create_graph=False)
    torch.testing.assert_close(est, exact, rtol=1e-12, atol=1e-12)
    eps = torch.randn(5, d, dtype=F64)
    one = hutchinson_divergence(net(x, t), x, eps, create_graph=False)
    two = hutchinson_divergence(net(x, t), x, torch.stack([eps, eps]), create_graph=False)
    torch.testing.assert_close(two, one, rtol=1e-12, atol=1e-12)


def test_integrate_rademacher_is_exact_for_a_coordinatewise_field():
    """[eq-cnf-hutchinson] [prop-cnf-hutchinson] A coordinatewise field has a diagonal
    Jacobian, on which a Rademacher probe is exact (and a Gaussian one is not): integrate
    with divergence="rademacher" and its own drawn probe gives the exact log-density
    change."""
    f = lambda z, t: torch.tanh(2 * z) * (1 + t[:, None])  # noqa: E731
    x = torch.randn(64, 3, dtype=F64)
    opts = dict(t0=1.0, t1=0.0, solver="midpoint", steps=8)
    exact = integrate(f, x, divergence="exact", **opts).delta_logp
    rad = integrate(f, x, divergence="rademacher", generator=torch.Generator().manual_seed(0),
                    **opts).delta_logp
    gau = integrate(f, x, divergence="gaussian", generator=torch.Generator().manual_seed(0),
                    **opts).delta_logp
    torch.testing.assert_close(rad.detach(), exact.detach(), rtol=1e-12, atol=1e-12)
    assert float((gau - exact).detach().abs().max()) > 1e-2


def test_cnf_loss_weights_each_regulariser_by_its_own_lambda():
    """[eq-cnf-regularisers] For v(x) = a x with lambda_K = 0.3 and lambda_J = 2 (unequal,
    so that swapping them shows): the loss exceeds the plain NLL by 0.3 * a (1 - e^{-2a})
    |x|^2 / 2 (mean) + 2 * D a^2."""
    a = 0.7
    f = lambda z, t: a * z  # noqa: E731
    x = torch.randn(16, 2, dtype=F64)
    model = CNF(_Wrap(f), dim=2, kinetic=0.3, jacobian=2.0, solver="midpoint", steps=400)
    plain = CNF(_Wrap(f), dim=2, solver="midpoint", steps=400)
    extra = float((model.loss(x) - plain.loss(x)).detach())
    kin = a * (1 - math.exp(-2 * a)) * float((x**2).sum(1).mean()) / 2
    assert extra == pytest.approx(0.3 * kin + 2.0 * 2 * a**2, rel=1e-5)


@pytest.mark.parametrize("act", sorted(_ACTIVATION_LIPSCHITZ, key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_activation_lipschitz_constants_are_the_largest_slopes(act):
    """[thm-cnf-gronwall] Each activation's constant is max |sigma'(x)|, measured by autograd
    on a fine grid of [-10, 10] (every maximum lies inside: 0, sqrt 2, 2.3994, or a
    plateau)."""
    x = torch.linspace(-10, 10, 400_001, dtype=F64).requires_grad_(True)
    (slope,) = torch.autograd.grad(act()(x).sum(), x)
    assert _ACTIVATION_LIPSCHITZ[act] == pytest.approx(float(slope.abs().max()), rel=1e-4)
