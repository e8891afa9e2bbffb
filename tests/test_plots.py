"""The loss plot: ``zsgm.plots.plot_losses`` and ``zsgm plot RUN`` (one panel per term plus the total)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from zsgm import cli
from zsgm.plots import MAX_COLUMNS, PlotError, moving_average, plot_losses, read_losses


def write_losses(path, n=30):
    """A log like the loop's: two terms (one computed every 2nd step) and the total."""
    lines = []
    for step in range(n):
        record = {"step": step, "directional/directional": 1.0 / (step + 1)}
        if step % 2 == 0:
            record["weight-anchor/l2"] = 0.01 * step
        record["total"] = record["directional/directional"] + record.get("weight-anchor/l2", 0.0)
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_losses_keeps_each_terms_own_steps_and_puts_the_total_last(tmp_path):
    series = read_losses(write_losses(tmp_path / "losses.jsonl", n=6))
    assert list(series) == ["directional/directional", "weight-anchor/l2", "total"]
    assert series["weight-anchor/l2"] == ([0, 2, 4], [0.0, 0.02, 0.04])
    assert series["directional/directional"][0] == [0, 1, 2, 3, 4, 5]
    assert series["total"][1][1] == pytest.approx(0.5)


def test_moving_average_is_the_trailing_mean_and_keeps_gaps():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    out = moving_average([1.0, float("nan"), 3.0], 3)
    assert out[0] == 1.0 and out[1] != out[1] and out[2] == 2.0


def test_plot_losses_writes_one_panel_per_term_and_the_total(tmp_path):
    out = plot_losses(write_losses(tmp_path / "losses.jsonl"), tmp_path / "sub" / "plot.png")
    image = Image.open(out)
    assert image.format == "PNG"
    width, height = image.size  # 3 panels in one row: 4.2 x 2.8 inches each at 100 dpi
    assert (width, height) == (round(4.2 * MAX_COLUMNS * 100), 280)


def test_zsgm_plot_writes_run_losses_png_by_default_and_out_elsewhere(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_losses(run / "losses.jsonl")
    assert cli.main(["plot", str(run)]) == 0
    assert (run / "losses.png").is_file() and capsys.readouterr().out.strip() == str(run / "losses.png")
    assert cli.main(["plot", str(run), "--out", str(tmp_path / "x.png")]) == 0
    assert Image.open(tmp_path / "x.png").size[0] > 0


@pytest.mark.parametrize("content, says", [
    (None, "no such losses log"),
    ("", "empty, no logged step"),
    ('{"step": 0, "total": 1.0}\n{"step": 1, "tot', "line 2: not JSON"),
    ('{"step": 0, "total": "high"}\n', "'total' is 'high', not a number"),
    ('[1, 2]\n', 'line 1: expected a JSON object with an integer "step"'),
])
def test_zsgm_plot_refuses_a_missing_empty_or_corrupt_log_in_one_line(tmp_path, capsys, content, says):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "losses.jsonl").write_text(content)
    assert cli.main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zsgm: error: ") and says in err and str(run / "losses.jsonl") in err
    assert err.count("\n") == 1 and not (run / "losses.png").exists()
    with pytest.raises(PlotError, match="losses.jsonl"):
        plot_losses(run / "losses.jsonl", run / "losses.png")
