"""Recipes whose techniques cannot work together are refused when the recipe is built, before any model loads.

The composition rules come from each technique's :class:`zsgm.registry.TechniqueSpec` (produces_loss, unique,
requires, requires_other_loss, provides_directions, reads_target_images, check).
"""

from __future__ import annotations

import attrs
import pytest

from zsgm.hookspecs import hookimpl
from zsgm.plugins import build_registry
from zsgm.recipe import RecipeError, recipe_from_dict
from zsgm.registry import TechniqueSpec
from zsgm.technique import Technique


def base(*techniques, **extra):
    data = {
        "source": "photo",
        "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "techniques": list(techniques),
    }
    data.update(extra)
    return data


def problems(data, registry=None):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, registry=registry)
    return info.value.problems


DIRECTIONAL = {"use": "directional"}
FREEZE = {"use": "layer-freeze", "k": 3}


def test_a_unique_technique_twice_is_refused_whatever_its_label():
    found = problems(base(DIRECTIONAL, FREEZE, {**FREEZE, "k": 5, "label": "second"}))
    assert found == ["techniques[2].use: 'layer-freeze' may appear only once in a recipe (already techniques[1]); "
                     "a second entry would silently compete with the first"]
    # without labels: the uniqueness message alone, not the advice to add a label (which would not help)
    found = problems(base(DIRECTIONAL, FREEZE, FREEZE))
    assert len(found) == 1 and found[0].startswith("techniques[2].use: 'layer-freeze' may appear only once")


@pytest.mark.parametrize("option, value", [("weight", 0.5), ("weight", 0.0), ("every", 2)])
def test_weight_and_every_on_a_technique_without_loss_cannot_be_honoured(option, value):
    found = problems(base(DIRECTIONAL, {**FREEZE, option: value}))
    assert found == [f"techniques[1].{option}: 'layer-freeze' produces no loss term, so {option} = {value!r} "
                     f"cannot be honoured; remove it"]
    # the explicit default is fine
    recipe_from_dict(base(DIRECTIONAL, {**FREEZE, "weight": 1.0, "every": 1}))


def test_two_direction_providers_are_refused_at_recipe_build(tmp_path):
    style = tmp_path / "style.png"
    style.write_bytes(b"")
    found = problems(base(DIRECTIONAL, {"use": "image-target"}, {"use": "ipl", "label": "p"},
                          target_images=[str(style)]))
    assert found == ["techniques: image-target (techniques[1]), ipl (techniques[2]) all provide text directions; "
                     "a recipe may use only one direction provider"]


def test_a_missing_required_technique_is_named():
    _, registry = build_registry(extra_modules=[FussyPlugin()])
    found = problems(base(DIRECTIONAL, {"use": "needy"}), registry)
    assert found == ["techniques[1].use: 'needy' needs 'fussy' in the same recipe; add a [[techniques]] entry "
                     "with use = 'fussy'"]
    recipe_from_dict(base(DIRECTIONAL, {"use": "needy"}, {"use": "fussy"}), registry=registry)


@pytest.mark.parametrize("techniques", [[], [FREEZE], [{"use": "semantic-variations"}],
                                        [{"use": "directional", "weight": 0.0}]])
def test_a_recipe_that_trains_nothing_is_refused(techniques):
    found = problems(base(*techniques))
    message = found[0]
    # a lone direction provider is also told that nothing reads its directions
    assert len(found) == 1 or found[1:] == [p for p in found[1:] if "provides text directions" in p]
    assert message.startswith("techniques: no technique produces a loss term with weight > 0, so nothing would "
                              "train; add one such as ")
    assert "'directional'" in message and "'layer-freeze'" not in message


def test_a_technique_that_needs_another_loss_is_refused_alone():
    found = problems(base({"use": "air"}))
    assert found == ["techniques[0].use: 'air' works only beside another technique that produces a loss term "
                     "with weight > 0 (such as 'directional'); this recipe has none"]
    recipe_from_dict(base(DIRECTIONAL, {"use": "air"}))


