"""The shapes-world diagnostics: can the generator reach the true edit, and does the CLIP prefer it."""

import pytest
import torch

from zsgm.clip import ClipModelSpec, load_clip_model
from zsgm.toy.assets import load_shapes_generator
from zsgm.toy.diagnose import generator_gap, reach, true_edit
from zsgm.toy.render import ShapeParams


def test_true_edit_changes_only_what_the_target_names():
    p = ShapeParams(kind="square", colour="red", cx=0.5, cy=0.5, radius=0.25)
    assert true_edit(p, "a pencil sketch") == p.with_style("sketch")
    blue = true_edit(p, "a blue shape")
    assert (blue.colour, blue.style, blue.kind, blue.radius) == ("blue", "photo", "square", 0.25)
    with pytest.raises(ValueError, match="a cat"):
        true_edit(p, "a cat")


def test_reach_trains_only_the_named_layers_and_judges_the_result():
    record = reach("sketch", steps=3, n_eval=8, progress=False)
    assert record["task"] == "style:sketch" and record["steps"] == 3 and 0.0 <= record["target_rate"] <= 1.0
    assert record["mse_first_20"] > 0 and record["trained"] == ["conv1", "to_rgb1", "convs"]
    with pytest.raises(ValueError, match="no synthesis module"):
        reach("sketch", steps=1, trained=("nonexistent",), progress=False)


def test_reach_trains_exactly_the_indexed_modules_it_is_given():
    from zsgm.toy.diagnose import reach_trajectory

    g_src, _ = load_shapes_generator()
    before = {n: p.detach().clone() for n, p in g_src.named_parameters()}
    _, g_tgt, _ = next(reach_trajectory("sketch", snapshots=(2,), trained=("convs.2", "to_rgbs.0"), progress=False))
    changed = {n for n, p in g_tgt.named_parameters() if not torch.equal(p, before[n])}
    assert {".".join(n.split(".")[:2]) for n in changed} == {"convs.2", "to_rgbs.0"}, sorted(changed)
    with pytest.raises(ValueError, match="no synthesis module named convs.9"):
        reach("sketch", steps=1, trained=("convs.2", "convs.9"), progress=False)


@pytest.fixture(scope="module")
def world():
    g, _ = load_shapes_generator()
    return g, load_clip_model(ClipModelSpec(name="shapes"))


def test_gap_of_an_unchanged_generator_has_no_adapted_direction(world):
    g, clip = world
    gap = generator_gap(g, g, clip, source="photo", target="sketch", n=16)
    assert gap["n"] == 16 and abs(gap["adapted"]) < 1e-6  # the same images: no edit, no direction
    assert gap["true_edit"] > gap["true_edit_other_shape"] > 0.3  # the shipped CLIP's measured ordering


def test_gap_of_a_colour_task_counts_only_samples_in_the_source_colour(world):
    g, clip = world
    gap = generator_gap(g, g, clip, source="red", target="blue", n=32)
    assert 0 < gap["n"] < 32  # about a quarter of the samples are red
    assert gap["true_edit"] > 0.5


def test_shift_to_source_puts_a_moved_shape_back_where_its_source_was():
    from zsgm.toy.diagnose import shift_to_source
    from zsgm.toy.judges import content_iou
    from zsgm.toy.render import render_batch

    src = ShapeParams(kind="square", colour="red", cx=0.3, cy=0.6, radius=0.15)
    far = ShapeParams(kind="square", colour="red", cx=0.7, cy=0.4, radius=0.15, style="sketch")
    x_src, x_tgt = render_batch([src, src]), render_batch([far, src.with_style("sketch")])
    moved, shift, _, mask = shift_to_source(x_src, x_tgt)
    from zsgm.toy.judges import analyse

    assert torch.equal(mask[1], analyse(x_tgt[1:]).filled[0]) or shift[1].abs().max() > 0  # unmoved: its own mask
    assert (mask[0] & analyse(x_src[:1]).filled[0]).sum() > 0.8 * mask[0].sum()  # moved mask lies on the source
    assert shift[0].tolist() == [6, -13] or (abs(shift[0, 0] - 6) <= 1 and abs(shift[0, 1] + 13) <= 1)
    assert shift[1].abs().max() <= 1  # already in place: (almost) not moved
    before, after = content_iou(x_src, x_tgt), content_iou(x_src, moved)
    assert before[0] < 0.1 and after[0] > 0.8  # the far sketch lands on its source
    assert abs(float(after[1] - before[1])) < 0.2


def test_position_gap_of_an_unchanged_generator_moves_nothing(world):
    from zsgm.toy.diagnose import position_gap

    g, clip = world
    record = position_gap(g, g, clip, source="photo", target="sketch", n=8)
    assert record["n"] == 8 and record["shift_px"] == 0.0
    assert record["iou"] == record["iou_moved"] and abs(record["cos"]) < 1e-6 and abs(record["cos_moved"]) < 1e-6


def test_position_command_line_names_a_missing_run_in_one_line(tmp_path, capsys):
    from zsgm.toy.diagnose import main

    with pytest.raises(SystemExit) as exc:
        main(["position", str(tmp_path / "no-run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("zsgm.toy.diagnose:") and "no-run" in err and "Traceback" not in err
