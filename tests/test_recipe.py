"""Recipes: structuring, path-carrying errors, unknown names, TOML round trips."""

from __future__ import annotations

import tomllib

import pytest

from zsgm.recipe import (
    Recipe,
    RecipeError,
    dumps_recipe,
    load_recipe,
    merge_dicts,
    recipe_from_dict,
    recipe_to_dict,
)
from zsgm.tomlwrite import dumps_toml


def base(**extra):
    data = {
        "source": "photo",
        "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "techniques": [{"use": "directional"}, {"use": "layer-freeze", "k": 3}],
    }
    data.update(extra)
    return data


def problems(data):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    return info.value.problems


def test_valid_recipe_is_structured_with_technique_configs():
    recipe = recipe_from_dict(base())
    assert isinstance(recipe, Recipe)
    assert [t.use for t in recipe.techniques] == ["directional", "layer-freeze"]
    assert recipe.techniques[1].config.k == 3
    assert recipe.optim.steps == 300 and recipe.clip.models[0].name == "tiny-random"


def test_bad_technique_field_names_its_path():
    data = base()
    data["techniques"][1]["k"] = -3
    assert problems(data) == ["techniques[1].k: must be > 0, got -3"]


def test_unknown_keys_are_rejected_with_a_suggestion():
    found = problems(base(optim={"stepz": 10}))
    assert found == ["optim.stepz: unknown field (did you mean 'steps'?)"]
    data = base()
    data["techniques"][1]["kk"] = 2
    assert problems(data)[0].startswith("techniques[1].kk: unknown field (did you mean 'k'?)")


def test_unknown_technique_lists_installed_and_closest():
    data = base()
    data["techniques"][0]["use"] = "directonal"
    (message,) = problems(data)
    assert message.startswith("techniques[0].use: unknown technique 'directonal'. Did you mean 'directional'?")
    assert "layer-freeze" in message


def test_wrong_types_and_several_problems_are_all_reported():
    data = base(optim={"steps": "many"}, run={"sample_every": -1})
    data["clip"]["preprocess"] = "bogus"
    found = problems(data)
    assert "optim.steps: expected an integer, got a string ('many')" in found
    assert "run.sample_every: must be >= 0, got -1" in found
    assert any(p.startswith("clip.preprocess: must be one of 'nada'") for p in found)


def test_missing_source_and_target(tmp_path):
    data = base()
    del data["source"]
    assert problems(data) == ["source: required field missing"]
    data = base()
    del data["target"]
    assert problems(data) == ["target: required unless target_images is given"]
    style = tmp_path / "style.png"
    style.write_bytes(b"")
    data["target_images"] = [str(style)]
    data["techniques"] = [{"use": "directional"}, {"use": "image-target"}]
    recipe_from_dict(data)


def test_duplicate_technique_needs_a_label():
    data = base()
    data["techniques"].append({"use": "directional"})
    assert any("'directional' is used twice" in p for p in problems(data))
    data["techniques"][-1]["label"] = "second"
    recipe_from_dict(data)


def test_toml_round_trip_is_exact(tmp_path):
    recipe = recipe_from_dict(base(optim={"ema_decay": 0.99, "steps": 7}))
    text = dumps_recipe(recipe)
    path = tmp_path / "r.toml"
    path.write_text(text)
    again = load_recipe(path)
    assert recipe_to_dict(again) == recipe_to_dict(recipe)
    assert tomllib.loads(text)["techniques"][1]["k"] == 3


def test_load_recipe_reports_file_problems(tmp_path):
    with pytest.raises(RecipeError, match="no such file"):
        load_recipe(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("source = \n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)


def test_toml_writer_handles_nested_tables_and_escapes():
    data = {"a": 1, "s": 'quote " and \\ back', "t": {"x": [1, 2], "u": {"deep": True}},
            "arr": [{"k": 1.5}, {"k": -2}]}
    assert tomllib.loads(dumps_toml(data)) == data


def test_merge_dicts_overrides_recursively():
    assert merge_dicts({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]}) == \
        {"a": {"b": 1, "c": 3}, "l": [2]}


def test_custom_templates_are_validated_and_used():
    data = base()
    data["clip"]["templates"] = ["a {} of a shape", "no placeholder"]
    assert any(p.startswith("clip.templates: each template needs exactly one '{}' placeholder")
               for p in problems(data))
    data["clip"]["templates"] = ["a {} of a shape"]
    recipe = recipe_from_dict(data)
    assert recipe.clip.template_list() == ["a {} of a shape"]
    assert len(recipe_from_dict(base()).clip.template_list()) == 79
