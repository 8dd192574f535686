r"""Guarded prose: the build checks every sentence that depends on a run.

A chapter glues its numbers into the text, but a sentence such as "either alone recovers
most of the gap" or "closer than the EBM" is words, not a number: a re-run with another
seed, another torch version or a changed package could contradict it while the build
stays green. Every such sentence is therefore paired, in the cell that computes its
numbers, with a call

>>> from gmbook.claims import claim
>>> claim("the spline flow is closer than the EBM", 0.02 < 0.31,
...       spline_kl=0.02, ebm_kl=0.31)

which does nothing when the condition holds and raises :class:`ClaimError` (which fails
the build, as every cell error does) with the sentence and the evidence when it does not.
The sentence must stand verbatim in the chapter's prose (outside code cells):
``tests/book/test_chapters.py`` checks it, so the prose and its guard cannot drift apart.

A comparison within noise is not asserted: it is stated with its standard error, and the
guard checks the statement that *is* made, e.g. that two numbers are within two standard
errors (:func:`within_noise`) or clearly apart (:func:`clearly_less`).
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = ["ClaimError", "claim", "clearly_less", "within_noise", "checked"]

_CHECKED: list[str] = []


class ClaimError(AssertionError):
    """A sentence of the book that the run contradicts."""


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def claim(sentence: str, holds: object, **evidence: object) -> None:
    r"""Check that a run-dependent sentence of the prose is true of this run.

    Args:
        sentence: the words of the claim, exactly as they stand in the chapter's prose
            (a phrase of at least three words is enough, e.g. ``"closer than the EBM"``).
        holds: the condition that makes the sentence true; a Python or NumPy bool, or a
            one-element tensor.
        **evidence: the numbers the condition is computed from, quoted in the error.

    Raises:
        ClaimError: the run contradicts the sentence; the message quotes it with the
            evidence.
        TypeError, ValueError: ``sentence`` is not a non-empty string, or ``holds`` is not
            a truth value.
    """
    if not isinstance(sentence, str):
        raise TypeError(f"claim: sentence must be a str, got {type(sentence).__name__}")
    if len(sentence.split()) < 2:
        raise ValueError("claim: sentence must quote the prose (two words or more), "
                         f"got {sentence!r}")
    if hasattr(holds, "numel"):  # a tensor
        if holds.numel() != 1:
            raise ValueError(f"claim {sentence!r}: the condition must be one truth value, "
                             f"got a tensor of shape {tuple(holds.shape)}")
        holds = bool(holds.item())
    elif hasattr(holds, "shape") and getattr(holds, "shape") not in ((), (1,)):
        raise ValueError(f"claim {sentence!r}: the condition must be one truth value, "
                         f"got an array of shape {holds.shape}")
    if holds is None:
        raise TypeError(f"claim {sentence!r}: the condition is None, expected a bool")
    if not bool(holds):
        lines = [f"The run contradicts the chapter's sentence: \"{sentence}\""]
        if evidence:
            lines.append("evidence: " + ", ".join(f"{k}={_fmt(v)}" for k, v in evidence.items()))
        lines.append("Change the sentence (and its claim) to what this run shows, or find "
                     "why the run changed.")
        raise ClaimError("\n".join(lines))
    _CHECKED.append(sentence)


def _real(name: str, value: object) -> float:
    if hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} is NaN")
    return value


def clearly_less(a: float, b: float, se: float, *, z: float = 2.0) -> bool:
    r"""Whether ``a < b`` by more than ``z`` standard errors of the difference.

    Args:
        a, b: the two estimates.
        se: the standard error of ``a - b`` (for independent estimates,
            :math:`\sqrt{se_a^2 + se_b^2}`; for paired ones, that of the paired differences).
        z: how many standard errors the gap must exceed (2 by default).

    Returns:
        ``b - a > z * se``.
    """
    a, b, se, z = (_real(n, v) for n, v in (("a", a), ("b", b), ("se", se), ("z", z)))
    if se < 0 or z < 0:
        raise ValueError(f"se and z must be >= 0, got se={se}, z={z}")
    return b - a > z * se


def within_noise(a: float, b: float, se: float, *, z: float = 2.0) -> bool:
    r"""Whether ``a`` and ``b`` differ by at most ``z`` standard errors of the difference.

    Args:
        a, b: the two estimates.
        se: the standard error of ``a - b``.
        z: the allowed number of standard errors (2 by default).

    Returns:
        ``|a - b| <= z * se``.
    """
    a, b, se, z = (_real(n, v) for n, v in (("a", a), ("b", b), ("se", se), ("z", z)))
    if se < 0 or z < 0:
        raise ValueError(f"se and z must be >= 0, got se={se}, z={z}")
    return abs(a - b) <= z * se


def checked() -> list[str]:
    """The sentences checked so far in this process, in order (a chapter may print them)."""
    return list(_CHECKED)
