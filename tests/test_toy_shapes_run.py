"""Adaptation on the shipped shapes world, judged by the ground-truth judges: the README's main job, the
`zsgm eval` table and the benchmark's row labels."""

from __future__ import annotations

import json
from pathlib import Path

from zsgm.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"
EXAMPLE = RECIPES / "shapes-pastel.toml"


def test_adapt_then_eval_on_shapes_writes_the_judges_table(tmp_path, capsys):
    out = tmp_path / "sketch"
    assert main(["adapt", "--preset", "nada", "--generator", "shapes", "--clip", "shapes", "--source", "photo",
                 "--target", "sketch", "--steps", "4", "--sample-every", "0", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "-n", "16"]) == 0
    printed = capsys.readouterr().out
    assert "| sketch | style:sketch | directional+layer-freeze |" in printed
    record = json.loads((out / "eval.json").read_text())
    assert record["steps"] == 4 and record["n"] == 16
    for key in ("target_rate", "content_iou", "background_artefact", "diversity_ratio"):
        assert 0.0 <= record[key] <= 2.0, key
    assert (out / "eval.md").read_text() in printed


def test_readme_pastel_recipe_reaches_pastel_and_keeps_the_shapes(tmp_path):
    """The pastel example in full (301 steps, ~20 s): measured 0.98 target rate, IoU 0.89 (m11 guide)."""
    from zsgm.toy.evaluate import evaluate_run

    out = tmp_path / "pastel"
    assert main(["adapt", str(EXAMPLE), "--sample-every", "0", "--checkpoint-every", "0", "--out", str(out),
                 "--no-progress"]) == 0
    record = evaluate_run(out, n=64)
    assert record["task"] == "style:pastel"
    assert record["target_rate"] >= 0.9 and record["content_iou"] >= 0.7, record
    assert record["background_artefact"] <= 0.1 and record["diversity_ratio"] >= 0.8, record


def test_readme_sketch_recipe_meets_the_bar_with_only_the_fine_styles_trained(tmp_path):
    """The README's main job in full (NADA at lr 0.002, slots 3-7; ~20 s): measured 0.93 target rate, IoU 0.88
    with 2 threads. The issue's bar is at least 0.8 and 0.7."""
    from zsgm.toy.evaluate import evaluate_run

    out = tmp_path / "sketch"
    assert main(["adapt", str(RECIPES / "shapes-sketch.toml"), "--sample-every", "0", "--checkpoint-every", "0",
                 "--out", str(out), "--no-progress"]) == 0
    record = evaluate_run(out, n=64)
    assert record["task"] == "style:sketch"
    assert record["target_rate"] >= 0.8 and record["content_iou"] >= 0.7, record
    assert record["background_artefact"] <= 0.1, record


def test_benchmark_rows_name_an_overridden_learning_rate(tmp_path):
    from zsgm.plugins import get_registry
    from zsgm.toy.benchmark import run_one, table

    record = run_one("nada", "red:blue", out_root=tmp_path, steps=2, seed=0, registry=get_registry(), n_eval=8,
                     lr=0.001)
    assert record["method"] == "nada (lr 0.001)" and record["task"] == "colour:blue"
    assert (tmp_path / "nada--red-to-blue--lr0.001" / "eval.json").exists()
    assert table([record]).splitlines()[-1].startswith("| nada (lr 0.001) | red -> blue | 2 |")


def test_benchmark_rows_name_fixed_freeze_slots_and_record_them_in_the_recipe(tmp_path):
    import tomllib

    import pytest

    from zsgm.plugins import get_registry
    from zsgm.toy.benchmark import run_one, slot_range

    record = run_one("nada", "photo:sketch", out_root=tmp_path, steps=1, seed=0, registry=get_registry(), n_eval=4,
                     lr=0.001, freeze_slots=[7, 3, 4, 5, 6])
    assert record["method"] == "nada (lr 0.001, slots 3-7)"
    run_dir = tmp_path / "nada--photo-to-sketch--lr0.001--slots3-7"
    recipe = tomllib.loads((run_dir / "recipe.toml").read_text())
    freeze = [t for t in recipe["techniques"] if t["use"] == "layer-freeze"][0]
    assert freeze["slots"] == [7, 3, 4, 5, 6] and freeze["slot_map"] == "exact"
    assert slot_range([1, 3, 5]) == "1,3,5" and slot_range([2]) == "2"
    with pytest.raises(ValueError, match="method 'nada\\+ewc' has no layer-freeze technique"):
        run_one("nada+ewc", "photo:sketch", out_root=tmp_path, steps=1, seed=0, registry=get_registry(), n_eval=4,
                freeze_slots=[3])


def test_benchmark_rows_name_a_noise_override_and_record_it_in_the_recipe(tmp_path):
    import tomllib

    from zsgm.plugins import get_registry
    from zsgm.toy.benchmark import run_one

    record = run_one("nada", "photo:sketch", out_root=tmp_path, steps=1, seed=0, registry=get_registry(), n_eval=4,
                     noise="shared")
    assert record["method"] == "nada (shared noise)"
    recipe = tomllib.loads((tmp_path / "nada--photo-to-sketch--shared-noise" / "recipe.toml").read_text())
    assert recipe["optim"]["noise"] == "shared"


def test_benchmark_command_refuses_a_slot_the_generator_lacks_in_one_line(tmp_path, capsys):
    import pytest

    from zsgm.toy.benchmark import main as benchmark

    with pytest.raises(SystemExit) as exit_info:
        benchmark(["--methods", "nada", "--freeze-slots", "9", "--tasks", "photo:sketch", "--steps", "1",
                   "--n-eval", "4", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nada on photo:sketch: layer-freeze slots: slot 9 is out of range" in err and "Traceback" not in err
