"""Tests of gmbook.sequences: the regime-switching process and its exact inference, the causal
transformer, the mixture-density head, binned and VQ tokenizers, decoding rules, and the two
autoregressive models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gmbook.densities import mixture_log_prob
from gmbook.sequences import (REGIMES, Binning, CausalTransformer, ContinuousAR,
                              MixtureDensityHead, RegimeSwitching, TokenAR, binned_log_prob,
                              codebook_usage, decoding_kl, decoding_log_probs, dwell_times,
                              from_windows, sample_categorical, to_windows, vq_decode,
                              vq_encode)
from gmbook.vae import VQVAE, restart_dead_codes

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# A process with unequal regimes, a non-stationary start and a zero transition, so that an
# error in the start law, the direction of A or the components shows.
ODD = dict(transition=((0.7, 0.3, 0.0), (0.1, 0.6, 0.3), (0.2, 0.2, 0.6)),
           weights=((1.0, 0.0), (0.5, 0.5), (0.3, 0.7)),
           slopes=((1.0, 1.0), (0.5, -0.4), (0.0, 0.9)),
           intercepts=((0.3, 0.0), (0.0, 1.0), (-0.5, 0.2)),
           stds=((0.4, 1.0), (0.5, 0.8), (1.5, 0.3)),
           initial=(0.2, 0.5, 0.3), start=0.7)


def path_log_joints(params: dict, x: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
    """log p(x, s) of every regime path ``(P, T)`` for one sequence ``(T,)``, from the
    model's definition: start law, transitions, and per-step two-component mixtures."""
    a = torch.tensor(params["transition"], dtype=F64)
    pi0 = torch.tensor(params["initial"], dtype=F64)
    w, slope, icpt, sd = (torch.tensor(params[n], dtype=F64)
                          for n in ("weights", "slopes", "intercepts", "stds"))
    prev = torch.cat([torch.tensor([params["start"]], dtype=F64), x[:-1]])  # (T,)
    comp = torch.distributions.Normal(slope * prev[:, None, None] + icpt, sd)  # (T, K, C)
    emis = (w * comp.log_prob(x[:, None, None]).exp()).sum(-1).log()  # (T, K)
    t = torch.arange(paths.shape[1])
    return (pi0[paths[:, 0]].log() + a[paths[:, :-1], paths[:, 1:]].log().sum(1)
            + emis[t, paths].sum(1))


# --------------------------------------------------------------------------- the process


def test_forward_algorithm_matches_enumeration_of_all_regime_paths():
    """[eq-seq-forward] [thm-seq-forward] log p(x_{1:T}) by the forward algorithm equals the log of
    the sum of p(x, s) over all 3^5 = 243 regime paths, to 1e-10, for a process with a
    non-stationary start, a zero transition and two-component regimes."""
    proc = RegimeSwitching(**ODD)
    x = proc.sample(4, 5, generator=gen(1), return_regimes=False, dtype=F64)
    paths = torch.tensor(list(itertools.product(range(3), repeat=5)))
    for i in range(4):
        joints = path_log_joints(ODD, x[i], paths)
        torch.testing.assert_close(proc.log_prob(x[i:i + 1])[0], torch.logsumexp(joints, 0),
                                   atol=1e-10, rtol=0)


def test_posterior_sums_to_one_and_matches_enumeration():
    """[eq-seq-forward-backward] [thm-seq-forward] The forward-backward regime posterior p(s_t = k |
    x_{1:T}) sums to one over k and equals the enumerated marginal sum_{s: s_t = k} p(x, s) / p(x)
    to 1e-10."""
    proc = RegimeSwitching(**ODD)
    x = proc.sample(3, 4, generator=gen(2), return_regimes=False, dtype=F64)
    post = proc.posterior(x)  # (3, 4, 3)
    torch.testing.assert_close(post.sum(-1), torch.ones(3, 4, dtype=F64), atol=1e-12, rtol=0)
    paths = torch.tensor(list(itertools.product(range(3), repeat=4)))
    for i in range(3):
        joints = path_log_joints(ODD, x[i], paths)
        w = (joints - torch.logsumexp(joints, 0)).exp()  # (81,)
        want = torch.stack([(w[:, None] * (paths == k)).sum(0) for k in range(3)], 1)
        torch.testing.assert_close(post[i], want, atol=1e-10, rtol=0)


