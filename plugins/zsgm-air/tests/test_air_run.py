"""The ``air`` technique inside real tiny runs: schedule, adaptive term, embedding cache, resume, preset."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from zsgm.checkpoint import checkpoint_path
from zsgm.loop import adapt
from zsgm.plugins import get_registry
from zsgm.recipe import RecipeError, recipe_from_dict
from zsgm.run import build_run
from zsgm.step import StepBatch
from zsgm_air.misalignment import main as misalignment_main
from zsgm_air.misalignment import misalignment
from zsgm_air.technique import Air

AIR = {"use": "air", "t_thresh": 2, "t_int": 2, "n_latents": 4, "refresh_batch": 3, "prompt_align_iter": 3}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on an oversubscribed machine two threads made them ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def recipe(steps=6, noise="fresh", extra_techniques=(), **air):
    return recipe_from_dict({
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}], "text_aggregate": "air"},
        "optim": {"steps": steps, "batch_size": 2, "lr": 0.01, "ema_decay": 0.9, "noise": noise},
        "run": {"sample_every": 0, "checkpoint_every": 1, "n_samples": 2, "progress": False, "device": "cpu"},
        "techniques": [{"use": "directional"}, *extra_techniques, {**AIR, **air}],
    })


def saved(out):
    return torch.load(checkpoint_path(out), weights_only=True)


def air_state(out):
    return saved(out)["techniques"]["air"]["_extra_state"]


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("air") / "reference"
    adapt(recipe(monitor_every=3), out_dir=out)
    return out


def test_schedule_terms_and_log(reference):
    losses = records(reference / "losses.jsonl")
    assert [("air/adaptive" in rec) for rec in losses] == [False, False, False, True, True, True]
    log = records(reference / "air.jsonl")
    assert [(r["step"], r["event"]) for r in log] == [(0, "setup"), (0, "monitor"), (2, "refresh"), (3, "monitor"),
                                                      (4, "refresh"), (5, "end")]
    first, second = log[2], log[4]
    assert first["anchor_from"] == -1 and second["anchor_from"] == 2
    assert first["alpha"] == pytest.approx(2 / 6) and second["alpha"] == pytest.approx(4 / 6)
    # before any anchor exists the anchor curve is the source curve (AIR rule on both sides)
    assert first["mis_anchor"][0] == pytest.approx(first["mis_source"][0], abs=1e-6)
    # the cache: G_s was embedded once (by the monitor at step 0); each refresh embeds only G_t
    assert (first["generator_forwards"], second["generator_forwards"]) == (4, 4)
    assert second["refresh_seconds_total"] >= second["seconds"] > 0 and 0 < second["refresh_share"] < 1
    state = air_state(reference)
    assert state["refreshes"] == 2 and state["anchor_step"] == 4 and state["last_step"] == 5
    assert state["t_last"][0].shape == (1, 64) and state["direction"][0].norm().item() == pytest.approx(1.0)


def test_cli_prints_the_curve(reference, capsys):
    assert misalignment_main([str(reference)]) == 0
    out = capsys.readouterr().out
    events = [line.split()[1] for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert events == ["monitor", "refresh", "monitor", "refresh"] and "refreshes: 2" in out


def test_resume_across_a_refresh_is_identical(reference, tmp_path):
    out = tmp_path / "resumed"
    adapt(recipe(monitor_every=3), out_dir=out, stop_after=3)  # steps 0-2; refresh after step 2
    partial = saved(out)
    anchor = partial["techniques"]["air"]["_extra_state"]["anchor"]
    assert all(torch.equal(anchor[k], partial["target"][k]) for k in anchor)  # the snapshot is G_t after step 2
    adapt(recipe(monitor_every=3), out_dir=out, resume=True)  # steps 3-5, refresh after step 4
    a, b = saved(reference), saved(out)
    for key in ("target", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    sa, sb = air_state(reference), air_state(out)
    assert sa["anchor"].keys() == sb["anchor"].keys()
    assert all(torch.equal(sa["anchor"][k], sb["anchor"][k]) for k in sa["anchor"])
    for key in ("t_last", "direction", "anchor_embeds", "source_embeds", "prompt_ctx"):
        assert all(torch.equal(x, y) for x, y in zip(sa[key], sb[key])), key
    assert [(r["step"], r["event"]) for r in records(out / "air.jsonl") if r["event"] != "end"] == \
        [(0, "setup"), (0, "monitor"), (2, "refresh"), (3, "resume"), (3, "monitor"), (4, "refresh")]


def test_recomputing_anchor_embeddings_equals_the_cache(reference, tmp_path):
    out = tmp_path / "nocache"
    adapt(recipe(reuse_anchor_embeddings=False), out_dir=out, stop_after=5)  # both refreshes, not step 5
    log = [r for r in records(out / "air.jsonl") if r["event"] == "refresh"]
    assert [r["generator_forwards"] for r in log] == [12, 8]  # G_s (kept for the curves) + G_s again + G_t; then 2
    sa, sb = air_state(reference), air_state(out)
    for key in ("t_last", "direction", "anchor_embeds"):
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(sa[key], sb[key])), key


@pytest.mark.parametrize("noise", ["fresh", "shared"])
def test_adaptive_term_matches_hand_computation(tmp_path, noise):
    run = build_run(recipe(noise=noise), out_dir=tmp_path)
    run.pm.hook.zsgm_setup(run=run)
    air = next(t for t in run.techniques if isinstance(t, Air))
    assert air.zsgm_loss(run, 0) == []  # no anchor yet: no term
    with torch.no_grad():
        for p in run.synthesis_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    air.refresh(run, 2)
    assert all(torch.equal(a, b) for a, b in zip(air.anchor_generator.state_dict().values(),
                                                  run.g_target.state_dict().values()))
    model = run.clip_models[0]
    tgt_feats = model.encode_text([t.format("sketch") for t in run.recipe.clip.template_list()])
    rows = F.normalize(tgt_feats - air.t_last[0], dim=-1)
    assert torch.allclose(air.direction[0], F.normalize(rows.mean(0), dim=0), atol=1e-6)
    # right after the refresh G_t == G_anchor: with shared noise the image offset is zero (guarded value 1, as
    # step 0 of L_dir); with fresh noise (the released code) anchor and target forwards differ by their noise
    run.batch = StepBatch(run, 3)
    (term,) = air.zsgm_loss(run, 3)
    if noise == "shared":
        assert term.value.item() == pytest.approx(1.0)
    else:
        assert abs(term.value.item() - 1.0) > 1e-4
    with torch.no_grad():  # G_t moves on after the snapshot
        for p in run.synthesis_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    run.batch = StepBatch(run, 3)
    (term,) = air.zsgm_loss(run, 3)
    with torch.no_grad():  # the anchor forward draws its own noise ("anchor"), the target forward "target"
        e_a = model.encode_image(air.anchor_generator.synthesis(run.batch.ws, noise=run.batch.noise_for("anchor")))
        e_t = model.encode_image(run.g_target.synthesis(run.batch.ws, noise=run.batch.noise_for("target")))
    d = F.normalize(e_t - e_a, dim=-1)
    expected = (1 - d @ air.direction[0]).mean()
    assert term.name == "adaptive" and term.value.item() == pytest.approx(expected.item(), abs=1e-5)
    term.value.backward()  # differentiable w.r.t. G_t only
    assert run.g_target.conv1.conv.weight.grad is not None
    assert all(p.grad is None for p in air.anchor_generator.parameters())
    mis = misalignment(run)
    assert len(mis) == 1 and 0 <= mis[0]["source"] <= 2 and 0 <= mis[0]["anchor"] <= 2


def test_recipe_errors_name_the_field():
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.ctx_init: 'a photo of' has 3 words but n_ctx = 4"):
        recipe(ctx_init="a photo of")
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.t_int: must be > 0"):
        recipe(t_int=0)


def test_air_preset_has_published_defaults():
    data = get_registry().presets.get("air").build()
    assert data["optim"] == {"steps": 301, "batch_size": 2, "lr": 0.002, "mixing": 0.0, "ema_decay": 0.99}
    assert [m["name"] for m in data["clip"]["models"]] == ["ViT-B-32-quickgelu"]
    assert data["clip"]["text_aggregate"] == "air"
    uses = {t["use"]: t for t in data["techniques"]}
    assert uses["directional"]["weight"] == uses["air"]["weight"] == 1.0
    freeze = uses["layer-freeze"]
    assert (freeze["k"], freeze["slot_map"]) == (18, "nada")
    air = uses["air"]
    assert (air["n_ctx"], air["prompt_align_iter"], air["prompt_lr"], air["update_at_step_0"]) == (4, 200, 1e-3, False)
    recipe_from_dict({**data, "target": "sketch"})  # valid as a recipe once the user names the target


def test_air_preset_has_no_default_target():
    data = get_registry().presets.get("air").build()
    assert "target" not in data and data["source"] == "photo"
    with pytest.raises(RecipeError, match=r"target: required"):
        recipe_from_dict(data)


def released_refresh_iterations(iters: int, t_thresh: int, t_int: int) -> list[int]:
    """AIR train.py: after iteration i of range(iters), refresh when i != 0, i % t_int == 0 and i >= t_thresh.

    zsgm leaves out the refresh after the last iteration (no later step reads it)."""
    return [i for i in range(iters) if i != 0 and i % t_int == 0 and i >= t_thresh and i < iters - 1]


@pytest.mark.parametrize(("steps", "t_thresh", "t_int"), [(301, 150, 30), (201, 100, 20)])
def test_preset_schedule_reproduces_the_released_runs(steps, t_thresh, t_int):
    data = get_registry().presets.get("air").build()
    r = recipe_from_dict({**data, "target": "sketch", "optim": {**data["optim"], "steps": steps}})
    config = next(u.config for u in r.techniques if u.use == "air")
    assert config.schedule(steps) == (t_thresh, t_int)
    assert config.refresh_steps(steps) == released_refresh_iterations(steps, t_thresh, t_int)


def test_preset_schedule_follows_a_short_run():
    data = get_registry().presets.get("air").build()
    r = recipe_from_dict({**data, "target": "sketch", "optim": {**data["optim"], "steps": 100}})
    config = next(u.config for u in r.techniques if u.use == "air")
    assert config.schedule(100) == (50, 10) and config.refresh_steps(100) == [50, 60, 70, 80, 90]


def test_a_schedule_that_never_refreshes_is_refused_at_recipe_build():
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.t_thresh: the first refresh would follow step 150, "
                                          r"but in a run of optim.steps = 100"):
        recipe(steps=100, t_thresh=150, t_int=30)
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.t_int: no multiple of t_int = 99 lies between "
                                          r"t_thresh = 50 and step 98"):
        recipe(steps=100, t_thresh=50, t_int=99)
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.t_thresh_frac: the first refresh would follow step 1"):
        recipe(steps=2, t_thresh=None, t_int=None)  # fractions of a 2-step run: nothing after step 0 can matter
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.t_thresh: give t_thresh \(steps\) or t_thresh_frac"):
        recipe(t_thresh_frac=0.5)
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.t_int_frac: must be in \(0, 1\], got 0.0"):
        recipe(t_int=None, t_int_frac=0.0)


def released_step0(optimizer_state: dict, target: dict, ema: dict, source: dict) -> bool:
    """AIR train.py at i = 0: the loss is computed (no grad), then no backward, no g_optim.step, no EMA and no
    layer selection; so after it G_t and the EMA equal the source weights and Adam holds no state."""
    same = all(torch.equal(target[k], source[k]) for k in source) and all(torch.equal(ema[k], source[k])
                                                                          for k in source)
    return same and not optimizer_state["state"]


FREEZE = {"use": "layer-freeze", "k": 2, "auto_layer_iters": 1, "auto_layer_batch": 2, "slot_map": "nada"}


@pytest.mark.parametrize("freeze", [False, True])
def test_step_0_updates_nothing_as_the_released_loop(tmp_path, freeze):
    extra = [FREEZE] if freeze else []
    out = tmp_path / "a"
    adapt(recipe(extra_techniques=extra), out_dir=out, stop_after=1)
    state = saved(out)
    source = build_run(recipe(extra_techniques=extra), out_dir=tmp_path / "unused").g_source.state_dict()
    assert released_step0(state["optimizer"], state["target"], state["ema"], source)
    assert "total" in records(out / "losses.jsonl")[0]  # the loss of step 0 is computed and logged
    adapt(recipe(extra_techniques=extra), out_dir=out, resume=True, stop_after=2)  # steps 1 and 2 train
    state = saved(out)
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {2}  # two Adam steps for three loop steps (released: 301 iterations, 300 updates)
    assert not all(torch.equal(state["target"][k], source[k]) for k in source)


def test_update_at_step_0_trains_step_0(tmp_path):
    adapt(recipe(update_at_step_0=True), out_dir=tmp_path / "a", stop_after=1)
    state = saved(tmp_path / "a")
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {1}
