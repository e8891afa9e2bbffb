"""The recipe's error type and how its messages name a value the user gave.

Every module of the recipe loader words its problems with these two, so a message reads the same whichever
check found it::

    RecipeError: recipe.toml: 1 problem
      optim.steps: expected an integer, got 2.7
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any


class RecipeError(ValueError):
    """A recipe is invalid. ``problems`` lists ``"path: message"`` strings."""

    def __init__(self, problems: list[str], *, source: str = "recipe"):
        self.problems = problems
        self.source = source
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"{source}: {count}\n  " + "\n  ".join(problems))


def describe_value(value: Any, *, show_text: bool = True) -> str:
    """How a message names a value the user gave: ``2.7``, ``a boolean (true)``, ``a string ('no')``.

    ``show_text=False`` says only "a string", for places where a text is the wrong kind of thing altogether
    (a table or a list was expected).
    """
    if value is None:
        return "nothing (None)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, numbers.Integral):
        digits = len(str(abs(int(value))))
        return str(int(value)) if digits <= 20 else f"an integer of {digits} digits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if not show_text:
            return "a string"
        return f"a string ({value[:40] + '...' if len(value) > 40 else value!r})"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a value of type {type(value).__name__!r}"
