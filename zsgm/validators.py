"""attrs validators with uniform messages ("must be > 0, got -3").

The recipe loader (:func:`zsgm.recipe.recipe_from_dict`) disables validators while structuring and then runs
them itself with the field's path (:func:`zsgm.recipe_checks.field_value_problems`), so the final error reads
``techniques[1].k: must be > 0, got -3``.

Every float of a recipe and of technique configs must be finite: the loader refuses ``inf`` and ``nan``
before it runs a field's validator, unless the field opts out with ``metadata=ALLOWS_NON_FINITE``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

#: attrs field metadata of a float field that may hold ``inf``/``nan`` (none of the first-party ones do).
ALLOWS_NON_FINITE = {"zsgm_allows_non_finite": True}


def allows_non_finite(field: Any) -> bool:
    """Whether an attrs field opted out of the loader's finiteness check."""
    return bool(getattr(field, "metadata", {}).get("zsgm_allows_non_finite"))


def is_non_finite(value: Any) -> bool:
    """A float (not a bool or int) that is inf, -inf or nan."""
    return isinstance(value, float) and not math.isfinite(value)


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
    """A non-empty collection, or a string with something other than whitespace."""
    if isinstance(value, str):
        _check(value.strip() != "", "must not be empty" if not value else "must not be only whitespace")
    else:
        _check(len(value) > 0, "must not be empty")


def optional_non_empty(inst: Any, attr: Any, value: Any) -> None:
    """None, or what :func:`non_empty` accepts (an empty string is not "absent": omit the field instead)."""
    if value is not None:
        non_empty(inst, attr, value)
