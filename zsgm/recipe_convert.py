"""The strict cattrs converter of recipes and the flattening of its errors into ``path: message`` lines.

Strict: a value of the wrong type is refused, never coerced (``steps = 2.7`` is no integer, ``progress = "no"``
no boolean, ``3`` no string, a string no table or list), and a key a class does not declare is an unknown field
with a suggestion::

    optim.steps: expected an integer, got 2.7
    optim.stepz: unknown field (did you mean 'steps'?)

Technique configs are structured with the same converter, so plugins get the same strictness for free.
"""

from __future__ import annotations

import difflib
import functools
import numbers
from collections.abc import Mapping
from typing import Any, Callable, get_origin

import attrs
import cattrs
from cattrs.cols import is_mapping, list_structure_factory, mapping_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

from zsgm.recipe_errors import RecipeError, describe_value

_INT64 = 2**63


class _TypeMismatch(ValueError):
    """A recipe value of the wrong type (the strict converter never coerces)."""


def _structure_int(value: Any, _type: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _TypeMismatch(f"expected an integer, got {describe_value(value)}")
    if not -_INT64 <= int(value) < _INT64:
        raise _TypeMismatch(f"expected an integer that fits in 64 bits, got {describe_value(value)}")
    return int(value)


def _structure_float(value: Any, _type: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _TypeMismatch(f"expected a number, got {describe_value(value)}")
    try:
        return float(value)
    except OverflowError:
        raise _TypeMismatch(f"expected a number a float can hold, got {describe_value(value)}") from None


def _structure_str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise _TypeMismatch(f"expected a string, got {describe_value(value)}")
    return value


def _structure_bool(value: Any, _type: Any) -> bool:
    if not isinstance(value, bool):
        raise _TypeMismatch(f"expected true or false, got {describe_value(value)}")
    return value


def _is_list_type(type_: Any) -> bool:
    return type_ is list or get_origin(type_) is list


def _guarded(inner: Callable[[Any, Any], Any], accepted: type | tuple[type, ...], expected: str):
    """``inner`` (a cattrs structure function) behind a check that the value is of an ``accepted`` kind.

    cattrs' own functions take any iterable (a string would become a list of its characters) or fail with an
    opaque message; this refuses a value of the wrong kind first, with ``expected <expected>, got <what it is>``.
    """

    def structure(value: Any, type_: Any):
        if not isinstance(value, accepted):
            raise _TypeMismatch(f"expected {expected}, got {describe_value(value, show_text=False)}")
        return inner(value, type_)

    return structure


@functools.cache
def strict_converter() -> cattrs.Converter:
    """A converter that never coerces: 2.7 is no int, "no" no bool, 3 no string, a string no table or list.

    Technique configs are structured with it too, so plugins get the same strictness for free. Built once
    (generating the structuring code of each class is the slow part); it keeps no state between recipes.
    """
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_factory(
        attrs.has, lambda cl: _guarded(make_dict_structure_fn(cl, conv), Mapping, "a table"))
    conv.register_structure_hook_factory(
        _is_list_type, lambda type_: _guarded(list_structure_factory(type_, conv), (list, tuple), "a list"))
    conv.register_structure_hook_factory(
        is_mapping, lambda type_: _guarded(mapping_structure_factory(type_, conv), Mapping, "a table"))
    return conv


def unknown_field_lines(path: str, keys, known: list[str]) -> list[str]:
    """``path.key: unknown field (did you mean ...?)`` for each key, sorted, with the closest known name."""
    lines = []
    for key in sorted(map(str, keys)):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        lines.append(f"{path + '.' if path else ''}{key}: unknown field{hint}")
    return lines


def flatten_errors(exc: BaseException, path: str) -> list[str]:
    """Turn a cattrs exception tree into ``path: message`` lines."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        lines: list[str] = []
        for sub in exc.exceptions:
            notes = [n for n in getattr(sub, "__notes__", []) if hasattr(n, "name") or hasattr(n, "index")]
            sub_path = path
            for note in notes:
                if hasattr(note, "name"):
                    sub_path = f"{path}.{note.name}" if path else note.name
                elif isinstance(note.index, str):  # a key of a table
                    sub_path = f"{path}.{note.index}"
                else:
                    sub_path = f"{path}[{note.index}]"
            lines.extend(flatten_errors(sub, sub_path))
        return lines
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        return unknown_field_lines(path, exc.extra_fields, known)
    if isinstance(exc, KeyError):
        return [f"{path}: required field missing"]
    if isinstance(exc, RecipeError):
        return [f"{path}.{p}" if path else p for p in exc.problems]
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, _TypeMismatch):
        message = f"invalid value ({message})"
    return [f"{path}: {message}"]
