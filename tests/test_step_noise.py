"""Noise of the training forwards: fresh per forward (the released code's default) or one shared draw."""

import torch

from zsgm.recipe import recipe_from_dict
from zsgm.run import build_run
from zsgm.step import StepBatch


def _batch(tmp_path, noise):
    recipe = recipe_from_dict({
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": 2, "noise": noise},
        "run": {"device": "cpu", "progress": False},
        "techniques": [{"use": "directional"}],
    })
    run = build_run(recipe, out_dir=tmp_path)
    with torch.no_grad():  # tiny-random starts with zero noise strengths: make noise visible
        for g in (run.g_source, run.g_target):
            for name, p in g.named_parameters():
                if name.endswith("noise.weight"):
                    p.fill_(0.5)
    return run, StepBatch(run, 3)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_fresh_noise_differs_per_forward_and_is_reproducible(tmp_path):
    run, batch = _batch(tmp_path, "fresh")
    src, tgt, anchor = batch.noise_for("source"), batch.noise_for("target"), batch.noise_for("anchor")
    assert not _same(src, tgt) and not _same(tgt, anchor)
    assert batch.noise_for("source") is src  # memoised for the step
    again = StepBatch(run, 3)  # a resumed run redraws the same maps
    assert _same(again.noise_for("target"), tgt)
    # the source and target images of one latent now differ at step 0 (no zero image direction)
    assert not torch.equal(batch.src_images, batch.tgt_images.detach())


def test_shared_noise_feeds_every_forward_the_same_draw(tmp_path):
    _, batch = _batch(tmp_path, "shared")
    assert batch.noise_for("source") is batch.noise and batch.noise_for("anchor") is batch.noise
    assert torch.equal(batch.src_images, batch.tgt_images.detach())


def test_shared_noise_is_drawn_after_the_latents_from_the_batch_stream_and_fresh_draws_none(tmp_path):
    from zsgm.step import random_noise, sample_ws

    run, batch = _batch(tmp_path, "shared")
    rng = run.rng(3, "batch")  # the order a shared run has always used: ws first, then noise, one stream
    ws = sample_ws(run, run.recipe.optim.batch_size, rng, mixing=run.recipe.optim.mixing)
    assert torch.equal(batch.ws, ws) and _same(batch.noise, random_noise(run.g_source, ws.shape[0], rng, run.device))
    _, fresh = _batch(tmp_path / "fresh", "fresh")
    assert fresh.noise is None  # fresh noise is drawn per forward in noise_for; no unused shared draw
