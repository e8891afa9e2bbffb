"""One-shot techniques inside real (tiny) runs: end to end with a random discriminator, bit-identical resume of
the discriminator and its optimiser, the reference search and its caches, the patch discriminator's maps."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file

from oneshot_helpers import oneshot_techniques, search_entry, tiny_recipe
from zsgm.checkpoint import checkpoint_path
from zsgm.loop import adapt
from zsgm.recipe import recipe_from_dict
from zsgm.run import build_run
from zsgm.step import random_noise
from zsgm_oneshot.adversarial import Adversarial, AdversarialConfig, RandomDiscriminatorWarning
from zsgm_oneshot.augment import augment_views
from zsgm_oneshot.common import load_reference


def _load(run_dir):
    return torch.load(checkpoint_path(run_dir), weights_only=True)


def _equal_nested(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal_nested(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal_nested(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.slow
def test_end_to_end_on_tiny_random_with_a_random_discriminator(tmp_path, reference):
    r = recipe_from_dict(tiny_recipe(reference, oneshot_techniques(ref_freq=2, d_reg_every=2), steps=4))
    run = build_run(r, out_dir=tmp_path / "probe")  # only to read the initial weights
    d_before = {k: v.clone() for k, v in run.techniques[3].discriminator.state_dict().items()}
    g_before = {k: v.clone() for k, v in run.g_target.state_dict().items()}
    with pytest.warns(RandomDiscriminatorWarning, match="randomly initialised discriminator.*faithful run"):
        result = adapt(r, out_dir=tmp_path / "run")
    assert result.generator_path is not None and result.generator_path.exists()
    lines = [line for line in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    import json

    records = [json.loads(line) for line in lines]
    ref_keys = {"adversarial/adversarial", "reference-reconstruction/lpips", "reference-reconstruction/mse", "total"}
    normal_keys = {"adversarial/adversarial", "clip-consistency/consistency", "patch-contrastive/patch", "total"}
    assert [set(rec) - {"step"} for rec in records] == [ref_keys, normal_keys, ref_keys, normal_keys]
    state = _load(tmp_path / "run")
    d_after = state["techniques"]["adversarial"]
    assert any(not torch.equal(d_before[k], d_after["discriminator." + k]) for k in d_before)  # D trained
    assert set(state["technique_optimizers"]) == {"adversarial/discriminator"}
    target = state["target"]
    for name, value in g_before.items():  # frozen: the mapping, to_rgb1, to_rgbs; the rest trains
        moved = not torch.equal(value, target[name])
        if name.startswith(("style.", "to_rgb1.", "to_rgbs.")):
            assert not moved, name
    assert not torch.equal(g_before["convs.0.conv.weight"], target["convs.0.conv.weight"])
    folder = tmp_path / "run" / "reference"
    w_ref = load_file(folder / "latent.safetensors")["w_ref"]
    assert w_ref.shape == (1, run.g_source.n_latent, run.g_source.arch.style_dim)
    assert torch.equal(w_ref, state["techniques"]["reference-search"]["w_ref"])
    assert (folder / "reference.png").is_file() and (folder / "reconstruction.png").is_file()


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical_including_the_discriminator(tmp_path, reference, monkeypatch):
    from zsgm_oneshot.reference import ReferenceSearch

    r = recipe_from_dict(tiny_recipe(reference, oneshot_techniques(ref_freq=2, d_reg_every=2), steps=5))
    search = ReferenceSearch.search

    def no_search(self, run):
        raise AssertionError("a resumed run must not search again")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomDiscriminatorWarning)
        adapt(r, out_dir=tmp_path / "a", stop_after=3)
        monkeypatch.setattr(ReferenceSearch, "search", no_search)
        resumed = adapt(r, out_dir=tmp_path / "a", resume=True)
        monkeypatch.setattr(ReferenceSearch, "search", search)
        monkeypatch.setenv("ZSGM_CACHE", str(tmp_path / "other-cache"))  # b searches itself: same seeded result
        adapt(r, out_dir=tmp_path / "b")
    assert resumed.steps_done == 5
    a, b = _load(tmp_path / "a"), _load(tmp_path / "b")
    for key in ("target", "ema", "optimizer", "techniques", "technique_optimizers"):
        assert _equal_nested(a[key], b[key]), key
    assert a["technique_optimizers"]["adversarial/discriminator"]["state"]  # Adam state was really saved
    assert (tmp_path / "a" / "losses.jsonl").read_text() == (tmp_path / "b" / "losses.jsonl").read_text()


def test_resume_with_a_changed_reference_file_is_refused(tmp_path, reference, private_cache):
    from PIL import Image

    from zsgm.run import RunError

    r = recipe_from_dict(tiny_recipe(reference, [search_entry(), {"use": "clip-consistency"}], steps=3))
    adapt(r, out_dir=tmp_path / "a", stop_after=1)
    Image.new("RGB", (16, 16), (200, 10, 10)).save(reference)  # the user replaced the image at the same path
    with pytest.raises(RunError, match=r"reference image .* has changed since this run started"):
        adapt(r, out_dir=tmp_path / "a", resume=True)


def _setup_search(tmp_path, reference, name: str, **options):
    recipe = recipe_from_dict(tiny_recipe(reference, [search_entry(**options), {"use": "clip-consistency"}]))
    run = build_run(recipe, out_dir=tmp_path / name)
    technique = run.techniques[0]
    technique.zsgm_setup(run=run)
    return run, technique


@pytest.mark.slow
def test_reference_search_is_cached_across_runs(tmp_path, reference, private_cache, capsys):
    run, first = _setup_search(tmp_path, reference, "one")
    assert first.origin == "search" and len(first.history) == 2
    files = list((private_cache / "reference-latents").glob("*.safetensors"))
    assert len(files) == 1
    assert torch.equal(load_file(tmp_path / "one" / "reference" / "latent.safetensors")["w_ref"], first.w_ref)
    _, second = _setup_search(tmp_path, reference, "two")
    assert second.origin == "cache" and second.history == []
    assert torch.equal(second.w_ref, first.w_ref)
    assert "reusing the reference latent cached in" in capsys.readouterr().err
    _, other = _setup_search(tmp_path, reference, "three", iterations=1)  # other settings: another key
    assert other.origin == "search" and len(list((private_cache / "reference-latents").glob("*"))) == 2
    _, uncached = _setup_search(tmp_path, reference, "four", cache=False)
    assert uncached.origin == "search" and torch.equal(uncached.w_ref, first.w_ref)  # seeded: same result


@pytest.mark.slow
def test_reference_search_first_step_follows_the_published_objective(tmp_path, reference):
    """One Adam step from w̄ on L = l_clip * mean_v [1 - cos] + l_l2 * mean((w - w̄)^2) + l_rec * (LPIPS + MSE),
    recomputed here from the formula with the run's draws."""
    opts = {"iterations": 1, "lambda_clip": 0.7, "lambda_l2": 0.3, "lambda_rec": 1.5, "cache": False, "lr": 0.05}
    run, technique = _setup_search(tmp_path, reference, "one", **opts)
    g, model = run.g_source, run.clip_models[0]
    ref = load_reference(run)
    w_mean = g.mean_latent(64, generator=run.rng(0, "reference-search/mean"))
    w = w_mean.clone().requires_grad_(True)
    image = g.synthesis(w[:, None, :].repeat(1, g.n_latent, 1),
                        noise=random_noise(g, 1, run.rng(0, "reference-search/noise"), run.device))
    views = augment_views(image, views=2, rng=run.rng(0, "reference-search/aug"))
    with torch.no_grad():
        e_ref = model.encode_image(ref)[0]
    from zsgm.perceptual import load_lpips

    lpips = load_lpips("standin")
    loss = 0.7 * (1 - model.encode_image(views) @ e_ref).mean() + 0.3 * ((w - w_mean) ** 2).mean() \
        + 1.5 * (lpips(image, ref).mean() + ((image - ref) ** 2).mean())
    (grad,) = torch.autograd.grad(loss, w)
    expected = w_mean - 0.05 * grad / (grad.abs() + 1e-8)  # Adam's first step: lr * g / (|g| + eps)
    assert torch.allclose(technique.w_ref[0, 0], expected[0], atol=1e-6)
    assert torch.equal(technique.w_ref[0, 0], technique.w_ref[0, -1])  # one w broadcast to every slot
    assert technique.history[0]["total"] == pytest.approx(float(loss.detach()), rel=1e-5)


