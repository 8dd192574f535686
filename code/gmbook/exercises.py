r"""Automatic checkers for the coding exercises of the book.

Every chapter ends with exercises; a coding exercise ends with a cell such as::

    from gmbook.exercises import check
    check("gaussian_mle", my_gaussian_mle)

:func:`check` runs the reader's function on random inputs and on edge cases, compares
every result with the package's reference implementation and returns a
:class:`CheckResult`. :func:`check` prints nothing: the ``repr`` of the result *is* the
report, so a notebook cell that **ends** with ``check(...)`` shows it exactly once. Call
``print(check(...))`` anywhere else (in a loop, in a script); ``bool(result)`` is
``result.passed``, so ``assert check(...)`` works in tests.

The report is short, plain ASCII (the book's PDF is built with xelatex, its HTML is
static), with lines of at most 80 characters. A failure names the case, the inputs
(shapes and dtypes, values when small), what was expected and what came back (wrong
type, wrong tuple length, wrong shape or dtype, NaN, wrong value with its largest
absolute error, an input modified in place), and a hint when it recognises a known
mistake. An exception raised by the reader's function is caught and reported with the
case that triggered it; it never crashes the notebook.

The random inputs come from a local :class:`torch.Generator` seeded per checker: two
runs see the same inputs, and the global random state is never touched.

Checkers of Chapter 1 (*The generative modeling problem*):

=================  ==========================================================
``gaussian_mle``   ``fn(x) -> (mean, cov)``, maximum-likelihood Gaussian
``linear_path``    ``fn(x0, x1, t) -> (x_t, u_t)``, straight path and velocity
``kl_gaussians``   ``fn(mu_p, var_p, mu_q, var_q) -> kl``, diagonal Gaussians
``standardize``    ``fn(x) -> (z, mean, std)``, per-axis standardization
=================  ==========================================================

Checkers of the chapter *Evaluating generative models*:

=====================  ======================================================
``mmd2_unbiased``      ``fn(x, y, bandwidth) -> mmd2``, unbiased MMD^2,
                       Gaussian kernel
``bits_per_dim``       ``fn(nll_nats, dim, bin_width) -> bpd``, a float (a
                       0-dim tensor is accepted too)
``frechet_gaussians``  ``fn(mu1, cov1, mu2, cov2) -> frechet``, squared
                       2-Wasserstein distance between Gaussians (FID)
=====================  ======================================================

A new checker is a :class:`Checker` (a reference function, a function that makes the
:class:`Case` list from a generator, the names of the outputs, and optional
hints, each a :class:`Hint`) passed to :func:`register`.

Example:
    >>> import torch
    >>> from gmbook.exercises import check
    >>> def my_gaussian_mle(x):
    ...     mean = x.mean(dim=0)
    ...     xc = x - mean                       # (n, d)
    ...     return mean, xc.T @ xc / x.shape[0]
    >>> check("gaussian_mle", my_gaussian_mle)
    PASSED gaussian_mle: 9/9 cases (6 random, 3 edge).
    >>> def unbiased(x):
    ...     return x.mean(dim=0), torch.cov(x.T)
    >>> result = check("gaussian_mle", unbiased)
    >>> bool(result)
    False
    >>> print(result)
    FAILED gaussian_mle on case 1/9 (random: n=...).
      input:    x (..., 2) float64
      problem:  cov is wrong: max abs error ...
      hint:     You divided by n - 1 (the unbiased estimator, also torch.cov's
                default). The maximum-likelihood covariance divides by n.
      9 of 9 cases failed: 1, 2, 3, 4, 5, 6, 7, 8, 9.
"""

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
    "Case",
    "CheckResult",
    "Checker",
    "Hint",
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
# Chapter 1: The generative modeling problem
# --------------------------------------------------------------------------------------

_DTYPES = (torch.float64, torch.float32)


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    r"""A random int in ``[low, high]`` drawn from ``generator``."""
    return int(torch.randint(low, high + 1, (), generator=generator))


# -- gaussian_mle ----------------------------------------------------------------------


