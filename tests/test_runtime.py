"""gmbook.runtime.threads: the thread policy's one switch."""

import pytest
import torch

from gmbook.runtime import threads


def test_threads_sets_and_restores():
    before = torch.get_num_threads()
    with threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        with threads() as m:
            assert m >= 1 and torch.get_num_threads() == m
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_threads_restores_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad, error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_threads_rejects_bad_counts(bad, error):
    with pytest.raises(error, match="n must be"):
        with threads(bad):
            pass



# ------------------------------------------------------------------ run_parallel

import os  # noqa: E402

from gmbook import runtime  # noqa: E402
from gmbook.nets import MLP  # noqa: E402
from gmbook.runtime import job_slots, run_parallel  # noqa: E402
from gmbook.train import fit  # noqa: E402

forks = pytest.mark.skipif(not runtime._can_fork(), reason="the workers need fork (Linux)")


def _train(seed):
    """A job that owns its randomness: init, data and loss noise all from its seed."""
    def job():
        torch.manual_seed(seed)  # inside a job: only this job's random state
        net = MLP(2, hidden=32, depth=2, time_dim=16)
        g = torch.Generator().manual_seed(seed)
        fit(lambda x: net(x, torch.rand(len(x))).pow(2).mean(), lambda n: torch.randn(
            n, 2, generator=g), params=net.parameters(), steps=40, batch_size=64,
            seed=seed, progress=False)
        return net, torch.get_num_threads(), os.getpid()
    return job


@forks
def test_parallel_results_are_bitwise_the_sequential_ones_after_threaded_work():
    """Fork safety: the parent ran OpenMP regions on every core before forking."""
    with runtime.threads():
        a = torch.randn(600, 600)
        (a @ a).sum().item()
    jobs = [_train(s) for s in (0, 1, 2)]
    par = run_parallel(jobs, workers=2)
    seq = run_parallel(jobs, workers=1)
    for (p, p_threads, p_pid), (s, s_threads, s_pid) in zip(par, seq):
        assert p_threads == s_threads == 1
        assert p_pid != os.getpid() and s_pid == os.getpid()
        for u, v in zip(p.state_dict().values(), s.state_dict().values()):
            assert torch.equal(u, v)
    assert not torch.equal(next(par[0][0].parameters()), next(par[1][0].parameters()))


@pytest.mark.parametrize("workers", [1, 2])
def test_every_job_starts_from_the_callers_random_state_which_is_left_alone(workers):
    state = torch.random.get_rng_state()
    draws = run_parallel([lambda: torch.rand(3)] * 3, workers=workers)
    assert torch.equal(torch.random.get_rng_state(), state)
    nxt = torch.rand(3)
    assert all(torch.equal(d, nxt) for d in draws)


def _fails():
    raise ValueError("boom in a job")


@forks
def test_a_workers_exception_surfaces_with_its_traceback():
    with pytest.raises(ValueError, match="boom in a job") as info:
        run_parallel([_train(0), _fails], workers=2)
    assert "_fails" in str(info.value.__cause__)  # the worker's frames
    assert "Traceback" in str(info.value.__cause__)


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no pickling")


@forks
def test_an_exception_that_does_not_pickle_becomes_a_runtime_error():
    def job():
        raise _Unpicklable("local")
    with pytest.raises(RuntimeError, match="job 1 failed") as info:
        run_parallel([lambda: 1, job], workers=2)
    assert "_Unpicklable" in str(info.value.__cause__)


@forks
def test_a_worker_that_dies_raises():
    with pytest.raises(RuntimeError, match="exit code 3"):
        run_parallel([lambda: 1, lambda: os._exit(3)], workers=2)


def test_sequential_where_the_platform_cannot_fork(monkeypatch):
    monkeypatch.setattr(runtime, "_can_fork", lambda: False)
    assert job_slots() == 1
    assert run_parallel([os.getpid, os.getpid], workers=2) == [os.getpid()] * 2


def test_gmbook_jobs_caps_the_workers(monkeypatch):
    monkeypatch.setenv("GMBOOK_JOBS", "1")
    assert job_slots() == 1
    assert run_parallel([os.getpid] * 2) == [os.getpid()] * 2
    monkeypatch.setenv("GMBOOK_JOBS", "two")
    with pytest.raises(ValueError, match="GMBOOK_JOBS"):
        job_slots()


@pytest.mark.parametrize("jobs, workers, error", [
    (lambda: 1, None, TypeError), ([1], None, TypeError), ("ab", None, TypeError),
    ([os.getpid], 0, ValueError), ([os.getpid], 1.5, TypeError)])
