"""The mapper recipe: presets (the published setup, the shapes world), strict fields with named errors, TOML files;
and the plugin's registration of ``zsgm edit``."""

from __future__ import annotations

import pytest

from zsgm.plugins import get_registry
from zsgm.recipe_errors import RecipeError
from zsgm_deltaedit.recipe import load_mapper_recipe, mapper_preset, mapper_recipe_from_dict


def test_deltaedit_preset_is_the_published_setup():
    r = mapper_preset("deltaedit")
    assert (r.codes.samples, r.train.batch, r.train.lr, r.train.l2_weight, r.train.cos_weight) == (200_000, 64, 0.5,
                                                                                                   1.0, 1.0)
    assert r.train.steps == 258_000 * 50 // 64 and r.train.levels is None
    assert (r.clip.name, r.clip.pretrained, r.clip.preprocess) == ("ViT-B-32-quickgelu", "openai", "deltaedit")
    assert (r.relevance.images, r.relevance.alpha) == (100, 5.0)
    assert (r.edit.neutral, r.edit.theta, r.edit.strength) == ("face", 0.03, 1.0)


def test_shapes_preset_uses_the_shapes_clip_and_photo():
    r = mapper_preset("deltaedit-shapes")
    assert (r.clip.name, r.clip.pretrained, r.edit.neutral) == ("shapes", None, "photo")
    assert r.codes.samples < 20_000 and r.train.steps < 20_000
    assert r.edit.strength == 1.5 and r.edit.strength in r.edit.strengths  # the single images are a grid row
    assert r.edit.torgb == 2.0 and mapper_preset("deltaedit").edit.torgb == 0.0  # the ToRGB step: ours, off as released


@pytest.mark.parametrize("override, problem", [
    ({"train": {"lr": -1.0}}, "train.lr: must be > 0"),
    ({"codes": {"samples": 2.5}}, "codes.samples: expected an integer, got 2.5"),
    ({"train": {"stepz": 3}}, "train.stepz: unknown field (did you mean 'steps'?)"),
    ({"clip": {"preprocess": "bicubic"}}, "clip.preprocess: must be one of"),
    ({"train": {"levels": [2, 0]}}, "train.levels: must be two positive layer counts"),
    ({"edit": {"theta": float("nan")}}, "edit.theta"),
    ({"edit": {"strength": float("inf")}}, "edit.strength"),
    ({"edit": {"strength": "2"}}, "edit.strength: expected a number"),
    ({"relevance": {"images": True}}, "relevance.images: expected an integer, got a boolean"),
    ({"edit": {"layers": [3, 3]}}, "edit.layers: must be a non-empty list of distinct style-layer indices"),
])
def test_bad_fields_are_named(override, problem):
    with pytest.raises(RecipeError) as info:
        mapper_preset("deltaedit", override)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: deltaedit, deltaedit-shapes"):
        mapper_preset("delta")


def test_toml_file_over_a_preset(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('preset = "deltaedit"\n[clip]\nname = "shapes"\n[train]\nsteps = 10\n')
    r = load_mapper_recipe(path)
    assert (r.clip.name, r.clip.pretrained, r.train.steps, r.codes.samples) == ("shapes", None, 10, 200_000)
    path.write_text('[train]\nsteps = "ten"\n')
    with pytest.raises(RecipeError, match=r"m.toml: 1 problem\n  train.steps: expected an integer"):
        load_mapper_recipe(path)
    with pytest.raises(RecipeError, match="expected a table at the top level"):
        mapper_recipe_from_dict([1, 2])


def test_edit_command_is_registered():
    registry = get_registry()
    assert "edit" in registry.commands.names()
    assert registry.commands.origin("edit").startswith("deltaedit") or "deltaedit" in registry.commands.origin("edit")
