"""``zsgm sweep``: 4 tiny-random targets, one made to fail; the others finish, all are reported; a second run of
the sweep resumes it (finished runs skipped, an interrupted one continued)."""

from __future__ import annotations

import json

import pytest

from zsgm.cli import main
from zsgm.cli_errors import CommandLineError
from zsgm.loop import adapt
from zsgm.recipe import recipe_from_dict
from zsgm.sweep import read_sweep, run_sweep, summary_table

SWEEP = """
recipe = "base.toml"
[base]
optim = { steps = 2, batch_size = 2 }
run = { seed = 1, sample_every = 0, checkpoint_every = 1, n_samples = 2, progress = false, device = "cpu" }

[[runs]]
name = "sketch"
target = "a sketch"

[[runs]]
target = "a watercolour"

[[runs]]
name = "broken"
target = "a cartoon"
generator = { checkpoint = "no-such-generator.pt" }

[[runs]]
name = "pastel"
source = "a photo"
target = "a pastel drawing"
optim = { lr = 0.001 }
"""

BASE = """
source = "photo"
generator = { checkpoint = "tiny-random" }
clip = { models = [{ name = "tiny-random" }] }
[[techniques]]
use = "directional"
"""


def write_sweep(tmp_path, text=SWEEP):
    (tmp_path / "base.toml").write_text(BASE)
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_a_sweep_runs_every_target_reports_the_failure_and_resumes(tmp_path, capsys):
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    runs = read_sweep(path)
    assert [r.name for r in runs] == ["sketch", "01-a-watercolour", "broken", "pastel"]
    assert runs[3].data["optim"] == {"steps": 2, "batch_size": 2, "lr": 0.001} and runs[3].data["source"] == "a photo"
    # "pastel" was interrupted after 1 of its 2 steps by an earlier attempt
    adapt(recipe_from_dict(runs[3].data), out_dir=out / "pastel", stop_after=1)

    assert main(["sweep", str(path), "--out", str(out)]) == 1  # a run failed
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    by_name = {r["name"]: r for r in summary["runs"]}
    assert list(by_name) == ["sketch", "01-a-watercolour", "broken", "pastel"]
    assert summary["failed"] == 1 and summary["ok"] == 3
    assert by_name["broken"]["status"] == "failed" and "generator.checkpoint" in by_name["broken"]["error"]
    for name in ("sketch", "01-a-watercolour", "pastel"):
        assert by_name[name]["status"] == "done" and by_name[name]["steps_done"] == 2, name
        assert (out / name / "generator.safetensors").exists()
        assert isinstance(by_name[name]["total"], float)
    assert by_name["pastel"]["resumed"] and not by_name["sketch"]["resumed"]
    assert "broken" in printed and "failed" in printed and "3 of 4 runs ok" in printed

    again = run_sweep(path, out, report=lambda line: None)  # nothing left but the failure
    assert [o.status for o in again] == ["finished before", "finished before", "failed", "finished before"]
    table = summary_table(again)
    assert table.splitlines()[0].split() == ["run", "status", "steps", "loss", "time", "error"]
    assert "no-such-generator.pt" in table


@pytest.mark.slow
def test_a_sweep_over_two_worker_processes(tmp_path):
    path = write_sweep(tmp_path)
    outcomes = run_sweep(path, tmp_path / "out", jobs=2, report=lambda line: None)
    assert [o.status for o in outcomes] == ["done", "done", "failed", "done"]
    assert (tmp_path / "out" / "logs" / "sketch.log").exists()
    assert "generator.checkpoint" in outcomes[2].error


def test_sweep_file_mistakes_are_one_line(tmp_path):
    for text, says in [("[[runs]]\nname = 'a/b'\n", "not usable as a directory name"),
                       ("[[runs]]\nname = 'a'\n[[runs]]\nname = 'a'\n", "used twice"),
                       ("runs = []\n", "no runs"), ("jobs = 2\n[[runs]]\n", "unknown key"),
                       ("preset = 5\n[[runs]]\n", "preset = 5 must be a preset name"),
                       ("recipe = ['a']\n[[runs]]\n", r"recipe = \['a'\] must be a recipe file name")]:
        with pytest.raises(CommandLineError, match=says):
            read_sweep(write_sweep(tmp_path, text))


def test_a_run_entry_of_the_wrong_type_fails_alone(tmp_path):
    text = ('recipe = "base.toml"\n[[runs]]\nname = "a"\ntarget = "x"\ngenerator = "shapes"\n'
            '[[runs]]\nname = "b"\ntarget = "y"\nrecipe = 5\n[[runs]]\nname = "c"\ntarget = "z"\npreset = 5\n'
            '[[runs]]\nname = "d"\ntarget = "w"\n')
    runs = {r.name: r for r in read_sweep(write_sweep(tmp_path, text))}
    assert "runs[0].generator = 'shapes' must be a table" in runs["a"].problem
    assert "runs[1].recipe = 5 must be a recipe file name" in runs["b"].problem
    assert "runs[2].preset = 5 must be a preset name" in runs["c"].problem
    assert runs["d"].problem is None and runs["d"].data["target"] == "w"


def test_a_finished_run_whose_checkpoints_were_deleted_counts_as_finished(tmp_path):
    import shutil

    from zsgm.loop import adapt
    from zsgm.recipe import recipe_from_dict
    from zsgm.sweep import run_state

    runs = read_sweep(write_sweep(tmp_path, 'recipe = "base.toml"\n[[runs]]\nname = "a"\ntarget = "x"\n'
                                            'optim = { steps = 2 }\nrun = { progress = false, sample_every = 0 }\n'))
    recipe = recipe_from_dict(runs[0].data)
    adapt(recipe, out_dir=tmp_path / "a")
    assert run_state(tmp_path / "a", recipe) == "finished"
    shutil.rmtree(tmp_path / "a" / "checkpoints")  # to save space
    assert run_state(tmp_path / "a", recipe) == "finished"
    assert run_state(tmp_path / "new", recipe) == "new"
