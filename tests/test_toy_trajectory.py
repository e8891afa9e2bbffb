"""Generator-in-the-loop mining for the shapes CLIP: NADA trajectories paired with their true edits, and the
ranking term that demotes them (zsgm.toy.mine_fakes.mine_trajectories, zsgm.toy.train_clip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsgm.toy.render import COLOURS, STYLES


def _tiny_clip_and_directions():
    from open_clip.tokenizer import SimpleTokenizer

    from zsgm.clip_loading import build_clip_from_config
    from zsgm.toy.train_clip import CONFIG, DirectionBank

    torch.manual_seed(0)
    model = build_clip_from_config(CONFIG)
    tokenizer = SimpleTokenizer(context_length=CONFIG["text_cfg"]["context_length"])
    directions = DirectionBank(model, tokenizer, list(STYLES) + list(COLOURS), g=torch.Generator().manual_seed(1),
                               n_templates=2)
    return model, directions


def _u8(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_ranking_term_is_the_margin_when_the_fake_is_the_true_edit_and_zero_when_it_is_far_below():
    from zsgm.toy.train_clip import trajectory_ranking_loss

    model, directions = _tiny_clip_and_directions()
    src, true = _u8(6, 1), _u8(6, 2)
    tasks = [("photo", "sketch"), ("red", "blue")]
    task = torch.tensor([0, 0, 0, 1, 1, 1])

    def term(fake, margin):
        return trajectory_ranking_loss(model, src, fake, true, task, tasks, directions, n=5, margin=margin,
                                       g=torch.Generator().manual_seed(4))

    same = term(true, 0.3)
    assert same.item() == pytest.approx(0.3, abs=1e-5)  # equal cosines: exactly the margin remains
    assert term(true, -0.1).item() == 0.0
    other = term(_u8(6, 3), 0.3)
    assert other.item() != pytest.approx(0.3, abs=1e-4)  # a different fake moves the hinge
    other.backward()
    assert model.visual.conv1.weight.grad is not None


def test_trajectory_fakes_round_trip_and_feed_only_the_ranking_term(tmp_path):
    from zsgm.toy.mine_fakes import load_fakes, save_fakes
    from zsgm.toy.train_clip import train

    path = tmp_path / "traj.safetensors"
    mined = {"images": _u8(4, 5), "sources": _u8(4, 6), "truths": _u8(4, 7), "task": torch.tensor([0, 0, 1, 1]),
             "step": torch.tensor([20, 301, 20, 301]), "other": torch.tensor([False, True, False, False])}
    tasks = [("photo", "sketch"), ("red", "blue")]
    save_fakes(path, mined, [], tasks=tasks, clip_path="c.safetensors", seconds=1.0)
    loaded = load_fakes(path)
    assert all(torch.equal(loaded[k], mined[k]) for k in mined) and loaded["tasks"] == tasks
    bad = dict(mined, truths=_u8(3, 7))
    with pytest.raises(ValueError, match="truths"):
        save_fakes(tmp_path / "bad.safetensors", bad, [], tasks=tasks, clip_path="c", seconds=1.0)

    common = dict(seed=3, steps=1, minutes=5, batch=8, pool=16, eval_n=0, progress=False, threads=1, pairs=4)
    record = train(out=tmp_path / "c.safetensors", fakes=path, fake_direction_weight=1.0, rank_weight=1.0,
                   rank_margin=5.0, **common)
    assert record["rank_loss_last_50"] > 0  # margin 5 cannot be met by any cosine difference
    assert record["fake_direction_loss_last_50"] is None  # trajectory samples are not hinge fakes
    assert record["fakes"]["count"] == 1  # only the sample judged "other" joins the contrastive batch
    with pytest.raises(ValueError, match="--trajectory"):
        train(out=tmp_path / "d.safetensors", rank_weight=1.0, **common)


def test_trajectory_snapshots_lie_on_one_run_and_pair_colour_sources_with_their_true_edits(tmp_path):
    from zsgm.generator import load_generator
    from zsgm.loop import adapt
    from zsgm.plugins import get_registry
    from zsgm.recipe import recipe_from_dict
    from zsgm.toy.benchmark import shapes_recipe_data
    from zsgm.toy.judges import classify_colour, classify_style
    from zsgm.toy.mine_fakes import mine_trajectories, trajectory_generators
    from zsgm.clip_loading import shapes_clip_path

    registry = get_registry()
    clip = shapes_clip_path()
    snaps = list(trajectory_generators(clip, "photo", "sketch", snapshots=(1, 3), seed=7, work=tmp_path,
                                       registry=registry))
    assert [s for s, _ in snaps] == [1, 3]
    recipe = recipe_from_dict(shapes_recipe_data("nada", "photo", "sketch", registry, seed=7, steps=3,
                                                 clip_file=clip, n_samples=4), registry=registry)
    direct, _ = load_generator(adapt(recipe, out_dir=tmp_path / "direct", registry=registry).generator_path)
    a, b, first = snaps[1][1].state_dict(), direct.state_dict(), snaps[0][1].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # stopped and resumed = one 3-step run
    assert any(not torch.equal(first[k], a[k]) for k in a)  # the first snapshot is an earlier point

    with pytest.raises(ValueError, match="ascending"):
        next(trajectory_generators(clip, "photo", "sketch", snapshots=(3, 1), seed=7, work=tmp_path,
                                   registry=registry))
    mined, records = mine_trajectories(clip, tasks=(("red", "blue"),), snapshots=(1, 2), n_per_snapshot=4,
                                       seed=0, progress=False)
    n = len(mined["images"])
    assert n > 0 and all(len(mined[k]) == n for k in ("sources", "truths", "task", "step", "other"))
    assert sorted(set(mined["step"].tolist())) == [1, 2] and sum(r["kept"] for r in records) == n
    as_float = {k: mined[k].float() / 127.5 - 1.0 for k in ("sources", "truths")}
    assert set(classify_colour(as_float["sources"])) == {"red"}
    assert set(classify_colour(as_float["truths"])) == {"blue"}
    assert set(classify_style(as_float["truths"])) == {"photo"}


def test_reach_positives_are_generator_images_along_the_same_steps():
    from zsgm.clip_loading import shapes_clip_path
    from zsgm.toy.diagnose import reach_trajectory
    from zsgm.toy.mine_fakes import mine_trajectories

    kwargs = dict(tasks=(("photo", "sketch"),), snapshots=(1, 2), n_per_snapshot=3, seed=0, progress=False)
    render, _ = mine_trajectories(shapes_clip_path(), **kwargs)
    reach, records = mine_trajectories(shapes_clip_path(), positives="reach", **kwargs)
    assert torch.equal(render["images"], reach["images"]) and torch.equal(render["sources"], reach["sources"])
    assert not torch.equal(render["truths"], reach["truths"])  # generator images, not renders
    # after 1-2 regression steps the reach generator still draws (nearly) the source photo
    assert (reach["truths"].float() - reach["sources"].float()).abs().mean() < \
        (render["truths"].float() - render["sources"].float()).abs().mean()
    assert {r["positives"] for r in records} == {"reach"}
    with pytest.raises(ValueError, match="positives"):
        mine_trajectories(shapes_clip_path(), positives="renders", **kwargs)
    with pytest.raises(ValueError, match="ascending"):
        next(reach_trajectory("sketch", snapshots=(2, 2)))


def test_trajectories_with_freeze_slots_keep_the_coarse_layers_of_the_source(tmp_path):
    from zsgm.clip_loading import shapes_clip_path
    from zsgm.plugins import get_registry
    from zsgm.toy.assets import load_shapes_generator
    from zsgm.toy.mine_fakes import trajectory_generators

    source, _ = load_shapes_generator()
    before = source.state_dict()
    (_, g), = trajectory_generators(shapes_clip_path(), "photo", "sketch", snapshots=(2,), seed=3, work=tmp_path,
                                    registry=get_registry(), freeze_slots=[3, 4, 5, 6, 7])
    after = g.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith(("convs.2.", "convs.3.", "convs.4.", "convs.5.", "to_rgbs.")) for k in changed)


def test_command_lines_refuse_bad_trajectory_input_in_one_line(tmp_path, capsys):
    from zsgm.toy import mine_fakes, train_clip

    with pytest.raises(SystemExit) as exit_info:
        mine_fakes.main(["--clip", "c.safetensors", "--out", str(tmp_path / "t.safetensors"), "--freeze-slots", "3"])
    assert exit_info.value.code == 2
    assert "--freeze-slots needs --trajectory" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        mine_fakes.main(["--clip", "c.safetensors", "--out", str(tmp_path / "t.safetensors"), "--trajectory",
                         "--snapshots", "3", "1"])
    assert exit_info.value.code == 2
    assert "snapshots must be ascending positive step counts, got [3, 1]" in capsys.readouterr().err
    assert not (tmp_path / "t.safetensors").exists()
    with pytest.raises(SystemExit) as exit_info:
        train_clip.main(["--out", str(tmp_path / "c.safetensors"), "--rank-weight", "1"])
    assert exit_info.value.code == 2
    assert "--rank-weight and --position-weight need --fakes" in capsys.readouterr().err


def _render_u8(params) -> torch.Tensor:
    from zsgm.toy.render import render_batch

    return ((render_batch(params) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def test_position_term_moves_samples_back_onto_their_sources_and_ranks_by_overlap(tmp_path):
    from zsgm.toy.mine_fakes import save_fakes
    from zsgm.toy.render import ShapeParams
    from zsgm.toy.judges import mask_iou
    from zsgm.toy.train_clip import position_pairs, position_ranking_loss, train

    src = [ShapeParams(kind="square", colour="red", cx=0.3, cy=0.5, radius=0.15),
           ShapeParams(kind="circle", colour="blue", cx=0.6, cy=0.35, radius=0.2)]
    drifted = [ShapeParams(kind="square", colour="red", cx=0.7, cy=0.5, radius=0.15, style="sketch"),
               ShapeParams(kind="circle", colour="blue", cx=0.5, cy=0.55, radius=0.2, style="sketch")]
    x_src, x_fake = _render_u8(src), _render_u8(drifted)
    pos = position_pairs(x_src, x_fake)
    assert pos["index"].tolist() == [0, 1]
    assert (mask_iou(pos["mask"], pos["src_mask"]) > 0.8).all()  # moved back onto the sources

    model, directions = _tiny_clip_and_directions()
    tasks, task = [("photo", "sketch")], torch.tensor([0, 0])
    term = position_ranking_loss(model, pos, x_src, task, tasks, directions, n=4, margin=5.0,
                                 g=torch.Generator().manual_seed(0))
    assert term.item() > 0  # no cosine difference can meet a margin of 5 per unit of IoU
    term.backward()
    assert model.visual.conv1.weight.grad is not None
    none = position_ranking_loss(model, pos, x_src, task, tasks, directions, n=4, margin=0.0,
                                 g=torch.Generator().manual_seed(0))
    assert none.item() <= term.item()

    path = tmp_path / "traj.safetensors"
    mined = {"images": x_fake, "sources": x_src, "truths": _render_u8([p.with_style("sketch") for p in src]),
             "task": task, "step": torch.tensor([20, 20]), "other": torch.tensor([False, False])}
    save_fakes(path, mined, [], tasks=tasks, clip_path="c.safetensors", seconds=1.0)
    record = train(out=tmp_path / "c.safetensors", fakes=path, position_weight=1.0, position_margin=5.0, seed=0,
                   steps=1, batch=8, pool=16, eval_n=0, progress=False, threads=1, pairs=4)
    assert record["position_pairs"] == 2 and record["position_loss_first_20"] > 0
