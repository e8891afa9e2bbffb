"""The recipe's plain-dict and TOML spellings: reading a recipe file, writing a resolved recipe, merging overrides.

:func:`read_recipe_file` refuses an unreadable file with one problem naming it (no such file, a directory,
permission denied, not UTF-8, not TOML); :func:`dumps_recipe` writes TOML that loads back to an equal recipe.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import attrs

from zsgm.recipe_build import recipe_from_dict
from zsgm.recipe_convert import strict_converter
from zsgm.recipe_errors import RecipeError
from zsgm.recipe_model import Recipe
from zsgm.tomlwrite import dumps_toml


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