def test_samples_follow_the_density_and_the_regime_law():
    """[eq-seq-forward] The exact density of a one-step sequence (a mixture over the start
    law) integrates to one, and its CDF at five points matches the share of 40 000 samples
    below them within 4 binomial standard errors; the regimes of long samples visit each
    state at its stationary frequency (within 0.02; the defaults: 3/7, 3/7, 1/7)."""
    proc = RegimeSwitching(**ODD)
    grid = torch.linspace(-12, 12, 24_001, dtype=F64)
    dens = proc.log_prob(grid[:, None]).exp()
    assert abs(float(torch.trapezoid(dens, grid)) - 1) < 1e-6
    cdf = torch.cumulative_trapezoid(dens, grid)
    x = proc.sample(40_000, 1, generator=gen(3), return_regimes=False, dtype=F64)[:, 0]
    for q in (-1.0, 0.0, 0.5, 1.0, 2.0):
        want = float(cdf[int((q + 12) * 1000) - 1])
        se = math.sqrt(want * (1 - want) / 40_000)
        assert abs(float((x < q).double().mean()) - want) < 4 * se
    default = RegimeSwitching()
    torch.testing.assert_close(default.stationary(), torch.tensor([3 / 7, 3 / 7, 1 / 7],
                                                                  dtype=F64))
    _, s = default.sample(200, 400, generator=gen(4))
    freq = torch.bincount(s.flatten(), minlength=3).double() / s.numel()
    assert (freq - default.stationary()).abs().max() < 0.02


def test_dwell_time_law_matches_simulation():
    """[eq-seq-dwell] [prop-seq-dwell] The complete runs of each regime in 200 000 simulated steps
    have the geometric law P(D = d) = (1 - A_kk) A_kk^(d-1): the mean dwell 1 / (1 - A_kk) (20, 20,
    8.3) within 4 standard errors (about 1.1 steps for the long regimes; A_kk / (1 - A_kk) would
    miss by 1), and P(D = 1), ..., P(D = 4) within 4 binomial standard errors. The sequences are
    long (10 000 steps): leaving out the censored runs at the ends of short sequences biases the
    mean down (by 1.3 steps at 400 steps per sequence)."""
    proc = RegimeSwitching()
    _, s = proc.sample(20, 10_000, generator=gen(5))
    runs = dwell_times(s, 3)
    pmf = proc.dwell_pmf(torch.arange(1, 5))  # (3, 4)
    for k in range(3):
        d = runs[k].double()
        assert len(d) > 1000
        se = float(d.std()) / math.sqrt(len(d))
        assert abs(float(d.mean()) - float(proc.mean_dwell()[k])) < 4 * se
        for j in range(4):
            p = float(pmf[k, j])
            se_p = math.sqrt(p * (1 - p) / len(d))
            assert abs(float((d == j + 1).double().mean()) - p) < 4 * se_p
    assert abs(float(proc.dwell_pmf(torch.arange(1, 400)).sum(1).min()) - 1) < 1e-6


def test_dwell_times_counts_runs_and_leaves_censored_ones_out():
    """dwell_times: complete runs only by default, every run with censored=True."""
    s = torch.tensor([[0, 0, 1, 1, 1, 2, 0, 0], [2, 2, 2, 2, 2, 2, 2, 2]])
    runs = dwell_times(s, 3)
    assert runs[0].tolist() == [] and runs[1].tolist() == [3] and runs[2].tolist() == [1]
    runs = dwell_times(s, 3, censored=True)
    assert sorted(runs[0].tolist()) == [2, 2] and runs[2].tolist() == [1, 8]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        dwell_times(s, 2)


