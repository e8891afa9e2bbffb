"""Layer freezing against the released NADA code's semantics (ZSSGAN.determine_opt_layers + train.py).

The reference loop below is written from the original's semantics, not from zsgm's loop: every step it
unfreezes the whole generator, runs the W+ probe with plain SGD and ``loss.backward()`` (so the probe's
backward reaches every synthesis parameter), freezes all but the top-k slots' layers (NADA's list
``[conv1, to_rgb1] + convs``), clears gradients the torch < 2 way (``zero_grad()`` fills zeros, it does not drop
them), backpropagates the loss and takes an Adam step with the rosinality convention
(lr * 0.8, betas (0 ** 0.8, 0.99 ** 0.8)). The probe text is the bare target class.
"""

from __future__ import annotations

import pytest
import torch

from zsgm.checkpoint import checkpoint_path
from zsgm.loop import adapt
from zsgm.recipe import recipe_from_dict
from zsgm.run import build_run
from zsgm.step import StepBatch, random_noise
from zsgm.technique import directional_loss, global_clip_loss

STEPS = 8


def recipe(**freeze):
    return recipe_from_dict({
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": STEPS, "batch_size": 2, "lr": 0.01},
        "run": {"sample_every": 0, "checkpoint_every": STEPS, "n_samples": 2, "progress": False},
        "techniques": [{"use": "directional"},
                       {"use": "layer-freeze", "k": 2, "auto_layer_batch": 2, "slot_map": "nada", **freeze}],
    })


def nada_probe(run, step: int, k: int, batch: int, iters: int, lr: float) -> list[int]:
    """determine_opt_layers: SGD on a W+ copy against the global loss with the bare target; top-k slots.

    Draws its latents and noise from the stream zsgm's probe uses, so both choose from the same samples.
    """
    g = run.g_target
    rng = run.rng(step, "layer-freeze")
    z = torch.randn((batch, g.arch.style_dim), generator=rng)  # [B, D]
    noise = random_noise(g, batch, rng, run.device)
    with torch.no_grad():
        initial = run.g_source.mapping(z)[:, None, :].repeat(1, g.n_latent, 1)  # [B, L, D]
    w_codes = initial.clone().requires_grad_(True)
    w_optim = torch.optim.SGD([w_codes], lr=lr)
    for _ in range(iters):
        img = g.synthesis(w_codes, noise=noise)
        loss = sum(weight * global_clip_loss(model.encode_image(img), model.encode_text([run.recipe.target])[0])
                   for model, weight in zip(run.clip_models, run.clip_weights))
        w_optim.zero_grad()
        loss.backward()  # also fills .grad of every synthesis parameter: all are unfrozen during the probe
        w_optim.step()
    score = (w_codes.detach() - initial).abs().mean(dim=-1).mean(dim=0)  # [L]
    return torch.topk(score, k).indices.tolist()


def original_weights(r, out_dir) -> tuple[dict, list[list[int]]]:
    """Target generator weights after STEPS steps of the released code's loop; also the slots chosen."""
    run = build_run(r, out_dir=out_dir)
    cfg = run.techniques[1].config
    g = run.g_target
    params = run.synthesis_parameters()
    modules = run.named_synthesis_modules()
    idx_to_layer = ["conv1", "to_rgb1"] + [f"convs.{i}" for i in range(len(g.convs))]
    o = r.optim
    optim = torch.optim.Adam(params, lr=o.lr * 0.8, betas=(0.0 ** 0.8, 0.99 ** 0.8))
    chosen_per_step = []
    for step in range(STEPS):
        for p in params:  # unfreeze_layers()
            p.requires_grad_(True)
        chosen = nada_probe(run, step, cfg.k, cfg.auto_layer_batch, cfg.auto_layer_iters, cfg.probe_lr)
        chosen_per_step.append(sorted(chosen))
        for p in params:  # freeze_layers(); unfreeze_layers(chosen)
            p.requires_grad_(False)
        for idx in chosen:
            for p in modules[idx_to_layer[idx]].parameters():
                p.requires_grad_(True)
        run.batch = batch = StepBatch(run, step)
        directions = batch.directions()
        loss = sum(weight * directional_loss(batch.src_embeds(i), batch.tgt_embeds(i), directions[i])
                   for i, weight in enumerate(run.clip_weights))
        for p in params:  # torch < 2: Module.zero_grad() zeroes existing gradients, it does not drop them
            if p.grad is not None:
                p.grad.detach_()
                p.grad.zero_()
        loss.backward()
        optim.step()
    return {k: v.detach().clone() for k, v in g.state_dict().items()}, chosen_per_step


def zsgm_weights(r, out_dir) -> dict:
    adapt(r, out_dir=out_dir)
    return torch.load(checkpoint_path(out_dir), weights_only=True)["target"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return original_weights(recipe(), tmp_path_factory.mktemp("ref"))


def test_frozen_layers_step_in_adam_as_in_the_released_code(tmp_path, released):
    expected, chosen = released
    assert len({tuple(c) for c in chosen}) > 1, "the probe must choose different slots over the steps"
    ours = zsgm_weights(recipe(), tmp_path / "zsgm")
    mismatched = [k for k in expected if not torch.allclose(ours[k], expected[k], rtol=0, atol=1e-6)]
    assert not mismatched, f"differs from the released code's loop: {mismatched}"


def test_skip_leaves_frozen_layers_out_of_adam_and_so_differs_from_the_released_code(tmp_path, released):
    expected, _ = released
    ours = zsgm_weights(recipe(frozen_adam="skip"), tmp_path / "zsgm")
    differs = [k for k in expected if not torch.allclose(ours[k], expected[k], rtol=0, atol=1e-6)]
    assert differs  # a layer trained again after being frozen sees a different Adam step count / moment


def test_probe_uses_the_bare_target_class(tmp_path, monkeypatch):
    r = recipe()
    run = build_run(r, out_dir=tmp_path / "probe")
    model = run.clip_models[0]
    seen = []
    original = type(model).encode_text

    def spy(self, texts, **kwargs):
        seen.extend(texts)
        return original(self, texts, **kwargs)

    monkeypatch.setattr(type(model), "encode_text", spy)
    run.techniques[1].select_slots(run, 0)
    assert seen and set(seen) == {"sketch"}


def test_frozen_adam_refuses_unknown_values():
    with pytest.raises(ValueError, match=r"techniques\[1\]\.frozen_adam"):
        recipe(frozen_adam="sometimes")
