"""`zsgm adapt` on the command line: bad --out, recipe files, targets and --target-image refused in one line
before anything loads; the end of a run says where everything is and what to run next."""

from __future__ import annotations

import pytest

import zsgm.loop
from zsgm.cli import USER_ERROR_EXIT, main, run_summary
from zsgm.loop import RunResult
from zsgm.recipe import recipe_from_dict

from cli_output import one_error_line  # tests/cli_output.py


TINY = ["--generator", "tiny-random", "--clip", "tiny-random", "--no-progress"]


@pytest.fixture
def nothing_may_run(monkeypatch):
    """Fail the test if the CLI gets as far as starting a run (models loading)."""
    monkeypatch.setattr(zsgm.loop, "adapt", lambda *a, **k: pytest.fail("the run started"))


def test_out_naming_an_existing_file_is_refused_before_anything_loads(tmp_path, capsys, nothing_may_run):
    taken = tmp_path / "notes.txt"
    taken.write_text("keep me")
    assert main(["adapt", "--preset", "nada", "--target", "sketch", *TINY, "--out", str(taken)]) == USER_ERROR_EXIT
    assert one_error_line(capsys) == (f"zsgm: error: --out {taken}: is a file, not a directory (give a new or "
                                      f"existing run directory)")
    assert taken.read_text() == "keep me"
    assert main(["adapt", "--preset", "nada", "--target", "sketch", *TINY, "--out", str(taken / "run")]) \
        == USER_ERROR_EXIT
    assert f"{taken} is a file, so no directory can be made under it" in one_error_line(capsys)


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory, not a recipe file"),
    (lambda p: p.write_bytes(b'source = "photo"\ntarget = "sk\xe9tch"\n'), "not UTF-8"),
    (lambda p: p.write_text('source = "photo\n'), "not valid TOML"),
])
def test_unreadable_recipe_files_are_named_in_one_line(tmp_path, capsys, nothing_may_run, make, words):
    recipe = tmp_path / "recipe.toml"
    make(recipe)
    assert main(["adapt", str(recipe), "--out", str(tmp_path / "o")]) == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert line.startswith(f"zsgm: error: {recipe}: ") and words in line, line


def test_no_target_text_and_no_images_tells_the_user_to_pass_target(tmp_path, capsys, nothing_may_run):
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "photo"\n[generator]\ncheckpoint = "tiny-random"\n'
                      '[[techniques]]\nuse = "directional"\n')
    assert main(["adapt", str(recipe), "--out", str(tmp_path / "o")]) == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert f"{recipe}: target:" in line and "pass --target TEXT" in line


def test_a_preset_without_target_tells_the_user_to_pass_target(tmp_path, capsys, nothing_may_run):
    assert main(["adapt", "--preset", "air", *TINY, "--out", str(tmp_path / "o")]) == USER_ERROR_EXIT
    assert one_error_line(capsys).startswith("zsgm: error: preset 'air': target: the recipe has no target text and "
                                             "no target images; pass --target TEXT")


@pytest.mark.parametrize("option, value", [("--target", ""), ("--target", "  "), ("--source", ""),
                                           ("--steps", "0"), ("--steps", "2.7"), ("--lr", "inf"), ("--lr", "nan"),
                                           ("--lr", "0"), ("--batch-size", "0"), ("--sample-every", "-1"),
                                           ("--clip", ","), ("--clip", ":openai")])
def test_bad_adapt_options_are_refused_naming_the_option(tmp_path, capsys, nothing_may_run, option, value):
    code = main(["adapt", "--preset", "nada", "--target", "sketch", *TINY, option, value, "--out", str(tmp_path)])
    assert code == USER_ERROR_EXIT
    assert one_error_line(capsys).startswith(f"zsgm: error: argument {option}:")


def test_target_image_that_no_technique_reads_is_refused_naming_the_option(tmp_path, capsys, nothing_may_run):
    from PIL import Image

    image = tmp_path / "style.png"
    Image.new("RGB", (8, 8)).save(image)
    code = main(["adapt", "--preset", "nada", "--target", "sketch", "--target-image", str(image), *TINY,
                 "--out", str(tmp_path / "o")])
    assert code == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert line.startswith("zsgm: error: --target-image: no technique of this recipe reads target images")
    assert "directional, layer-freeze" in line and "image-target" in line


