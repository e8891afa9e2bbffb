"""attrs validators with uniform messages ("must be > 0, got -3").

The recipe loader disables validators while structuring and then runs them itself with the field's
path, so the final error reads ``techniques[1].k: must be > 0, got -3``.
"""

from __future__ import annotations

from typing import Any, Iterable


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def positive(_inst: Any, _attr: Any, value: Any) -> None:
    """value > 0."""
    _check(value > 0, f"must be > 0, got {value!r}")


def non_negative(_inst: Any, _attr: Any, value: Any) -> None:
    """value >= 0."""
    _check(value >= 0, f"must be >= 0, got {value!r}")


def optional_positive(inst: Any, attr: Any, value: Any) -> None:
    """None or value > 0."""
    if value is not None:
        positive(inst, attr, value)


def in_closed_range(low: float, high: float):
    """low <= value <= high."""

    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        _check(low <= value <= high, f"must be in [{low}, {high}], got {value!r}")

    return validate


def in_half_open_range(low: float, high: float):
    """low <= value < high."""

    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        _check(low <= value < high, f"must be in [{low}, {high}), got {value!r}")

    return validate


def one_of(choices: Iterable[Any]):
    """value is one of ``choices``."""
    allowed = tuple(choices)

    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        _check(value in allowed, f"must be one of {', '.join(map(repr, allowed))}; got {value!r}")

    return validate


def non_empty(_inst: Any, _attr: Any, value: Any) -> None:
    """A non-empty string or collection."""
    _check(len(value) > 0, "must not be empty")
