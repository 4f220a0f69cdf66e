"""Parameter validation with one message template, as scikit-learn's ``_param_validation`` does.

Every check raises :class:`~graft.exceptions.InvalidParameterError` worded
"The 'x' parameter of Y must be ...; got ... instead.", so a wrong value reads the
same whether it came from Python or from a command-line option.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

from graft.exceptions import InvalidParameterError

__all__ = [
    "Constraint",
    "Duration",
    "Interval",
    "Options",
    "check_choice",
    "check_duration",
    "check_param",
    "invalid_parameter",
    "validate_params",
]


def invalid_parameter(name: str, owner: str, expected: str, got: Any) -> InvalidParameterError:
    """The error for ``name`` of ``owner`` (a class or function name), to raise."""
    return InvalidParameterError(f"The '{name}' parameter of {owner} must be {expected}; got {got!r} instead.")


@dataclass(frozen=True)
class Interval:
    """A real (or, with ``integer``, whole) number between ``low`` and ``high`` (None: unbounded).

    ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``, as in scikit-learn.
    """

    low: float | None = None
    high: float | None = None
    closed: str = "both"
    integer: bool = False

    def accepts(self, value: Any) -> bool:
        ok_type = isinstance(value, int) if self.integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):
            return False
        low_inc, high_inc = self.closed in ("both", "left"), self.closed in ("both", "right")
        too_low = self.low is not None and (value < self.low if low_inc else value <= self.low)
        too_high = self.high is not None and (value > self.high if high_inc else value >= self.high)
        return not (too_low or too_high)

    def describe(self) -> str:
        kind = "an int" if self.integer else "a number"
        low_inc, high_inc = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return f"{kind} in the range {'[' if low_inc else '('}{self.low:g}, {self.high:g}{']' if high_inc else ')'}"
        if self.low is not None:
            return f"{kind} {'>=' if low_inc else '>'} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<=' if high_inc else '<'} {self.high:g}"
        return kind


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) or value is v for v in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Duration:
    """A positive number of seconds, or text such as ``"90s"``, ``"20m"``, ``"1h30m"``."""

    def accepts(self, value: Any) -> bool:
        try:
            check_duration("value", value, "Duration")
        except InvalidParameterError:
            return False
        return True

    def describe(self) -> str:
        return "a positive number of seconds or a duration such as '90s', '20m' or '1h30m'"


#: A declared constraint: one of the classes above, a type (``str``), or None (None allowed).
Constraint = Union[Interval, Options, Duration, type, None]


def _accepts(constraint: Constraint, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        return isinstance(value, constraint) and not (isinstance(value, bool) and constraint is not bool)
    return constraint.accepts(value)


def _describe(constraint: Constraint) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return f"an instance of {constraint.__name__!r}"
    return constraint.describe()


def check_param(name: str, value: Any, owner: str, *constraints: Constraint) -> Any:
    """``value`` if any of ``constraints`` accepts it, else :class:`InvalidParameterError` naming them all."""
    if any(_accepts(c, value) for c in constraints):
        return value
    expected = [_describe(c) for c in constraints]
    text = expected[0] if len(expected) == 1 else ", ".join(expected[:-1]) + " or " + expected[-1]
    raise invalid_parameter(name, owner, text, value)


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, Sequence[Constraint]], owner: str) -> None:
    """Check every parameter that has declared constraints (scikit-learn's ``_parameter_constraints``)."""
    for name, allowed in constraints.items():
        if name in params:
            check_param(name, params[name], owner, *allowed)


def check_choice(name: str, value: Any, choices: Iterable[Any], owner: str) -> Any:
    """``value`` if it is one of ``choices``, else :class:`InvalidParameterError`."""
    options = list(choices)
    if value not in options:
        shown = ", ".join(repr(c) for c in options)
        raise invalid_parameter(name, owner, f"one of {shown}", value)
    return value


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