@pytest.mark.parametrize("make, words", [(lambda p: None, "no such file"),
                                         (lambda p: p.mkdir(), "is a directory, not an image file")])
def test_missing_target_image_is_refused_before_anything_loads(tmp_path, capsys, nothing_may_run, make, words):
    image = tmp_path / "style.png"
    make(image)
    code = main(["adapt", "--preset", "nada", "--target-image", str(image), *TINY, "--out", str(tmp_path / "o")])
    assert code == USER_ERROR_EXIT
    assert one_error_line(capsys) == f"zsgm: error: --target-image {image}: {words}"


def test_end_of_a_run_says_where_everything_is_and_what_to_run_next(tmp_path, capsys):
    out = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "photo"\ntarget = "sketch"\n[run]\nn_samples = 2\n'
                      '[[techniques]]\nuse = "directional"\n')
    assert main(["adapt", str(recipe), "--target", "sketch", *TINY, "--steps", "2", "--batch-size", "1",
                 "--sample-every", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "done: 2 steps" in printed and "final loss None" not in printed
    for label, path in (("grids:", out / "samples"), ("generator:", out / "generator.safetensors"),
                        ("losses:", out / "losses.jsonl"), ("checkpoint:", out / "checkpoints" / "last.pt"),
                        ("recipe:", out / "recipe.toml"), ("run record:", out / "run.json")):
        assert any(line.split() == [*label.split(), str(path)] for line in printed.splitlines()), (label, printed)
    assert f"zsgm sample {out} --seeds 0-15 --outdir {out / 'seeds'}" in printed
    assert "zsgm eval" not in printed  # the ground-truth judges only know the shapes world

    assert main(["adapt", "--resume", "--out", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert f"{out} already holds the finished run (2 steps); nothing to do" in again
    assert "None" not in again and "Final loss " in again


def test_the_next_commands_of_a_shapes_run_include_eval(tmp_path):
    recipe = recipe_from_dict({"source": "photo", "target": "sketch", "generator": {"checkpoint": "shapes"},
                               "techniques": [{"use": "directional"}]})
    result = RunResult(out_dir=tmp_path, steps_done=3, last_losses={"total": 0.5}, generator_path=None, seconds=1.0)
    lines = run_summary(result, tmp_path, recipe=recipe)
    assert lines[0] == "done: 3 steps in 1.0 s; final loss 0.5000"
    assert any(line.strip().startswith(f"zsgm eval {tmp_path}") for line in lines)


def test_no_recipe_and_resume_of_a_non_run_are_one_line_about_the_options(tmp_path, capsys, nothing_may_run):
    assert main(["adapt", "--out", str(tmp_path / "o")]) == USER_ERROR_EXIT
    assert one_error_line(capsys) == ("zsgm: error: give a recipe file or --preset NAME (see `zsgm plugins` for "
                                      "presets)")
    assert main(["adapt", "--resume", "--out", str(tmp_path)]) == USER_ERROR_EXIT
    assert one_error_line(capsys) == (f"zsgm: error: --resume: {tmp_path / 'recipe.toml'} does not exist (is "
                                      f"{tmp_path} a zsgm run directory?)")


def test_a_resume_that_changed_the_recipe_lists_the_changes(tmp_path):
    recipe = recipe_from_dict({"source": "photo", "target": "sketch", "generator": {"checkpoint": "tiny-random"},
                               "techniques": [{"use": "directional"}]})
    result = RunResult(out_dir=tmp_path, steps_done=5, last_losses={"total": 0.25}, generator_path=None,
                       seconds=2.0, already_finished=False, resume_changes=["optim.steps: 3 -> 5"])
    lines = run_summary(result, tmp_path, recipe=recipe)
    assert lines[:3] == ["done: 5 steps in 2.0 s; final loss 0.2500",
                         "resumed with these changes to the run's recipe:", "  optim.steps: 3 -> 5"]
