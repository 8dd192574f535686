r"""The framework of :mod:`gmbook.exercises`: cases, hints, checkers, the registry, reports."""

from __future__ import annotations

import difflib
import inspect
import itertools
import linecache
import math
import textwrap
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gmbook.nets import append_dims

__all__ = [
    "DTYPES",
    "close",
    "fmt_dtype",
    "randint",
    "Case",
    "CheckResult",
    "Checker",
    "Hint",
    "NamedFunction",
    "available",
    "check",
    "get_checker",
    "register",
]

_WIDTH = 80  # report lines are wrapped to this width (the PDF does not wrap code output)
_SMALL = 8  # tensors with at most this many entries are printed in full


# --------------------------------------------------------------------------------------
# The framework
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    r"""One input on which the reader's function is compared with the reference.

    Args:
        description: short ASCII description shown in reports, e.g.
            ``"a single sample, n=1, d=2, float64"``.
        args: positional arguments passed to the function (tensors are cloned before
            every call, so a function that modifies its inputs cannot spoil the case).
        edge: ``True`` for a hand-made edge case, ``False`` for a random one.
        rtol: relative tolerance for this case; ``None`` uses the checker's, else a
            default for the dtype of each output.
        atol: absolute tolerance for this case, as ``rtol``.
        tag: free label that :class:`Hint` predicates can test (e.g. ``"offset"``).
    """

    description: str
    args: tuple[Any, ...]
    edge: bool = False
    rtol: float | None = None
    atol: float | None = None
    tag: str = ""

    @property
    def kind(self) -> str:
        r"""``"edge"`` or ``"random"``."""
        return "edge" if self.edge else "random"

    def __post_init__(self) -> None:
        if not isinstance(self.description, str) or not self.description:
            raise TypeError("Case.description must be a non-empty str")
        if not isinstance(self.args, tuple):
            raise TypeError(f"Case.args must be a tuple, got {type(self.args).__name__}")


@dataclass(frozen=True)
class NamedFunction:
    """A function given to a checker as an argument (a score, a velocity field), with a short
    name for reports; two are equal when their names and parameters are, which keeps cases
    reproducible and comparable."""

    name: str
    params: tuple
    fn: Callable[..., Any] = field(compare=False)

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Hint:
    r"""A known mistake and the advice shown when a failure matches it.

    Give exactly one of ``wrong`` and ``when``:

    - ``wrong`` is an implementation of the mistake, with the reference's signature.
      The hint applies when the reader's result matches ``wrong``'s on a failing case
      (within the case's tolerance; NaNs match NaNs), or when both raise the same
      exception type with the same message. With ``output`` set, only that output is
      compared (e.g. ``"cov"`` when the mean is beside the point).
    - ``when(case, got, expected) -> bool`` is a predicate, where ``got`` is what the
      reader's function returned, or the exception it raised. A predicate that raises
      counts as ``False``, so it may assume shapes freely.

    Args:
        text: the advice, one or two short ASCII sentences.
        wrong: a wrong implementation to recognise.
        when: a predicate to recognise the mistake.
        output: with ``wrong``, the name of the one output to compare.
    """

    text: str
    wrong: Callable[..., Any] | None = None
    when: Callable[[Case, Any, Any], bool] | None = None
    output: str | None = None

    def __post_init__(self) -> None:
        if (self.wrong is None) == (self.when is None):
            raise ValueError("Hint needs exactly one of `wrong` and `when`")
        if self.output is not None and self.wrong is None:
            raise ValueError("Hint.output applies only together with `wrong`")
        for name in ("wrong", "when"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"Hint.{name} must be callable, got {type(value).__name__}")


@dataclass(repr=False)
class CheckResult:
    r"""The outcome of :func:`check`.

    Its ``repr`` and ``str`` are the report (``message``), so a notebook cell ending in
    ``check(...)`` displays the report once, and ``print(check(...))`` prints it.
    ``bool(result)`` is ``passed``.

    Attributes:
        passed: whether every case passed.
        name: the checker's name.
        n_cases: the number of cases run.
        failures: one line per failing case, ``"case 4 (edge: ...): <problem>"``.
        message: the full report.
    """

    passed: bool
    name: str
    n_cases: int
    failures: list[str] = field(default_factory=list)
    message: str = ""

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__

    def __bool__(self) -> bool:
        return self.passed

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython display
        printer.text(self.message)


