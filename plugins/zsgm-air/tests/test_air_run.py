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


def recipe(steps=6, **air):
    return recipe_from_dict({
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}], "text_aggregate": "air"},
        "optim": {"steps": steps, "batch_size": 2, "lr": 0.01, "ema_decay": 0.9},
        "run": {"sample_every": 0, "checkpoint_every": 1, "n_samples": 2, "progress": False, "device": "cpu"},
        "techniques": [{"use": "directional"}, {**AIR, **air}],
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
    # the first step after a refresh sees G_t == G_anchor: zero image offset, guarded value 1 (as step 0 of L_dir)
    assert losses[3]["air/adaptive"] == pytest.approx(1.0)
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


def test_adaptive_term_matches_hand_computation(tmp_path):
    run = build_run(recipe(), out_dir=tmp_path)
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
    with torch.no_grad():  # G_t moves on after the snapshot
        for p in run.synthesis_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    run.batch = StepBatch(run, 3)
    (term,) = air.zsgm_loss(run, 3)
    with torch.no_grad():
        e_a = model.encode_image(air.anchor_generator.synthesis(run.batch.ws, noise=run.batch.noise))
        e_t = model.encode_image(run.g_target.synthesis(run.batch.ws, noise=run.batch.noise))
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
    assert (air["t_int"], air["t_thresh"], air["n_ctx"], air["prompt_align_iter"], air["prompt_lr"]) == \
        (30, 150, 4, 200, 1e-3)
    recipe_from_dict(data)  # valid as a recipe
