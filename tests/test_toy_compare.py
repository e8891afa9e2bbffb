"""``python -m zsgm.toy.compare``: which presets run on the shapes world, where their runs go, resuming, the
document. Adaptation and judging are replaced by stand-ins here (the real comparison takes many minutes)."""

from __future__ import annotations

import json

import pytest

from zsgm.plugins import get_registry
from zsgm.toy import benchmark, compare


@pytest.fixture
def fake_runs(monkeypatch):
    """The benchmark's run_one, unchanged, over a stand-in adapt and judge; returns the adapted run dirs."""
    adapted = []

    def adapt(recipe, *, out_dir, registry, resume):
        adapted.append((out_dir, recipe.target, recipe.run.seed))
        out_dir.mkdir(parents=True, exist_ok=True)

    def evaluate_run(out, *, n, registry):
        target = adapted[-1][1]
        return {"run": str(out), "source": "photo" if target != "blue" else "red", "target": target,
                "techniques": "x", "steps": 301, "task": f"style:{target}", "target_rate": 0.5, "content_iou": 0.75,
                "background_artefact": 0.125, "diversity_ratio": 1.0}

    monkeypatch.setattr(benchmark, "adapt", adapt)
    monkeypatch.setattr(benchmark, "evaluate_run", evaluate_run)
    return adapted


def test_text_presets_apply_and_one_shot_is_skipped_with_its_reason():
    applicable, skipped = compare.shapes_presets(get_registry())
    assert {"nada", "ipl", "svl", "air"} <= set(applicable)
    reasons = dict(skipped)
    assert "oneclip" not in applicable and reasons["oneclip"].startswith("needs a reference image (read by ")


def test_runs_go_where_the_benchmark_puts_them_and_finished_runs_are_read_back(tmp_path, fake_runs):
    registry = get_registry()
    lines = []
    records, skipped = compare.compare(tmp_path, presets=["nada"], tasks=["photo:sketch", "red:blue"], seeds=[0, 1],
                                       n_eval=8, registry=registry, progress=lines.append)
    tasks = ("photo:sketch", "red:blue")
    expected = [compare.run_dir(tmp_path, "nada", task, seed) for seed in (0, 1) for task in tasks]
    assert [out for out, _, _ in fake_runs] == expected
    assert [seed for _, _, seed in fake_runs] == [0, 0, 1, 1]
    assert expected[1] == tmp_path / "seed-0" / "nada--red-to-blue"
    assert [r["seed"] for r in records] == [0, 0, 1, 1] and all(r["preset"] == "nada" for r in records)
    assert json.loads((expected[0] / "eval.json").read_text())["seconds"] >= 0
    assert lines[1].startswith("| nada | red -> blue | 0 | 301 | 0.500 | 0.750 | 0.125 | 1.000 |")

    (expected[3] / "eval.json").unlink()  # interrupted before its judging: only that run is done again
    again, _ = compare.compare(tmp_path, presets=["nada"], tasks=["photo:sketch", "red:blue"], seeds=[0, 1],
                               n_eval=8, registry=registry, progress=lambda line: None)
    assert [out for out, _, _ in fake_runs[4:]] == [expected[3]]
    assert [r["run"] for r in again] == [r["run"] for r in records]


def test_a_preset_that_does_not_apply_is_refused_with_the_reason(tmp_path, fake_runs):
    with pytest.raises(ValueError, match="preset 'oneclip': needs a reference image"):
        compare.compare(tmp_path, presets=["oneclip"], registry=get_registry())
    assert fake_runs == []


def test_main_writes_the_document_with_command_table_means_and_skipped_presets(tmp_path, fake_runs, capsys):
    doc = tmp_path / "COMPARISON.md"
    argv = ["--out", str(tmp_path / "runs"), "--presets", "nada", "--tasks", "photo:sketch", "--n-eval", "8",
            "--noise", "preset", "shared", "--table", str(doc)]
    assert compare.main(argv) == 0
    assert compare.main(argv + ["--note", "Measured on a test machine."]) == 0  # read back, nothing run again
    text = doc.read_text()
    assert f"python -m zsgm.toy.compare {' '.join(argv)} --note TEXT\n```\n" in text
    assert "\nMeasured on a test machine.\n" in text and len(fake_runs) == 2
    assert ("| preset | task | seed | steps | target rate | content IoU | background artefact | diversity ratio "
            "| wall seconds |") in text
    assert "| nada | 1 | 0.500 | 0.750 | 0.125 | 1.000 |" in text  # the per-preset means
    assert "| nada (shared noise) | photo -> sketch | 0 | 301 |" in text
    assert (tmp_path / "runs" / "seed-0" / "nada--photo-to-sketch--shared-noise" / "eval.json").is_file()
    assert "- `oneclip`: needs a reference image" in text
    assert json.loads((tmp_path / "runs" / "benchmark.json").read_text())[0]["preset"] == "nada"