def released_patch_scores(d, heads, x):
    """The released Patch_Discriminator walk: conv1 and conv2 maps of each block with a side of 32 or 16 (any
    channel count here), stop at the fourth, score each with its head."""
    feats = []
    h = d.convs[0](x)
    for block in list(d.convs)[1:]:
        t1 = block.conv1(h)
        if t1.shape[2] in (32, 16):
            feats.append(t1)
        t2 = block.conv2(t1)
        if t2.shape[2] in (32, 16):
            feats.append(t2)
        h = block(h)
        if len(feats) == 4:
            break
    return [head(f) for head, f in zip(heads, feats)]


def test_patch_mode_scores_the_released_maps_with_the_extra_head():
    from zsgm.generator.discriminator import ConvLayer, DiscriminatorArch, patch_taps, random_discriminator

    d = random_discriminator(DiscriminatorArch.rosinality(64, channel_max=8), seed=0)
    technique = Adversarial(AdversarialConfig(patch_levels=4))
    technique.discriminator = d
    technique.taps = patch_taps(d.arch, channels=None, sides=(32, 16), limit=4)
    shapes = d.arch.tap_shapes()
    torch.manual_seed(0)
    technique.heads = torch.nn.ModuleList(ConvLayer(shapes[t][0], 1, 3) for t in technique.taps)
    x = torch.randn(2, 3, 64, 64)
    expected = released_patch_scores(d, technique.heads, x)
    assert len(expected) == 4 and [tuple(e.shape) for e in expected] == [(2, 1, 32, 32), (2, 1, 32, 32),
                                                                          (2, 1, 16, 16), (2, 1, 16, 16)]
    taps, heads = technique.taps, technique.heads
    for level in range(4):  # each map alone: the head scores exactly the released map
        technique.taps, technique.heads = [taps[level]], torch.nn.ModuleList([heads[level]])
        assert torch.allclose(technique.score(x, "patch", torch.Generator()), expected[level])
    technique.taps, technique.heads = taps, heads
    rng = torch.Generator().manual_seed(0)
    draws = [technique.score(x, "patch", rng) for _ in range(3)]  # the level is drawn from rng, as released p_ind
    assert all(any(e.shape == d.shape and torch.allclose(e, d) for e in expected) for d in draws)
    assert technique.score(x, "global", rng).shape == (2, 1)