def test_floor_is_the_exact_nll_and_beats_a_wrong_model():
    """[eq-seq-floor] [prop-seq-floor] The floor is the mean exact NLL per step; a process with
    other parameters has a higher NLL on the same sequences (Gibbs' inequality); the forward
    algorithm in log space stays finite over 3000 steps (in probability space it would underflow
    near step 700 at this NLL)."""
    proc = RegimeSwitching()
    fl = proc.floor(32, n=500, generator=gen(6))
    x = proc.sample(500, 32, generator=gen(6), return_regimes=False, dtype=F64)
    assert fl.n == 500 and abs(fl.mean - float(proc.nll_per_step(x).mean())) < 1e-12
    wrong = RegimeSwitching(transition=((0.8, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.1, 0.8)))
    gap = wrong.nll_per_step(x) - proc.nll_per_step(x)
    assert float(gap.mean()) > 5 * float(gap.std()) / math.sqrt(500) > 0
    long = proc.sample(2, 3000, generator=gen(7), return_regimes=False, dtype=F64)
    lp = proc.log_prob(long)
    assert torch.isfinite(lp).all() and (lp < -100).all()


def test_process_argument_checks():
    assert REGIMES == ("trending", "mean-reverting", "spiking")
    with pytest.raises(ValueError, match="rows of transition"):
        RegimeSwitching(transition=((0.9, 0.2, 0.0), (0, 1, 0), (0, 0, 1)))
    with pytest.raises(ValueError, match="square"):
        RegimeSwitching(transition=((0.5, 0.5),))
    with pytest.raises(ValueError, match="stds must be > 0"):
        RegimeSwitching(stds=((0.1, 1.0), (0.0, 1.0), (0.1, 1.0)))
    with pytest.raises(ValueError, match="slopes"):
        RegimeSwitching(slopes=((1.0,), (1.0,), (1.0,)))
    proc = RegimeSwitching()
    with pytest.raises(ValueError, match="positive int"):
        proc.sample(0, 5)
    with pytest.raises(TypeError, match="generator"):
        proc.sample(2, 5, generator=0)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        proc.log_prob(torch.zeros(5))
    with pytest.raises(TypeError, match="floating-point"):
        proc.log_prob(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="positive ints"):
        proc.dwell_pmf(0)


# --------------------------------------------------------------------------- the transformer


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_causal_mask_continuous_by_autograd(positions):
    """[eq-seq-attention] [prop-seq-causal] Output t depends on inputs u <= t only: the Jacobian of
    every output of a random two-layer transformer with respect to a later input is exactly zero,
    and with respect to the current and earlier inputs it is not."""
    net = CausalTransformer(in_dim=1, d_model=16, heads=4, layers=2, positions=positions)
    x = torch.randn(1, 7, dtype=torch.float32)
    net = net.double()
    x = x.double()
    r = torch.randn(16, dtype=F64)  # a random read-out (a sum would vanish after LayerNorm)
    jac = torch.autograd.functional.jacobian(lambda v: net(v) @ r, x)  # (1, 7, 1, 7)
    jac = jac[0, :, 0, :]  # (out t, in u)
    later = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)
    assert (jac[later] == 0).all()
    assert (jac[~later].abs() > 0).all()


def test_causal_mask_tokens_by_perturbation():
    """[eq-seq-attention] Changing the token at position j leaves the outputs at positions
    < j bitwise unchanged and changes those at positions >= j."""
    net = CausalTransformer(vocab=11, d_model=16, heads=2, layers=2)
    v = torch.randint(0, 11, (3, 9))
    out = net(v)
    for j in (0, 4, 8):
        w = v.clone()
        w[:, j] = (w[:, j] + 1) % 11
        out2 = net(w)
        assert torch.equal(out2[:, :j], out[:, :j])
        assert ((out2[:, j:] - out[:, j:]).abs().amax(-1) > 0).all()


