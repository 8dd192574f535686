"""Tests of gmbook.train: the training loop reaches known optima, is reproducible, and EMA math."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn

from gmbook.train import EMA, History, fit


class MeanModel(nn.Module):
    """Quadratic loss E||x - mu||^2, minimized by the data mean (has a .loss method)."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.seen_training: list[bool] = []

    def loss(self, x: Tensor) -> Tensor:
        self.seen_training.append(self.training)
        return (x - self.mu).pow(2).sum(-1).mean()


# --------------------------------------------------------------------------- convergence


def test_fit_module_reaches_the_sample_mean():
    mean = torch.tensor([2.0, -1.0], dtype=torch.float64)
    data = torch.randn(50, 2, dtype=torch.float64) * 3 + mean
    model = MeanModel()
    hist = fit(model, data, steps=500, lr=0.1, schedule="cosine", progress=False)
    torch.testing.assert_close(model.mu.detach(), data.mean(0), atol=1e-4, rtol=0)
    # the minimum value is the total variance (1/N normalization)
    assert math.isclose(hist.final(5), data.var(0, unbiased=False).sum().item(), rel_tol=1e-6)


def test_fit_minibatch_linear_regression_reaches_least_squares():
    """SGD on minibatches with a decaying rate converges to the closed-form OLS solution."""
    g = torch.Generator().manual_seed(1)
    n, d = 256, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64) + 0.7
    y = y + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    ols = torch.linalg.lstsq(design, y[:, None]).solution.squeeze(1)  # (w1, w2, w3, b)

    model = nn.Linear(d, 1, dtype=torch.float64)
    data = torch.cat([x, y[:, None]], dim=1)  # (N, d + 1)
    mse = lambda b: (model(b[:, :d]).squeeze(1) - b[:, d]).pow(2).mean()  # noqa: E731
    hist = fit(mse, data, params=model.parameters(), steps=1500, batch_size=32, lr=0.05,
               schedule="cosine", warmup=20, seed=0, progress=False)
    found = torch.cat([model.weight.detach().squeeze(0), model.bias.detach()])
    torch.testing.assert_close(found, ols, atol=2e-3, rtol=0)
    assert hist.steps == 1500 and len(hist.losses) == 1500 and hist.seconds > 0


