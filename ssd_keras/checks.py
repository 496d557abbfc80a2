"""Argument checks shared by the library and the command line: one place that says what a
positive integer, a positive number and a fraction are, and how a bad one is reported.

Each returns the value converted (``int`` or ``float``) or raises ``ValueError`` naming the
argument and the value. :class:`MissingDependencyError` is the one error for an optional package
that is not installed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["integer", "positive_int", "non_negative_int", "positive_number", "fraction", "MissingDependencyError"]


class MissingDependencyError(ImportError):
    """An optional package a feature needs is not installed (the message says what to install);
    the command line reports it in one line, exit status 1."""


def integer(value: Any, name: str, minimum: int | None = None, integral_floats: bool = False) -> int:
    """``value`` as an ``int`` (at least ``minimum``): Python and NumPy integers, and integral
    floats such as ``3.0`` when ``integral_floats`` (detection rows hold labels as floats)."""
    allowed = numbers.Real if integral_floats else numbers.Integral
    ok = not isinstance(value, bool) and isinstance(value, allowed) and math.isfinite(value) and int(value) == value
    if not ok or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return int(value)


def positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` >= 1 (integral floats are accepted)."""
    return integer(value, name, 1, integral_floats=True)


def non_negative_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` >= 0 (integral floats are accepted)."""
    return integer(value, name, 0, integral_floats=True)


def positive_number(value: Any, name: str) -> float:
    """``value`` as a finite ``float`` > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def fraction(value: Any, name: str, zero_allowed: bool = True) -> float:
    """``value`` as a ``float`` in [0, 1] (or (0, 1] when ``zero_allowed`` is false)."""
    number = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if not (number and (value >= 0 if zero_allowed else value > 0) and value <= 1):
        interval = "[0, 1]" if zero_allowed else "(0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)
