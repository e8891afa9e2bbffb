"""The `air` preset end to end on the shipped shapes world (few steps), judged by the ground-truth judges."""

from __future__ import annotations

from zsgm.plugins import get_registry
from zsgm.toy.benchmark import run_one

# per technique: options that make the run take seconds
SHRINK = {"air": {"n_latents": 8, "prompt_align_iter": 2},  # the preset's fractions refresh after steps 2, 3 of 5
          "layer-freeze": {"auto_layer_batch": 2}}


def test_air_preset_runs_on_shapes_and_is_judged(tmp_path):
    r = run_one("air", "photo:sketch", out_root=tmp_path, steps=5, seed=0, registry=get_registry(), n_eval=16,
                technique_options=SHRINK)
    assert (r["task"], r["steps"], r["method"]) == ("style:sketch", 5, "air") and "air" in r["techniques"]
    assert 0.2 < r["content_iou"] < 0.999, r  # four updates (none at step 0) changed the images but left shapes
    assert 0.0 <= r["target_rate"] <= 1.0 and r["diversity_ratio"] > 0 and r["background_artefact"] >= 0