def test_fit_gradient_clipping_bounds_each_step():
    """With SGD(lr=1) and a gradient of norm 1000 clipped to 1, each step moves w by exactly 1."""
    w = nn.Parameter(torch.tensor([0.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    fit(lambda b: 1000.0 * w.sum(), lambda n: torch.zeros(n, 1), optimizer=opt,
        steps=3, grad_clip=1.0, progress=False)
    torch.testing.assert_close(w.detach(), torch.tensor([-3.0]))


# --------------------------------------------------------------------------- randomness


def _noisy_run(model: nn.Linear, seed: int) -> History:
    """A loss that draws noise from the global RNG, on a sampled dataset."""
    data = torch.arange(40.0).reshape(20, 2) / 20
    loss = lambda b: (model(b + 0.1 * torch.randn_like(b)) ** 2).mean()  # noqa: E731
    return fit(loss, data, params=model.parameters(), steps=30, batch_size=4, seed=seed,
               progress=False)


def test_fit_same_seed_same_losses_and_global_rng_untouched():
    init = nn.Linear(2, 1)
    state = torch.get_rng_state()
    h1 = _noisy_run(copy.deepcopy(init), seed=123)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    h2 = _noisy_run(copy.deepcopy(init), seed=123)
    h3 = _noisy_run(copy.deepcopy(init), seed=124)
    assert h1.losses == h2.losses
    assert h1.losses != h3.losses
    assert torch.equal(torch.get_rng_state(), state)


def test_fit_without_seed_follows_the_global_rng():
    init = nn.Linear(2, 1)
    torch.manual_seed(5)
    h1 = _noisy_run(copy.deepcopy(init), seed=None)  # type: ignore[arg-type]
    torch.manual_seed(5)
    h2 = _noisy_run(copy.deepcopy(init), seed=None)  # type: ignore[arg-type]
    assert h1.losses == h2.losses


# --------------------------------------------------------------------------- minibatches


def test_fit_dataset_minibatches_are_epoch_shuffled_rows_of_the_dataset():
    n, b = 24, 6
    data = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)  # row i = (2i, 2i + 1)
    w = nn.Parameter(torch.zeros(()))
    batches: list[Tensor] = []

    def loss(batch: Tensor) -> Tensor:
        batches.append(batch.clone())
        return (w - batch.mean()) ** 2

    fit(loss, data, params=[w], steps=8, batch_size=b, seed=0, progress=False)
    assert all(x.shape == (b, 2) for x in batches)
    rows = [int(r[0].item()) // 2 for x in batches for r in x]
    for x in batches:  # every row is a row of the dataset
        assert torch.all(x[:, 1] == x[:, 0] + 1) and torch.all(x[:, 0] % 2 == 0)
    # epochs of n / b = 4 steps: each visits every row exactly once
    assert sorted(rows[:n]) == list(range(n))
    assert sorted(rows[n:]) == list(range(n))
    assert rows[:n] != list(range(n))  # shuffled
    assert rows[:n] != rows[n:]  # reshuffled each epoch


def test_fit_full_batch_when_batch_size_exceeds_dataset():
    data = torch.randn(10, 3)
    seen: list[Tensor] = []
    w = nn.Parameter(torch.zeros(()))

    def loss(batch: Tensor) -> Tensor:
        seen.append(batch)
        return (w - batch.sum()) ** 2

    fit(loss, data, params=[w], steps=2, batch_size=256, progress=False)
    assert all(torch.equal(x, data) for x in seen)


def test_fit_sampler_is_called_with_batch_size():
    sizes: list[int] = []

    def sampler(n: int) -> Tensor:
        sizes.append(n)
        return torch.randn(n, 2, dtype=torch.float64)

    fit(MeanModel(), sampler, steps=3, batch_size=17, progress=False)
    assert sizes == [17, 17, 17]


# --------------------------------------------------------------------------- schedule


def test_cosine_schedule_with_warmup():
    model = MeanModel()
    data = torch.randn(8, 2, dtype=torch.float64)
    hist = fit(model, data, steps=110, lr=0.01, schedule="cosine", warmup=10, progress=False)
    lrs = hist.lrs
    assert len(lrs) == 110
    assert math.isclose(lrs[0], 0.001) and math.isclose(lrs[9], 0.01)  # linear warm-up
    assert math.isclose(lrs[10], 0.01) and math.isclose(lrs[60], 0.005)  # half way: lr / 2
    assert lrs[-1] < 1e-5  # ends near 0
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # decreasing after warm-up


def test_constant_schedule_and_optimizer_lr_restored():
    model = MeanModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    hist = fit(model, torch.randn(8, 2, dtype=torch.float64), optimizer=opt, steps=20,
               schedule="cosine", progress=False)
    assert hist.lrs[0] == 0.2 and hist.lrs[-1] < 0.01
    assert opt.param_groups[0]["lr"] == 0.2  # restored for the next call
    hist = fit(model, torch.randn(8, 2, dtype=torch.float64), optimizer=opt, steps=5,
               progress=False)
    assert hist.lrs == [0.2] * 5


# --------------------------------------------------------------------------- errors


def test_fit_nan_loss_raises_with_step_number():
    w = nn.Parameter(torch.ones(()))
    calls = [0]

    def loss(batch: Tensor) -> Tensor:
        calls[0] += 1
        return w * (float("nan") if calls[0] == 4 else 1.0)

    with pytest.raises(FloatingPointError, match=r"step 4 of 10.*lower lr.*standardiz"):
        fit(loss, lambda n: torch.zeros(n, 1), params=[w], steps=10, progress=False)


def test_fit_inf_loss_raises():
    w = nn.Parameter(torch.ones(()))
    with pytest.raises(FloatingPointError, match="step 1 "):
        fit(lambda b: w * float("inf"), lambda n: torch.zeros(n), params=[w], steps=3,
            progress=False)


def test_fit_rejects_non_scalar_and_non_tensor_losses():
    w = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="scalar"):
        fit(lambda b: w * b.mean(), lambda n: torch.zeros(n), params=[w], steps=1, progress=False)
    with pytest.raises(TypeError, match="scalar tensor"):
        not_a_tensor = lambda b: 1.0  # noqa: E731
        fit(not_a_tensor, lambda n: torch.zeros(n), params=[w], steps=1, progress=False)
    with pytest.raises(ValueError, match="does not depend"):
        fit(lambda b: b.sum(), lambda n: torch.zeros(n), params=[w], steps=1, progress=False)


def test_fit_argument_errors():
    model = MeanModel()
    data = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="params"):
        fit(lambda b: b.sum(), data, steps=1, progress=False)  # no way to find parameters
    with pytest.raises(ValueError, match="schedule"):
        fit(model, data, steps=1, schedule="linear", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr"):
        fit(model, data, steps=1, lr=0.0, progress=False)
    with pytest.raises(ValueError, match="warmup"):
        fit(model, data, steps=5, warmup=6, progress=False)
    with pytest.raises(TypeError, match="data"):
        fit(model, [[0.0, 0.0]], steps=1, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fit(model, data, steps=1, batch_size=0, progress=False)
    with pytest.raises(TypeError):
        fit(model, data, steps=1.5, progress=False)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- loop details


def test_fit_bound_method_callback_and_train_mode_restored():
    model = MeanModel()
    model.eval()
    logged: list[tuple[int, float]] = []
    hist = fit(model.loss, torch.randn(6, 2, dtype=torch.float64), steps=20, log_every=5,
               callback=lambda s, v: logged.append((s, v)), progress=False)
    assert [s for s, _ in logged] == [5, 10, 15, 20]
    assert [v for _, v in logged] == [hist.losses[k] for k in (4, 9, 14, 19)]
    assert all(model.seen_training) and not model.training  # train() during, eval() after


def test_fit_zero_steps_and_static_progress_is_silent(monkeypatch, capsys):
    monkeypatch.setenv("GMBOOK_STATIC", "1")
    model = MeanModel()
    hist = fit(model, torch.zeros(4, 2, dtype=torch.float64), steps=0)
    assert hist.losses == [] and hist.steps == 0
    fit(model, torch.zeros(4, 2, dtype=torch.float64), steps=3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_history_smoothed_and_final():
    h = History(losses=[1.0, 3.0, 5.0, 7.0, 9.0], seconds=0.5, steps=5)
    assert h.smoothed(window=3).tolist() == [1.0, 2.0, 3.0, 5.0, 7.0]
    assert h.smoothed(window=1).tolist() == h.losses
    assert h.final(window=2) == 8.0 and h.final() == 5.0
    assert "steps=5" in repr(h)
    with pytest.raises(ValueError):
        History(losses=[], seconds=0.0, steps=0).final()
    with pytest.raises(ValueError):
        h.smoothed(window=0)


# --------------------------------------------------------------------------- EMA


def test_ema_of_a_constant_parameter_is_that_parameter():
    net = nn.Linear(3, 2)
    before = copy.deepcopy(net.state_dict())
    for warmup in (False, True):
        ema = EMA(net, decay=0.9, warmup=warmup)
        for _ in range(10):
            ema.update()
        with ema.swap():
            for name, value in net.state_dict().items():
                torch.testing.assert_close(value, before[name], rtol=0, atol=1e-7)


def _param_sequence_ema(decay: float, warmup: bool, values: list[float]) -> list[float]:
    w = nn.Parameter(torch.zeros((), dtype=torch.float64))
    holder = nn.Module()
    holder.w = w
    ema = EMA(holder, decay=decay, warmup=warmup)
    out = []
    for v in values:
        with torch.no_grad():
            w.fill_(v)
        ema.update()
        out.append(ema.shadow["w"].item())
    return out


def test_ema_known_sequence():
    # average starts at 0; parameter 1, 2, 4:
    # 0.9*0 + 0.1*1 = 0.1;  0.9*0.1 + 0.1*2 = 0.29;  0.9*0.29 + 0.1*4 = 0.661
    got = _param_sequence_ema(0.9, False, [1.0, 2.0, 4.0])
    assert got == pytest.approx([0.1, 0.29, 0.661], abs=1e-12)


def test_ema_warmup_sequence():
    # decays 2/11, 3/12, 4/13 (all below 0.999):
    #   (9/11) * 1                           = 0.8181818...
    #   0.25 * 0.8181818... + 0.75 * 2       = 1.7045454...
    #   (4/13) * 1.7045454... + (9/13) * 4   = 3.2937062...
    got = _param_sequence_ema(0.999, True, [1.0, 2.0, 4.0])
    assert got == pytest.approx([0.818181818, 1.704545455, 3.293706294], abs=1e-9)


def test_ema_swap_restores_weights_even_on_error():
    torch.manual_seed(0)
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 2)).pow(2).sum().backward()
        opt.step()
        ema.update()
    trained = copy.deepcopy(net.state_dict())
    with ema.swap() as swapped:
        assert swapped is net
        torch.testing.assert_close(net.weight.detach(), ema.shadow["weight"])
        assert not torch.equal(net.weight.detach(), trained["weight"])
    for name, value in net.state_dict().items():
        assert torch.equal(value, trained[name])
    with pytest.raises(RuntimeError, match="boom"), ema.average_parameters():
        raise RuntimeError("boom")
    for name, value in net.state_dict().items():
        assert torch.equal(value, trained[name])


def test_ema_copy_to_state_dict_and_fit_integration():
    model = MeanModel()
    ema = EMA(model, decay=0.9, warmup=True)
    fit(model, torch.ones(5, 2, dtype=torch.float64), steps=7, lr=0.1, ema=ema, progress=False)
    assert ema.num_updates == 7
    other = MeanModel()
    ema.copy_to(other)
    torch.testing.assert_close(other.mu.detach(), ema.shadow["mu"])
    restored = EMA(MeanModel(), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == 7 and restored.decay == 0.9 and restored.warmup
    torch.testing.assert_close(restored.shadow["mu"], ema.shadow["mu"])
    with pytest.raises(ValueError, match="do not match"):
        ema.copy_to(nn.Linear(2, 2))


def test_ema_keeps_the_latest_buffers_as_copies():
    """Buffers are not averaged: after every update the EMA holds a copy of their latest
    values (not the model's own tensors), also when a buffer is added or changes shape."""
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    ema = EMA(net, decay=0.9)
    for _ in range(3):
        net(torch.randn(8, 2))  # training mode: the running statistics move
        ema.update()
        for name, b in net.named_buffers():
            assert torch.equal(ema.buffers[name], b)
            assert ema.buffers[name].data_ptr() != b.data_ptr()
    net.register_buffer("extra", torch.arange(4.0))
    ema.update()
    assert torch.equal(ema.buffers["extra"], torch.arange(4.0))
    net.extra = torch.zeros(2)  # a new shape: cloned, not copied into the old tensor
    ema.update()
    assert torch.equal(ema.buffers["extra"], torch.zeros(2))
    with torch.no_grad():
        net[1].running_mean.fill_(7.0)
    ema.copy_to(net)  # the copy kept at the last update, not the model's later value
    assert not torch.equal(net[1].running_mean, torch.full((3,), 7.0))


def test_fit_ema_is_update_bit_for_bit():
    """fit's EMA (the tensors looked up once, EMA._updater) gives exactly what calling
    EMA.update() after every step gives: averaged weights, a batch norm's buffers and the
    update count, bit for bit."""

    def run(in_fit: bool):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.SiLU(), nn.Linear(8, 1))
        ema = EMA(net, decay=0.99, warmup=True)
        data = torch.randn(64, 3)
        loss = lambda b: (net(b[:, :2]).squeeze(1) - b[:, 2]).pow(2).mean()  # noqa: E731
        if in_fit:
            fit(loss, data, params=net.parameters(), steps=25, batch_size=16, lr=0.05,
                ema=ema, seed=1, progress=False)
        else:
            callback = lambda step, value: ema.update()  # noqa: E731
            fit(loss, data, params=net.parameters(), steps=25, batch_size=16, lr=0.05,
                callback=callback, seed=1, progress=False)
        return ema

    a, b = run(True), run(False)
    assert a.num_updates == b.num_updates == 25
    for name in a.shadow:
        assert torch.equal(a.shadow[name], b.shadow[name]), name
    for name in a.buffers:
        assert torch.equal(a.buffers[name], b.buffers[name]), name


def test_ema_validation():
    net = nn.Linear(2, 2)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="decay"):
            EMA(net, decay=bad)
    with pytest.raises(TypeError):
        EMA(net.weight)  # type: ignore[arg-type]
    EMA(net, decay=0.0)  # 0 is allowed: the average is the last iterate


def test_fit_takes_a_generator_like_every_random_function():
    """``fit(generator=...)``: the run is reproducible from the generator's state, the global
    RNG is untouched, and seed and generator together are refused."""
    from gmbook.train import fit as fit_

    def run(generator):
        w = torch.nn.Parameter(torch.zeros(2, 1))  # no draw from the global RNG here
        data = torch.arange(40.0).reshape(20, 2) / 40
        # noise from the global RNG inside the loss, and shuffled minibatches of a dataset
        loss = lambda b: (b @ w - torch.randn(len(b), 1)).pow(2).mean()  # noqa: E731
        return fit_(loss, data, params=[w], steps=5, batch_size=4,
                    generator=generator, progress=False).losses

    state = torch.get_rng_state()
    a = run(torch.Generator().manual_seed(3))
    b = run(torch.Generator().manual_seed(3))
    c = run(torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state), "fit(generator=...) moved the global RNG"
    assert a == b and a != c
    g = torch.Generator().manual_seed(3)
    run(g)
    assert not torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state()), (
        "the generator was not advanced")
    with pytest.raises(ValueError, match="not both"):
        fit_(lambda b: b.sum(), torch.ones(4, 2), params=[torch.nn.Parameter(torch.ones(1))],
             steps=1, seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        fit_(lambda b: b.sum(), torch.ones(4, 2), params=[torch.nn.Parameter(torch.ones(1))],
             steps=1, generator=3)


def test_default_optimizer_is_adam_bit_for_bit():
    """The default optimizer (Adam with ``foreach=True``, for speed on a CPU) takes exactly the
    steps of the plain single-tensor Adam: same parameters, bit for bit, after a cosine run."""
    from gmbook.nets import MLP

    def run(optimizer_factory):
        torch.manual_seed(0)
        net = MLP(2, 2, hidden=16, depth=2)
        data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
        loss = lambda b: (net(b) - b.flip(1)).square().mean()  # noqa: E731
        opt = None if optimizer_factory is None else optimizer_factory(net.parameters())
        fit(loss, data, params=net.parameters(), optimizer=opt, steps=30, batch_size=16,
            lr=0.01, schedule="cosine", warmup=3, seed=2, progress=False)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    default = run(None)
    plain = run(lambda ps: torch.optim.Adam(ps, lr=0.01, foreach=False))
    assert torch.equal(default, plain)
    assert not torch.equal(default, run(lambda ps: torch.optim.Adam(ps, lr=0.011)))
