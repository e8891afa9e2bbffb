"""Recipe-time behaviour of the one-shot techniques: the preset, composition, one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from oneshot_helpers import oneshot_techniques, search_entry, tiny_recipe
from zsgm.plugins import get_registry
from zsgm.recipe import RecipeError, recipe_from_dict
from zsgm_oneshot.presets import ONECLIP_EMA


def test_oneclip_preset_has_the_released_defaults():
    data = get_registry().presets.get("oneclip").build()
    assert "target_images" not in data and "target" not in data  # the reference is the user's
    assert data["optim"] == {"steps": 2001, "batch_size": 2, "lr": 0.002, "reg_ratio": 0.8, "beta1": 0.0,
                             "beta2": 0.99, "mixing": 0.9, "ema_decay": ONECLIP_EMA}
    assert ONECLIP_EMA == pytest.approx(0.99778, abs=1e-5)
    assert data["clip"]["preprocess"] == "oneshot"
    assert [m["name"] for m in data["clip"]["models"]] == ["ViT-B-32-quickgelu"]
    by_use = {t["use"]: t for t in data["techniques"]}
    assert set(by_use) == {"reference-search", "frozen-layers", "reference-reconstruction", "adversarial",
                           "clip-consistency", "patch-contrastive"}
    assert by_use["reference-search"]["iterations"] == 1001 and by_use["reference-search"]["lambda_l2"] == 0.01
    assert by_use["reference-reconstruction"]["ref_freq"] == 4
    assert by_use["clip-consistency"]["weight"] == 10.0 and by_use["patch-contrastive"]["weight"] == 1.0
    assert (by_use["patch-contrastive"]["n_crops"], by_use["patch-contrastive"]["tau"]) == (16, 1.0)
    assert (by_use["adversarial"]["d_reg_every"], by_use["adversarial"]["r1"]) == (16, 10.0)


@pytest.mark.parametrize("size", [None, 128, 1024])
def test_oneclip_preset_keeps_the_published_counts_above_64_px(size):
    assert get_registry().presets.get("oneclip").build(generator_size=size) == \
        get_registry().presets.get("oneclip").build()


def test_oneclip_preset_scales_the_counts_for_small_generators_and_says_so():
    spec = get_registry().presets.get("oneclip")
    data, published = spec.build(generator_size=32), spec.build()
    by_use = {t["use"]: t for t in data["techniques"]}
    assert spec.sized and "at most 64 px" in spec.description
    assert data["optim"]["steps"] == 401 and by_use["reference-search"]["iterations"] == 100
    assert by_use["reference-search"]["mean_samples"] == 2000
    assert "init" not in by_use["reference-search"]  # the released start (w̄) at every size
    assert (by_use["patch-contrastive"]["n_crops"], by_use["patch-contrastive"]["crop_frac"]) == (4, 0.5)
    # nothing else changes: the same losses, weights, optimiser and schedule of reference steps
    assert {k: v for k, v in data["optim"].items() if k != "steps"} == \
        {k: v for k, v in published["optim"].items() if k != "steps"}
    assert [t["use"] for t in data["techniques"]] == [t["use"] for t in published["techniques"]]


def test_oneclip_preset_builds_for_shapes_with_a_reference(reference):
    from zsgm.recipe import merge_dicts

    data = merge_dicts(get_registry().presets.get("oneclip").build(),
                       {"target_images": [reference], "generator": {"checkpoint": "shapes"},
                        "clip": {"models": [{"name": "shapes"}]}})
    recipe = recipe_from_dict(data)
    assert [u.use for u in recipe.techniques][0] == "reference-search"


def _refused(data, pattern):
    with pytest.raises(RecipeError, match=pattern) as info:
        recipe_from_dict(data)
    return str(info.value)


def test_the_reference_is_required_and_single(reference, tmp_path):
    data = tiny_recipe(reference, oneshot_techniques())
    data["target_images"] = []
    data["target"] = "sketch"
    _refused(data, r"techniques\[0\]\.target_images: needs a reference image")
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(other)
    data = tiny_recipe(reference, oneshot_techniques())
    data["target_images"] = [reference, str(other)]
    _refused(data, r"exactly one reference image")


@pytest.mark.parametrize("content, message", [(b"not an image", "not an image file"), (None, "too small")])
def test_a_reference_that_is_not_a_usable_image_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is None:
        Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(path)
    else:
        path.write_bytes(content)
    text = _refused(tiny_recipe(str(path), oneshot_techniques()), message)
    assert f"target_images: image '{path}'" in text
    assert text.count(str(path)) == 1  # said once, by the first entry reading the reference


def test_reference_reconstruction_schedule_is_its_ref_freq(reference):
    techniques = oneshot_techniques()
    techniques[2]["every"] = 4
    _refused(tiny_recipe(reference, techniques), r"techniques\[2\]\.every: .*use ref_freq = 4")


def test_reference_reconstruction_alone_needs_a_loss_for_the_other_steps(reference):
    only = [search_entry(), {"use": "reference-reconstruction", "ref_freq": 4, "lpips": "standin"}]
    _refused(tiny_recipe(reference, only), r"techniques\[1\]\.ref_freq: .*no other technique")
    only[1]["ref_freq"] = 1
    recipe_from_dict(tiny_recipe(reference, only))  # every step a reference step: fine


def test_reference_reconstruction_needs_the_search(reference):
    _refused(tiny_recipe(reference, [{"use": "reference-reconstruction", "ref_freq": 1, "lpips": "standin"}]),
             r"needs 'reference-search'")


def test_clip_consistency_needs_two_samples(reference):
    data = tiny_recipe(reference, oneshot_techniques())
    data["optim"]["batch_size"] = 1
    _refused(data, r"techniques\[4\]\.use: 'clip-consistency' .*optim.batch_size >= 2")


def test_frozen_layers_needs_a_loss_and_known_names(reference):
    _refused(tiny_recipe(reference, [search_entry(), {"use": "frozen-layers"}]), "no technique produces a loss term")
    _refused(tiny_recipe(reference, [{"use": "clip-consistency"}, {"use": "frozen-layers", "modules": ["mapping"]}]),
             r"techniques\[1\]\.modules: unknown synthesis module names \['mapping'\]")


def test_bad_options_name_their_field(reference):
    techniques = oneshot_techniques()
    techniques[5]["grouping"] = "batch"
    techniques[3]["patch_levels"] = 5
    text = _refused(tiny_recipe(reference, techniques), "grouping")
    assert "techniques[3].patch_levels" in text and "techniques[5].grouping" in text


def test_clip_losses_need_no_reference(reference):
    """clip-consistency and patch-contrastive with a text target, beside NADA's directional loss."""
    pytest.importorskip("zsgm_nada")
    data = tiny_recipe(reference, [{"use": "directional"}, {"use": "clip-consistency"},
                                   {"use": "patch-contrastive"}], target="sketch")
    del data["target_images"]
    recipe_from_dict(data)
