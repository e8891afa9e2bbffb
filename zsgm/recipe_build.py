"""Building a :class:`~zsgm.recipe_model.Recipe` from a plain dict, every check done before any model loads.

Each top-level section and each ``[[techniques]]`` entry is structured on its own with validators disabled,
so that problems in all of them are reported at once; the structured recipe then goes through the checks of
:mod:`zsgm.recipe_checks`. A technique entry's keys other than ``use``, ``weight``, ``every`` and ``label`` are
its options, structured into the config class its :class:`zsgm.registry.TechniqueSpec` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import cattrs

from zsgm.recipe_checks import (
    TechniqueEntry,
    composition_problems,
    duplicate_label_problems,
    field_value_problems,
    target_image_problems,
    target_text_problems,
    technique_check_problems,
)
from zsgm.recipe_convert import flatten_errors, strict_converter, unknown_field_lines
from zsgm.recipe_errors import RecipeError, describe_value
from zsgm.recipe_model import Recipe, TechniqueUse
from zsgm.registry import RegistryError

_USE_KEYS = ("use", "weight", "every", "label")


def _structure_technique(conv: cattrs.Converter, data: Any, registry, entry: TechniqueEntry) -> list[str]:
    """Fill ``entry.spec`` and ``entry.use`` from one raw entry; return its problems."""
    path = entry.path
    if not isinstance(data, Mapping):
        return [f"{path}: expected a table with a 'use' key, got {describe_value(data, show_text=False)}"]
    if "use" not in data:
        return [f"{path}.use: required field missing (the technique name)"]
    name = data["use"]
    if not isinstance(name, str):
        return [f"{path}.use: expected a technique name (a string), got {describe_value(name)}"]
    try:
        entry.spec = registry.techniques.get(name)
    except RegistryError as exc:
        return [f"{path}.use: {exc}"]
    head = {k: data[k] for k in _USE_KEYS if k in data}
    options = {k: val for k, val in data.items() if k not in _USE_KEYS}
    problems: list[str] = []
    try:
        use = conv.structure(head, TechniqueUse)
    except Exception as exc:  # noqa: BLE001 - converted to path messages
        problems.extend(flatten_errors(exc, path))
        use = None
    try:
        config = conv.structure(options, entry.spec.config)
    except Exception as exc:  # noqa: BLE001
        problems.extend(flatten_errors(exc, path))
        config = None
    if not problems:
        use.config = config
        entry.use = use
    return problems


def _structure_sections(conv: cattrs.Converter, body: dict, problems: list[str]) -> Recipe | None:
    """Structure each top-level section on its own so that problems in all sections are reported."""
    attrs.resolve_types(Recipe)  # field types are strings under postponed annotations
    fields = {f.name: f for f in attrs.fields(Recipe) if f.name != "techniques"}
    values: dict[str, Any] = {}
    unknown = [key for key in body if key not in fields]
    problems.extend(unknown_field_lines("", unknown, list(fields) + ["techniques"]))
    for name, field in fields.items():
        if name not in body:
            if field.default is attrs.NOTHING:
                problems.append(f"{name}: required field missing")
            continue
        try:
            values[name] = conv.structure(body[name], field.type)
        except Exception as exc:  # noqa: BLE001 - converted to path messages
            problems.extend(flatten_errors(exc, name))
    try:
        return Recipe(**values)
    except TypeError:
        return None  # a required field is missing; already reported


def recipe_from_dict(data: dict, *, registry=None, source: str = "recipe") -> Recipe:
    """Build and validate a :class:`Recipe` from a plain dict.

    Every check happens here, before any model loads: types (strictly, no coercion), values (finite floats,
    non-empty texts, validators), the composition of the techniques (see :class:`zsgm.registry.TechniqueSpec`),
    each technique's own ``check``, and that ``target_images`` exist and are read by some technique.

    Raises:
        RecipeError: listing every problem with its field path.
    """
    from zsgm.plugins import get_registry

    registry = registry or get_registry()
    if not isinstance(data, Mapping):
        got = describe_value(data, show_text=False)
        raise RecipeError([f"expected a table at the top level, got {got}"], source=source)
    conv = strict_converter()
    problems: list[str] = []
    body = {k: val for k, val in data.items() if k != "techniques"}
    raw_techniques = data.get("techniques", [])
    entries: list[TechniqueEntry] = []
    with attrs.validators.disabled():
        recipe = _structure_sections(conv, body, problems)
        if not isinstance(raw_techniques, (list, tuple)):
            problems.append(f"techniques: expected a list of tables ([[techniques]]), "
                            f"got {describe_value(raw_techniques, show_text=False)}")
            raw_techniques = []
        for i, item in enumerate(raw_techniques):
            entries.append(TechniqueEntry(index=i))
            problems.extend(_structure_technique(conv, item, registry, entries[-1]))
    if recipe is not None:
        recipe.techniques = [e.use for e in entries if e.use is not None]
        problems.extend(field_value_problems(recipe, ""))
        values_valid = not problems  # each technique's check may then rely on types and validated values
        problems.extend(target_text_problems(recipe))
        problems.extend(duplicate_label_problems(entries))
        problems.extend(composition_problems(entries, recipe, registry))
        problems.extend(target_image_problems(recipe.target_images))
        if values_valid:
            problems.extend(technique_check_problems(entries, recipe))
    if problems:
        raise RecipeError(problems, source=source)
    return recipe
