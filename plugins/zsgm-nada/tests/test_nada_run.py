"""NADA techniques inside real (tiny) runs: layer freezing, image targets, the preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zsgm.checkpoint import checkpoint_path
from zsgm.loop import adapt
from zsgm.plugins import get_registry
from zsgm.recipe import recipe_from_dict
from zsgm.run import build_run
from zsgm_nada.layer_freeze import slot_layers


def recipe(techniques, steps=1, **extra):
    data = {
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": steps, "batch_size": 2, "lr": 0.01},
        "run": {"sample_every": 0, "checkpoint_every": 1, "n_samples": 2, "progress": False},
        "techniques": techniques,
    }
    data.update(extra)
    return recipe_from_dict(data)


def changed_modules(before: dict, after: dict) -> set[str]:
    names = set()
    for key, value in after.items():
        if not torch.equal(before[key], value):
            parts = key.split(".")
            names.add(".".join(parts[:2]) if parts[0] in ("convs", "to_rgbs") else parts[0])
    return names


def test_layer_freeze_trains_only_the_layers_of_the_selected_slots(tmp_path):
    r = recipe([{"use": "directional"}, {"use": "layer-freeze", "k": 2, "auto_layer_batch": 2}])
    run = build_run(r, out_dir=tmp_path / "probe")
    before = {k: v.clone() for k, v in run.g_target.state_dict().items()}
    adapt(r, out_dir=tmp_path / "run")
    after = torch.load(checkpoint_path(tmp_path / "run"), weights_only=True)["target"]
    # recompute the selection the run made at step 0
    freeze = run.techniques[1]
    slots = freeze.select_slots(run, 0)
    assert len(slots) == 2
    table = slot_layers(run.g_target.n_latent, len(run.g_target.convs), slot_map="exact")
    expected = {name for s in slots for name in table[s]}
    assert changed_modules(before, after) == expected


def test_layer_freeze_without_probe_trains_nada_fixed_set(tmp_path):
    r = recipe([{"use": "directional"}, {"use": "layer-freeze", "auto_layer_iters": 0}])
    run = build_run(r, out_dir=tmp_path / "probe")
    before = {k: v.clone() for k, v in run.g_target.state_dict().items()}
    adapt(r, out_dir=tmp_path / "run")
    after = torch.load(checkpoint_path(tmp_path / "run"), weights_only=True)["target"]
    changed = changed_modules(before, after)
    assert "input" in changed and "conv1" in changed
    assert not any(n.startswith("to_rgb") for n in changed)
    assert "style" not in changed  # the mapping never trains


def test_layer_freeze_fixed_slots_train_their_layers_without_the_probe(tmp_path, monkeypatch):
    from zsgm_nada.layer_freeze import LayerFreeze

    def no_probe(*args, **kwargs):
        raise AssertionError("fixed slots must not run the W+ probe")

    monkeypatch.setattr(LayerFreeze, "select_slots", no_probe)
    r = recipe([{"use": "directional"}, {"use": "layer-freeze", "k": 18, "slots": [4, 3], "slot_map": "exact"}],
               steps=2)
    run = build_run(r, out_dir=tmp_path / "probe")
    before = {k: v.clone() for k, v in run.g_target.state_dict().items()}
    adapt(r, out_dir=tmp_path / "run")
    after = torch.load(checkpoint_path(tmp_path / "run"), weights_only=True)["target"]
    table = slot_layers(run.g_target.n_latent, len(run.g_target.convs), slot_map="exact")
    assert changed_modules(before, after) == set(table[3]) | set(table[4])  # k = 18 is not used


def test_layer_freeze_slot_out_of_range_fails_before_training(tmp_path):
    r = recipe([{"use": "directional"}, {"use": "layer-freeze", "slots": [1, 99]}])
    with pytest.raises(ValueError, match="slot 99 is out of range for a generator with"):
        adapt(r, out_dir=tmp_path / "run")
    assert not checkpoint_path(tmp_path / "run").exists()


@pytest.mark.parametrize("slots, message", [([], "at least one W\\+ slot"), ([2, 2], "lists a slot twice"),
                                            ([-1], "slot indices >= 0")])
def test_layer_freeze_bad_slots_name_the_field(slots, message):
    with pytest.raises(ValueError, match=r"techniques\[1\]\.slots: .*" + message):
        recipe([{"use": "directional"}, {"use": "layer-freeze", "slots": slots}])


def test_image_target_direction_is_cached_and_restored(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        path = tmp_path / f"style{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    r = recipe([{"use": "directional"}, {"use": "image-target", "n_source": 4}], steps=4,
               target=None, target_images=files)
    adapt(r, out_dir=tmp_path / "a", stop_after=2)
    saved = torch.load(checkpoint_path(tmp_path / "a"), weights_only=True)["techniques"]["image-target"]
    direction = saved["_extra_state"]["directions"]
    assert direction.shape[0] == 1 and torch.isclose(direction.norm(), torch.tensor(1.0), atol=1e-5)
    adapt(r, out_dir=tmp_path / "a", resume=True)
    adapt(r, out_dir=tmp_path / "b")
    a = torch.load(checkpoint_path(tmp_path / "a"), weights_only=True)["target"]
    b = torch.load(checkpoint_path(tmp_path / "b"), weights_only=True)["target"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nada_preset_has_public_defaults():
    data = get_registry().presets.get("nada").build()
    assert "target" not in data and data["source"] == "photo"  # the target is the user's to give
    assert data["optim"] == {"steps": 301, "batch_size": 2, "lr": 0.002, "mixing": 0.0}
    assert [m["name"] for m in data["clip"]["models"]] == ["ViT-B-32-quickgelu", "ViT-B-16-quickgelu"]
    freeze = data["techniques"][1]
    assert (freeze["k"], freeze["auto_layer_iters"], freeze["auto_layer_batch"], freeze["slot_map"]) == \
        (18, 1, 8, "nada")


def test_nada_preset_without_target_is_refused_in_one_line(tmp_path, capsys):
    from zsgm.cli import USER_ERROR_EXIT, main

    code = main(["adapt", "--preset", "nada", "--generator", "tiny-random", "--clip", "tiny-random",
                 "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == USER_ERROR_EXIT and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no target text" in err and "--target" in err
    assert not (tmp_path / "o").exists()


def test_layer_freeze_probe_without_text_fails_at_setup_before_training(tmp_path):
    path = tmp_path / "style.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    r = recipe([{"use": "directional"}, {"use": "image-target", "n_source": 2}, {"use": "layer-freeze", "k": 2}],
               target=None, target_images=[str(path)])
    run = build_run(r, out_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="layer-freeze needs a target text for its probe"):
        run.techniques[2].zsgm_setup(run=run)
    # with fixed slots there is no probe, so no text is needed
    r = recipe([{"use": "directional"}, {"use": "image-target", "n_source": 2},
                {"use": "layer-freeze", "slots": [3]}], target=None, target_images=[str(path)])
    run = build_run(r, out_dir=tmp_path / "run2")
    run.techniques[2].zsgm_setup(run=run)
