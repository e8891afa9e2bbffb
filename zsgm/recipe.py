"""Recipes: one structure, three spellings (Python objects, a dict, a TOML file).

A recipe names the source/target domains, the generator, the CLIP ensemble, the optimiser, the run
settings and a list of techniques. Every validation error carries the path of the bad field::

    RecipeError: recipe.toml: 2 problems
      techniques[1].k: must be > 0, got -3
      optim.stepz: unknown field (did you mean 'steps'?)

``recipe_from_dict`` checks everything before any model loads, reporting all problems at once: types,
strictly (``steps = 2.7`` or ``progress = "no"`` are refused, never rounded or read as true), values (finite
floats, non-blank texts, each field's validator), the composition of the techniques as their
:class:`zsgm.registry.TechniqueSpec` describe it, each technique's own ``check`` and the ``target_images`` files.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
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
from zsgm.recipe_model import (
    ClipConfig,
    ClipModelConfig,
    GeneratorConfig,
    OptimConfig,
    Recipe,
    RunConfig,
    TechniqueUse,
)
from zsgm.registry import RegistryError
from zsgm.tomlwrite import dumps_toml

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


def recipe_to_dict(recipe: Recipe) -> dict:
    """The fully resolved recipe as a plain dict (None values dropped, TOML-ready)."""
    conv = strict_converter()
    out = conv.unstructure(attrs.evolve(recipe, techniques=[]))
    out.pop("techniques")
    techniques = []
    for use in recipe.techniques:
        entry = {"use": use.use, "weight": use.weight, "every": use.every}
        if use.label is not None:
            entry["label"] = use.label
        if use.config is not None:
            entry.update(conv.unstructure(use.config))
        techniques.append(entry)
    out["techniques"] = techniques
    return _drop_none(out)


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(val) for k, val in obj.items() if val is not None}
    if isinstance(obj, list):
        return [_drop_none(x) for x in obj]
    return obj


def read_recipe_file(path: str | Path) -> dict:
    """The TOML table of a recipe file, unvalidated.

    Raises:
        RecipeError: with ``source`` the file and one problem: no such file, a directory, permission denied,
            another read error, not UTF-8 text (with the byte offset), or not valid TOML.
    """
    path = Path(path)

    def fail(problem: str) -> RecipeError:
        return RecipeError([problem], source=str(path))

    if path.is_dir():
        raise fail("is a directory, not a recipe file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail("no such file") from None
    except IsADirectoryError:
        raise fail("is a directory, not a recipe file") from None
    except PermissionError:
        raise fail("permission denied (cannot read the file)") from None
    except OSError as exc:
        raise fail(f"cannot read the file: {exc.strerror or exc}") from None
    except ValueError as exc:  # a name no file system accepts (an embedded NUL)
        raise fail(f"cannot read the file: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark (some Windows editors) is allowed
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1]
        raise fail(f"not UTF-8 text: byte {exc.start} is {bad!r}; save the recipe as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"not valid TOML: {exc}") from None


def load_recipe(path: str | Path, *, registry=None) -> Recipe:
    """Read and validate a TOML recipe file (see :func:`read_recipe_file` for what is refused at reading)."""
    data = read_recipe_file(path)
    return recipe_from_dict(data, registry=registry, source=str(path))


def dumps_recipe(recipe: Recipe) -> str:
    """The resolved recipe as TOML text (loads back to an equal recipe)."""
    return dumps_toml(recipe_to_dict(recipe))


def merge_dicts(base: dict, override: dict) -> dict:
    """Recursive dict merge; lists and scalars in ``override`` replace those in ``base``."""
    out = dict(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], val)
        else:
            out[key] = val
    return out
