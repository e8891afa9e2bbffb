"""The shipped shapes-world CLIP, seen through zsgm's own CLIP path (the one adaptation uses), and the
training scripts of both shapes assets on a few steps."""

import json

import numpy as np
import pytest
import torch

from zsgm.clip import ClipModelSpec, load_clip_model, text_direction
from zsgm.clip_loading import read_clip_file, shapes_clip_path
from zsgm.toy.render import COLOURS, STYLES, render_batch, sample_params

N_PER_STYLE = 12


@pytest.fixture(scope="module")
def shapes_clip():
    if not shapes_clip_path().is_file():
        pytest.fail(f"missing asset {shapes_clip_path()}")
    return load_clip_model(ClipModelSpec(name="shapes"))


@pytest.fixture(scope="module")
def renders():
    base = sample_params(N_PER_STYLE, rng=np.random.default_rng(4242), styles=("photo",))
    return base, {s: render_batch([p.with_style(s) for p in base]) for s in STYLES}


def test_asset_is_small_and_recorded():
    record = json.loads(shapes_clip_path().with_suffix(".json").read_text())
    assert record["completed"] and record["seconds"] > 0
    last = record["lineage"][-1]  # the round that wrote the shipped file, with this record's seed
    assert "--out shapes_clip.safetensors" in last["command"] and f"--seed {record['seed']} " in last["command"]
    assert record["total_seconds"] >= sum(r["seconds"] for r in record["lineage"]) > 0
    assert shapes_clip_path().stat().st_size <= 16 * 2**20


def test_zero_shot_style_and_colour_through_zsgm(shapes_clip, renders):
    base, images = renders
    with torch.no_grad():
        styles = torch.stack([shapes_clip.encode_text([f"a {s}"])[0] for s in STYLES])  # [S, D]
        colours = torch.stack([shapes_clip.encode_text([f"a {c} shape"])[0] for c in COLOURS])  # [C, D]
        for i, style in enumerate(STYLES):
            e = shapes_clip.encode_image(images[style])  # [N, D] unit
            assert (e @ styles.t()).argmax(1).eq(i).float().mean() >= 0.9, style
        e = shapes_clip.encode_image(images["photo"])
        truth = torch.tensor([COLOURS.index(p.colour) for p in base])
        assert (e @ colours.t()).argmax(1).eq(truth).float().mean() >= 0.9


def test_true_edit_aligns_with_the_text_direction_better_than_a_colour_cast(shapes_clip, renders):
    """What the directional loss rewards: drawing the sketch, not tinting the photo."""
    _, images = renders
    with torch.no_grad():
        d_text = text_direction(shapes_clip, "photo", "sketch")  # [D] unit
        e_photo = shapes_clip.encode_image(images["photo"])
        true_edit = torch.nn.functional.normalize(shapes_clip.encode_image(images["sketch"]) - e_photo, dim=-1)
        cast = (images["photo"] + torch.tensor([0.3, -0.2, 0.25])[None, :, None, None]).clamp(-1, 1)
        cheap_edit = torch.nn.functional.normalize(shapes_clip.encode_image(cast) - e_photo, dim=-1)
    assert (true_edit @ d_text).mean() > 0.3
    assert (true_edit @ d_text).mean() > (cheap_edit @ d_text).mean() + 0.2


def test_clip_training_script_runs_and_writes_a_loadable_file(tmp_path):
    from zsgm.toy.train_clip import train

    out = tmp_path / "clip.safetensors"
    record = train(out=out, seed=3, steps=2, minutes=5, batch=8, pool=16, eval_n=0, progress=False, threads=1)
    assert record["steps"] == 2 and record["completed"]
    assert json.loads(out.with_suffix(".json").read_text())["steps"] == 2
    loaded = read_clip_file(out, expected_name="shapes")
    assert loaded.config["vision_cfg"]["image_size"] == 32


def test_generator_training_script_runs_every_stage(tmp_path):
    from zsgm.toy.train_generator import train

    g, record = train(seed=1, steps=2, minutes=None, batch=2, lr=2e-3, warmup=1, final_lr_frac=0.1,
                      grad_weight=1.0, ema_half_life=1, channel_max=16, n_mlp=2, mapping_steps=3, mapping_batch=8,
                      joint_steps=2, progress=False, log_every=1)
    assert record["steps"] == {"A": 2, "B": 3, "C": 2} and not record["stopped_early"]
    assert {entry["stage"] for entry in record["loss_log"]} == {"A", "B", "C"}
    assert g.latent_avg is not None and torch.isfinite(g(torch.randn(2, g.arch.style_dim))).all()


