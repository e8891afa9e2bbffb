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
from typing import Any, Optional

import attrs
import cattrs

from zsgm import validators as v
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


def _non_finite_problems(value: Any, path: str) -> list[str]:
    """``path: must be a finite number`` for a non-finite float, or for each one inside a list or table."""
    if v.is_non_finite(value):
        return [f"{path}: must be a finite number, got {value!r}"]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in _non_finite_problems(item, f"{path}[{i}]")]
    if isinstance(value, Mapping):
        return [p for key, item in value.items() for p in _non_finite_problems(item, f"{path}.{key}")]
    return []


def _validate_tree(obj: Any, path: str) -> list[str]:
    """Run every attrs validator of ``obj`` and its children, collecting ``path: message`` lines.

    A non-finite float is refused first (its validator would compare nan and say something odd), unless the
    field carries :data:`zsgm.validators.ALLOWS_NON_FINITE`.
    """
    problems: list[str] = []
    if attrs.has(type(obj)):
        for field in attrs.fields(type(obj)):
            value = getattr(obj, field.name)
            field_path = f"{path}.{field.name}" if path else field.name
            if isinstance(obj, TechniqueUse) and field.name == "config":
                field_path = path  # technique options sit beside 'use' in the recipe
            if not v.allows_non_finite(field):
                non_finite = _non_finite_problems(value, field_path)
                if non_finite:
                    problems.extend(non_finite)
                    continue
            if field.validator is not None:
                try:
                    field.validator(obj, field, value)
                except (ValueError, TypeError) as exc:
                    problems.append(f"{field_path}: {exc}")
                    continue
            problems.extend(_validate_tree(value, field_path))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            problems.extend(_validate_tree(item, f"{path}[{i}]"))
    return problems


@attrs.define
class _Entry:
    """One ``[[techniques]]`` entry as far as it could be read: its spec if the name is known, its use if valid."""

    index: int
    spec: Any = None
    use: Optional[TechniqueUse] = None

    @property
    def path(self) -> str:
        return f"techniques[{self.index}]"


def _structure_technique(conv: cattrs.Converter, data: Any, registry, entry: _Entry) -> list[str]:
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


def _names_where(registry, flag) -> str:
    names = [n for n in registry.techniques.names() if flag(registry.techniques.get(n))]
    return ", ".join(repr(n) for n in names) or "(none installed)"


def _composition_problems(entries: list[_Entry], recipe: Recipe, registry) -> list[str]:
    """What the techniques of a recipe cannot do together (checked before any model loads).

    Checks that a technique is present hold for every entry whose name is known; checks that something is
    absent run only when every entry's name is known (an unknown one might have been what is missing).
    """
    problems: list[str] = []
    known = [e for e in entries if e.spec is not None]
    complete = len(known) == len(entries)
    first_of: dict[str, _Entry] = {}
    for e in known:
        name = e.spec.name
        if e.spec.unique and name in first_of:
            problems.append(f"{e.path}.use: {name!r} may appear only once in a recipe (already "
                            f"{first_of[name].path}); a second entry would silently compete with the first")
        first_of.setdefault(name, e)
        if not e.spec.produces_loss and e.use is not None:
            for option, default in (("weight", 1.0), ("every", 1)):
                value = getattr(e.use, option)
                if value != default:
                    problems.append(f"{e.path}.{option}: {name!r} produces no loss term, so {option} = {value!r} "
                                    f"cannot be honoured; remove it")
    providers = [e for e in known if e.spec.provides_directions]
    if len(providers) > 1:
        listing = ", ".join(f"{e.spec.name} ({e.path})" for e in providers)
        problems.append(f"techniques: {listing} all provide text directions; a recipe may use only one direction "
                        f"provider")
    if not complete:
        return problems
    names = {e.spec.name for e in known}
    for e in known:
        for needed in sorted(e.spec.requires - names):
            problems.append(f"{e.path}.use: {e.spec.name!r} needs {needed!r} in the same recipe; add a "
                            f"[[techniques]] entry with use = {needed!r}")

    def trains(e: _Entry) -> bool:  # a weight that is invalid (nan, negative) is reported on its own
        return e.spec.produces_loss and (e.use is None or e.use.weight != 0)

    losses = [e for e in known if trains(e)]
    if not losses:
        problems.append("techniques: no technique produces a loss term with weight > 0, so nothing would train; "
                        f"add one such as {_names_where(registry, lambda s: s.produces_loss and not s.requires_other_loss)}")
    else:
        for e in known:
            if e.spec.requires_other_loss and not [o for o in losses if o is not e]:
                problems.append(f"{e.path}.use: {e.spec.name!r} works only beside another technique that produces "
                                f"a loss term with weight > 0 (such as 'directional'); this recipe has none")
    if recipe.target_images and not any(e.spec.reads_target_images for e in known):
        problems.append("target_images: no technique of this recipe reads target images, so they would be ignored; "
                        f"techniques that read them: {_names_where(registry, lambda s: s.reads_target_images)}")
    return problems


def _same_text(a: str | None, b: str | None) -> bool:
    """Whether two texts read the same to CLIP (its tokenizer lowercases and splits on whitespace)."""
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip():
        return False
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def _target_image_problems(files: list[str]) -> list[str]:
    """Each ``target_images`` entry must name an existing file (not a directory)."""
    problems = []
    for j, name in enumerate(files):
        if not name.strip():
            continue  # reported by the emptiness check
        path = Path(name)
        if path.is_dir():
            problems.append(f"target_images[{j}]: {name} is a directory, not an image file")
        elif not path.is_file():
            problems.append(f"target_images[{j}]: no such file: {name}")
    return problems


def _technique_check_problems(entries: list[_Entry], recipe: Recipe) -> list[str]:
    """Each spec's own ``check(config, recipe)``, its problems prefixed with the entry's path."""
    problems = []
    for e in entries:
        if e.spec is not None and e.use is not None and e.spec.check is not None:
            problems.extend(f"{e.path}.{p}" for p in e.spec.check(e.use.config, recipe))
    return problems


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
    entries: list[_Entry] = []
    with attrs.validators.disabled():
        recipe = _structure_sections(conv, body, problems)
        if not isinstance(raw_techniques, (list, tuple)):
            problems.append(f"techniques: expected a list of tables ([[techniques]]), "
                            f"got {describe_value(raw_techniques, show_text=False)}")
            raw_techniques = []
        for i, item in enumerate(raw_techniques):
            entries.append(_Entry(index=i))
            problems.extend(_structure_technique(conv, item, registry, entries[-1]))
    if recipe is not None:
        recipe.techniques = [e.use for e in entries if e.use is not None]
        problems.extend(_validate_tree(recipe, ""))
        values_valid = not problems  # each technique's check may then rely on types and validated values
        if recipe.target is None and not recipe.target_images:
            problems.append("target: required unless target_images is given")
        elif _same_text(recipe.source, recipe.target):
            problems.append(f"target: the same text as source ({recipe.source!r}), so the text direction would be "
                            f"zero")
        labels = [e.use.name for e in entries if e.use is not None and not e.spec.unique]
        for dup in sorted({n for n in labels if labels.count(n) > 1}):
            problems.append(f"techniques: {dup!r} is used twice; give one of them a distinct 'label'")
        problems.extend(_composition_problems(entries, recipe, registry))
        problems.extend(_target_image_problems(recipe.target_images))
        if values_valid:
            problems.extend(_technique_check_problems(entries, recipe))
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
