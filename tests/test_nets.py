"""Tests of gmbook.nets: shapes, time conditioning, errors and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gmbook.nets import MLP, SinusoidalEmbedding, append_dims, count_parameters, default_device

# --------------------------------------------------------------------------- default_device


def test_default_device_is_a_usable_device():
    device = default_device()
    assert isinstance(device, torch.device)
    assert device.type in {"cuda", "mps", "cpu"}
    if torch.cuda.is_available():
        assert device.type == "cuda"
    torch.ones(2, device=device).sum().item()  # it works


# --------------------------------------------------------------------------- append_dims


def test_append_dims_shapes_and_broadcast():
    t = torch.tensor([1.0, 2.0, 3.0])
    assert append_dims(t, 1).shape == (3,)
    assert append_dims(t, 4).shape == (3, 1, 1, 1)
    x = torch.ones(3, 2, 5)
    y = append_dims(t, x.ndim) * x
    for b in range(3):  # example b is scaled by t[b]
        assert torch.all(y[b] == t[b])
    assert append_dims(torch.zeros(3, 2), 4).shape == (3, 2, 1, 1)


def test_append_dims_is_a_view():
    t = torch.zeros(4)
    append_dims(t, 3)[1, 0, 0] = 7.0
    assert t[1] == 7.0


def test_append_dims_errors():
    with pytest.raises(ValueError, match="more than"):
        append_dims(torch.zeros(2, 3, 4), 2)
    with pytest.raises(TypeError):
        append_dims([1.0, 2.0], 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        append_dims(torch.zeros(2), 2.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SinusoidalEmbedding


def test_sinusoidal_shape_bounds_and_norm():
    dim = 32
    emb = SinusoidalEmbedding(dim)
    t = torch.rand(100)
    e = emb(t)
    assert e.shape == (100, dim)
    assert e.abs().max() <= 1.0
    # cos^2 + sin^2 = 1 for each of the dim / 2 frequencies
    torch.testing.assert_close(e.pow(2).sum(-1), torch.full((100,), dim / 2.0))
    assert list(emb.parameters()) == []
    assert "freqs" not in emb.state_dict()  # a constant, not a weight


def test_sinusoidal_distinguishes_nearby_times():
    emb = SinusoidalEmbedding(64)
    t = torch.tensor([0.500, 0.501, 0.0, 1.0])
    e = emb(t)
    assert (e[0] - e[1]).norm() > 0.5  # times 1e-3 apart are clearly apart
    # all times on a fine grid of [0, 1] get distinct embeddings
    grid = emb(torch.linspace(0, 1, 201))
    dists = torch.cdist(grid, grid) + torch.eye(201) * 1e9
    assert dists.min() > 0.5
    # even the slowest frequency (cos and sin in columns 31 and 63) varies over [0, 1]
    slow = e[:, [31, 63]]
    assert (slow[2] - slow[3]).norm() > 0.05


def test_sinusoidal_at_zero_and_dtype():
    e = SinusoidalEmbedding(8)(torch.zeros(2, dtype=torch.float64))
    assert e.dtype == torch.float64
    torch.testing.assert_close(e, torch.tensor([[1.0] * 4 + [0.0] * 4] * 2, dtype=torch.float64))


def test_sinusoidal_errors():
    with pytest.raises(ValueError, match="even"):
        SinusoidalEmbedding(7)
    with pytest.raises(ValueError):
        SinusoidalEmbedding(0)
    with pytest.raises(ValueError):
        SinusoidalEmbedding(8, max_period=-1.0)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        SinusoidalEmbedding(8)(torch.zeros(4, 1))


# --------------------------------------------------------------------------- MLP


@pytest.mark.parametrize("in_dim, out_dim, depth", [(2, None, 1), (2, 5, 3), (64, 10, 2)])
def test_mlp_shapes_without_time(in_dim, out_dim, depth):
    net = MLP(in_dim, out_dim, hidden=16, depth=depth)
    y = net(torch.randn(7, in_dim))
    assert y.shape == (7, in_dim if out_dim is None else out_dim)
    assert len(net.layers) == depth


def test_mlp_shapes_with_time_and_scalar_broadcast():
    net = MLP(3, hidden=16, depth=2, time_dim=8)
    x = torch.randn(5, 3)
    t = torch.full((5,), 0.25)
    y = net(x, t)
    assert y.shape == (5, 3)
    torch.testing.assert_close(net(x, 0.25), y)
    torch.testing.assert_close(net(x, torch.tensor(0.25)), y)
    # the output depends on t, and each row only on its own t
    t2 = t.clone()
    t2[0] = 0.75
    y2 = net(x, t2)
    assert not torch.allclose(y2[0], y[0])
    torch.testing.assert_close(y2[1:], y[1:])


def test_mlp_time_branch_receives_gradients():
    net = MLP(2, hidden=8, depth=2, time_dim=4)
    net(torch.randn(6, 2), torch.rand(6)).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mlp_float64_and_activation():
    net = MLP(2, hidden=8, time_dim=4, activation=nn.Tanh).double()
    y = net(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
    assert y.dtype == torch.float64
    assert any(isinstance(m, nn.Tanh) for m in net.modules())


def test_mlp_zero_init_last():
    net = MLP(2, 3, hidden=8, zero_init_last=True)
    assert torch.all(net(torch.randn(4, 2)) == 0)
    assert torch.any(MLP(2, 3, hidden=8)(torch.randn(4, 2)) != 0)


def test_mlp_time_errors():
    timed = MLP(2, hidden=8, time_dim=4)
    untimed = MLP(2, hidden=8)
    x = torch.randn(4, 2)
    with pytest.raises(TypeError, match="time-conditioned"):
        timed(x)
    with pytest.raises(TypeError, match="without time"):
        untimed(x, torch.rand(4))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        timed(x, torch.rand(3))  # wrong batch size
    with pytest.raises(ValueError, match="flatten"):
        timed(x, torch.rand(4, 1))
    with pytest.raises(TypeError):
        timed(x, "0.5")  # type: ignore[arg-type]


def test_mlp_input_and_construction_errors():
    net = MLP(2, hidden=8)
    with pytest.raises(ValueError, match="in_dim"):
        net(torch.randn(4, 3))
    with pytest.raises(ValueError):
        net(torch.randn(4, 2, 1))
    with pytest.raises(ValueError, match="even"):
        MLP(2, time_dim=3)
    with pytest.raises(ValueError):
        MLP(2, depth=0)
    with pytest.raises(ValueError):
        MLP(0)
    with pytest.raises(TypeError):
        MLP(2.0)  # type: ignore[arg-type]


def test_mlp_time_scale_reaches_the_embedding():
    """``time_scale`` is the embedding's factor s in ``e(s t)``: the network with scale s
    at time t equals, weight for weight, the default network (s = 1000) at time s t / 1000."""
    torch.manual_seed(0)
    default = MLP(2, hidden=8, depth=2, time_dim=6).double()
    slow = MLP(2, hidden=8, depth=2, time_dim=6, time_scale=2.5).double()
    assert default.time_embed[0].scale == 1000.0 and slow.time_embed[0].scale == 2.5
    slow.load_state_dict(default.state_dict())
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    torch.testing.assert_close(slow(x, t), default(x, t * 2.5 / 1000))
    assert not torch.allclose(slow(x, t), default(x, t))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="time_scale"):
            MLP(2, time_dim=4, time_scale=bad)
    with pytest.raises(TypeError, match="time_scale"):
        MLP(2, time_dim=4, time_scale="1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- count_parameters


def test_count_parameters_by_hand():
    # (3*4 + 4) + (4*4 + 4) + (4*2 + 2) = 16 + 20 + 10
    assert count_parameters(MLP(3, 2, hidden=4, depth=2)) == 46
    # main: (2*4 + 4) + (4*2 + 2) = 22; time: (6*4 + 4) + (4*4 + 4) = 48; projection: 4*4 + 4
    assert count_parameters(MLP(2, hidden=4, depth=1, time_dim=6)) == 22 + 48 + 20


def test_count_parameters_shared_and_frozen():
    lin = nn.Linear(3, 3)  # 12 parameters
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_parameters(shared) == 12
    lin.bias.requires_grad_(False)
    assert count_parameters(shared, trainable_only=True) == 9
    with pytest.raises(TypeError):
        count_parameters(lin.weight)  # type: ignore[arg-type]


def test_digit_classifier_learns_the_digits():
    """DigitClassifier: a few hundred Adam steps reach high held-out accuracy on the digits,
    so its features are meaningful for the Frechet distance of the evaluation chapter."""
    from gmbook.data import digits_split
    from gmbook.nets import DigitClassifier

    (x_tr, y_tr), (x_te, y_te) = digits_split(return_labels=True)
    torch.manual_seed(0)
    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(x_tr), (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(net(x_tr[idx]), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (net(x_te).argmax(1) == y_te).float().mean().item()
    assert accuracy > 0.93


def test_digit_classifier_rejects_bad_shapes():
    from gmbook.nets import DigitClassifier

    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        DigitClassifier().features(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="n_features"):
        DigitClassifier(n_features=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_fast_path_computes_the_same_function(dtype, monkeypatch):
    """Without autograd, with a scalar time, or with few distinct times (a ladder of noise
    levels), MLP folds the time branch into the biases, once per distinct time, in chunks of
    FOLD_CHUNK rows: same values as the plain layers, for a scalar, a constant (B,) and a
    mixed (B,) time, across chunk boundaries, and the same gradients with autograd."""
    from gmbook import nets
    from gmbook.nets import FOLD_CHUNK, MLP

    net = MLP(3, hidden=16, depth=2, time_dim=8).to(dtype)
    x = torch.randn(FOLD_CHUNK + 37, 3, dtype=dtype)
    mixed = torch.rand(4, dtype=dtype)[torch.randint(0, 4, (x.shape[0],))]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    # gradients sum over 2085 rows in another order: float32 rounding, float64 exact
    gtol = dict(rtol=1e-3, atol=1e-4) if dtype == torch.float32 else tol
    for t in (torch.full((x.shape[0],), 0.3, dtype=dtype), mixed):
        with monkeypatch.context() as m, torch.enable_grad():
            m.setattr(nets, "FOLD_MAX_LEVELS", 0)  # the plain layer-by-layer path
            plain = net(x, t)
            grads = torch.autograd.grad(plain.pow(2).sum(), list(net.parameters()))
        with torch.no_grad():
            torch.testing.assert_close(net(x, t), plain.detach(), **tol)
        with torch.enable_grad():  # folded with autograd: 1 or 4 distinct times
            folded = net(x, t)
            for g, h in zip(grads, torch.autograd.grad(folded.pow(2).sum(),
                                                       list(net.parameters()))):
                torch.testing.assert_close(h, g, **gtol)
    with monkeypatch.context() as m, torch.enable_grad():
        m.setattr(nets, "FOLD_MAX_LEVELS", 0)
        plain = net(x, torch.full((x.shape[0],), 0.7, dtype=dtype))
    with torch.enable_grad():
        scalar = net(x, 0.7)  # folded, with autograd: gradients must flow
    torch.testing.assert_close(scalar, plain, **tol)
    scalar.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_mlp_without_time_calls_forward_directly_unless_hooked():
    """MLP without time: the direct ``forward`` calls (no ``nn.Module.__call__``) give the
    bitwise values and gradients of calling the modules, and a hook on a layer, or a
    global hook, still runs (the module-call path is taken)."""
    torch.manual_seed(0)
    net = MLP(3, 2, hidden=16, depth=2, activation=nn.ReLU)
    x = torch.randn(7, 3, requires_grad=True)

    def by_modules(h):
        for layer, act in zip(net.layers, net.acts):
            h = act(layer(h))
        return net.out(h)

    y, y_ref = net(x), by_modules(x)
    assert torch.equal(y, y_ref)
    (g,) = torch.autograd.grad(y.square().sum(), net.layers[0].weight)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), net.layers[0].weight)
    assert torch.equal(g, g_ref)
    seen = []
    handle = net.layers[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    net(x)
    handle.remove()
    assert seen == [torch.Size([7, 16])]
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(type(m).__name__))
    try:
        net(x)
    finally:
        handle.remove()
    assert "Linear" in seen and "ReLU" in seen