def test_mined_fakes_only_match_other_captions():
    from zsgm.toy.captions import OTHER_CAPTIONS
    from zsgm.toy.clip_data import OTHER_STYLE, CaptionSampler, positives

    labels = torch.tensor([[0, 0, 0], [1, 2, 3], [OTHER_STYLE, -1, -1]])  # photo, sketch, fake
    mention = torch.tensor([[0, -1, -1], [-1, 0, -1], [-1, -1, 3], [OTHER_STYLE, -1, -1]])  # photo / red / kind 3 / other
    pos = positives(labels, mention)  # [image, caption]
    assert pos.tolist() == [[True, True, False, False], [False, False, True, False], [False, False, False, True]]
    sampler = CaptionSampler(lambda texts: torch.zeros(len(texts), 4, dtype=torch.long),
                             rng=np.random.default_rng(0))
    text, mentioned = sampler.caption(OTHER_STYLE, -1, -1)
    assert text in OTHER_CAPTIONS and mentioned == (OTHER_STYLE, -1, -1)


def test_fine_tuning_round_starts_from_the_given_weights_and_uses_the_fakes(tmp_path):
    from zsgm.toy.mine_fakes import load_fakes, save_fakes
    from zsgm.toy.train_clip import train

    fakes = tmp_path / "fakes.safetensors"
    mined = {"images": torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8),
             "sources": torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8),
             "task": torch.tensor([0, 0, 1, 1, 1]),
             "other": torch.tensor([True, True, False, True, True])}  # the third kept for its IoU only
    tasks = [("photo", "sketch"), ("red", "blue")]
    save_fakes(fakes, mined, [{"source": "photo", "target": "sketch", "kept": 2}], tasks=tasks,
               clip_path="c.safetensors", seconds=1.0)
    loaded = load_fakes(fakes)
    assert all(torch.equal(loaded[k], mined[k]) for k in mined) and loaded["tasks"] == tasks
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    train(out=first, seed=3, steps=1, minutes=5, batch=8, pool=16, eval_n=0, progress=False, threads=1)
    record = train(out=second, seed=3, steps=1, minutes=5, batch=8, pool=16, eval_n=0, progress=False, threads=1,
                   init=first, fakes=fakes, fake_frac=0.25, lr=0.0, directional_weight=1.0,
                   fake_direction_weight=1.0, pairs=4)
    assert record["init"] == first.name
    assert record["fakes"] == {"files": [fakes.name], "count": 4, "per_batch": 2}  # "other" images only
    assert record["direction_loss_last_50"] > 0 and record["fake_direction_loss_last_50"] >= 0
    a, b = read_clip_file(first).model.state_dict(), read_clip_file(second).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the round starts exactly at the given weights
    with pytest.raises(ValueError, match="not a mined-fakes file"):
        load_fakes(first)


def test_geometry_captions_name_only_what_the_image_shows():
    from zsgm.toy.clip_data import CaptionSampler, geometry_labels, positives
    from zsgm.toy.render import ShapeParams

    left_small = ShapeParams(kind="circle", colour="red", cx=0.3, cy=0.5, radius=0.21)
    assert geometry_labels(left_small) == (0, -1, 0)  # left, vertically between bins, small
    labels = torch.tensor([[0, 0, 0, 0, -1, 0], [0, 0, 0, 1, 1, 1]])  # two red photo circles: left/small, right/large
    mention = torch.tensor([[-1, -1, 0, 0, -1, -1],   # "a circle on the left"
                            [-1, -1, 0, -1, -1, 1],   # "a circle, large"
                            [-1, -1, 0, -1, 0, -1]])  # "a circle at the top": neither image is at the top
    assert positives(labels, mention).tolist() == [[True, False, False], [False, True, False]]
    sampler = CaptionSampler(lambda texts: torch.zeros(len(texts), 4, dtype=torch.long), rng=np.random.default_rng(0))
    for _ in range(20):
        text, mentioned = sampler.geometry("a photo of a red circle", (0, 0, 0), 0, -1, 0, p=1.0)
        assert mentioned[:3] == (0, 0, 0) and mentioned[4] == -1  # never names a bin the image is not in
        assert ("left" in text) == (mentioned[3] == 0) and ("small" in text) == (mentioned[5] == 0)


def test_first_format_fakes_load_as_images_only(tmp_path):
    from safetensors.torch import save_file

    from zsgm.toy.mine_fakes import load_fakes

    path = tmp_path / "old.safetensors"
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    save_file({"images": images}, str(path), metadata={"format": "zsgm-shapes-fakes", "runs": "[]"})
    loaded = load_fakes(path)
    assert torch.equal(loaded["images"], images) and loaded["sources"] is None and loaded["tasks"] == []