def test_absence_checks_wait_for_unknown_technique_names():
    # an unknown name might be the missing loss: only the unknown name is reported
    (message,) = problems(base({"use": "directonal"}, FREEZE))
    assert message.startswith("techniques[0].use: unknown technique 'directonal'")


def test_target_images_without_a_technique_that_reads_them(tmp_path):
    style = tmp_path / "style.png"
    style.write_bytes(b"")
    found = problems(base(DIRECTIONAL, target_images=[str(style)]))
    from zsgm.plugins import get_registry

    techniques = get_registry().techniques
    readers = [n for n in techniques.names() if techniques.get(n).reads_target_images]
    assert "image-target" in readers
    assert found == ["target_images: no technique of this recipe reads target images, so they would be ignored; "
                     "techniques that read them: " + ", ".join(repr(n) for n in readers)]


def test_target_images_must_be_existing_files(tmp_path):
    style = tmp_path / "style.png"
    style.write_bytes(b"")
    found = problems(base(DIRECTIONAL, {"use": "image-target"},
                          target_images=[str(style), str(tmp_path / "gone.png"), str(tmp_path)]))
    assert found == [f"target_images[1]: no such file: {tmp_path / 'gone.png'}",
                     f"target_images[2]: {tmp_path} is a directory, not an image file"]


@attrs.define(kw_only=True)
class FussyConfig:
    until: int = 5


@attrs.define(kw_only=True)
class NeedyConfig:
    pass


class Fussy(Technique):
    pass


def fussy_check(config, recipe):
    if config.until > recipe.optim.steps:
        return [f"until: {config.until} is past optim.steps = {recipe.optim.steps}"]
    return []


class FussyPlugin:
    __name__ = "fussy_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_techniques(register):
        register(TechniqueSpec(name="fussy", config=FussyConfig, build=Fussy, check=fussy_check))
        register(TechniqueSpec(name="needy", config=NeedyConfig, build=Fussy, requires=frozenset({"fussy"})))


def test_each_technique_check_runs_with_the_whole_recipe_and_its_path():
    _, registry = build_registry(extra_modules=[FussyPlugin()])
    data = base(DIRECTIONAL, {"use": "fussy", "until": 50}, optim={"steps": 10})
    assert problems(data, registry) == ["techniques[1].until: 50 is past optim.steps = 10"]
    data["optim"]["steps"] = 60
    recipe_from_dict(data, registry=registry)


def test_technique_checks_report_beside_composition_problems_but_not_on_invalid_values():
    _, registry = build_registry(extra_modules=[FussyPlugin()])
    data = base(DIRECTIONAL, {"use": "fussy", "until": 50}, FREEZE, FREEZE, optim={"steps": 10})
    assert problems(data, registry) == [
        "techniques[3].use: 'layer-freeze' may appear only once in a recipe (already techniques[2]); a second "
        "entry would silently compete with the first",
        "techniques[1].until: 50 is past optim.steps = 10",
    ]
    data = base(DIRECTIONAL, {"use": "fussy", "until": 50}, optim={"steps": 2.5})  # the check would compare 2.5
    assert problems(data, registry) == ["optim.steps: expected an integer, got 2.5"]


def test_a_direction_provider_with_no_technique_reading_directions_is_refused(tmp_path):
    style = tmp_path / "style.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(style)
    # image-target gives directions, 'global' ignores them: the style image would change nothing
    found = problems(base({"use": "global"}, {"use": "image-target"}, target_images=[str(style)]))
    assert any(p.startswith("techniques[1].use: 'image-target' provides text directions, but no technique of "
                            "this recipe reads them") and "'directional'" in p for p in found), found
    # with the directional loss reading them, the same recipe is fine
    recipe_from_dict(base({"use": "global"}, DIRECTIONAL, {"use": "image-target"}, target_images=[str(style)]))