def _gaussian_mle(x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: maximum-likelihood mean and (biased) covariance, ``(d,)`` and ``(d, d)``."""
    mean = x.mean(dim=0)  # (d,)
    xc = x - mean  # (n, d), centred first: accurate even with a large offset
    return mean, xc.T @ xc / x.shape[0]


def _gaussian_cases(generator: torch.Generator) -> list[Case]:
    def sample(n: int, d: int, dtype: torch.dtype, offset: float, scale: float) -> Tensor:
        a = torch.randn(d, d, generator=generator, dtype=torch.float64)  # correlated axes
        mu = offset + 3 * torch.randn(d, generator=generator, dtype=torch.float64)
        z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        return (mu + scale * z @ a.T).to(dtype)  # (n, d)

    cases = []
    for k, d in enumerate((2, 3, 1, 4, 2, 3)):
        dtype = _DTYPES[k % 2]
        n = _randint(generator, 5, 40)
        cases.append(Case(f"n={n}, d={d}, {_fmt_dtype(dtype)}", (sample(n, d, dtype, 0.0, 1.0),)))
    cases += [
        Case(
            "a single sample, n=1, d=2, float64",
            (sample(1, 2, torch.float64, 0.0, 1.0),),
            edge=True,
        ),
        Case(
            "one dimension, d=1, n=10, float64",
            (sample(10, 1, torch.float64, 0.0, 1.0),),
            edge=True,
        ),
        Case(
            "large offset: 1e4 + noise of scale 0.01, n=20, d=2, float64",
            (sample(20, 2, torch.float64, 1e4, 1e-2),),
            edge=True,
            rtol=1e-6,
            atol=1e-10,
            tag="offset",
        ),
    ]
    return cases


def _gaussian_unbiased(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(dim=0)
    xc = x - mean
    return mean, xc.T @ xc / (x.shape[0] - 1)


def _gaussian_uncentred(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(dim=0), x.T @ x / x.shape[0]


def _gaussian_uncentred_unbiased(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.mean(dim=0), x.T @ x / (x.shape[0] - 1)


def _got(got: Any, i: int) -> Tensor:
    out = got[i]
    if not isinstance(out, Tensor):
        raise TypeError
    return out.detach().cpu()


def _is_std(case: Case, got: Any, expected: Any) -> bool:
    cov = _got(got, 1)
    variances = expected[1].diagonal()
    n = case.args[0].shape[0]
    diag = cov if cov.ndim == 1 else cov.diagonal()
    for var in (variances, variances * n / max(n - 1, 1)):
        if diag.shape == var.shape and _close(diag, var.sqrt(), 1e-3, 1e-8):
            return not _close(var, var.sqrt(), 1e-3, 1e-8)
    return False


def _is_vector(case: Case, got: Any, expected: Any) -> bool:
    return _got(got, 1).ndim == 1


def _is_diagonal(case: Case, got: Any, expected: Any) -> bool:
    cov, exp = _got(got, 1), expected[1]
    if cov.shape != exp.shape or cov.shape[0] < 2:
        return False
    off = ~torch.eye(cov.shape[0], dtype=torch.bool)
    return bool((cov[off] == 0).all()) and bool((exp[off].abs() > 1e-12).any())


def _is_n_by_n(case: Case, got: Any, expected: Any) -> bool:
    n, d = case.args[0].shape
    return n != d and tuple(_got(got, 1).shape) == (n, n)


def _is_scalar_cov(case: Case, got: Any, expected: Any) -> bool:
    return case.args[0].shape[1] == 1 and _got(got, 1).ndim == 0


def _mean_over_features(case: Case, got: Any, expected: Any) -> bool:
    n, d = case.args[0].shape
    return n != d and tuple(_got(got, 0).shape) == (n,)


def _lost_precision(case: Case, got: Any, expected: Any) -> bool:
    cov, exp = _got(got, 1), expected[1]
    if case.tag != "offset" or cov.shape != exp.shape or cov.dtype != exp.dtype:
        return False
    tight = _close(cov, exp, case.rtol or 0.0, case.atol or 0.0)
    return not tight and _close(cov, exp, 1e-2, 0.0)


_HINT_MEAN_AXIS = (
    "Average over the samples, dim=0 (one value per axis, shape (d,)), not over dim=1."
)

register(
    Checker(
        name="gaussian_mle",
        reference=_gaussian_mle,
        generate=_gaussian_cases,
        outputs=("mean", "cov"),
        hints=[
            Hint(
                "You divided by n - 1 (the unbiased estimator, also torch.cov's default). "
                "The maximum-likelihood covariance divides by n.",
                wrong=_gaussian_unbiased,
                output="cov",
            ),
            Hint(
                "You forgot to centre the data: the covariance is the average of "
                "(x_i - mean)(x_i - mean)^T, i.e. xc.T @ xc / n with xc = x - mean.",
                wrong=_gaussian_uncentred,
                output="cov",
            ),
            Hint(
                "You forgot to centre the data (and divided by n - 1): the covariance is "
                "xc.T @ xc / n with xc = x - mean.",
                wrong=_gaussian_uncentred_unbiased,
                output="cov",
            ),
            Hint(_HINT_MEAN_AXIS, when=_mean_over_features),
            Hint(
                "cov holds standard deviations; the covariance holds variances (squares), "
                "as a full (d, d) matrix.",
                when=_is_std,
            ),
            Hint(
                "cov must be the full (d, d) covariance matrix, not the vector of per-axis "
                "variances: include the off-diagonal terms.",
                when=_is_vector,
            ),
            Hint(
                "cov is diagonal: the off-diagonal entries (covariances between axes) are "
                "missing. Use the outer products, xc.T @ xc / n.",
                when=_is_diagonal,
            ),
            Hint(
                "cov has shape (n, n): you computed xc @ xc.T. The (d, d) covariance is "
                "xc.T @ xc / n.",
                when=_is_n_by_n,
            ),
            Hint(
                "With one variable torch.cov returns a 0-dim tensor; reshape it to (1, 1).",
                when=_is_scalar_cov,
            ),
            Hint(
                "Close, but not accurate enough with a large offset: E[x x^T] - mean mean^T "
                "cancels catastrophically. Centre first: xc = x - mean, cov = xc.T @ xc / n.",
                when=_lost_precision,
            ),
        ],
    )
)


# -- linear_path -----------------------------------------------------------------------


def _linear_path(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""Reference: ``x_t = (1 - t) x0 + t x1`` and ``u_t = x1 - x0``, both ``(B, *D)``."""
    t = append_dims(t, x0.ndim)  # (B,) -> (B, 1, ..., 1)
    return (1 - t) * x0 + t * x1, x1 - x0


def _path_cases(generator: torch.Generator) -> list[Case]:
    def make(
        b: int, shape: tuple[int, ...], dtype: torch.dtype, t: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        x0 = torch.randn(b, *shape, generator=generator, dtype=torch.float64)  # noise
        x1 = 1 + 2 * torch.randn(b, *shape, generator=generator, dtype=torch.float64)  # data
        if t is None:
            t = torch.rand(b, generator=generator, dtype=torch.float64)
        return x0.to(dtype), x1.to(dtype), t.to(dtype)

    cases = []
    for k, shape in enumerate(((2,), (3, 4, 4), (1,), (2,), (3, 4, 4), (5,))):
        dtype = _DTYPES[k % 2]
        b = _randint(generator, 3, 8)
        cases.append(Case(f"B={b}, D={shape}, {_fmt_dtype(dtype)}", make(b, shape, dtype, None)))
    f64 = torch.float64
    cases += [
        Case(
            "a single example, B=1, D=(3, 4, 4), float64",
            make(1, (3, 4, 4), f64, None),
            edge=True,
        ),
        Case(
            "t = 0 exactly (x_t = x0), B=5, D=(2,), float64",
            make(5, (2,), f64, torch.zeros(5)),
            edge=True,
        ),
        Case(
            "t = 1 exactly (x_t = x1), B=3, D=(3, 4, 4), float64",
            make(3, (3, 4, 4), f64, torch.ones(3)),
            edge=True,
        ),
    ]
    return cases


def _path_swapped(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = append_dims(t, x0.ndim)
    return (1 - t) * x1 + t * x0, x1 - x0


def _path_sign(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = append_dims(t, x0.ndim)
    return (1 - t) * x0 + t * x1, x0 - x1


def _path_no_broadcast(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return (1 - t) * x0 + t * x1, x1 - x0


def _path_one_dim(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    t = t[:, None]
    return (1 - t) * x0 + t * x1, x1 - x0


_HINT_BROADCAST = (
    "t has shape (B,); reshape it to (B, 1, ..., 1) so that it broadcasts over the "
    "data dims D, e.g. t.view(-1, *[1] * (x0.ndim - 1)) or "
    "gmbook.nets.append_dims(t, x0.ndim). t[:, None] only works when D has one dim."
)

register(
    Checker(
        name="linear_path",
        reference=_linear_path,
        generate=_path_cases,
        outputs=("x_t", "u_t"),
        hints=[
            Hint(
                "x_t goes the wrong way: it must start at x0 (noise) at t = 0 and end at "
                "x1 (data) at t = 1: x_t = (1 - t) * x0 + t * x1.",
                wrong=_path_swapped,
                output="x_t",
            ),
            Hint(
                "u_t has the wrong sign: the velocity is d x_t / dt = x1 - x0 (from noise "
                "x0 towards data x1).",
                wrong=_path_sign,
                output="u_t",
            ),
            Hint(_HINT_BROADCAST, wrong=_path_no_broadcast),
            Hint(_HINT_BROADCAST, wrong=_path_one_dim),
        ],
    )
)


# -- kl_gaussians ----------------------------------------------------------------------


def _kl_gaussians(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    r"""Reference: KL(p || q) for diagonal Gaussians, summed over the last dim, ``(B,)``."""
    terms = torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1  # (B, d)
    return 0.5 * terms.sum(dim=-1)


def _kl_cases(generator: torch.Generator) -> list[Case]:
    def make(b: int, d: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
        mu_p, mu_q = 2 * torch.randn(2, b, d, generator=generator, dtype=torch.float64)
        var_p, var_q = torch.exp(torch.randn(2, b, d, generator=generator, dtype=torch.float64))
        return tuple(a.to(dtype) for a in (mu_p, var_p, mu_q, var_q))

    cases = []
    for k in range(6):
        dtype = _DTYPES[k % 2]
        b, d = _randint(generator, 2, 6), _randint(generator, 2, 5)
        cases.append(Case(f"B={b}, d={d}, {_fmt_dtype(dtype)}", make(b, d, dtype)))
    mu, var, _, _ = make(4, 3, torch.float64)
    same = (mu, var, mu.clone(), var.clone())
    mu_p, _, mu_q, _ = make(4, 2, torch.float64)
    var_p = torch.tensor([[1e-4, 1e3], [1e3, 1e-4], [1e-3, 1e-3], [1e2, 1e2]], dtype=torch.float64)
    var_q = torch.tensor([[1e3, 1e-4], [1e-4, 1e3], [1e2, 1e-2], [1e-3, 1e-1]], dtype=torch.float64)
    cases += [
        Case("identical Gaussians (KL = 0), B=4, d=3, float64", same, edge=True),
        Case("one dimension, d=1, B=5, float64", make(5, 1, torch.float64), edge=True),
        Case(
            "very different variances (1e-4 to 1e3), B=4, d=2, float64",
            (mu_p, var_p, mu_q, var_q),
            edge=True,
        ),
    ]
    return cases


def _kl_swapped(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_q, var_q, mu_p, var_p)


def _kl_no_half(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return 2 * _kl_gaussians(mu_p, var_p, mu_q, var_q)


def _kl_squared(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_p, var_p**2, mu_q, var_q**2)


def _kl_sqrt(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_p, var_p.sqrt(), mu_q, var_q.sqrt())


def _kl_log_std(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    # log(sigma_q / sigma_p) written as log(var_q / var_p), without its 1/2
    return _kl_gaussians(mu_p, var_p, mu_q, var_q) + 0.5 * torch.log(var_q / var_p).sum(-1)


def _kl_not_summed(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1)


def _kl_mean(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_p, var_p, mu_q, var_q) / mu_p.shape[-1]


def _kl_total(mu_p: Tensor, var_p: Tensor, mu_q: Tensor, var_q: Tensor) -> Tensor:
    return _kl_gaussians(mu_p, var_p, mu_q, var_q).sum()


register(
    Checker(
        name="kl_gaussians",
        reference=_kl_gaussians,
        generate=_kl_cases,
        outputs=("kl",),
        hints=[
            Hint(
                "You computed KL(q || p). KL(p || q) takes the expectation under p: "
                "var_p / var_q and (mu_p - mu_q)^2 / var_q, plus log(var_q / var_p).",
                wrong=_kl_swapped,
            ),
            Hint("You are missing the overall factor 1/2.", wrong=_kl_no_half),
            Hint(
                "var_p and var_q are variances already: you squared them, as if they were "
                "standard deviations.",
                wrong=_kl_squared,
            ),
            Hint(
                "You used standard deviations where the formula needs variances: "
                "var_p and var_q are sigma^2, do not take their square root.",
                wrong=_kl_sqrt,
            ),
            Hint(
                "The log term: log(sigma_q / sigma_p) = 0.5 * log(var_q / var_p); you "
                "dropped its 1/2.",
                wrong=_kl_log_std,
            ),
            Hint(
                "Sum over the last dim d (the KL of a diagonal Gaussian is a sum over "
                "axes): the result has shape (B,).",
                wrong=_kl_not_summed,
            ),
            Hint("Sum over d, do not average: the result is a sum over axes.", wrong=_kl_mean),
            Hint(
                "Sum only over d, not over the batch: return one KL per row, shape (B,).",
                wrong=_kl_total,
            ),
        ],
    )
)


# -- standardize -----------------------------------------------------------------------


def _standardize(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Reference: ``z = (x - mean) / std`` per axis with the population std, ``(n, d)``."""
    mean = x.mean(dim=0)  # (d,)
    std = x.std(dim=0, correction=0)  # (d,), divides by n
    return (x - mean) / std, mean, std


def _standardize_cases(generator: torch.Generator) -> list[Case]:
    def make(
        n: int, d: int, dtype: torch.dtype, scale: Tensor | None = None
    ) -> tuple[Tensor]:
        if scale is None:
            scale = torch.exp(torch.randn(d, generator=generator, dtype=torch.float64))
        offset = 5 * torch.randn(d, generator=generator, dtype=torch.float64)
        z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        return ((offset + scale * z).to(dtype),)  # (n, d)

    cases = []
    for k, d in enumerate((2, 3, 4, 2, 3, 4)):
        dtype = _DTYPES[k % 2]
        n = _randint(generator, 5, 40)
        cases.append(Case(f"n={n}, d={d}, {_fmt_dtype(dtype)}", make(n, d, dtype)))
    scales = torch.tensor([1e3, 1e-2], dtype=torch.float64)
    cases += [
        Case("one dimension, d=1, n=12, float64", make(12, 1, torch.float64), edge=True),
        Case("two samples, n=2, d=3, float64", make(2, 3, torch.float64), edge=True),
        Case(
            "axes on very different scales (1e3 and 1e-2), n=15, d=2, float64",
            make(15, 2, torch.float64, scales),
            edge=True,
        ),
    ]
    return cases


def _standardize_unbiased(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(dim=0), x.std(dim=0)
    return (x - mean) / std, mean, std


def _standardize_global(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(), x.std(correction=0)
    return (x - mean) / std, mean, std


def _standardize_global_unbiased(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = x.mean(), x.std()
    return (x - mean) / std, mean, std


def _standardize_mean_over_features(case: Case, got: Any, expected: Any) -> bool:
    n, d = case.args[0].shape
    return n != d and tuple(_got(got, 1).shape) == (n,)


_HINT_GLOBAL = (
    "You used one mean and std for all entries. Standardize each axis (column) on its "
    "own: mean and std over dim=0, both of shape (d,)."
)

register(
    Checker(
        name="standardize",
        reference=_standardize,
        generate=_standardize_cases,
        outputs=("z", "mean", "std"),
        hints=[
            Hint(
                "You used the unbiased std (dividing by n - 1, torch.std's default); use "
                "the population std: x.std(dim=0, unbiased=False).",
                wrong=_standardize_unbiased,
            ),
            Hint(_HINT_GLOBAL, wrong=_standardize_global, output="z"),
            Hint(_HINT_GLOBAL, wrong=_standardize_global_unbiased, output="z"),
            Hint(_HINT_MEAN_AXIS, when=_standardize_mean_over_features),
        ],
    )
)


# --------------------------------------------------------------------------------------
# Chapter: Evaluating generative models
# --------------------------------------------------------------------------------------

# -- mmd2_unbiased ---------------------------------------------------------------------


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    r"""Squared distances ``|a_i - b_j|^2``, ``(n, m)``, from the differences themselves.

    Exact up to rounding of each entry, unlike ``|a|^2 + |b|^2 - 2 a.b``, which cancels
    when the points are far from the origin.
    """
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(dim=-1)  # (n, m)


def _mmd2_from_grams(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> Tensor:
    r"""Unbiased MMD^2 from the Gram matrices ``(n, n)``, ``(m, m)`` and ``(n, m)``."""
    n, m = kxx.shape[0], kyy.shape[0]
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))  # mean over i != j
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kxy.mean()


def _mmd2_with_kernel(x: Tensor, y: Tensor, kernel: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    return _mmd2_from_grams(kernel(x, x), kernel(y, y), kernel(x, y))


def _mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    r"""Reference: unbiased MMD^2 with a Gaussian kernel (Gretton et al., 2012), 0-dim.

    ``k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))``; the within-set averages skip the
    diagonal ``i = j``, the cross average keeps every pair.
    """
    return _mmd2_with_kernel(
        x, y, lambda a, b: torch.exp(-_sq_dists(a, b) / (2 * bandwidth**2))
    )


def _mmd_cases(generator: torch.Generator) -> list[Case]:
    def sample(n: int, d: int, dtype: torch.dtype, offset: float, scale: float) -> Tensor:
        z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        return (offset + scale * z).to(dtype)  # (n, d)

    def bandwidth() -> float:  # log-uniform in [0.1, 3]
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return round(0.1 * 30**u, 3)

    cases = []
    for k in range(6):
        dtype = _DTYPES[k % 2]
        d = 1 + k % 3
        n = _randint(generator, 4, 30)
        m = n if k == 2 else _randint(generator, 4, 30)  # one case with n == m
        h = bandwidth()
        x = sample(n, d, dtype, 0.0, 1.0)
        y = sample(m, d, dtype, 1.0, 1.5)  # shifted and wider: MMD^2 > 0
        cases.append(Case(f"n={n}, m={m}, D={d}, bandwidth={h}, {_fmt_dtype(dtype)}", (x, y, h)))
    f64 = torch.float64
    x = sample(6, 2, f64, 0.0, 1.0)
    cases += [
        Case(
            "two points per set, n=m=2, D=2, bandwidth=1.0, float64",
            (sample(2, 2, f64, 0.0, 1.0), sample(2, 2, f64, 0.5, 1.0), 1.0),
            edge=True,
        ),
        Case(
            "identical sets, y = x (the estimate is < 0), n=m=6, D=2, bandwidth=1.5, "
            "float64",
            (x, x.clone(), 1.5),
            edge=True,
        ),
        Case(
            "far-apart sets (cross kernel values underflow to 0), n=5, m=7, D=3, "
            "bandwidth=1.0, float64",
            (sample(5, 3, f64, 0.0, 1.0), sample(7, 3, f64, 100.0, 1.0), 1.0),
            edge=True,
        ),
    ]
    return cases


def _mmd2_biased(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-_sq_dists(a, b) / (2 * bandwidth**2))

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def _mmd2_no_diagonal_over_n2(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-_sq_dists(a, b) / (2 * bandwidth**2))

    kxx, kyy = k(x, x), k(y, y)
    within_x = (kxx.sum() - kxx.trace()) / x.shape[0] ** 2  # i != j, but over n^2
    within_y = (kyy.sum() - kyy.trace()) / y.shape[0] ** 2
    return within_x + within_y - 2 * k(x, y).mean()


def _mmd2_diagonal_over_pairs(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-_sq_dists(a, b) / (2 * bandwidth**2))

    n, m = x.shape[0], y.shape[0]
    return k(x, x).sum() / (n * (n - 1)) + k(y, y).sum() / (m * (m - 1)) - 2 * k(x, y).mean()


def _mmd2_h_as_variance(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    return _mmd2_with_kernel(x, y, lambda a, b: torch.exp(-_sq_dists(a, b) / (2 * bandwidth)))


def _mmd2_no_two(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    return _mmd2_with_kernel(x, y, lambda a, b: torch.exp(-_sq_dists(a, b) / bandwidth**2))


def _mmd2_h_as_variance_no_two(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    return _mmd2_with_kernel(x, y, lambda a, b: torch.exp(-_sq_dists(a, b) / bandwidth))


def _mmd2_unsquared(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    return _mmd2_with_kernel(
        x, y, lambda a, b: torch.exp(-_sq_dists(a, b).sqrt() / (2 * bandwidth**2))
    )


def _mmd2_cross_once(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    kxy = torch.exp(-_sq_dists(x, y) / (2 * bandwidth**2))
    return _mmd2_unbiased(x, y, bandwidth) + kxy.mean()  # - 1 * mean instead of - 2 * mean


def _mmd2_cross_no_diagonal(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    # Gretton's equal-size statistic: also drops i = j from the cross sum
    n = x.shape[0]
    if y.shape[0] != n:  # the mistake needs n == m
        return _mmd2_unbiased(x, y, bandwidth)
    kxy = torch.exp(-_sq_dists(x, y) / (2 * bandwidth**2))
    cross = (kxy.sum() - kxy.trace()) / (n * (n - 1))
    return _mmd2_unbiased(x, y, bandwidth) + 2 * kxy.mean() - 2 * cross


_HINT_MMD_COUNT = (
    "Count the pairs: the within-set averages run over the n(n - 1) pairs i != j "
    "(and m(m - 1) for y): drop the diagonal k(x_i, x_i) = 1 and divide by n(n - 1)."
)

register(
    Checker(
        name="mmd2_unbiased",
        reference=_mmd2_unbiased,
        generate=_mmd_cases,
        outputs=("mmd2",),
        hints=[
            Hint(
                "You kept the diagonal terms k(x_i, x_i) = 1 and divided by n^2: that is "
                "the biased estimate (a V-statistic, exactly 0 when y = x). The unbiased "
                "one averages over i != j: (sum - trace) / (n(n - 1)), same for y.",
                wrong=_mmd2_biased,
            ),
            Hint(_HINT_MMD_COUNT, wrong=_mmd2_no_diagonal_over_n2),
            Hint(_HINT_MMD_COUNT, wrong=_mmd2_diagonal_over_pairs),
            Hint(
                "The bandwidth is a standard deviation: divide the squared distance by "
                "2 * bandwidth**2, not by 2 * bandwidth.",
                wrong=_mmd2_h_as_variance,
            ),
            Hint(
                "The kernel is exp(-|a - b|^2 / (2 * bandwidth**2)): you dropped the "
                "factor 2.",
                wrong=_mmd2_no_two,
            ),
            Hint(
                "The kernel is exp(-|a - b|^2 / (2 * bandwidth**2)): square the bandwidth "
                "and keep the factor 2.",
                wrong=_mmd2_h_as_variance_no_two,
            ),
            Hint(
                "The kernel uses squared distances |a - b|^2: torch.cdist returns "
                "distances, square them.",
                wrong=_mmd2_unsquared,
            ),
            Hint(
                "The cross term enters twice (k(x_i, y_j) and k(y_j, x_i)): subtract "
                "2 * mean of k(x_i, y_j), not 1 *.",
                wrong=_mmd2_cross_once,
            ),
            Hint(
                "The cross average keeps every pair (i, j), i = j included: only the "
                "within-set averages skip the diagonal. (Dropping i = j across the sets "
                "is a different estimator, for n = m only.)",
                wrong=_mmd2_cross_no_diagonal,
            ),
        ],
    )
)


# -- bits_per_dim ----------------------------------------------------------------------


def _bits_per_dim(nll_nats: float, dim: int, bin_width: float | None) -> float:
    r"""Reference: negative log-likelihood in nats per data point -> bits per dimension.

    ``nll / (dim ln 2)`` for continuous data (``bin_width=None``); for discrete data
    dequantized with uniform noise over bins of width ``bin_width``, the probability of
    a bin is about the density times ``bin_width**dim``, so
    ``(nll - dim ln(bin_width)) / (dim ln 2)``. Returns a Python float.
    """
    if bin_width is not None:
        nll_nats = nll_nats - dim * math.log(bin_width)  # -log(density * bin volume)
    return nll_nats / (dim * math.log(2))


_BIN_WIDTHS = (2 / 16, 1 / 255, 1.0, None)
_BIN_NAMES = {2 / 16: "2/16", 1 / 255: "1/255", 1 / 256: "1/256", 1.0: "1.0", None: "None"}


def _bits_cases(generator: torch.Generator) -> list[Case]:
    def case(nll: float, dim: int, width: float | None, text: str = "", edge: bool = False) -> Case:
        head = f"{text}, " if text else ""
        return Case(
            f"{head}nll={nll:g} nats, dim={dim}, bin_width={_BIN_NAMES[width]}",
            (nll, dim, width),
            edge=edge,
        )

    dims = (1, 2, 64, 784)
    cases = []
    for k in range(8):
        width = _BIN_WIDTHS[k % 4]
        dim = dims[_randint(generator, 1 if k == 0 else 0, 3)]
        # nll in [-200, 500]; for discrete data a bin has probability <= 1, so
        # nll >= dim * ln(bin_width) (bits per dim >= 0)
        low = -200.0 if width is None else max(-200.0, dim * math.log(width))
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        cases.append(case(round(low + (500 - low) * u, 3), dim, width))
    cases += [
        case(345.6, 64, 1.0, "bin_width=1 gives the continuous formula", edge=True),
        case(1.5, 1, None, "one dimension", edge=True),
        case(-2500.0, 784, None, "negative NLL (a density above 1)", edge=True),
        case(-2500.0, 784, 1 / 255, "negative NLL, 8-bit data in [0, 1]", edge=True),
        case(0.0, 784, 1 / 256, "uniform on [0, 1]^784, 256 bins (8 bits/dim)", edge=True),
    ]
    return cases


def _bits_nats(nll_nats: float, dim: int, bin_width: float | None) -> float:
    return _bits_per_dim(nll_nats, dim, bin_width) * math.log(2)


def _bits_per_point(nll_nats: float, dim: int, bin_width: float | None) -> float:
    return _bits_per_dim(nll_nats, dim, bin_width) * dim


def _bits_sign(nll_nats: float, dim: int, bin_width: float | None) -> float:
    if bin_width is not None:
        nll_nats = nll_nats + dim * math.log(bin_width)
    return nll_nats / (dim * math.log(2))


def _bits_log2_width(nll_nats: float, dim: int, bin_width: float | None) -> float:
    if bin_width is not None:
        nll_nats = nll_nats - dim * math.log2(bin_width)  # bits subtracted from nats
    return nll_nats / (dim * math.log(2))


def _bits_no_correction(nll_nats: float, dim: int, bin_width: float | None) -> float:
    return nll_nats / (dim * math.log(2))


def _bits_correction_once(nll_nats: float, dim: int, bin_width: float | None) -> float:
    if bin_width is not None:
        nll_nats = nll_nats - math.log(bin_width)  # one bin, not one per dimension
    return nll_nats / (dim * math.log(2))


def _bits_none_error(case: Case, got: Any, expected: Any) -> bool:
    return case.args[2] is None and isinstance(got, TypeError) and "None" in str(got)


def _bits_torch_on_number(case: Case, got: Any, expected: Any) -> bool:
    return isinstance(got, TypeError) and "must be Tensor" in str(got)


register(
    Checker(
        name="bits_per_dim",
        reference=_bits_per_dim,
        generate=_bits_cases,
        outputs=("bpd",),
        hints=[
            Hint(
                "That is nats per dimension: divide by ln 2 to get bits "
                "(log2(p) = ln(p) / ln 2), i.e. nll / (dim * math.log(2)).",
                wrong=_bits_nats,
            ),
            Hint(
                "That is bits per data point: divide by the number of dimensions dim "
                "as well.",
                wrong=_bits_per_point,
            ),
            Hint(
                "The bin correction has the wrong sign: the probability of a bin is "
                "about density * bin_width**dim, so -log P = nll - dim * ln(bin_width) "
                "(a positive correction, since bin_width < 1).",
                wrong=_bits_sign,
            ),
            Hint(
                "Mixed units: nll is in nats, so the correction is dim * ln(bin_width) "
                "(math.log), not log2; convert the total to bits at the end.",
                wrong=_bits_log2_width,
            ),
            Hint(
                "With a bin_width, the data are discrete: subtract dim * ln(bin_width) "
                "from the nll (the log-volume of a bin) before converting to bits.",
                wrong=_bits_no_correction,
            ),
            Hint(
                "The bin correction is dim * ln(bin_width): one bin per dimension, the "
                "volume of a cell is bin_width**dim.",
                wrong=_bits_correction_once,
            ),
            Hint(
                "bin_width=None means continuous data: skip the correction "
                "(test `if bin_width is not None:`).",
                when=_bits_none_error,
            ),
            Hint(
                "The inputs are Python numbers: use math.log (torch.log needs a tensor). "
                "Return a float; a 0-dim tensor is accepted too.",
                when=_bits_torch_on_number,
            ),
        ],
    )
)


# -- frechet_gaussians -----------------------------------------------------------------


def _sqrtm_psd(a: Tensor) -> Tensor:
    r"""The symmetric square root of a symmetric positive semi-definite ``(d, d)`` matrix."""
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T  # V diag(sqrt(lambda)) V^T


def _trace_sqrt_product(cov1: Tensor, cov2: Tensor) -> Tensor:
    r"""``tr((cov1^{1/2} cov2 cov1^{1/2})^{1/2})``, from a symmetric eigenproblem."""
    root1 = _sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to rounding
    return torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()


def _frechet_gaussians(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    r"""Reference: squared 2-Wasserstein (Frechet) distance between Gaussians, 0-dim.

    ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1^{1/2} cov2 cov1^{1/2})^{1/2})``, the
    formula of the FID (Heusel et al., 2017).
    """
    mean_term = ((mu1 - mu2) ** 2).sum()
    return mean_term + cov1.trace() + cov2.trace() - 2 * _trace_sqrt_product(cov1, cov2)


def _frechet_cases(generator: torch.Generator) -> list[Case]:
    f64 = torch.float64

    def spd(d: int) -> Tensor:  # a random SPD covariance with eigenvalues of order 1
        a = torch.randn(d, d, generator=generator, dtype=f64)
        scale = torch.exp(torch.randn((), generator=generator, dtype=f64))
        return scale * (a @ a.T / d + 0.1 * torch.eye(d, dtype=f64))

    def mean(d: int) -> Tensor:
        return torch.randn(d, generator=generator, dtype=f64)

    cases = []
    for d in (3, 2, 5, 1, 4, 3):
        cases.append(Case(f"d={d}, float64", (mean(d), spd(d), mean(d), spd(d))))
    mu, cov = mean(3), spd(3)
    var1, var2 = torch.exp(torch.randn(2, 3, generator=generator, dtype=f64))
    cases += [
        Case(
            "identical Gaussians (distance 0), d=3, float64",
            (mu, cov, mu.clone(), cov.clone()),
            edge=True,
            atol=1e-6,
        ),
        Case(
            "diagonal (commuting) covariances, d=3, float64",
            (mean(3), torch.diag(var1), mean(3), torch.diag(var2)),
            edge=True,
        ),
        Case("one dimension, d=1, float64", (mean(1), spd(1), mean(1), spd(1)), edge=True),
    ]
    return cases


def _frechet_no_sqrt(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return ((mu1 - mu2) ** 2).sum() + (cov1 + cov2 - 2 * cov1 @ cov2).trace()


def _frechet_eigh_product(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    # eigh reads only the lower triangle of the non-symmetric cov1 @ cov2
    trace_sqrt = torch.linalg.eigvalsh(cov1 @ cov2).sqrt().sum()
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt


def _frechet_elementwise(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    # torch.sqrt(cov1 @ cov2).trace(): element-wise, only the diagonal matters
    trace_sqrt = (cov1 @ cov2).diagonal().sqrt().sum()
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt


def _frechet_split_roots(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    # (cov1 cov2)^{1/2} taken as cov1^{1/2} cov2^{1/2}: true only when they commute
    trace_sqrt = (_sqrtm_psd(cov1) @ _sqrtm_psd(cov2)).trace()
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt


def _frechet_no_mean(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return cov1.trace() + cov2.trace() - 2 * _trace_sqrt_product(cov1, cov2)


def _frechet_mean_norm(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _frechet_no_mean(mu1, cov1, mu2, cov2) + (mu1 - mu2).norm()


def _frechet_w2(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    return _frechet_gaussians(mu1, cov1, mu2, cov2).sqrt()


def _frechet_complex(case: Case, got: Any, expected: Any) -> bool:
    return (
        isinstance(got, Tensor)
        and got.is_complex()
        and _close(got.real.double().cpu(), expected.double(), 1e-6, 1e-8)
    )


register(
    Checker(
        name="frechet_gaussians",
        reference=_frechet_gaussians,
        generate=_frechet_cases,
        outputs=("frechet",),
        hints=[
            Hint(
                "You used tr(cov1 @ cov2): the formula needs the trace of the matrix "
                "square root of the product, tr((cov1^1/2 cov2 cov1^1/2)^1/2).",
                wrong=_frechet_no_sqrt,
            ),
            Hint(
                "cov1 @ cov2 is not symmetric, and torch.linalg.eigh reads only its lower "
                "triangle. Take the eigenvalues of the symmetric cov1^1/2 cov2 cov1^1/2 "
                "(or torch.linalg.eigvals(cov1 @ cov2).real), then the sum of their "
                "square roots.",
                wrong=_frechet_eigh_product,
            ),
            Hint(
                "torch.sqrt is element-wise; the formula needs the matrix square root "
                "(S with S @ S = M). Use the eigenvalues: tr(M^1/2) = sum of sqrt(eig).",
                wrong=_frechet_elementwise,
            ),
            Hint(
                "(cov1 cov2)^1/2 is not cov1^1/2 cov2^1/2 unless the covariances commute; "
                "use (cov1^1/2 cov2 cov1^1/2)^1/2.",
                wrong=_frechet_split_roots,
            ),
            Hint(
                "The mean term |mu1 - mu2|^2 is missing.",
                wrong=_frechet_no_mean,
            ),
            Hint(
                "The mean term is the squared distance |mu1 - mu2|^2, not the norm: "
                "((mu1 - mu2) ** 2).sum().",
                wrong=_frechet_mean_norm,
            ),
            Hint(
                "You returned the 2-Wasserstein distance; the Frechet distance of the FID "
                "is its square: do not take the square root of the total.",
                wrong=_frechet_w2,
            ),
            Hint(
                "Your result is complex (from torch.linalg.eigvals or a complex sqrtm); "
                "the eigenvalues of cov1 @ cov2 are real and >= 0: keep the real part, "
                "e.g. .real, before summing.",
                when=_frechet_complex,
            ),
        ],
    )
)
