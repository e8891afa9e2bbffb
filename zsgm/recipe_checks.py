"""The checks of a structured recipe: its field values, then what the recipe says as a whole.

``recipe_from_dict`` structures a recipe with validators disabled, then runs these in order, each returning
``path: message`` lines so that every problem is reported at once:

1. :func:`field_value_problems`: each field's validator, after refusing non-finite floats;
2. :func:`target_text_problems`: a target text is given (or target images) and differs from the source;
3. :func:`duplicate_label_problems`: two entries of one technique need distinct labels;
4. :func:`composition_problems`: what the techniques cannot do together, from their
   :class:`zsgm.registry.TechniqueSpec` flags;
5. :func:`target_image_problems`: each ``target_images`` entry is an existing file;
6. :func:`technique_check_problems`: each technique's own ``check``, run only when structuring and step 1
   found nothing, so that a check may rely on types and validated values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import attrs

from zsgm import validators as v
from zsgm.recipe_model import Recipe, TechniqueUse


@attrs.define
class TechniqueEntry:
    """One ``[[techniques]]`` entry as far as it could be read: its spec if the name is known, its use if valid."""

    index: int
    spec: Any = None
    use: Optional[TechniqueUse] = None

    @property
    def path(self) -> str:
        return f"techniques[{self.index}]"


def _non_finite_problems(value: Any, path: str) -> list[str]:
    """``path: must be a finite number`` for a non-finite float, or for each one inside a list or table."""
    if v.is_non_finite(value):
        return [f"{path}: must be a finite number, got {value!r}"]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in _non_finite_problems(item, f"{path}[{i}]")]
    if isinstance(value, Mapping):
        return [p for key, item in value.items() for p in _non_finite_problems(item, f"{path}.{key}")]
    return []


def field_value_problems(obj: Any, path: str) -> list[str]:
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
            problems.extend(field_value_problems(value, field_path))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            problems.extend(field_value_problems(item, f"{path}[{i}]"))
    return problems


def target_text_problems(recipe: Recipe) -> list[str]:
    """A target text is required unless target images are given, and must not read as the source does."""
    if recipe.target is None and not recipe.target_images:
        return ["target: required unless target_images is given"]
    if _same_text(recipe.source, recipe.target):
        return [f"target: the same text as source ({recipe.source!r}), so the text direction would be zero"]
    return []


def _same_text(a: str | None, b: str | None) -> bool:
    """Whether two texts read the same to CLIP (its tokenizer lowercases and splits on whitespace)."""
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip():
        return False
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def duplicate_label_problems(entries: list[TechniqueEntry]) -> list[str]:
    """Two valid entries of a technique that may repeat would log under one name; each needs its own label."""
    labels = [e.use.name for e in entries if e.use is not None and not e.spec.unique]
    return [f"techniques: {dup!r} is used twice; give one of them a distinct 'label'"
            for dup in sorted({n for n in labels if labels.count(n) > 1})]


def _names_where(registry, flag) -> str:
    names = [n for n in registry.techniques.names() if flag(registry.techniques.get(n))]
    return ", ".join(repr(n) for n in names) or "(none installed)"


def composition_problems(entries: list[TechniqueEntry], recipe: Recipe, registry) -> list[str]:
    """What the techniques of a recipe cannot do together (checked before any model loads).

    Checks that a technique is present hold for every entry whose name is known; checks that something is
    absent run only when every entry's name is known (an unknown one might have been what is missing).
    """
    problems: list[str] = []
    known = [e for e in entries if e.spec is not None]
    complete = len(known) == len(entries)
    first_of: dict[str, TechniqueEntry] = {}
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

    def trains(e: TechniqueEntry) -> bool:  # a weight that is invalid (nan, negative) is reported on its own
        return e.spec.produces_loss and (e.use is None or e.use.weight != 0)

    losses = [e for e in known if trains(e)]
    if not losses:
        trainers = _names_where(registry, lambda s: s.produces_loss and not s.requires_other_loss)
        problems.append("techniques: no technique produces a loss term with weight > 0, so nothing would train; "
                        f"add one such as {trainers}")
    else:
        for e in known:
            if e.spec.requires_other_loss and not [o for o in losses if o is not e]:
                problems.append(f"{e.path}.use: {e.spec.name!r} works only beside another technique that produces "
                                f"a loss term with weight > 0 (such as 'directional'); this recipe has none")
    if providers and not any(e.spec.reads_directions for e in known):
        readers = _names_where(registry, lambda s: s.reads_directions)
        for e in providers:
            problems.append(f"{e.path}.use: {e.spec.name!r} provides text directions, but no technique of this recipe "
                            f"reads them, so it would change nothing; add one such as {readers}")
    if recipe.target_images and not any(e.spec.reads_target_images for e in known):
        problems.append("target_images: no technique of this recipe reads target images, so they would be ignored; "
                        f"techniques that read them: {_names_where(registry, lambda s: s.reads_target_images)}")
    return problems



def target_image_problems(files: list[str]) -> list[str]:
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


def technique_check_problems(entries: list[TechniqueEntry], recipe: Recipe) -> list[str]:
    """Each spec's own ``check(config, recipe)``, its problems prefixed with the entry's path."""
    problems = []
    for e in entries:
        if e.spec is not None and e.use is not None and e.spec.check is not None:
            problems.extend(f"{e.path}.{p}" for p in e.spec.check(e.use.config, recipe))
    return problems