@dataclass
class Checker:
    r"""Compares a reader's function with a reference on a fixed list of cases.

    Args:
        name: the name passed to :func:`check`, e.g. ``"gaussian_mle"``.
        reference: the correct implementation.
        generate: ``generate(generator) -> list[Case]``; draws every random number from
            ``generator`` (never from the global RNG), so the cases are reproducible.
        outputs: names of the outputs, e.g. ``("mean", "cov")``. With one name the
            function must return a bare tensor; with several, a tuple (or list) of
            tensors in this order. An output that the reference returns as a Python
            ``float`` is a number: the reader may return a ``float``, an ``int``, a
            NumPy scalar or a 0-dim tensor (compared at that tensor's precision).
        hints: known mistakes to recognise, tried in order.
        rtol: relative tolerance, ``None`` for a default per dtype (float64: 1e-7,
            float32: 1e-4). A :class:`Case` may override it.
        atol: absolute tolerance, ``None`` for a default per dtype (float64: 1e-9,
            float32: 1e-5). A :class:`Case` may override it.
        seed: seed of the generator passed to ``generate``.
    """

    name: str
    reference: Callable[..., Any]
    generate: Callable[[torch.Generator], list[Case]]
    outputs: tuple[str, ...]
    hints: Sequence[Hint] = ()
    rtol: float | None = None
    atol: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError("Checker.name must be a non-empty str")
        for attr in ("reference", "generate"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"Checker.{attr} must be callable")
        if isinstance(self.outputs, str):
            self.outputs = (self.outputs,)
        self.outputs = tuple(self.outputs)
        if not self.outputs or not all(isinstance(o, str) for o in self.outputs):
            raise TypeError("Checker.outputs must be a non-empty tuple of str")
        if not all(isinstance(h, Hint) for h in self.hints):
            raise TypeError("Checker.hints must be a sequence of Hint")
        for h in self.hints:
            if h.output is not None and h.output not in self.outputs:
                raise ValueError(f"Hint.output {h.output!r} is not one of {self.outputs}")

    @property
    def inputs(self) -> tuple[str, ...]:
        r"""Names of the reference's positional parameters, used in reports."""
        return tuple(inspect.signature(self.reference).parameters)

    def cases(self) -> list[Case]:
        r"""The cases, random ones first, generated afresh from ``seed``.

        Returns:
            A list of :class:`Case`; two calls return equal inputs.
        """
        generator = torch.Generator().manual_seed(self.seed)
        cases = list(self.generate(generator))
        if not cases or not all(isinstance(c, Case) for c in cases):
            raise TypeError(f"Checker {self.name!r}: generate must return a list of Case")
        return cases

    def run(self, fn: Callable[..., Any]) -> CheckResult:
        r"""Run ``fn`` on every case and build the report (see :func:`check`).

        Args:
            fn: the reader's function, with the reference's signature.

        Returns:
            A :class:`CheckResult`.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        cases = self.cases()
        failed: list[tuple[int, Case, _Problem]] = []
        for index, case in enumerate(cases, start=1):
            problem = self._run_case(fn, case)
            if problem is not None:
                failed.append((index, case, problem))
        n = len(cases)
        if not failed:
            n_edge = sum(c.edge for c in cases)
            message = (
                f"PASSED {self.name}: {n}/{n} cases ({n - n_edge} random, {n_edge} edge)."
            )
            return CheckResult(True, self.name, n, [], _ascii(message))
        failures = [
            _ascii(f"case {i} ({c.kind}: {c.description}): {p.text}") for i, c, p in failed
        ]
        message = self._report(failed, cases)
        return CheckResult(False, self.name, n, failures, message)

    # -- one case ----------------------------------------------------------------------

    def _expected(self, case: Case) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = self.reference(*_clone(case.args))
            if not any(_is_low_precision(a) for a in case.args):
                return plain
            # Compute in float64, then cast: the expected value is the exact answer
            # rounded to the case's dtype, not a float32 computation with its own errors.
            precise = self.reference(*_clone(tuple(_to_float64(a) for a in case.args)))
        if len(self.outputs) == 1:
            return precise.to(plain.dtype)
        return tuple(p.to(e.dtype) for p, e in zip(precise, plain))

    def _run_case(self, fn: Callable[..., Any], case: Case) -> _Problem | None:
        expected = self._expected(case)
        args = _clone(case.args)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                got = fn(*args)
            except Exception as error:  # noqa: BLE001 - the reader's bug, to be reported
                problem = _Problem(_describe_exception(error), error=error, expected=expected)
                problem.warning = _first_warning(caught)
                return problem
        try:
            problem = self._compare(case, got, expected)
        except Exception as error:  # noqa: BLE001 - an output too odd to compare
            problem = _Problem(
                f"could not compare the output ({type(error).__name__}: {error}); return "
                f"{_fmt_names(self.outputs)} as CPU tensors.",
                got=got,
                expected=expected,
                hintable=False,
            )
        if problem is not None:
            problem.warning = _first_warning(caught)
            return problem
        for name, original, after in zip(self.inputs, case.args, args):
            if isinstance(original, Tensor) and not _same_bits(original, after):
                return _Problem(
                    f"your function modified its input {name} in place (e.g. with "
                    f"`{name} -= ...` or `{name}[...] = ...`); work on a copy "
                    "instead. The returned values were right.",
                    got=got,
                    expected=expected,
                    hintable=False,
                )
        return None

    def _tolerance(self, case: Case, dtype: torch.dtype) -> tuple[float, float]:
        rtol_default, atol_default = _default_tolerance(dtype)
        rtol = case.rtol if case.rtol is not None else self.rtol
        atol = case.atol if case.atol is not None else self.atol
        return (
            rtol if rtol is not None else rtol_default,
            atol if atol is not None else atol_default,
        )

    def _compare(self, case: Case, got: Any, expected: Any) -> _Problem | None:
        names = self.outputs
        want = _fmt_names(names)
        if len(names) == 1:
            if isinstance(got, (tuple, list)):
                extra = " (drop the trailing comma)" if len(got) == 1 else ""
                kind = "number" if isinstance(expected, float) else "tensor"
                return _Problem(
                    f"returned a {type(got).__name__} of length {len(got)}; expected a "
                    f"single {kind} {names[0]}{extra}.",
                    got=got,
                    expected=expected,
                )
            pairs = [(names[0], got, expected)]
        else:
            if not isinstance(got, (tuple, list)):
                return _Problem(
                    f"returned {_describe_object(got)}; expected a tuple {want} of "
                    f"{len(names)} tensors.",
                    got=got,
                    expected=expected,
                )
            if len(got) != len(names):
                return _Problem(
                    f"returned a {type(got).__name__} of length {len(got)}; expected "
                    f"{len(names)} outputs {want}.",
                    got=got,
                    expected=expected,
                )
            pairs = list(zip(names, got, expected))
        problems = [self._compare_tensor(case, n, g, e) for n, g, e in pairs]
        first = next((p for p in problems if p is not None), None)
        if first is None:
            return None
        if len(names) > 1:
            order = self._find_order(case, got, expected)
            if order is not None:
                first = _Problem(
                    f"the outputs are in the wrong order: you returned "
                    f"{_fmt_names(order)}; return {want}.",
                    hintable=False,
                )
        first.got, first.expected = got, expected
        return first

    def _find_order(self, case: Case, got: Any, expected: Any) -> tuple[str, ...] | None:
        names = self.outputs
        for perm in itertools.permutations(range(len(names))):
            if list(perm) == list(range(len(names))):
                continue
            if all(
                self._compare_tensor(case, names[j], got[i], expected[j]) is None
                for i, j in enumerate(perm)
            ):
                return tuple(names[j] for j in perm)
        return None

    def _compare_tensor(self, case: Case, name: str, got: Any, exp: Any) -> _Problem | None:
        if isinstance(exp, float):  # a number: accept a float, an int or a 0-dim tensor
            number = _as_number(got)
            if number is None:
                shape = f" of shape {_fmt_shape(got)}" if isinstance(got, Tensor) else ""
                kind = f"a Tensor{shape}" if isinstance(got, Tensor) else _describe_object(got)
                return _Problem(
                    f"{name} is {kind}; expected a number (a Python float, or a "
                    "0-dim tensor)."
                )
            got, exp = number, torch.tensor(exp, dtype=number.dtype)
        if not isinstance(got, Tensor):
            kind = _describe_object(got)
            tip = ""
            if type(got).__module__ == "numpy":
                tip = " (stay in torch: use torch operations, or torch.as_tensor)"
            elif isinstance(got, (int, float)):
                tip = " (do not call .item(); return the tensor)"
            return _Problem(
                f"{name} is {kind}; expected a torch.Tensor of shape {_fmt_shape(exp)}{tip}."
            )
        got = got.detach().cpu()
        exp = exp.detach().cpu()
        rtol, atol = self._tolerance(case, exp.dtype)
        if got.shape != exp.shape:
            text = f"{name} has shape {_fmt_shape(got)}, expected {_fmt_shape(exp)}"
            if got.numel() == exp.numel() and _close(got.reshape(exp.shape), exp, rtol, atol):
                text += " (the values are right: check keepdim=, squeeze or reshape)"
            elif got.ndim == 2 and got.T.shape == exp.shape and _close(got.T, exp, rtol, atol):
                text += " (it is the transpose of the right answer)"
            return _Problem(text + ".")
        if got.dtype != exp.dtype:
            return _Problem(
                f"{name} has dtype {_fmt_dtype(got.dtype)}, expected "
                f"{_fmt_dtype(exp.dtype)} like the inputs (make new tensors with "
                "dtype=x.dtype, or x.new_zeros(...))."
            )
        if not (got.is_floating_point() or got.is_complex()):
            equal = torch.equal(got, exp)
        else:
            equal = _close(got, exp, rtol, atol)
        if equal:
            return None
        lines = []
        if got.numel() <= _SMALL and _fmt_values(got) != _fmt_values(exp):
            lines = [
                f"expected: {name} = {_fmt_values(exp)}",
                f"got:      {name} = {_fmt_values(got)}",
            ]
        for bad, word in ((torch.isnan, "NaN"), (torch.isinf, "inf")):
            mask = bad(got) & ~bad(exp)
            if mask.any():
                return _Problem(
                    f"{name} contains {word} ({int(mask.sum())} of {got.numel()} "
                    "entries) where finite values were expected.",
                    lines=lines,
                )
        err = (got.double() - exp.double()).abs()
        err = torch.where(torch.isnan(err), torch.zeros_like(err), err)  # NaN == NaN
        flat = int(err.argmax())
        index = _fmt_index(torch.unravel_index(torch.tensor(flat), exp.shape), exp.ndim)
        got_at, exp_at = _fmt_pair(got.reshape(-1)[flat].item(), exp.reshape(-1)[flat].item())
        text = (
            f"{name} is wrong: max abs error {err.max().item():.3g}{index} (got "
            f"{got_at}, expected {exp_at}; tolerance rtol={rtol:g}, atol={atol:g})"
        )
        ratio = _constant_ratio(got, exp)
        if ratio is not None:
            text += f"; got / expected = {ratio:.4g} in every entry"
        return _Problem(text + ".", lines=lines)

    # -- hints and report --------------------------------------------------------------

    def _hint_for(self, case: Case, problem: _Problem) -> str | None:
        if not problem.hintable:
            return None
        got = problem.error if problem.error is not None else problem.got
        for hint in self.hints:
            try:
                if hint.when is not None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if hint.when(case, got, problem.expected):
                            return hint.text
                elif self._matches_wrong(case, hint, problem):
                    return hint.text
            except Exception:  # noqa: BLE001 - a hint that does not apply
                continue
        return None

    def _matches_wrong(self, case: Case, hint: Hint, problem: _Problem) -> bool:
        assert hint.wrong is not None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wrong = hint.wrong(*_clone(case.args))
        except Exception as error:  # noqa: BLE001
            return (
                problem.error is not None
                and type(error) is type(problem.error)
                and str(error) == str(problem.error)
            )
        if problem.error is not None:
            return False
        names, got = self.outputs, problem.got
        if len(names) == 1:
            got, wrong = (got,), (wrong,)
        if not isinstance(got, (tuple, list)) or len(got) != len(names):
            return False
        expected = problem.expected if len(names) > 1 else (problem.expected,)
        triples = [
            (g, w, e)
            for n, g, w, e in zip(names, got, wrong, expected)
            if hint.output is None or n == hint.output
        ]
        differs = False  # on this case, the mistake must give a wrong answer
        for g, w, e in triples:
            if isinstance(e, float):  # a number: compare at the reader's precision
                g, w = _as_number(g), _as_number(w)
                if g is None or w is None:
                    return False
                w, e = w.to(g.dtype), torch.tensor(e, dtype=g.dtype)
            if not (isinstance(g, Tensor) and isinstance(w, Tensor)):
                return False
            g, w = g.detach().cpu(), w.detach().cpu()
            if g.shape != w.shape or g.dtype != w.dtype:
                return False
            rtol, atol = self._tolerance(case, w.dtype)
            if not _close(g, w, rtol, atol):
                return False
            differs = differs or w.shape != e.shape or not _close(w, e.cpu(), rtol, atol)
        return differs

    def _report(self, failed: list[tuple[int, Case, _Problem]], cases: list[Case]) -> str:
        index, case, problem = failed[0]
        n = len(cases)
        head = f"FAILED {self.name} on case {index}/{n} ({case.kind}: {case.description})."
        lines = [
            textwrap.fill(head, width=_WIDTH, subsequent_indent="  ", break_on_hyphens=False),
            _field("input", _describe_inputs(self.inputs, case.args)),
            _field("problem", problem.text),
        ]
        lines += [_field("", line) for line in problem.lines]
        if problem.warning is not None:
            lines.append(_field("warning", problem.warning))
        for j, (other_index, other_case, other_problem) in enumerate(failed):
            if not problem.hintable:  # e.g. outputs swapped: hints would mislead
                break
            hint = self._hint_for(other_case, other_problem)
            if hint is not None:
                prefix = "" if j == 0 else f"(from case {other_index}) "
                lines.append(_field("hint", prefix + hint))
                break
        if len(failed) == 1:
            lines.append(f"  The other {n - 1} cases passed.")
        else:
            indices = ", ".join(str(i) for i, _, _ in failed)
            lines.append(
                textwrap.fill(
                    f"{len(failed)} of {n} cases failed: {indices}.",
                    width=_WIDTH,
                    initial_indent="  ",
                    subsequent_indent="  ",
                )
            )
        return _ascii("\n".join(lines))


@dataclass
class _Problem:
    text: str
    lines: list[str] = field(default_factory=list)
    got: Any = None
    expected: Any = None
    error: BaseException | None = None
    warning: str | None = None
    hintable: bool = True


_REGISTRY: dict[str, Checker] = {}


def register(checker: Checker, *, replace: bool = False) -> Checker:
    r"""Add a checker to the registry used by :func:`check`.

    Args:
        checker: the :class:`Checker` to add.
        replace: allow replacing a checker of the same name.

    Returns:
        ``checker``, unchanged.

    Raises:
        TypeError: if ``checker`` is not a :class:`Checker`.
        ValueError: if the name is taken and ``replace`` is false.
    """
    if not isinstance(checker, Checker):
        raise TypeError(f"register expects a Checker, got {type(checker).__name__}")
    if checker.name in _REGISTRY and not replace:
        raise ValueError(
            f"a checker named {checker.name!r} is already registered; "
            "pass replace=True to replace it"
        )
    _REGISTRY[checker.name] = checker
    return checker


def available() -> list[str]:
    r"""Names of the registered checkers, sorted.

    Returns:
        A sorted list of names accepted by :func:`check`.

    Example:
        >>> "gaussian_mle" in available()
        True
    """
    return sorted(_REGISTRY)


def get_checker(name: str) -> Checker:
    r"""The registered :class:`Checker` called ``name``.

    Args:
        name: a name from :func:`available`.

    Returns:
        The :class:`Checker`.

    Raises:
        TypeError: if ``name`` is not a str.
        ValueError: if no checker has that name (the message lists the names).
    """
    if not isinstance(name, str):
        raise TypeError(f"the exercise name must be a str, got {type(name).__name__}")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        guess = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown exercise {name!r}.{guess} Available: {', '.join(available())}."
        )
    return _REGISTRY[name]


def check(name: str, fn: Callable[..., Any]) -> CheckResult:
    r"""Check the reader's ``fn`` against the reference implementation of ``name``.

    Runs ``fn`` on the checker's random and edge cases (reproducible: the same inputs
    on every call, drawn from a local generator; the global RNG is untouched), compares
    each result with the reference and never lets an exception of ``fn`` escape.
    Nothing is printed: the returned :class:`CheckResult` *displays as* the report, so
    end a notebook cell with ``check(...)`` or write ``print(check(...))``.

    Args:
        name: the exercise, one of :func:`available`.
        fn: the reader's function, with the signature given in the exercise.

    Returns:
        A :class:`CheckResult`; ``bool(result)`` tells whether every case passed.

    Raises:
        ValueError: if ``name`` is unknown (the message lists the available names).
        TypeError: if ``name`` is not a str or ``fn`` is not callable.

    Example:
        >>> def my_standardize(x):
        ...     mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
        ...     return (x - mean) / std, mean, std
        >>> check("standardize", my_standardize)
        PASSED standardize: 9/9 cases (6 random, 3 edge).
    """
    checker = get_checker(name)
    if not callable(fn):
        raise TypeError(
            f"check({name!r}, fn): fn must be a function, got {type(fn).__name__} "
            "(pass the function itself, without calling it)"
        )
    return checker.run(fn)


# --------------------------------------------------------------------------------------
# Helpers: cloning, comparing, formatting
# --------------------------------------------------------------------------------------


def _clone(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.clone() if isinstance(a, Tensor) else a for a in args)


def _as_number(v: Any) -> Tensor | None:
    r"""A float, int, NumPy scalar or real 0-dim tensor as a 0-dim tensor, else ``None``.

    Python numbers become float64; floating tensors and NumPy scalars keep their dtype
    (so a float32 answer is compared at float32 precision), integer ones become float64.
    """
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return torch.tensor(float(v), dtype=torch.float64)
    if type(v).__module__ == "numpy" and getattr(v, "shape", None) == ():
        if getattr(getattr(v, "dtype", None), "kind", "") not in ("f", "i", "u"):
            return None  # bool, complex or str
        v = torch.as_tensor(v)
    if not isinstance(v, Tensor) or v.ndim != 0 or v.is_complex() or v.dtype == torch.bool:
        return None
    v = v.detach().cpu()
    return v if v.is_floating_point() else v.double()


def _is_low_precision(a: Any) -> bool:
    return isinstance(a, Tensor) and a.is_floating_point() and a.dtype != torch.float64


def _to_float64(a: Any) -> Any:
    return a.double() if _is_low_precision(a) else a


def _default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    if dtype == torch.float64:
        return 1e-7, 1e-9
    if dtype in (torch.float16, torch.bfloat16):
        return 1e-2, 1e-3
    return 1e-4, 1e-5


def _close(a: Tensor, b: Tensor, rtol: float, atol: float) -> bool:
    return bool(torch.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True).all())


def _same_bits(a: Tensor, b: Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return torch.equal(a, b)


def _constant_ratio(got: Tensor, exp: Tensor) -> float | None:
    if got.numel() < 2 or not (torch.isfinite(got).all() and torch.isfinite(exp).all()):
        return None
    mask = exp.abs() > 1e-12 * max(exp.abs().max().item(), 1e-300)
    if int(mask.sum()) < 2:
        return None
    ratio = got.double()[mask] / exp.double()[mask]
    mean = ratio.mean().item()
    if mean == 0 or (ratio - mean).abs().max().item() > 1e-4 * abs(mean):
        return None
    if abs(mean - 1) < 1e-3:  # a rounding-level difference, not a wrong factor
        return None
    return mean


def _fmt_pair(got: Any, exp: Any) -> tuple[str, str]:
    r"""Format two numbers with enough digits to tell them apart."""
    if not (isinstance(got, float) and isinstance(exp, float)):
        return _fmt_number(got), _fmt_number(exp)
    if not (math.isfinite(got) and math.isfinite(exp)):
        return _fmt_number(got), _fmt_number(exp)
    for digits in (4, 6, 8, 10, 13, 17):
        a, b = f"{got:.{digits}g}", f"{exp:.{digits}g}"
        if a != b:
            break
    return a, b


def _first_warning(caught: list[warnings.WarningMessage]) -> str | None:
    if not caught:
        return None
    w = caught[0]
    text = str(w.message).split(" (Triggered internally")[0].strip()
    text = text.splitlines()[0] if text else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return f"your function warned: {w.category.__name__}: {text}"


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _field(label: str, text: str) -> str:
    head = f"  {label + ':' if label else '':<10}"
    return textwrap.fill(
        text,
        width=_WIDTH,
        initial_indent=head,
        subsequent_indent=" " * len(head),
        break_long_words=False,
        break_on_hyphens=False,
    )


def _fmt_shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _fmt_dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _fmt_names(names: Sequence[str]) -> str:
    return "(" + ", ".join(names) + ")"


def _fmt_number(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    if isinstance(v, complex):
        return f"{v:.4g}"
    return str(v)


def _fmt_values(t: Tensor) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(fmt(u) for u in v) + "]"
        return _fmt_number(v)

    return fmt(t.detach().cpu().tolist())


def _fmt_index(index: tuple[Tensor, ...], ndim: int) -> str:
    if ndim == 0:
        return ""
    return " at index [" + ", ".join(str(int(i)) for i in index) + "]"


def _describe_object(obj: Any) -> str:
    if obj is None:
        return "None"
    if isinstance(obj, Tensor):
        return f"a Tensor of shape {_fmt_shape(obj)}"
    cls = type(obj)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    shape = getattr(obj, "shape", None)
    if isinstance(obj, (tuple, list, dict)):
        return f"a {name} of length {len(obj)}"
    if shape is not None:
        return f"a {name} of shape {tuple(shape)}"
    if isinstance(obj, (int, float)):
        return f"a {name} ({_fmt_number(obj)})"
    return f"a {name}"


def _describe_inputs(names: Sequence[str], args: tuple[Any, ...]) -> str:
    parts = []
    for name, a in zip(names, args):
        if isinstance(a, Tensor):
            part = f"{name} {_fmt_shape(a)} {_fmt_dtype(a.dtype)}"
            if a.numel() <= _SMALL:
                part += f" = {_fmt_values(a)}"
        else:
            text = repr(a)
            part = f"{name} = {text if len(text) <= 40 else text[:37] + '...'}"
        parts.append(part)
    return "; ".join(parts)


def _describe_exception(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(first) > 200:
        first = first[:197] + "..."
    text = f"your function raised {type(error).__name__}" + (f": {first}" if first else "")
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    if frames:
        frame = frames[-1]
        line = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
        text += f" (in {frame.name}, line {frame.lineno}" + (f": {line})" if line else ")")
    return text + ("" if text.endswith((".", ")")) else ".")


# --------------------------------------------------------------------------------------
# Shared by the checkers of the chapters
# --------------------------------------------------------------------------------------

DTYPES = (torch.float64, torch.float32)


def randint(generator: torch.Generator, low: int, high: int) -> int:
    r"""A random int in ``[low, high]`` drawn from ``generator``."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def close(a: Tensor, b: Tensor, rtol: float, atol: float) -> bool:
    r"""``True`` if ``a`` and ``b`` agree within the tolerances (see :func:`_close`)."""
    return _close(a, b, rtol, atol)


def fmt_dtype(dtype: torch.dtype) -> str:
    r"""Short name of a dtype for reports, e.g. ``"float64"``."""
    return _fmt_dtype(dtype)
