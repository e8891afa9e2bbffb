"""``zsgm eval`` on the command line: run directories, .pt / .pkl / .safetensors files and names, offline; the
shapes family with today's numbers; refusals in one line; --at-checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_output import one_error_line
from test_eval_runner import fake_registry, make_run
from test_generator_nvidia_pkl import nv, small  # noqa: F401 - nv is a fixture (stand-in NVIDIA pickles)

from zsgm.cli import main
from zsgm.cli_errors import USER_ERROR_EXIT

QUIET = ["--no-progress", "--device", "cpu"]


def test_tiny_random_run_refuses_the_shapes_judges_in_one_line(tmp_path, capsys, monkeypatch):
    fake_registry(monkeypatch)
    run = make_run(tmp_path / "run")
    for asked in ("shapes", "target-rate"):
        assert main(["eval", str(run), "--metrics", asked, "-n", "4", *QUIET]) == USER_ERROR_EXIT
        line = one_error_line(capsys)
        assert "does not apply to" in line and "not the generator 'tiny-random'" in line
    assert not (run / "eval.json").exists()
    assert main(["eval", str(run), "-n", "4", *QUIET]) == 0  # the defaults: listed as skipped, not refused
    out = capsys.readouterr().out
    assert "skipped background-artefact, content-iou, diversity-ratio, target-rate: the shapes judges read only " \
           "the shapes world's generator, not the generator 'tiny-random'" in out
    assert set(json.loads((run / "eval.json").read_text())["metrics"]) == {"fake"}


def test_shapes_run_gets_the_judges_with_todays_numbers(tmp_path, capsys, monkeypatch):
    from zsgm.toy.evaluate import evaluate_run

    fake_registry(monkeypatch)
    run = make_run(tmp_path / "sketch", "shapes")
    assert main(["eval", str(run), "-n", "16", *QUIET]) == 0
    printed = capsys.readouterr().out
    record = json.loads((run / "eval.json").read_text())
    assert "| sketch | style:sketch | directional | " in printed
    assert (run / "eval.md").read_text() in printed
    today = evaluate_run(run, n=16)  # zsgm.toy.evaluate: what `zsgm eval` computed before the metric plugins
    for key in ("target_rate", "content_iou", "background_artefact", "diversity_ratio"):
        assert record[key] == today[key], key
        assert record["metrics"][key.replace("_", "-")]["record"]["task"] == "style:sketch"
    assert record["metrics"]["target-rate"]["record"]["colour_rate"] == today["colour_rate"]
    assert record["n"] == 16 and record["steps"] == 4 and record["seed"] == 12345


def test_target_option_sets_the_shapes_task(tmp_path, capsys):
    """Through the process-wide registry: the built-in plugin registers the shapes family."""
    run = make_run(tmp_path / "run", "shapes")
    assert main(["eval", str(run), "-n", "8", "--metrics", "target-rate", "--target", "blue", *QUIET]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert record["task"] == "colour:blue" and record["target"] == "blue" and set(record["metrics"]) == {"target-rate"}


def test_generator_files_evaluate_offline_with_a_registered_metric(tmp_path, capsys, monkeypatch, nv):  # noqa: F811
    from zsgm.generator import export_rosinality, save_generator

    fake_registry(monkeypatch)
    g = small()
    files = {"g.pt": lambda p: export_rosinality(g, p), "g.safetensors": lambda p: save_generator(g, p),
             "g.pkl": lambda p: nv.write(g, p)}
    means = []
    for name, write in files.items():
        write(tmp_path / name)
        out = tmp_path / f"out-{name}"
        assert main(["eval", str(tmp_path / name), "--metrics", "fake", "-n", "5", "--seed", "7",
                     "--truncation", "0.5", "--out", str(out), *QUIET]) == 0, name
        record = json.loads((out / "eval.json").read_text())
        assert record["evaluated"]["kind"] == "file" and record["fake_paired"] == 0.0
        assert (record["seed"], record["truncation"], record["n"]) == (7, 0.5, 5)
        assert "| g" in (out / "eval.md").read_text()
        means.append(record["fake_mean"])
    assert means[0] == pytest.approx(means[1], abs=1e-6) and means[0] == pytest.approx(means[2], abs=1e-5)
    assert not nv.marker.exists()  # the pickle's embedded code never ran
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "g.pt"), "-n", "5", *QUIET]) == 0
    assert "not a run directory, nothing written (give --out DIR" in capsys.readouterr().out


def test_several_targets_share_one_table_and_out_holds_them_all(tmp_path, capsys, monkeypatch):
    fake_registry(monkeypatch)
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    assert main(["eval", str(a), str(b), "tiny-random", "--metrics", "fake", "-n", "3", "--out",
                 str(tmp_path / "out"), *QUIET]) == 0
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [r["evaluated"]["kind"] for r in data["results"]] == ["run", "run", "name"]
    rows = [line for line in (tmp_path / "out" / "eval.md").read_text().splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| a", "| b", "| tiny-random"]


def test_at_checkpoints_writes_a_row_per_step_and_the_picture(tmp_path, capsys, monkeypatch):
    fake_registry(monkeypatch)
    run = make_run(tmp_path / "run", steps=4, snapshot_every=2)
    assert main(["eval", str(run), "--at-checkpoints", "--metrics", "fake", "-n", "4", *QUIET]) == 0
    record = json.loads((run / "eval-steps.json").read_text())
    assert [row["step"] for row in record["rows"]] == [0, 2, 4]
    assert all(set(row["values"]) == {"fake_mean", "fake_paired"} for row in record["rows"])
    assert (run / "eval-steps.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "| 0 | source |" in printed and "| 2 | step-000002.safetensors |" in printed
    assert main(["eval", "tiny-random", "--at-checkpoints"]) == USER_ERROR_EXIT
    assert one_error_line(capsys) == "zsgm: error: tiny-random: --at-checkpoints needs a run directory (its " \
                                     "snapshots/ and recipe)"


@pytest.mark.parametrize("argv, message", [
    (["nowhere-run"], "nowhere-run: no such run directory or generator file, and not a registered generator name"),
    (["tiny-random", "--metrics", "fid-typo,fake"], "unknown metric or metric family 'fid-typo'"),
    (["tiny-random", "--metrics", "fake,"], "argument --metrics: 'fake,' has an empty name"),
    (["tiny-random", "--weights", "inception"], "argument --weights: expected KEY=PATH"),
    (["tiny-random", "--option", "k=3"], "argument --option: expected METRIC.KEY=VALUE"),
    (["tiny-random", "--real", "no-such-folder"], "--real no-such-folder: no such folder of real images"),
    (["tiny-random", "--metrics", "broken"], "put fake.pth in /nowhere"),
])
def test_bad_input_is_one_line(argv, message, tmp_path, capsys, monkeypatch):
    fake_registry(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", *argv, "-n", "2", *QUIET]) == USER_ERROR_EXIT
    assert message in one_error_line(capsys)


def test_options_reach_the_metrics(tmp_path, monkeypatch, capsys):
    from zsgm.metrics import runner

    fake_registry(monkeypatch)
    seen = {}
    real_evaluate = runner.evaluate

    def spy(target, *, options, registry=None):
        seen["options"] = options
        return real_evaluate(target, options=options, registry=registry)

    monkeypatch.setattr(runner, "evaluate", spy)
    (tmp_path / "real").mkdir()
    assert main(["eval", "tiny-random", "--metrics", "fake", "-n", "2", "--real", str(tmp_path / "real"),
                 "--weights", "inception=/w/inc.pth", "--weights", "lpips-net=standin", "--option",
                 "intra-lpips.k=10", "--option", "intra-lpips.centres=/c", "--noise-mode", "const", "--batch", "1",
                 *QUIET]) == 0
    o = seen["options"]
    assert o.weights == {"inception": "/w/inc.pth", "lpips-net": "standin"}
    assert o.options == {"intra-lpips": {"k": 10, "centres": "/c"}} and o.real_dir == tmp_path / "real"
    assert (o.settings.noise_mode, o.settings.batch, o.device) == ("const", 1, torch.device("cpu"))


@pytest.mark.slow  # ~20 s: a real 4-step adaptation (CLIP import included)
def test_at_checkpoints_on_a_real_four_step_run(tmp_path, capsys, monkeypatch):
    from zsgm.loop import adapt
    from zsgm.recipe import recipe_from_dict
    from test_eval_runner import tiny_recipe

    fake_registry(monkeypatch)
    adapt(recipe_from_dict(tiny_recipe(steps=4, snapshot_every=2)), out_dir=tmp_path / "run")
    assert main(["eval", str(tmp_path / "run"), "--at-checkpoints", "--metrics", "fake", "-n", "4", *QUIET]) == 0
    rows = json.loads((tmp_path / "run" / "eval-steps.json").read_text())["rows"]
    assert [(r["step"], r["generator"].rsplit("/", 1)[-1]) for r in rows] == [
        (0, "source"), (2, "step-000002.safetensors"), (4, "generator.safetensors")]
    assert rows[0]["values"]["fake_mean"] != rows[2]["values"]["fake_mean"]
    assert (tmp_path / "run" / "eval-steps.png").is_file()


def test_save_samples_writes_the_paired_pngs_losslessly(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from zsgm.builtin_plugin import tiny_random_generator
    from zsgm.generator import load_generator
    from zsgm.io_utils import to_uint8
    from zsgm.metrics.samples import SampleSettings, draw_samples

    fake_registry(monkeypatch)
    run = make_run(tmp_path / "run")
    assert main(["eval", str(run), "--metrics", "fake", "-n", "3", "--seed", "4", "--save-samples", *QUIET]) == 0
    folder = run / "eval-samples"
    assert sorted(p.name for p in (folder / "generated").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    adapted, _ = load_generator(run / "generator.safetensors")
    source, _ = tiny_random_generator()
    src, gen = draw_samples([source, adapted], mapper=source, settings=SampleSettings(n=3, seed=4))
    assert (to_uint8(gen)[2] == np.asarray(Image.open(folder / "generated" / "000002.png"))).all()
    assert (to_uint8(src)[0] == np.asarray(Image.open(folder / "source" / "000000.png"))).all()
    assert json.loads((run / "eval.json").read_text())["samples_dir"] == str(folder)
    assert main(["eval", "tiny-random", "--save-samples", *QUIET]) == USER_ERROR_EXIT
    assert "--save-samples: tiny-random is not a run directory; give --out DIR" in one_error_line(capsys)


def test_save_samples_of_targets_with_one_base_name_go_to_separate_folders(tmp_path, capsys, monkeypatch):
    fake_registry(monkeypatch)
    a, b = make_run(tmp_path / "a" / "run"), make_run(tmp_path / "b" / "run")
    out = tmp_path / "out"
    assert main(["eval", str(a), str(b), "tiny-random", "--metrics", "fake", "-n", "2", "--out", str(out),
                 "--save-samples", *QUIET]) == 0
    data = json.loads((out / "eval.json").read_text())
    folders = [r["samples_dir"] for r in data["results"]]
    assert folders == [str(out / "eval-samples" / name) for name in ("1-run", "2-run", "tiny-random")]
    for folder in folders:
        assert sorted(p.name for p in (Path(folder) / "generated").iterdir()) == ["000000.png", "000001.png"]


def test_a_library_metric_runs_offline_from_a_local_weights_file_on_every_kind_of_target(tmp_path, capsys,
                                                                                         nv):  # noqa: F811
    """Intra-LPIPS through the lpips package with its backbone from a local file (a seeded SqueezeNet 1.1, 5 MB, in
    torchvision's layout: what `--weights lpips=PATH` takes on a machine without a network), on a run directory
    and on the same generator as .pt, .pkl and .safetensors: the same samples give the same number."""
    import torchvision

    from zsgm.generator import export_rosinality, load_generator, save_generator

    torch.manual_seed(0)
    backbone = tmp_path / "squeezenet1_1-b8a52dc0.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), backbone)
    run = make_run(tmp_path / "run", steps=1)
    g, _ = load_generator(run / "generator.safetensors")
    export_rosinality(g, tmp_path / "g.pt")
    save_generator(g, tmp_path / "g.safetensors")
    nv.write(g, tmp_path / "g.pkl")
    values = []
    for target in (run, tmp_path / "g.pt", tmp_path / "g.pkl", tmp_path / "g.safetensors"):
        out = tmp_path / f"out-{target.name}"
        assert main(["eval", str(target), "--metrics", "intra-lpips", "-n", "8", "--option", "intra-lpips.k=2",
                     "--weights", "lpips-net=squeeze", "--weights", f"lpips={backbone}", "--out", str(out),
                     *QUIET]) == 0, target
        record = json.loads((out / "eval.json").read_text())
        assert record["metrics"]["intra-lpips"]["record"]["weights"]["lpips"]["path"] == str(backbone)
        values.append(record["intra-lpips"])
    assert values[0] > 0 and all(v == pytest.approx(values[0], rel=1e-4) for v in values), values
    assert not nv.marker.exists()