def _tiny_clip_and_directions(seed: int = 0):
    from open_clip.tokenizer import SimpleTokenizer

    from zsgm.clip_loading import build_clip_from_config
    from zsgm.toy.train_clip import CONFIG, DirectionBank

    torch.manual_seed(seed)
    model = build_clip_from_config(CONFIG)
    tokenizer = SimpleTokenizer(context_length=CONFIG["text_cfg"]["context_length"])
    directions = DirectionBank(model, tokenizer, list(STYLES) + list(COLOURS), g=torch.Generator().manual_seed(1),
                               n_templates=2)
    return model, directions


def _paired_pool(n: int = 6):
    from zsgm.toy.clip_data import render_paired_pool

    return render_paired_pool(n, rng=np.random.default_rng(0))


def test_adversarial_search_finds_a_more_aligned_perturbation_than_its_random_start():
    from zsgm.toy.train_clip import adversarial_direction_loss

    model, directions = _tiny_clip_and_directions()
    pair_u8, pair_labels = _paired_pool()
    kwargs = dict(n=4, eps=0.1, margin=-1.0)  # margin -1: the hinge is the mean cosine + 1
    start = adversarial_direction_loss(model, pair_u8, pair_labels, directions, pgd_steps=0,
                                       g=torch.Generator().manual_seed(5), **kwargs)
    found = adversarial_direction_loss(model, pair_u8, pair_labels, directions, pgd_steps=3,
                                       g=torch.Generator().manual_seed(5), **kwargs)
    assert found.item() > start.item() + 1e-3  # same images and start: the ascent raised the cosine
    found.backward()
    assert model.visual.conv1.weight.grad is not None  # the term trains the image tower


def test_direction_term_on_blends_differs_from_the_true_edit_only_when_asked():
    from zsgm.toy.train_clip import true_edit_direction_loss

    model, directions = _tiny_clip_and_directions()
    pair_u8, pair_labels = _paired_pool()

    def term(blend_min):
        return true_edit_direction_loss(model, pair_u8, pair_labels, directions, pairs=4,
                                        g=torch.Generator().manual_seed(2), blend_min=blend_min).item()

    assert term(1.0) == term(1.0)
    assert abs(term(0.2) - term(1.0)) > 1e-4


def test_geometry_variants_keep_the_shape_and_change_its_silhouette():
    from zsgm.toy.train_clip import _filled_iou, geometry_variant

    rng = np.random.default_rng(0)
    for p in sample_params(40, rng=np.random.default_rng(1)):
        q = geometry_variant(p, rng=rng)  # ShapeParams validates that it stays inside the image
        assert (q.kind, q.colour, q.style, q.seed) == (p.kind, p.colour, p.style, p.seed)
        assert (q.radius, q.cx, q.cy) != (p.radius, p.cx, p.cy)
        assert _filled_iou(p, p) == 1.0 and _filled_iou(p, q) < 1.0


def test_geometry_ranking_margin_scales_with_the_silhouette_change():
    from zsgm.toy.train_clip import geometry_ranking_loss

    model, directions = _tiny_clip_and_directions()
    zero = geometry_ranking_loss(model, directions, n=6, margin=0.0, rng=np.random.default_rng(3))
    big = geometry_ranking_loss(model, directions, n=6, margin=10.0, rng=np.random.default_rng(3))
    assert big.item() > zero.item() >= 0.0  # same shapes: a larger margin can only raise the hinge
    big.backward()
    assert model.visual.conv1.weight.grad is not None


def test_training_round_records_every_new_term(tmp_path):
    from zsgm.toy.train_clip import train

    record = train(out=tmp_path / "c.safetensors", seed=3, steps=1, minutes=5, batch=8, pool=16, eval_n=0,
                   progress=False, threads=1, directional_weight=1.0, blend_min=0.5, adversarial_weight=1.0,
                   adv_steps=1, geometry_weight=1.0, gradient_weight=1.0, pairs=4)
    assert record["blend_min"] == 0.5 and record["adv_steps"] == 1
    assert record["adversarial_loss_last_50"] is not None and record["geometry_loss_last_50"] is not None
    assert record["gradient_loss_last_50"] is not None


def test_gradient_alignment_term_trains_the_image_tower_through_a_double_backward():
    from zsgm.toy.train_clip import gradient_alignment_loss

    model, directions = _tiny_clip_and_directions()
    pair_u8, pair_labels = _paired_pool()
    term = gradient_alignment_loss(model, pair_u8, pair_labels, directions, n=4, g=torch.Generator().manual_seed(0))
    assert 0.0 <= term.item() <= 2.0  # 1 - a cosine
    term.backward()
    grad = model.visual.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
