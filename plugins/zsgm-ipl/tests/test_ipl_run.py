"""IPL inside real (tiny) runs: stage 1 in setup, per-sample directions consumed by 'directional', layer-freeze's
automatic k, several CLIP models, and resume without re-training the mapper."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
import torch.nn.functional as F

from zsgm.checkpoint import checkpoint_path
from zsgm.loop import adapt
from zsgm.recipe import RecipeError, recipe_from_dict
from zsgm.run import RunError, build_run
from zsgm.step import StepBatch
from zsgm.technique import directional_loss
from zsgm_ipl.technique import IPL, check_ipl

IPL_SMALL = {"use": "ipl", "iter_mapper": 3, "batch_mapper": 4}


def recipe(techniques, steps=3, clip_models=None, **extra):
    data = {
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": clip_models or [{"name": "tiny-random"}]},
        "optim": {"steps": steps, "batch_size": 2, "lr": 0.01, "ema_decay": 0.99},
        "run": {"sample_every": 0, "checkpoint_every": 1, "n_samples": 2, "progress": False, "device": "cpu"},
        "techniques": techniques,
    }
    data.update(extra)
    return recipe_from_dict(data)


def hand_directions(ipl: IPL, model, ws: torch.Tensor, hard_texts: list[str]) -> torch.Tensor:
    """dT_i built step by step from the CLIP text tower, independently of DomainPrompts."""
    mapper = ipl.mappers[0]
    with torch.no_grad():
        ctx = mapper(ws[:, 0])  # [N, 4, W]
        n = ctx.shape[0]
        hard = model.model.encode_text(model.tokenize(hard_texts))  # [2, D] unnormalised
        out = []
        for c, cls in enumerate(["photo", "sketch"]):
            tokens, embeds = model.token_embeddings([f"a photo of a {cls}"] * n)  # IPL: no full stop
            embeds = torch.cat([embeds[:, :1], ctx, embeds[:, 5:]], dim=1)
            prompt = model.encode_token_embeddings(embeds, tokens)  # [N, D] unnormalised
            out.append(F.normalize(prompt + hard[c], dim=-1))
    return F.normalize(out[1] - out[0], dim=-1)


@pytest.mark.parametrize("hard", ["class", "classless"])
def test_directions_are_per_sample_and_drive_the_directional_loss(tmp_path, hard):
    r = recipe([{**IPL_SMALL, "stage2_hard_prompt": hard}, {"use": "directional"}])
    run = build_run(r, out_dir=tmp_path)
    run.pm.hook.zsgm_setup(run=run)
    ipl = run.techniques[0]
    assert ipl.trained and len(ipl.mappers) == 1
    assert not any(p.requires_grad for p in ipl.mappers[0].parameters())  # frozen for stage 2
    lines = (tmp_path / "ipl-stage1.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in lines] == [0, 1, 2]

    run.batch = StepBatch(run, 0)
    (directions,) = run.batch.directions()
    model = run.clip_models[0]
    texts = ["a photo of a photo.", "a photo of a sketch."] if hard == "class" else ["a photo of a"] * 2
    assert directions.shape == (2, 64)
    assert torch.allclose(directions, hand_directions(ipl, model, run.batch.ws, texts), atol=1e-5)
    assert not torch.allclose(directions[0], directions[1])  # image-specific, not one global direction
    (term,) = run.pm.hook.zsgm_loss(run=run, step=0)[0]
    expected = directional_loss(run.batch.src_embeds(0), run.batch.tgt_embeds(0), directions)
    assert torch.allclose(term.value, expected)


def test_end_to_end_with_layer_freeze_auto_k_and_two_clip_models(tmp_path):
    r = recipe([{**IPL_SMALL, "auto_layer_k": True}, {"use": "directional"},
                {"use": "layer-freeze", "auto_layer_batch": 2, "slot_map": "nada"}],
               clip_models=[{"name": "tiny-random"}, {"name": "tiny-random", "weight": 0.5}])
    run = build_run(r, out_dir=tmp_path / "probe")
    before = {k: v.clone() for k, v in run.g_target.state_dict().items()}
    result = adapt(r, out_dir=tmp_path / "run")
    assert result.steps_done == 3 and torch.isfinite(torch.tensor(result.last_losses["total"]))
    state = torch.load(checkpoint_path(tmp_path / "run"), weights_only=True)
    extra = state["techniques"]["ipl"]["_extra_state"]
    assert extra["trained"] == 1 and extra["n_mappers"] == 2
    assert extra["mapper1.mapping.4.weight"].shape == (4 * 64, 64)
    assert any(not torch.equal(before[k], v) for k, v in state["target"].items())
    record = json.loads((tmp_path / "run" / "ipl-stage1.jsonl").read_text().splitlines()[-1])
    assert {"clip0/contrastive", "clip1/domain_tgt", "total"} <= set(record)

    # the automatic k reaches this run's layer-freeze instance (n_latent 8 -> 5), not the recipe entry
    run.pm.hook.zsgm_setup(run=run)
    freeze = run.techniques[2]
    assert freeze.config.k == 5 and run.techniques[0].layer_k == 5 and r.techniques[2].config.k is None
    run.pm.hook.zsgm_before_step(run=run, step=0)
    assert len(freeze.last_slots) == 5


def test_auto_layer_k_that_cannot_act_is_refused_at_recipe_build():
    with pytest.raises(RecipeError, match=r"techniques\[0\]\.auto_layer_k: true, but techniques\[2\] "
                                          r"\('layer-freeze'\) sets k = 3 itself"):
        recipe([{**IPL_SMALL, "auto_layer_k": True}, {"use": "directional"}, {"use": "layer-freeze", "k": 3}])
    with pytest.raises(RecipeError, match=r"techniques\[0\]\.auto_layer_k: true, but techniques\[2\] "
                                          r"\('layer-freeze'\) trains fixed slots"):
        recipe([{**IPL_SMALL, "auto_layer_k": True}, {"use": "directional"}, {"use": "layer-freeze", "slots": [1]}])
    with pytest.raises(RecipeError, match=r"techniques\[0\]\.auto_layer_k: true, but the recipe has no "
                                          r"'layer-freeze'"):
        recipe([{**IPL_SMALL, "auto_layer_k": True}, {"use": "directional"}])


def test_setup_errors_are_clear(tmp_path):
    r = recipe([IPL_SMALL, {"use": "directional"}])
    assert check_ipl(r.techniques[0].config, attrs.evolve(r, target=None)) == [
        "use: 'ipl' needs a target text (recipe.target): its prompts name the target class"]
    with pytest.raises(RunError, match="needs a target text"):  # a Recipe built by hand still stops at setup
        adapt(attrs.evolve(r, target=None), out_dir=tmp_path / "a")
    r = recipe([{**IPL_SMALL, "ctx_init": "a photo of"}, {"use": "directional"}])
    with pytest.raises(RunError, match="technique 'ipl': ctx_init 'a photo of' .*n_ctx = 4"):
        adapt(r, out_dir=tmp_path / "b")


def test_empty_ctx_init_uses_placeholder_words(tmp_path):
    r = recipe([{**IPL_SMALL, "ctx_init": "", "n_ctx": 2, "iter_mapper": 1}, {"use": "directional"}])
    run = build_run(r, out_dir=tmp_path)
    run.pm.hook.zsgm_setup(run=run)
    model = run.clip_models[0]
    hard = model.model.encode_text(model.tokenize(["X X photo.", "X X sketch."]))
    assert torch.allclose(run.techniques[0].prompts[0].hard["class"], hard, atol=1e-5)


def test_resume_reuses_the_mapper_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    calls = []
    train = IPL.train_mappers

    def counting(self, run):
        calls.append(str(run.out_dir))
        return train(self, run)

    monkeypatch.setattr(IPL, "train_mappers", counting)
    r = recipe([IPL_SMALL, {"use": "directional"}, {"use": "layer-freeze", "k": 4, "auto_layer_batch": 2}], steps=4)
    adapt(r, out_dir=tmp_path / "a", stop_after=2)
    assert len(calls) == 1
    adapt(r, out_dir=tmp_path / "a", resume=True)
    assert len(calls) == 1  # the resumed run restored the mapper instead of training it again
    adapt(r, out_dir=tmp_path / "b")
    assert len(calls) == 2
    a = torch.load(checkpoint_path(tmp_path / "a"), weights_only=True)
    b = torch.load(checkpoint_path(tmp_path / "b"), weights_only=True)
    assert a["next_step"] == b["next_step"] == 4
    for key in ("target", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in b[key])
    ea, eb = a["techniques"]["ipl"]["_extra_state"], b["techniques"]["ipl"]["_extra_state"]
    assert ea.keys() == eb.keys()
    assert all(torch.equal(ea[k], eb[k]) if torch.is_tensor(eb[k]) else ea[k] == eb[k] for k in eb)
