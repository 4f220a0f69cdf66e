"""Parameter validation with one message template, as scikit-learn's ``_param_validation`` does.

Every check raises :class:`~graft.exceptions.InvalidParameterError` worded
"The 'x' parameter of Y must be ...; got ... instead.", so a wrong value reads the
same whether it came from Python or from a command-line option.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from graft.exceptions import InvalidParameterError

__all__ = ["check_choice", "check_duration", "check_number", "invalid_parameter"]


def invalid_parameter(name: str, owner: str, expected: str, got: Any) -> InvalidParameterError:
    """The error for ``name`` of ``owner`` (a class or function name), to raise."""
    return InvalidParameterError(f"The '{name}' parameter of {owner} must be {expected}; got {got!r} instead.")


def check_choice(name: str, value: Any, choices: Iterable[Any], owner: str) -> Any:
    """``value`` if it is one of ``choices``, else :class:`InvalidParameterError`."""
    options = list(choices)
    if value not in options:
        shown = ", ".join(repr(c) for c in options)
        raise invalid_parameter(name, owner, f"one of {shown}", value)
    return value


def check_number(
    name: str,
    value: Any,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
    allow_none: bool = False,
) -> Any:
    """``value`` if it is a (whole, with ``integer``) number within the bounds, else :class:`InvalidParameterError`."""
    if value is None and allow_none:
        return value
    kind = "an int" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(float(value))):
        raise invalid_parameter(
            name,
            owner,
            kind + _bounds(low, high, low_inclusive, high_inclusive) + (" or None" if allow_none else ""),
            value,
        )
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise invalid_parameter(name, owner, kind + _bounds(low, high, low_inclusive, high_inclusive), value)
    return value


def _bounds(low: float | None, high: float | None, low_inc: bool, high_inc: bool) -> str:
    if low is not None and high is not None:
        return f" in the range {'[' if low_inc else '('}{low:g}, {high:g}{']' if high_inc else ')'}"
    if low is not None:
        return f" {'>=' if low_inc else '>'} {low:g}"
    if high is not None:
        return f" {'<=' if high_inc else '<'} {high:g}"
    return ""


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|min|m|s)", re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}


def check_duration(name: str, value: Any, owner: str) -> float:
    """Seconds from a duration: a positive number of seconds, or text such as ``"90s"``, ``"20m"``, ``"1h30m"``.

    Text needs a unit: a bare ``"20"`` could mean seconds or minutes, so it is refused.
    """
    expected = "a positive number of seconds or a duration such as '90s', '20m' or '1h30m'"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(float(value)) and value > 0:
            return float(value)
        raise invalid_parameter(name, owner, expected, value)
    text = str(value).strip().replace(" ", "") if isinstance(value, str) else ""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts).lower() != text.lower():
        raise invalid_parameter(name, owner, expected, value)
    seconds = sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in parts)
    if seconds <= 0:
        raise invalid_parameter(name, owner, expected, value)
    return seconds