def test_transformer_shapes_and_argument_checks():
    """Shapes of both variants, positions as a parameter or a buffer, and the errors."""
    net = CausalTransformer(in_dim=3, d_model=8, heads=2, layers=1, max_len=10)
    assert net(torch.randn(2, 5, 3)).shape == (2, 5, 8)
    sin = CausalTransformer(in_dim=1, d_model=8, heads=2, layers=1, positions="sinusoidal")
    assert sin(torch.randn(2, 5)).shape == (2, 5, 8)
    assert all(p is not sin.pos for p in sin.parameters())
    with pytest.raises(ValueError, match="exactly one"):
        CausalTransformer(vocab=3, in_dim=1)
    with pytest.raises(ValueError, match="divide"):
        CausalTransformer(vocab=3, d_model=10, heads=4)
    with pytest.raises(ValueError, match="positions"):
        CausalTransformer(vocab=3, positions="rotary")
    with pytest.raises(ValueError, match="max_len"):
        net(torch.randn(2, 11, 3))
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        net(torch.randn(2, 5))
    tok = CausalTransformer(vocab=4, d_model=8, heads=2, layers=1)
    with pytest.raises(TypeError, match="int64"):
        tok(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        tok(torch.full((2, 3), 4))


def test_step_with_a_cache_equals_the_full_pass():
    """[prop-seq-causal] Feeding a sequence one position at a time through
    CausalTransformer.step (keys and values of the prefix from the KVCache) gives the hidden
    states of one full causal pass, to float64 round-off, for values with labels and for
    tokens; a full cache refuses another step."""
    net = CausalTransformer(in_dim=2, d_model=16, heads=4, layers=2, max_len=9,
                            classes=3).double()
    x, c = torch.randn(4, 9, 2, dtype=F64), torch.randint(0, 3, (4, 9))
    cache = net.new_cache(4)
    steps = torch.stack([net.step(x[:, t:t + 1], cache, cond=c[:, t:t + 1])
                         for t in range(9)], 1)
    torch.testing.assert_close(steps, net(x, cond=c), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="max_len"):
        net.step(x[:, :1], cache, cond=c[:, :1])
    tok = CausalTransformer(vocab=7, d_model=8, heads=2, layers=1).double()
    v = torch.randint(0, 7, (3, 6))
    cache = tok.new_cache(3)
    steps = torch.stack([tok.step(v[:, t:t + 1], cache) for t in range(6)], 1)
    torch.testing.assert_close(steps, tok(v), atol=1e-12, rtol=0)
    with pytest.raises(TypeError, match="KVCache"):
        tok.step(v[:, :1], tok.new_cache(2))


@pytest.mark.parametrize("kind", ["residual-increments", "plain", "conditional", "tokens"])
def test_cached_and_uncached_samplers_agree(kind):
    """[eq-seq-chain-rule] Ancestral sampling with the key/value cache draws the same sequences
    as re-running the network on the whole prefix at every step, from the same generator: the
    same tokens, and values equal to float32 round-off."""
    if kind == "tokens":
        model = TokenAR(9, d_model=16, heads=2, layers=2, max_len=20).eval()
        for rule in (dict(), dict(temperature=0.7, top_p=0.9)):
            a = model.sample(50, 20, generator=gen(4), **rule)
            b = model.sample(50, 20, generator=gen(4), kv_cache=False, **rule)
            assert torch.equal(a, b)
        return
    kw = {"residual-increments": dict(residual=True, increments=True, input_scale=2.5),
          "plain": {}, "conditional": dict(classes=3)}[kind]
    model = ContinuousAR(d_model=16, heads=2, layers=2, max_len=20, **kw).eval()
    cond = torch.randint(0, 3, (50, 20), generator=gen(1)) if kind == "conditional" else None
    a = model.sample(50, 20, generator=gen(4), cond=cond)
    b = model.sample(50, 20, generator=gen(4), cond=cond, kv_cache=False)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- heads


def test_mixture_head_shapes_and_checks():
    head = MixtureDensityHead(8, 3, min_scale=0.01)
    h = torch.randn(2, 5, 8)
    p = head(h)
    assert p.loc.shape == (2, 5, 3) and (p.scale >= 0.01).all()
    assert head.log_prob(h, torch.randn(2, 5)).shape == (2, 5)
    assert head.sample(h, generator=gen()).shape == (2, 5)
    with pytest.raises(ValueError, match=r"\(\*B, 8\)"):
        head(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"y must have shape \(2, 5\)"):
        head.log_prob(h, torch.randn(2, 4))
    with pytest.raises(TypeError, match="MixtureParams"):
        mixture_log_prob((p.logits, p.loc, p.scale), torch.randn(2, 5))


# --------------------------------------------------------------------------- decoding


P5 = torch.tensor([0.05, 0.5, 0.1, 0.2, 0.15], dtype=F64)  # sorted: 1, 3, 4, 2, 0


def test_top_k_is_the_renormalised_truncation():
    """[eq-seq-top-k] top-k keeps the k most probable tokens with probabilities p / p(S_k):
    k = 2 gives (0, 5/7, 0, 2/7, 0); k = V and k > V change nothing."""
    q = decoding_log_probs(P5.log(), top_k=2).exp()
    torch.testing.assert_close(q, torch.tensor([0, 5 / 7, 0, 2 / 7, 0], dtype=F64))
    for k in (5, 9):
        torch.testing.assert_close(decoding_log_probs(P5.log(), top_k=k).exp(), P5)


def test_top_p_is_the_smallest_renormalised_nucleus():
    """[eq-seq-top-p] top-p keeps the smallest set of most probable tokens whose mass reaches
    p: p = 0.8 keeps {0.5, 0.2, 0.15} (0.85), p = 0.6 keeps {0.5, 0.2}, p = 0.3 only the top
    token, p = 1 all; on random logits (batch 200 x 12) the kept set S has mass >= p and
    loses that property when its least probable token is removed."""
    for p, keep in ((0.8, [1, 3, 4]), (0.6, [1, 3]), (0.3, [1]), (1.0, [0, 1, 2, 3, 4])):
        want = torch.zeros(5, dtype=F64)
        want[keep] = P5[keep] / P5[keep].sum()
        torch.testing.assert_close(decoding_log_probs(P5.log(), top_p=p).exp(), want)
    logits = 2 * torch.randn(200, 12, dtype=F64)
    probs = logits.softmax(-1)
    for p in (0.5, 0.9):
        q = decoding_log_probs(logits, top_p=p).exp()
        kept = q > 0
        mass = (probs * kept).sum(-1)
        least = torch.where(kept, probs, torch.inf).amin(-1)
        assert (mass >= p - 1e-12).all() and (mass - least < p).all()
        torch.testing.assert_close(q, torch.where(kept, probs / mass[:, None], 0.0))


def test_temperature_identity_and_power():
    """[eq-seq-temperature] Temperature 1 is the identity; temperature tau gives
    q proportional to p^(1/tau) (tau = 0.5: p^2 / sum p^2)."""
    logits = torch.randn(4, 6, dtype=F64)
    torch.testing.assert_close(decoding_log_probs(logits), logits.log_softmax(-1))
    p = logits.softmax(-1)
    torch.testing.assert_close(decoding_log_probs(logits, temperature=0.5).exp(),
                               p**2 / (p**2).sum(-1, keepdim=True))


def test_decoding_kl_is_nonnegative_zero_at_identity_and_minus_log_mass():
    """[eq-seq-decoding-kl] [prop-seq-decoding] KL(q || p) >= 0, = 0 for the identity, = -log p(S)
    after a truncation to S (top-k = 2 on P5: -log 0.7), and grows as the temperature leaves 1."""
    logits = 2 * torch.randn(50, 8, dtype=F64)
    assert decoding_kl(logits).abs().max() < 1e-12
    for kw in (dict(temperature=0.5), dict(temperature=2.0), dict(top_k=3), dict(top_p=0.7),
               dict(temperature=0.7, top_k=4, top_p=0.9)):
        assert (decoding_kl(logits, **kw) >= 0).all()
    assert abs(float(decoding_kl(P5.log(), top_k=2)) + math.log(0.7)) < 1e-12
    kls = [float(decoding_kl(logits, temperature=t).mean()) for t in (1.0, 0.8, 0.5, 0.3)]
    assert kls == sorted(kls) and kls[1] > 0


def test_sample_categorical_frequencies_and_excluded_tokens():
    """sample_categorical draws each token at its probability (200 000 draws, within 4
    standard errors) and never a token of log-probability -inf."""
    n = 200_000
    lq = decoding_log_probs(P5.log().expand(n, 5), top_k=3)
    v = sample_categorical(lq, generator=gen(9))
    freq = torch.bincount(v, minlength=5).double() / n
    want = lq[0].exp()
    assert (freq[want == 0] == 0).all()
    assert ((freq - want).abs() <= 4 * (want * (1 - want) / n).sqrt() + 1e-12).all()


def test_decoding_argument_checks():
    with pytest.raises(ValueError, match="temperature"):
        decoding_log_probs(P5, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        decoding_log_probs(P5, top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        decoding_log_probs(P5, top_k=0)
    with pytest.raises(TypeError, match="floating-point"):
        decoding_log_probs(torch.tensor([1, 2]))


# --------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("kind", ["uniform", "quantile"])
def test_binned_density_integrates_to_one(kind):
    """[eq-seq-binned-density] [prop-seq-binned] The density a token model implies, P(v(x)) q(x |
    v(x)) with uniform inner bins and exponential outer tails, integrates to one over the real line
    (to 1e-4, by quadrature with nodes at the edges); without the division by the bin width it would
    integrate to the mean width (far from 1)."""
    x = RegimeSwitching().sample(200, 32, generator=gen(10), return_regimes=False)
    b = getattr(Binning, kind)(x, 16)
    token_lp = torch.randn(16, dtype=F64).log_softmax(0)
    e, w = b.edges, b.widths
    below_e1 = torch.nextafter(e[1], torch.tensor(-math.inf, dtype=F64))  # still token 0
    pieces = [torch.linspace(e[0] - 30 * w[0], below_e1, 20_001, dtype=F64)]
    pieces += [torch.linspace(e[i], e[i + 1], 3, dtype=F64)[1:-1] for i in range(1, 15)]
    pieces += [torch.linspace(e[15], e[16] + 30 * w[15], 20_001, dtype=F64)]
    total = 0.0
    for i, grid in enumerate(pieces):
        if 0 < i < 15:  # an inner bin: constant density, width times its value at the middle
            total += float(b.log_density(grid, token_lp.expand(1, 16)).exp()) * float(w[i])
        else:
            dens = b.log_density(grid, token_lp.expand(len(grid), 16)).exp()
            total += float(torch.trapezoid(dens, grid))
    assert abs(total - 1) < 1e-4
    assert abs(float(w.mean()) - 1) > 0.05


def test_binning_encode_decode_and_edges():
    """Token v covers [e_v, e_{v+1}); values outside the fitted range go to the outer bins;
    decode(encode(x)) is within half a bin width in the range; quantile bins hold equal
    shares of the training data (within one point)."""
    x = torch.randn(10_000, dtype=F64)
    b = Binning.uniform(x, 8, low=-2.0, high=2.0)
    assert b.bins == 8
    e = b.edges
    assert b.encode(e[:-1]).tolist() == list(range(8))
    assert b.encode(torch.tensor([-50.0, 50.0])).tolist() == [0, 7]
    inside = x[(x > -2) & (x < 2)]
    assert ((b.decode(b.encode(inside)) - inside).abs() <= 0.25 + 1e-12).all()
    assert torch.equal(b.encode(b.decode(torch.arange(8))), torch.arange(8))
    q = Binning.quantile(x, 10)
    counts = torch.bincount(q.encode(x), minlength=10)
    assert (counts - 1000).abs().max() <= 1
    with pytest.raises(ValueError, match="strictly increasing"):
        Binning.quantile(torch.zeros(100), 4)
    with pytest.raises(ValueError, match="int >= 2"):
        Binning.uniform(x, 1)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        b.decode(torch.tensor([8]))


def test_sample_within_follows_the_within_bin_density():
    """[eq-seq-binned-density] Values drawn by sample_within lie in their token's bin, are
    uniform in an inner bin (mean at the midpoint) and exponential in an outer one (mean
    e_1 - w_0 and e_{V-1} + w_{V-1}), within 4 standard errors."""
    b = Binning(torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=F64))
    n = 50_000
    for v, mean, sd in ((0, -1.0, 1.0), (1, 0.25, 0.5 / math.sqrt(12)), (2, 2.0, 1.5)):
        y = b.sample_within(torch.full((n,), v), generator=gen(v))
        assert (b.encode(y) == v).all()
        assert abs(float(y.mean()) - mean) < 4 * sd / math.sqrt(n)


def test_windows_vq_tokens_and_codebook_usage():
    """to_windows / from_windows round-trip; a VQ-VAE over windows of 8 with 2 tokens per
    window maps (B, 32) to (B, 8) tokens and back to (B, 32); codebook usage of a known token
    set: 4 of 8 codes used, uniformly, gives fraction 0.5 and perplexity 4."""
    x = torch.randn(5, 32)
    torch.testing.assert_close(from_windows(to_windows(x, 8)), x)
    with pytest.raises(ValueError, match="divide"):
        to_windows(x, 5)
    vq = VQVAE((8,), positions=2, codes=16, code_dim=2, hidden=16, depth=1)
    tok = vq_encode(vq, x)
    assert tok.shape == (5, 8) and tok.dtype == torch.int64
    assert vq_decode(vq, tok).shape == (5, 32)
    use = codebook_usage(torch.tensor([0, 1, 2, 3] * 5), 8)
    assert use.fraction == 0.5 and abs(use.perplexity - 4) < 1e-12
    assert use.counts.tolist() == [5, 5, 5, 5, 0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        codebook_usage(torch.tensor([0, 3]), 3)
    with pytest.raises(TypeError, match="VQVAE"):
        vq_encode(torch.nn.Linear(2, 2), x)


# --------------------------------------------------------------------------- the models


def test_token_model_is_a_normalised_distribution_over_sequences():
    """[eq-seq-chain-rule] A random TokenAR over 3 tokens gives the 27 sequences of length 3
    probabilities that sum to one (1e-5), and 40 000 ancestral samples hit each sequence at
    its probability within 4 standard errors."""
    model = TokenAR(3, d_model=16, heads=2, layers=1, max_len=8)
    seqs = torch.tensor(list(itertools.product(range(3), repeat=3)))
    p = model.log_prob(seqs).exp().detach().double()
    assert abs(float(p.sum()) - 1) < 1e-5
    n = 40_000
    v = model.sample(n, 3, generator=gen(11))
    freq = torch.bincount((v * torch.tensor([9, 3, 1])).sum(1), minlength=27).double() / n
    assert ((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt()).all()
    greedy = model.sample(5, 3, generator=gen(12), top_k=1)
    assert (greedy == greedy[0]).all()


@pytest.mark.parametrize("options", [{}, dict(residual=True, increments=True,
                                               input_scale=2.0)])
def test_continuous_model_density_integrates_to_one_and_is_causal(options):
    """[eq-seq-chain-rule] [eq-seq-mdn] A random ContinuousAR's density of length-2 sequences
    integrates to one over the plane (grid quadrature, 1e-3), also with residual means and
    increment inputs; the step log-probabilities of a prefix do not depend on the values
    after it (teacher forcing is causal); log_prob is the sum of the steps'; ancestral
    samples have the density's moments, the requested shape, and follow the generator."""
    model = ContinuousAR(d_model=16, heads=2, layers=1, components=3, max_len=8, **options)
    g1 = torch.linspace(-8, 8, 321)
    grid = torch.stack(torch.meshgrid(g1, g1, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        dens = model.log_prob(grid).exp().double().reshape(321, 321)
    h = float(g1[1] - g1[0])
    assert abs(float(dens.sum()) * h * h - 1) < 1e-3
    # ancestral samples follow the same density: the means and the product moment of
    # (x_1, x_2) by quadrature, within 4 standard errors of 20 000 samples
    xs = model.sample(20_000, 2, generator=gen(16)).double()
    g2 = grid.double().reshape(321, 321, 2)
    for f in (lambda v: v[..., 0], lambda v: v[..., 1], lambda v: v[..., 0] * v[..., 1]):
        want = float((f(g2) * dens).sum()) * h * h
        vals = f(xs)
        assert abs(float(vals.mean()) - want) < 4 * float(vals.std()) / math.sqrt(20_000)
    x = torch.randn(4, 6)
    y = x.clone()
    y[:, 3:] = torch.randn(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(model.step_log_probs(y)[:, :3], model.step_log_probs(x)[:, :3])
        torch.testing.assert_close(model.log_prob(x), model.step_log_probs(x).sum(1))
        assert abs(float(model.loss(x)) - float(model.nll_per_step(x).mean())) < 1e-5
    s = model.sample(3, 5, generator=gen(13))
    assert s.shape == (3, 5)
    torch.testing.assert_close(model.sample(3, 5, generator=gen(13)), s)
    with pytest.raises(ValueError, match="max_len"):
        model.sample(2, 9)


def test_binned_log_prob_is_token_log_prob_minus_log_widths():
    """[eq-seq-binned-density] For values at the midpoints of inner bins, the implied
    log-density of a sequence is the token model's log-probability minus the log-widths of
    its bins; a mismatched vocabulary is refused."""
    b = Binning(torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 4.0], dtype=F64))
    model = TokenAR(5, d_model=16, heads=2, layers=1, max_len=8)
    tokens = torch.tensor([[1, 2, 3, 2], [3, 3, 1, 1]])
    x = b.decode(tokens).float()
    with torch.no_grad():
        got = binned_log_prob(model, b, x)
        want = model.log_prob(tokens).double() - b.widths[tokens].log().sum(1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="6 tokens"):
        binned_log_prob(TokenAR(6, d_model=16, heads=2, layers=1), b, x)


def test_restart_dead_codes_revives_every_unused_code():
    """After codebook collapse (all codes but one far from the data), restart_dead_codes
    moves the 15 dead codes onto encoder outputs, and then each of them is used on the same
    data; a second call restarts exactly the codes then unused."""
    vq = VQVAE((8,), positions=2, codes=16, code_dim=2, hidden=16, depth=1)
    with torch.no_grad():
        vq.quantizer.codebook[1:] = 1e3
    x = torch.randn(64, 8)
    assert codebook_usage(vq.encode(x), 16).fraction == 1 / 16
    assert restart_dead_codes(vq, x, generator=gen(14)) == 15
    counts = codebook_usage(vq.encode(x), 16).counts
    assert (counts[1:] > 0).all()  # each moved code is the nearest to its own output
    dead = int((counts == 0).sum())
    assert restart_dead_codes(vq, x, generator=gen(15)) == dead
    with pytest.raises(TypeError, match="VQVAE"):
        restart_dead_codes(torch.nn.Linear(2, 2), x)


def test_conditional_models_take_per_step_labels():
    """With classes > 0, the label of step t enters output t (changing it changes that
    step's log-probability and none before it); loss accepts the (B, 2, T) stacked batches
    fit draws; a missing or misshaped label is refused."""
    model = ContinuousAR(d_model=16, heads=2, layers=1, components=2, max_len=8, classes=3)
    x = torch.randn(4, 6)
    c = torch.randint(0, 3, (4, 6))
    c2 = c.clone()
    c2[:, 3] = (c2[:, 3] + 1) % 3
    with torch.no_grad():
        a, b = model.step_log_probs(x, c), model.step_log_probs(x, c2)
        assert torch.equal(a[:, :3], b[:, :3]) and (a[:, 3] != b[:, 3]).all()
        stacked = torch.stack([x, c.float()], 1)  # (B, 2, T)
        torch.testing.assert_close(model.loss(stacked), -a.mean())
    assert model.sample(2, 6, cond=c[:2], generator=gen()).shape == (2, 6)
    with pytest.raises(ValueError, match="exactly when"):
        model.log_prob(x)
    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        model.sample(2, 6, cond=c)
    tok = TokenAR(5, d_model=16, heads=2, layers=1, classes=3)
    v = torch.randint(0, 5, (4, 6))
    assert tok.sample(3, 6, cond=c[:3], generator=gen()).shape == (3, 6)
    torch.testing.assert_close(tok.loss(torch.stack([v, c], 1)), -tok.step_log_probs(v, c).mean())
