"""The command line: adapt with a preset, user errors without tracebacks, plugins, sample, convert."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from PIL import Image

from zsgm.cli import USER_ERROR_EXIT, main


def test_adapt_preset_nada_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["adapt", "--preset", "nada", "--target", "sketch", "--generator", "tiny-random",
                 "--clip", "tiny-random", "--steps", "3", "--sample-every", "0", "--out", str(out), "--no-progress"])
    assert code == 0
    assert (out / "generator.safetensors").exists()
    assert "done: 3 steps" in capsys.readouterr().out
    # a resumed finished run is a no-op that still succeeds
    assert main(["adapt", "--resume", "--out", str(out), "--no-progress"]) == 0


def test_bad_recipe_field_is_one_clear_line(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "photo"\ntarget = "sketch"\n[generator]\ncheckpoint = "tiny-random"\n'
                      '[[techniques]]\nuse = "layer-freeze"\nk = -3\n')
    code = main(["adapt", str(recipe), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == USER_ERROR_EXIT
    assert "techniques[0].k: must be > 0, got -3" in err
    assert "Traceback" not in err


def test_unknown_generator_and_technique_are_named(tmp_path, capsys):
    code = main(["adapt", "--preset", "nada", "--target", "sketch", "--generator", "no-such-gan", "--clip",
                 "tiny-random", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == USER_ERROR_EXIT and "generator.checkpoint: unknown generator 'no-such-gan'" in err
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "a"\ntarget = "b"\n[[techniques]]\nuse = "directonal"\n')
    assert main(["adapt", str(recipe), "--out", str(tmp_path / "o2")]) == USER_ERROR_EXIT
    assert "Did you mean 'directional'?" in capsys.readouterr().err


def test_plugins_lists_first_party_and_example(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "nada  (zsgm-nada" in out and "directional" in out
    if importlib.util.find_spec("zsgm_plugin_example") is not None:
        assert "weight-anchor" in out


def test_sample_and_convert(tmp_path):
    grid = tmp_path / "grid.png"
    assert main(["sample", "tiny-random", "--out", str(grid), "-n", "5", "--cols", "3"]) == 0
    assert Image.open(grid).size[0] > 0
    single = tmp_path / "single"  # the old --out DIR -n N spelling works as --outdir with seeds 0..N-1
    assert main(["sample", "tiny-random", "--out", str(single), "-n", "2"]) == 0
    assert sorted(p.name for p in single.iterdir()) == ["grid.png", "seed0000.png", "seed0001.png"]


@pytest.mark.parametrize("module", ["zsgm.cli", "zsgm"])
def test_console_script_is_installed(module):
    result = subprocess.run([sys.executable, "-m", module, "plugins"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "zsgm.builtin" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("zsgm_plugin_example") is None,
                    reason="example plugin not installed (pip install -e examples/zsgm-plugin-example)")
def test_example_third_party_plugin_works_from_a_recipe(tmp_path):
    import pathlib

    recipe = pathlib.Path(__file__).parents[1] / "examples" / "recipes" / "tiny-with-example-plugin.toml"
    assert main(["adapt", str(recipe), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    lines = (tmp_path / "o" / "losses.jsonl").read_text().splitlines()
    assert len(lines) == 6 and '"weight-anchor/l2"' in lines[-1]