@pytest.mark.slow
def test_clip_losses_train_with_a_text_target(tmp_path, reference):
    pytest.importorskip("zsgm_nada")
    data = tiny_recipe(reference, [{"use": "directional"}, {"use": "clip-consistency", "weight": 10.0},
                                   {"use": "patch-contrastive", "n_crops": 3}], steps=2, target="sketch")
    del data["target_images"]
    result = adapt(recipe_from_dict(data), out_dir=tmp_path / "run")
    assert set(result.last_losses) == {"directional/directional", "clip-consistency/consistency",
                                       "patch-contrastive/patch", "total"}


@pytest.mark.slow
def test_discriminator_step_follows_the_released_update(tmp_path, reference):
    """Step 0 of a recipe without reference steps, redone in the released style: patch logits of fresh fakes and
    flipped references, logistic loss, Adam at lr * 16/17 with betas (0, 0.99 ** (16/17)); then (0 % 16 == 0) the
    lazy R1 step r1 / 2 * penalty * 16 on the per-image mean of the patch logits."""
    import copy

    import torch.nn.functional as F

    from zsgm.step import sample_ws

    data = tiny_recipe(reference, [{"use": "adversarial"}, {"use": "clip-consistency"}], steps=1)
    with pytest.warns(RandomDiscriminatorWarning):
        run = build_run(recipe_from_dict(data), out_dir=tmp_path / "run")
    run.pm.hook.zsgm_setup(run=run)
    run.collect_technique_optimizers()
    technique = run.techniques[0]
    d, head, tap = copy.deepcopy(technique.discriminator), copy.deepcopy(technique.heads[0]), technique.taps[0]
    for p in list(d.parameters()) + list(head.parameters()):
        p.requires_grad_(True)
    head_before = technique.heads[0][0].weight.detach().clone()
    technique.zsgm_before_step(run=run, step=0)

    ratio = 16 / 17
    optimizer = torch.optim.Adam(list(d.parameters()) + list(head.parameters()), lr=0.002 * ratio,
                                 betas=(0.0, 0.99 ** ratio))
    rng = run.rng(0, "adversarial/d")
    g = run.g_target
    with torch.no_grad():
        ws = sample_ws(run, 2, rng, mixing=0.9)
        fake = g.synthesis(ws, noise=random_noise(g, 2, rng, run.device))
        ref = load_reference(run).expand(2, -1, -1, -1)
        flip = (torch.rand(2, generator=rng) < 0.5)[:, None, None, None]
        real = torch.where(flip, ref.flip(-1), ref).contiguous()

    def patch_logits(x):
        torch.randint(0, 1, (1,), generator=rng)  # the released p_ind draw (highp = 1)
        return head(d.features(x, [tap])[0])

    fake_pred, real_pred = patch_logits(fake), patch_logits(real)
    loss = F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    real = real.clone().requires_grad_(True)
    pred = patch_logits(real).view(2, -1).mean(dim=1).unsqueeze(1)
    (grad,) = torch.autograd.grad(pred.sum(), real, create_graph=True)
    penalty = grad.pow(2).reshape(2, -1).sum(1).mean()
    optimizer.zero_grad()
    (10 / 2 * penalty * 16 + 0 * pred[0]).sum().backward()
    optimizer.step()

    assert technique.last["d"] == pytest.approx(float(loss.detach()), rel=1e-6)
    assert technique.last["r1"] == pytest.approx(float(penalty.detach()), rel=1e-5)
    ours = dict(technique.discriminator.named_parameters()) | {f"head.{k}": v for k, v in
                                                               technique.heads[0].named_parameters()}
    theirs = dict(d.named_parameters()) | {f"head.{k}": v for k, v in head.named_parameters()}
    for name, p in theirs.items():
        assert torch.allclose(ours[name], p, atol=1e-7), name
    assert not torch.equal(head_before, technique.heads[0][0].weight)  # the step did move the head
    assert not any(p.requires_grad for p in ours.values())  # frozen again for the generator step


