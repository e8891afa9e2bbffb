"""The shapes judging script's command line: a mapper recipe file reaches the run (the judging itself trains a
mapper for minutes and is measured by hand, docs/DELTAEDIT_SHAPES.md)."""

from __future__ import annotations

from zsgm_deltaedit import shapes_eval


def test_recipe_file_and_options_reach_the_run(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(shapes_eval, "run", lambda edits, **kw: seen.update(edits=edits, **kw) or {})
    recipe = tmp_path / "mapper.toml"
    recipe.write_text('preset = "deltaedit-shapes"\n[train]\nsteps = 7\n')
    assert shapes_eval.main(["--edits", "red:blue", "--recipe", str(recipe), "--seeds", "3-4", "--strengths", "1.5",
                             "--layers", "all", "4,5", "--threads", "1"]) == 0
    assert seen["edits"] == [("red", "blue")] and seen["seeds"] == [3, 4] and seen["strengths"] == [1.5]
    assert seen["layer_sets"] == [None, [4, 5]]
    assert seen["recipe"].preset == "deltaedit-shapes" and seen["recipe"].train.steps == 7
    assert seen["recipe"].codes.samples == 4096  # the rest from the preset


def test_without_a_recipe_file_the_preset_is_used(monkeypatch):
    seen = {}
    monkeypatch.setattr(shapes_eval, "run", lambda edits, **kw: seen.update(kw) or {})
    assert shapes_eval.main(["--edits", "green:yellow", "--threads", "1"]) == 0
    assert seen["recipe"] is None  # run() then takes the deltaedit-shapes preset
