"""Tests of gmbook.exercises: the checkers of the coding exercises.

Every checker must pass its own reference, fail each plausible wrong answer with a report
that names the failing case and gives the matching hint, report exceptions, wrong types,
tuple lengths and shapes without crashing, and draw reproducible cases from a local
generator. The references themselves are checked against closed forms and torch's own
implementations (not against a retyped formula).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from gmbook import exercises
from gmbook.exercises import (
    Case,
    Checker,
    CheckResult,
    Hint,
    available,
    check,
    get_checker,
    register,
)

NAMES = ["gaussian_mle", "kl_gaussians", "linear_path", "standardize"]


def _bt(t: Tensor, x: Tensor) -> Tensor:
    return t.view(-1, *[1] * (x.ndim - 1))  # (B,) -> (B, 1, ..., 1)


def _failing_case(result: CheckResult) -> Case:
    """The case named in the header of a FAILED report."""
    match = re.match(rf"FAILED {result.name} on case (\d+)/(\d+) \(", result.message)
    assert match, result.message
    index, total = int(match.group(1)), int(match.group(2))
    cases = get_checker(result.name).cases()
    assert total == len(cases) == result.n_cases
    return cases[index - 1]


def _assert_failed(result: CheckResult, *fragments: str) -> None:
    assert not result.passed and not result, result.message
    assert result.failures, result.message
    case = _failing_case(result)
    header = " ".join(result.message.splitlines()[:2])
    assert case.description.split(",")[0] in header, result.message
    flat = " ".join(result.message.split())  # undo the wrapping of long lines
    for fragment in fragments:
        assert " ".join(fragment.split()) in flat, f"{fragment!r} not in:\n{result.message}"
    assert result.message.isascii()
    assert all(len(line) <= 80 for line in result.message.splitlines()), result.message


# --------------------------------------------------------------------------------------
# The references are right (closed forms, torch's implementations)
# --------------------------------------------------------------------------------------


def test_gaussian_mle_reference_matches_torch_cov_and_maximises_likelihood() -> None:
    x = torch.randn(50, 3, dtype=torch.float64) @ torch.randn(3, 3, dtype=torch.float64)
    mean, cov = exercises._gaussian_mle(x)
    torch.testing.assert_close(cov, torch.cov(x.T, correction=0))
    torch.testing.assert_close(mean, x.mean(0))
    # The MLE is a stationary point of the log-likelihood in (mean, cov).
    m, c = mean.clone().requires_grad_(), cov.clone().requires_grad_()
    loglik = torch.distributions.MultivariateNormal(m, covariance_matrix=c).log_prob(x).sum()
    grad_m, grad_c = torch.autograd.grad(loglik, (m, c))
    assert grad_m.abs().max() < 1e-8 and grad_c.abs().max() < 1e-8


def test_linear_path_reference_velocity_is_time_derivative() -> None:
    x0, x1 = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    x_t = lambda s: exercises._linear_path(x0, x1, s)[0]  # noqa: E731
    dxdt = torch.autograd.functional.jvp(x_t, t, torch.ones_like(t))[1]
    torch.testing.assert_close(dxdt, exercises._linear_path(x0, x1, t)[1])
    torch.testing.assert_close(x_t(torch.zeros(4, dtype=torch.float64)), x0)
    torch.testing.assert_close(x_t(torch.ones(4, dtype=torch.float64)), x1)


def test_kl_reference_matches_torch_distributions() -> None:
    mu_p, mu_q = torch.randn(2, 5, 3, dtype=torch.float64)
    var_p, var_q = torch.rand(2, 5, 3, dtype=torch.float64) + 0.1
    want = kl_divergence(Normal(mu_p, var_p.sqrt()), Normal(mu_q, var_q.sqrt())).sum(-1)
    torch.testing.assert_close(exercises._kl_gaussians(mu_p, var_p, mu_q, var_q), want)


def test_standardize_reference_has_zero_mean_unit_population_std() -> None:
    x = 3 + 5 * torch.randn(40, 3, dtype=torch.float64)
    z, mean, std = exercises._standardize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close((z**2).mean(0), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(z * std + mean, x)


# --------------------------------------------------------------------------------------
# Every checker: reference passes, cases reproducible, edge cases present
# --------------------------------------------------------------------------------------


def test_available_lists_the_chapter_1_checkers() -> None:
    assert set(NAMES) <= set(available())
    assert available() == sorted(available())


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes(name: str) -> None:
    checker = get_checker(name)
    result = check(name, checker.reference)
    assert result.passed and bool(result)
    assert result.failures == []
    n_edge = sum(c.edge for c in checker.cases())
    assert result.n_cases == len(checker.cases())
    assert result.message == (
        f"PASSED {name}: {result.n_cases}/{result.n_cases} cases "
        f"({result.n_cases - n_edge} random, {n_edge} edge)."
    )


@pytest.mark.parametrize("name", available())
def test_cases_reproducible_with_edge_cases_and_global_rng_untouched(name: str) -> None:
    checker = get_checker(name)
    state = torch.get_rng_state()
    first, second = checker.cases(), checker.cases()
    check(name, checker.reference)
    assert torch.equal(torch.get_rng_state(), state)
    assert any(c.edge for c in first) and any(not c.edge for c in first)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.description == b.description and a.edge == b.edge
        assert len(a.args) == len(b.args)
        for u, v in zip(a.args, b.args):
            assert torch.equal(u, v) if isinstance(u, Tensor) else u == v


# --------------------------------------------------------------------------------------
# Plausible wrong answers fail, name the case and give the hint
# --------------------------------------------------------------------------------------


def _mle_unbiased(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), torch.cov(x.T)


def _mle_uncentred(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), x.T @ x / x.shape[0]


def _mle_naive(x: Tensor) -> tuple[Tensor, Tensor]:
    m = x.mean(0)
    return m, x.T @ x / x.shape[0] - torch.outer(m, m)


def _mle_variances(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), x.var(0, unbiased=False)


def _mle_diagonal(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), torch.diag(x.var(0, unbiased=False))


def _mle_std(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), x.std(0, unbiased=False)


def _mle_n_by_n(x: Tensor) -> tuple[Tensor, Tensor]:
    xc = x - x.mean(0)
    return x.mean(0), xc @ xc.T / x.shape[0]


def _mle_wrong_axis(x: Tensor) -> tuple[Tensor, Tensor]:
    xc = x - x.mean(0)
    return x.mean(1), xc.T @ xc / x.shape[0]


def _mle_torch_cov(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(0), torch.cov(x.T, correction=0)  # 0-dim when d = 1


def _path_swapped(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = _bt(t, x0)
    return (1 - t) * x1 + t * x0, x0 - x1


def _path_sign(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = _bt(t, x0)
    return (1 - t) * x0 + t * x1, x0 - x1


def _path_no_broadcast(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return (1 - t) * x0 + t * x1, x1 - x0


def _path_one_none(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return (1 - t[:, None]) * x0 + t[:, None] * x1, x1 - x0


def _kl(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    # KL(p || q) written with standard deviations, as a reader might.
    s_p, s_q = var_p.sqrt(), var_q.sqrt()
    return (torch.log(s_q / s_p) + (s_p**2 + (mu_p - mu_q) ** 2) / (2 * s_q**2) - 0.5).sum(-1)


def _kl_swapped(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl(mu_q, var_q, mu_p, var_p)


def _kl_no_half(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1).sum(-1)


def _kl_std_as_var(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    s_p, s_q = var_p.sqrt(), var_q.sqrt()  # then used where variances belong
    return 0.5 * (torch.log(s_q / s_p) + (s_p + (mu_p - mu_q) ** 2) / s_q - 1).sum(-1)


def _kl_var_as_std(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    # var_p, var_q taken for standard deviations
    terms = torch.log(var_q / var_p) + (var_p**2 + (mu_p - mu_q) ** 2) / (2 * var_q**2) - 0.5
    return terms.sum(-1)


def _kl_not_summed(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1)


def _std_unbiased(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(0), x.std(0)
    return (x - mean) / std, mean, std


def _std_global(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(), x.std(unbiased=False)
    return (x - mean) / std, mean, std


def _std_global_expanded(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(), x.std()
    d = x.shape[1]
    return (x - mean) / std, mean.expand(d), std.expand(d)


def _std_wrong_axis(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(1, keepdim=True), x.std(1, unbiased=False, keepdim=True)
    return (x - mean) / std, mean[:, 0], std[:, 0]


WRONG: list[tuple[str, Callable[..., Any], str, str]] = [
    # (checker, wrong answer, fragment of the failing case's header, fragment of hint)
    ("gaussian_mle", _mle_unbiased, "case 1/", "divided by n - 1"),
    ("gaussian_mle", _mle_uncentred, "case 1/", "forgot to centre"),
    ("gaussian_mle", _mle_naive, "large offset", "Centre first"),
    ("gaussian_mle", _mle_variances, "case 1/", "not the vector of per-axis variances"),
    ("gaussian_mle", _mle_diagonal, "case 1/", "off-diagonal entries"),
    ("gaussian_mle", _mle_std, "case 1/", "standard deviations"),
    ("gaussian_mle", _mle_n_by_n, "case 1/", "you computed xc @ xc.T"),
    ("gaussian_mle", _mle_wrong_axis, "case 1/", "not over dim=1"),
    ("gaussian_mle", _mle_torch_cov, "d=1", "torch.cov returns a 0-dim tensor"),
    ("linear_path", _path_swapped, "case 1/", "x_t goes the wrong way"),
    ("linear_path", _path_sign, "case 1/", "u_t has the wrong sign"),
    ("linear_path", _path_no_broadcast, "case 1/", "reshape it to (B, 1, ..., 1)"),
    ("linear_path", _path_one_none, "D=(3, 4, 4)", "reshape it to (B, 1, ..., 1)"),
    ("kl_gaussians", _kl_swapped, "case 1/", "You computed KL(q || p)"),
    ("kl_gaussians", _kl_no_half, "case 1/", "missing the overall factor 1/2"),
    ("kl_gaussians", _kl_std_as_var, "case 1/", "standard deviations where"),
    ("kl_gaussians", _kl_var_as_std, "case 1/", "you squared them"),
    ("kl_gaussians", _kl_not_summed, "case 1/", "Sum over the last dim d"),
    ("standardize", _std_unbiased, "case 1/", "unbiased std"),
    ("standardize", _std_global, "case 1/", "one mean and std for all entries"),
    ("standardize", _std_global_expanded, "case 1/", "one mean and std for all entries"),
    ("standardize", _std_wrong_axis, "case 1/", "not over dim=1"),
]


@pytest.mark.parametrize(
    ("name", "fn", "where", "hint"), WRONG, ids=[w[1].__name__ for w in WRONG]
)
def test_wrong_answer_fails_with_case_and_hint(
    name: str, fn: Callable[..., Any], where: str, hint: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker must not leak the reader's warnings
        result = check(name, fn)
    _assert_failed(result, where, "hint:", hint)


def test_kl_correct_alternative_forms_pass() -> None:
    assert check("kl_gaussians", _kl)
    assert check(
        "kl_gaussians",
        lambda mp, vp, mq, vq: kl_divergence(Normal(mp, vp.sqrt()), Normal(mq, vq.sqrt())).sum(-1),
    )


def test_naive_covariance_fails_only_the_large_offset_case() -> None:
    result = check("gaussian_mle", _mle_naive)
    assert len(result.failures) == 1 and "large offset" in result.failures[0]
    assert "The other 8 cases passed." in result.message


def test_correct_alternatives_pass() -> None:
    def mle(x: Tensor) -> tuple[Tensor, Tensor]:
        d = x.shape[1]
        return x.mean(0), torch.cov(x.T, correction=0).reshape(d, d)

    assert check("gaussian_mle", mle)
    assert check("linear_path", lambda x0, x1, t: (torch.lerp(x0, x1, _bt(t, x0)), x1 - x0))
    assert check("linear_path", lambda x0, x1, t: (x0 + _bt(t, x0) * (x1 - x0), x1 - x0))


# --------------------------------------------------------------------------------------
# Exceptions, wrong types, tuple lengths, shapes, dtypes, NaN, in-place changes
# --------------------------------------------------------------------------------------


def test_exception_is_reported_not_raised() -> None:
    def boom(x: Tensor) -> tuple[Tensor, Tensor]:
        raise ValueError("something went wrong")

    result = check("gaussian_mle", boom)
    _assert_failed(result, "case 1/9", "raised ValueError: something went wrong", "in boom, line")
    assert len(result.failures) == result.n_cases


def test_exception_on_an_edge_case_names_that_case() -> None:
    def only_many(x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[0] == 1:
            raise ZeroDivisionError("need two samples")
        xc = x - x.mean(0)
        return x.mean(0), xc.T @ xc / x.shape[0]

    result = check("gaussian_mle", only_many)
    _assert_failed(result, "edge: a single sample, n=1", "ZeroDivisionError: need two samples")
    assert "The other 8 cases passed." in result.message


def test_broadcast_error_in_linear_path_is_caught() -> None:
    result = check("linear_path", _path_no_broadcast)
    _assert_failed(result, "raised RuntimeError", "must match the size")


@pytest.mark.parametrize(
    ("name", "fn", "fragment"),
    [
        ("gaussian_mle", lambda x: x.mean(0),
         "returned a Tensor of shape (2,); expected a tuple (mean, cov)"),
        ("gaussian_mle", lambda x: None, "returned None; expected a tuple (mean, cov)"),
        ("gaussian_mle", lambda x: (x.mean(0), x.T @ x, 0),
         "returned a tuple of length 3; expected 2"),
        ("standardize", lambda x: (x, x.mean(0)), "returned a tuple of length 2; expected 3"),
        ("kl_gaussians", lambda mp, vp, mq, vq: (mp.sum(-1),), "drop the trailing comma"),
        ("kl_gaussians", lambda mp, vp, mq, vq: 0.5,
         "kl is a float (0.5); expected a torch.Tensor"),
        ("gaussian_mle", lambda x: (x.mean(0).numpy(), x.T @ x), "mean is a numpy.ndarray"),
        ("gaussian_mle", lambda x: (x.mean(0, keepdim=True), torch.cov(x.T, correction=0)),
         "mean has shape (1, 2), expected (2,) (the values are right"),
        ("kl_gaussians", lambda mp, vp, mq, vq: _kl(mp, vp, mq, vq)[:, None],
         "kl has shape (6, 1), expected (6,) (the values are right"),
        ("linear_path", lambda x0, x1, t: (torch.lerp(x0, x1, _bt(t, x0)), (x1 - x0).float()),
         "u_t has dtype float32, expected float64"),
        ("linear_path", lambda x0, x1, t: (x0 * 0 + float("nan"), x1 - x0), "x_t contains NaN"),
        ("gaussian_mle", lambda x: (torch.cov(x.T, correction=0), x.mean(0)),
         "the outputs are in the wrong order: you returned (cov, mean); return (mean, cov)"),
    ],
)
def test_wrong_structure_is_reported(name: str, fn: Callable[..., Any], fragment: str) -> None:
    _assert_failed(check(name, fn), fragment)


def test_wrong_values_report_error_index_and_small_values() -> None:
    result = check("kl_gaussians", _kl_no_half)
    assert "kl is wrong: max abs error" in result.message
    assert "at index [" in result.message
    assert "expected: kl = [" in result.message and "got:      kl = [" in result.message
    assert "got / expected = 2 in every entry" in " ".join(result.message.split())


def test_in_place_modification_of_an_input_is_reported() -> None:
    def sneaky(x: Tensor) -> tuple[Tensor, Tensor]:
        mean = x.mean(0)
        x -= mean
        return mean, x.T @ x / x.shape[0]

    _assert_failed(check("gaussian_mle", sneaky), "modified its input x in place")


def test_reader_warning_is_shown_for_the_failing_case_and_not_leaked() -> None:
    def noisy(x: Tensor) -> tuple[Tensor, Tensor]:
        warnings.warn("careful with n", UserWarning, stacklevel=1)
        return x.mean(0), x.T @ x

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = check("gaussian_mle", noisy)
    _assert_failed(result, "warning:  your function warned: UserWarning: careful with n")


def test_hint_found_on_a_later_case_says_which() -> None:
    def raises_on_d4(x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1] == 4:
            raise RuntimeError("d = 4 unsupported")
        return _mle_naive(x)

    result = check("gaussian_mle", raises_on_d4)
    _assert_failed(result, "RuntimeError: d = 4 unsupported", "(from case 9)", "Centre first")


# --------------------------------------------------------------------------------------
# API: names, callables, result object, registry
# --------------------------------------------------------------------------------------


def test_unknown_name_lists_available_names() -> None:
    with pytest.raises(ValueError, match="unknown exercise 'gausian_mle'") as info:
        check("gausian_mle", exercises._gaussian_mle)
    assert "Did you mean 'gaussian_mle'?" in str(info.value)
    for name in NAMES:
        assert name in str(info.value)


def test_non_callable_and_non_str_raise_type_error() -> None:
    with pytest.raises(TypeError, match="fn must be a function"):
        check("gaussian_mle", torch.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a str"):
        check(3, exercises._gaussian_mle)  # type: ignore[arg-type]


def test_check_result_displays_once_as_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    result = check("standardize", exercises._standardize)
    assert capsys.readouterr().out == ""  # check itself prints nothing
    assert repr(result) == str(result) == result.message

    class Printer:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def text(self, s: str) -> None:
            self.parts.append(s)

    printer = Printer()
    result._repr_pretty_(printer, False)
    assert printer.parts == [result.message]
    IPython = pytest.importorskip("IPython.lib.pretty")
    assert IPython.pretty(result) == result.message


def test_register_custom_checker_and_refuse_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exercises, "_REGISTRY", dict(exercises._REGISTRY))

    def square(x: Tensor) -> Tensor:
        return x**2

    def cases(generator: torch.Generator) -> list[Case]:
        return [
            Case("random", (torch.randn(3, generator=generator),)),
            Case("zeros", (torch.zeros(2),), edge=True),
        ]

    checker = register(
        Checker(
            "square",
            square,
            cases,
            outputs=("y",),
            hints=[Hint("Square, do not double.", wrong=lambda x: 2 * x)],
        )
    )
    assert "square" in available()
    assert check("square", square).message == "PASSED square: 2/2 cases (1 random, 1 edge)."
    _assert_failed(check("square", lambda x: 2 * x), "Square, do not double.")
    with pytest.raises(ValueError, match="already registered"):
        register(checker)
    assert register(checker, replace=True) is checker
    with pytest.raises(TypeError):
        register("square")  # type: ignore[arg-type]


def test_invalid_hint_and_checker_definitions_raise() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Hint("text")
    with pytest.raises(ValueError, match="exactly one"):
        Hint("text", wrong=abs, when=lambda c, g, e: True)
    with pytest.raises(ValueError, match="only together"):
        Hint("text", when=lambda c, g, e: True, output="y")
    with pytest.raises(TypeError, match="outputs"):
        Checker("x", abs, lambda g: [], outputs=())
    with pytest.raises(ValueError, match="not one of"):
        Checker("x", abs, lambda g: [], outputs=("y",), hints=[Hint("t", wrong=abs, output="z")])
    with pytest.raises(TypeError, match="args must be a tuple"):
        Case("bad", [torch.zeros(1)])  # type: ignore[arg-type]