def test_reference_cache_key_changes_with_the_clip_weights(tmp_path, reference, private_cache):
    recipe = recipe_from_dict(tiny_recipe(reference, [search_entry(), {"use": "clip-consistency"}]))
    run = build_run(recipe, out_dir=tmp_path / "run")
    search = run.techniques[0]
    before = search.cache_file(run)
    assert search.cache_file(run) == before  # the key is stable
    with torch.no_grad():
        next(run.clip_models[0].parameters()).add_(1e-3)  # another CLIP file under the same name
    assert search.cache_file(run) != before


def test_best_of_start_is_the_lowest_loss_candidate(tmp_path, reference):
    """init = "best-of" with no iterations: w_ref is the mapped candidate of lowest search loss, each candidate
    scored here from the objective (no augmentation) with the run's draws."""
    from zsgm.perceptual import load_lpips

    opts = {"iterations": 0, "init": "best-of", "candidates": 6, "lambda_clip": 0.7, "lambda_l2": 0.3,
            "lambda_rec": 1.5, "cache": False}
    run, technique = _setup_search(tmp_path, reference, "one", **opts)
    g, model = run.g_source, run.clip_models[0]
    ref = load_reference(run)
    w_mean = g.mean_latent(64, generator=run.rng(0, "reference-search/mean"))
    z = torch.randn((6, g.arch.style_dim), generator=run.rng(0, "reference-search/candidates"))
    with torch.no_grad():
        w = g.mapping(z)
        image = g.synthesis(w[:, None, :].repeat(1, g.n_latent, 1),
                            noise=random_noise(g, 6, run.rng(0, "reference-search/candidate-noise"), run.device))
        e_ref = model.encode_image(ref)[0]
        lpips = load_lpips("standin")
        losses = [0.7 * (1 - model.encode_image(image[i:i + 1])[0] @ e_ref)
                  + 0.3 * ((w[i] - w_mean[0]) ** 2).mean()
                  + 1.5 * (lpips(image[i:i + 1], ref).mean() + ((image[i:i + 1] - ref) ** 2).mean())
                  for i in range(6)]
    best = int(torch.stack(losses).argmin())
    assert len(set(round(float(x), 6) for x in losses)) == 6  # distinct scores: the choice is not a tie
    assert torch.allclose(technique.w_ref[0, 0], w[best], atol=1e-6)
    assert torch.equal(technique.w_ref[0, 0], technique.w_ref[0, -1])


def test_search_start_changes_the_cache_key_only_when_not_the_released_one(tmp_path, reference):
    run, mean_start = _setup_search(tmp_path, reference, "one", iterations=0)
    assert "init" not in mean_start.settings(run)["options"]  # keys of caches written before the option: unchanged
    run2, best_of = _setup_search(tmp_path, reference, "two", iterations=0, init="best-of", candidates=4)
    assert best_of.settings(run2)["options"]["init"] == "best-of"
    assert best_of.cache_file(run2) != mean_start.cache_file(run)