def test_run_parallel_rejects_bad_arguments(jobs, workers, error):
    with pytest.raises(error):
        run_parallel(jobs, workers=workers)


def test_no_jobs_no_results():
    assert run_parallel([]) == []


@forks
def test_workers_run_in_static_mode(monkeypatch):
    """No progress-bar widgets from a forked child (they would use the parent's sockets)."""
    from gmbook.display import is_static
    monkeypatch.delenv("GMBOOK_STATIC", raising=False)
    assert run_parallel([is_static, is_static], workers=2) == [True, True]
    assert not is_static()


def test_sequential_once_cuda_is_initialised(monkeypatch):
    """A forked child cannot use CUDA: the jobs then run in the parent."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert run_parallel([os.getpid, os.getpid], workers=2) == [os.getpid()] * 2


@forks
def test_threads_keeps_one_thread_inside_a_worker():
    """A forked child on two threads after the parent used two hangs (GNU OpenMP)."""
    with runtime.threads():
        a = torch.randn(600, 600)
        (a @ a).sum().item()

    def job():
        with runtime.threads() as n:
            b = torch.randn(600, 600)
            return n, torch.get_num_threads(), (b @ b).sum().item()
    (n, got, _), = run_parallel([job, job], workers=2)[:1]
    assert n == got == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_result_keeps_its_shared_references(workers):
    """An EMA returned with its model still averages that model (pickled together)."""
    from gmbook.train import EMA

    def job():
        net = torch.nn.Linear(2, 2)
        return net, EMA(net, decay=0.5)
    net, ema = run_parallel([job, job], workers=workers)[0]
    assert ema.model is net


# ------------------------------------------------------------------ own_weights

from gmbook.runtime import own_weights  # noqa: E402


def _build(seed):
    """A job that builds a network after own_weights (no other randomness)."""
    def job():
        own_weights(seed)
        return MLP(2, hidden=16, depth=2, time_dim=8)
    return job


def _weights(net):
    return list(net.state_dict().values())


@pytest.mark.parametrize("workers", [1, 2])
def test_own_weights_makes_a_jobs_weights_its_own(workers):
    """The weights depend on the seed only: alone, in run_parallel, after other draws."""
    torch.manual_seed(123)
    alone = _build(5)()
    torch.manual_seed(456)  # another caller state, and draws before the call
    torch.rand(17)
    state = torch.random.get_rng_state()
    five, six, five_again = run_parallel([_build(5), _build(6), _build(5)], workers=workers)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's state is kept
    assert all(torch.equal(u, v) for u, v in zip(_weights(alone), _weights(five)))
    assert all(torch.equal(u, v) for u, v in zip(_weights(five), _weights(five_again)))
    assert not torch.equal(_weights(five)[0], _weights(six)[0])
    # the state is that of torch.Generator().manual_seed(seed), the CPU part of manual_seed
    torch.manual_seed(5)
    by_manual_seed = MLP(2, hidden=16, depth=2, time_dim=8)
    assert all(torch.equal(u, v) for u, v in zip(_weights(alone), _weights(by_manual_seed)))
    torch.random.set_rng_state(state)


def test_without_own_weights_jobs_share_the_callers_weights():
    """What own_weights prevents: two jobs that build a net start from the same weights."""
    a, b = run_parallel([lambda: MLP(2, hidden=16, depth=2)] * 2, workers=1)
    assert torch.equal(_weights(a)[0], _weights(b)[0])


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.0, TypeError), (True, TypeError),
                                        ("3", TypeError)])
def test_own_weights_rejects_bad_seeds(bad, error):
    state = torch.random.get_rng_state()
    with pytest.raises(error, match="seed must be"):
        own_weights(bad)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_workers_inherit_the_optimizers_lazy_import():
    """run_parallel imports torch._dynamo before it forks, so a job that builds an optimizer
    does not import it again (about a second of CPU per job): checked in a fresh interpreter,
    where nothing has imported it yet."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from gmbook.runtime import run_parallel\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "def job():\n"
        "    seen = 'torch._dynamo' in sys.modules\n"
        "    torch.optim.Adam(torch.nn.Linear(2, 2).parameters())\n"
        "    return seen\n"
        "print(run_parallel([job, job], workers=2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "GMBOOK_JOBS": "2"})
    assert out.returncode == 0, out.stderr
    if runtime._can_fork():
        assert out.stdout.strip() == "[True, True]"
