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

This module is the public face of the recipe; the work is done in small modules, one job each:

- :mod:`zsgm.recipe_model`: the attrs classes (:class:`Recipe` and its sections) and their field validators;
- :mod:`zsgm.recipe_errors`: :class:`RecipeError` and how messages name a value the user gave;
- :mod:`zsgm.recipe_convert`: the strict cattrs converter and the flattening of its errors into paths;
- :mod:`zsgm.recipe_checks`: the checks of a structured recipe (values, composition, files, techniques' own);
- :mod:`zsgm.recipe_build`: :func:`recipe_from_dict`, structuring each section and technique, then checking;
- :mod:`zsgm.recipe_io`: reading recipe files, writing dicts and TOML, merging overrides.
"""

from __future__ import annotations

from zsgm.recipe_build import recipe_from_dict
from zsgm.recipe_errors import RecipeError
from zsgm.recipe_io import dumps_recipe, load_recipe, merge_dicts, read_recipe_file, recipe_to_dict
from zsgm.recipe_model import (
    ClipConfig,
    ClipModelConfig,
    GeneratorConfig,
    OptimConfig,
    Recipe,
    RunConfig,
    TechniqueUse,
)

__all__ = [
    "ClipConfig",
    "ClipModelConfig",
    "GeneratorConfig",
    "OptimConfig",
    "Recipe",
    "RecipeError",
    "RunConfig",
    "TechniqueUse",
    "dumps_recipe",
    "load_recipe",
    "merge_dicts",
    "read_recipe_file",
    "recipe_from_dict",
    "recipe_to_dict",
]
