"""``zsgm edit`` end to end on a tiny generator file and the tiny random CLIP: the mapper is trained on first use
(codes, a few fit steps, relevance) and cached by the generator's fingerprint; a seed's source image is
``zsgm sample``'s; W+ latent files; bad input is one line and exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from zsgm.cli import main
from zsgm.cli_seeds import render_seed
from zsgm.fit import fit
from zsgm.generator import save_generator
from zsgm.generator.checkpoints import export_rosinality
from zsgm.generator.stylespace import style_layout
from zsgm_deltaedit.cli import seed_code
from zsgm_deltaedit.mappers import codes_folder, ensure_mapper, mapper_folder
from zsgm_deltaedit.recipe import load_mapper_recipe
from zsgm_deltaedit.store import weights_fingerprint
from zsgm_deltaedit.train import MapperTask
from zsgm_deltaedit.codes import build_codes

from deltaedit_tiny import TINY_RECIPE, make_tiny_generator  # tests/deltaedit_tiny.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A generator file, a recipe and a cache in which ``zsgm edit`` trained the mapper once (3 seeds)."""
    root = tmp_path_factory.mktemp("deltaedit")
    gen = root / "tiny.safetensors"
    save_generator(make_tiny_generator(), gen)
    recipe = root / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    mp = pytest.MonkeyPatch()
    mp.setenv("ZSGM_CACHE", str(root / "cache"))
    out = root / "first"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["edit", str(gen), "--recipe", str(recipe), "--seeds", "0-2", "--target", "sketch", "--outdir",
                   str(out), "--quiet", "--device", "cpu"])
    yield {"root": root, "gen": gen, "recipe": recipe, "out": out, "rc": rc, "stdout": buf.getvalue()}
    mp.undo()


def _png(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_first_use_trains_caches_and_writes_images(trained, monkeypatch, capsys):
    assert trained["rc"] == 0
    assert "no tiny mapper for this generator yet; training it on first use" in trained["stdout"]
    out = trained["out"]
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png"]
    generator = make_tiny_generator()
    folder = mapper_folder(weights_fingerprint(generator), load_mapper_recipe(trained["recipe"]),
                           root=trained["root"] / "cache")
    assert {"mapper.json", "fit", "relevance.safetensors"} <= {p.name for p in folder.iterdir()}
    assert len((folder / "fit" / "losses.jsonl").read_text().splitlines()) == 4
    # grid: the source row, then strengths 0.5 and 1 (the recipe's); 3 seeds
    assert _png(out / "grid.png").shape[0] == 3 * (96 + 2) + 2
    # a second call finds the cached mapper and gives the same images
    monkeypatch.setenv("ZSGM_CACHE", str(trained["root"] / "cache"))
    again = trained["root"] / "again"
    assert main(["edit", str(trained["gen"]), "--recipe", str(trained["recipe"]), "--seeds", "0-2", "--target",
                 "sketch", "--outdir", str(again), "--quiet", "--device", "cpu"]) == 0
    assert "training" not in capsys.readouterr().out
    for name in ("seed0000.png", "grid.png"):
        assert np.array_equal(_png(out / name), _png(again / name))
    # --mapper DIR uses that folder; theta so high that nothing moves: the edit is the source image
    frozen = trained["root"] / "frozen"
    assert main(["edit", str(trained["gen"]), "--mapper", str(folder), "--seeds", "1", "--target", "sketch",
                 "--theta", "100", "--outdir", str(frozen), "--quiet", "--device", "cpu"]) == 0
    sample = trained["root"] / "sample1"
    assert main(["sample", str(trained["gen"]), "--seeds", "1", "--outdir", str(sample), "--device", "cpu"]) == 0
    assert np.array_equal(_png(frozen / "seed0001.png"), _png(sample / "seed0001.png"))
    # the same generator as a rosinality .pt: same fingerprint, so the cached mapper and the same edits
    export_rosinality(make_tiny_generator(), trained["root"] / "tiny.pt")
    ros = trained["root"] / "rosinality"
    assert main(["edit", str(trained["root"] / "tiny.pt"), "--recipe", str(trained["recipe"]), "--seeds", "0-2",
                 "--target", "sketch", "--outdir", str(ros), "--quiet", "--device", "cpu"]) == 0
    assert "training" not in capsys.readouterr().out
    assert np.array_equal(_png(out / "seed0002.png"), _png(ros / "seed0002.png"))


@pytest.mark.slow
def test_source_row_is_zsgm_sample(trained):
    sample = trained["root"] / "sample"
    assert main(["sample", str(trained["gen"]), "--seeds", "0-2", "--outdir", str(sample), "--device", "cpu"]) == 0
    ours, theirs = _png(trained["out"] / "grid.png"), _png(sample / "grid.png")
    assert ours.shape[1] == theirs.shape[1]
    assert np.array_equal(ours[:theirs.shape[0]], theirs)


@pytest.mark.slow
def test_single_images_are_at_the_chosen_strength(trained, monkeypatch, tmp_path):
    """--strength 0 writes the unedited images (zsgm sample's); the recipe's edit.strength is the default."""
    monkeypatch.setenv("ZSGM_CACHE", str(trained["root"] / "cache"))
    common = [str(trained["gen"]), "--seeds", "1", "--target", "sketch", "--quiet", "--device", "cpu"]
    assert main(["edit", *common, "--recipe", str(trained["recipe"]), "--strength", "0", "--outdir",
                 str(tmp_path / "zero")]) == 0
    assert main(["sample", str(trained["gen"]), "--seeds", "1", "--outdir", str(tmp_path / "sample"), "--device",
                 "cpu"]) == 0
    assert np.array_equal(_png(tmp_path / "zero" / "seed0001.png"), _png(tmp_path / "sample" / "seed0001.png"))
    # the same mapper (same codes, training and CLIP), with the single images' strength set in the recipe
    recipe = tmp_path / "zero.toml"
    recipe.write_text(trained["recipe"].read_text().replace("[edit]", "[edit]\nstrength = 0.0"))
    assert main(["edit", *common, "--recipe", str(recipe), "--outdir", str(tmp_path / "recipe")]) == 0
    assert np.array_equal(_png(tmp_path / "recipe" / "seed0001.png"), _png(tmp_path / "sample" / "seed0001.png"))
    # the default (strength 1 in the tiny recipe) does move the image
    assert not np.array_equal(_png(trained["out"] / "seed0001.png"), _png(tmp_path / "sample" / "seed0001.png"))
    # strength 0 with the ToRGB step on is still the unedited image; at strength 1 the step moves it
    assert main(["edit", *common, "--recipe", str(trained["recipe"]), "--strength", "0", "--torgb", "2",
                 "--outdir", str(tmp_path / "zero-torgb")]) == 0
    assert np.array_equal(_png(tmp_path / "zero-torgb" / "seed0001.png"), _png(tmp_path / "sample" / "seed0001.png"))
    assert main(["edit", *common, "--recipe", str(trained["recipe"]), "--torgb", "2", "--outdir",
                 str(tmp_path / "torgb")]) == 0
    assert not np.array_equal(_png(tmp_path / "torgb" / "seed0001.png"), _png(trained["out"] / "seed0001.png"))


@pytest.mark.slow
def test_the_torgb_direction_comes_from_the_mappers_codes_once_per_text(trained, tiny_clip):
    from zsgm_deltaedit.codes import CodeReader
    from zsgm_deltaedit.edit import text_delta
    from zsgm_deltaedit.mappers import load_mapper
    from zsgm_deltaedit.torgb import torgb_direction

    generator = make_tiny_generator()
    folder = mapper_folder(weights_fingerprint(generator), load_mapper_recipe(trained["recipe"]),
                           root=trained["root"] / "cache")
    mapper = load_mapper(folder, generator=generator, clip_model=tiny_clip)
    assert mapper.codes == codes_folder(weights_fingerprint(generator), load_mapper_recipe(trained["recipe"]),
                                        root=trained["root"] / "cache") and mapper.codes_rows == 24
    dt = text_delta(tiny_clip, "photo", "sketch")
    first = mapper.torgb_direction(generator, dt)
    assert mapper.torgb_direction(generator, dt.clone()) is first
    want = torgb_direction(CodeReader(mapper.codes), generator, dt)
    torch.testing.assert_close(first.direction, want.direction)


@pytest.mark.parametrize("noise_mode, trunc", [("const", 0.7), ("random", 1.0), ("none", 0.5)])
def test_seed_code_is_render_seed_exactly(noise_mode, trunc):
    g = make_tiny_generator()
    mean = g.default_mean_latent()
    with torch.no_grad():
        image, ws, noise = seed_code(g, 7, truncation=trunc, mean=mean, noise_mode=noise_mode, device="cpu")
        want = render_seed(g, 7, truncation=trunc, mean=mean, noise_mode=noise_mode, device="cpu")
        assert torch.equal(image, want)
        assert torch.equal(g.synthesis(ws, noise=noise), want)


@pytest.mark.slow
def test_latent_file_edits_and_bad_file(trained, monkeypatch, capsys):
    monkeypatch.setenv("ZSGM_CACHE", str(trained["root"] / "cache"))
    g = make_tiny_generator()
    np.save(trained["root"] / "w.npy", torch.randn(2, g.n_latent, 16).numpy())
    out = trained["root"] / "latents"
    assert main(["edit", str(trained["gen"]), "--recipe", str(trained["recipe"]), "--latents",
                 str(trained["root"] / "w.npy"), "--target", "sketch", "--outdir", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "latent0000.png", "latent0001.png"]
    capsys.readouterr()
    np.save(trained["root"] / "bad.npy", torch.randn(2, 3, 16).numpy())
    assert main(["edit", str(trained["gen"]), "--recipe", str(trained["recipe"]), "--latents",
                 str(trained["root"] / "bad.npy"), "--target", "sketch", "--outdir", str(out), "--quiet",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zsgm: error: ") and len(err.splitlines()) == 1
    assert "bad.npy: W+ codes must be [N, 6, 16]" in err


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0-1", "--latents", "w.npy"], "--latents FILE edits the codes in the file"),
    (["--strengths", "0.5,x"], "--strengths"),
    (["--strength", "nan"], "argument --strength: must be a finite number"),
    (["--torgb", "-1"], "argument --torgb: must be >= 0"),
    (["--latents", "missing.npy"], "--latents missing.npy: no such file"),
    (["--mapper", "nowhere"], "--mapper nowhere: no such mapper folder"),
    (["--preset", "deltaedit", "--recipe", "r.toml"], "give --preset NAME or --recipe FILE, not both"),
    (["--theta", "-1"], "--theta"),
    (["--layers", "3-x"], "'3-x' in '3-x' is not a layer index or a range"),
    (["--layers", "0-9"], "--layers: style layers [7, 8, 9]: this generator has 7 style layers"),
])
def test_bad_options_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "w.npy", np.zeros((1, 6, 16), dtype=np.float32))
    rc = main(["edit", "tiny-random", "--target", "blue", "--outdir", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("zsgm: error: "), err
    assert message in err


@pytest.mark.slow
def test_an_interrupted_training_resumes(tmp_path, tiny_clip):
    g = make_tiny_generator()
    recipe_path = tmp_path / "tiny.toml"
    recipe_path.write_text(TINY_RECIPE.replace("images = 2", "images = 1"))
    recipe = load_mapper_recipe(recipe_path)
    root = tmp_path / "cache"
    fingerprint = weights_fingerprint(g)
    codes = codes_folder(fingerprint, recipe, root=root)
    identity = {"generator": fingerprint, "clip": {"name": "tiny-random", "pretrained": None, "preprocess": "deltaedit"}}
    build_codes(codes, g, tiny_clip, samples=24, chunk_size=10, identity=identity, batch=64, progress=False)
    task = MapperTask(recipe, codes, widths=[layer.channels for layer in style_layout(g)],
                      clip_dim=tiny_clip.embed_dim, codes_id={"folder": codes.name, "rows": 24})
    folder = mapper_folder(fingerprint, recipe, root=root)
    fit(task, out_dir=folder / "fit", steps=4, seed=0, checkpoint_every=2, progress=False, stop_after=2)
    logs = []
    trained = ensure_mapper(g, recipe, clip_model=tiny_clip, root=root, progress=False, log=logs.append)
    assert json.loads((folder / "fit" / "fit.json").read_text())["resumed_from"] == 2
    assert trained.relevance.shape == (40, tiny_clip.embed_dim)
    assert any("mapper ready" in line for line in logs)


@pytest.mark.slow
def test_cached_mapper_takes_the_current_edit_defaults_and_relevance_settings(trained, tiny_clip, tmp_path):
    import shutil

    from zsgm_deltaedit.recipe import mapper_recipe_from_dict, mapper_recipe_to_dict, merge_recipe
    from zsgm_deltaedit.relevance import RELEVANCE_FILE, read_relevance

    g = make_tiny_generator()
    recipe = load_mapper_recipe(trained["recipe"])
    root = tmp_path / "cache"
    shutil.copytree(trained["root"] / "cache", root)
    folder = mapper_folder(weights_fingerprint(g), recipe, root=root)
    before = read_relevance(folder / RELEVANCE_FILE)
    changed = mapper_recipe_from_dict(merge_recipe(mapper_recipe_to_dict(recipe),
                                                   {"edit": {"theta": 0.5}, "relevance": {"images": 3}}))
    assert mapper_folder(weights_fingerprint(g), changed, root=root) == folder  # same trained mapper
    logs = []
    got = ensure_mapper(g, changed, clip_model=tiny_clip, root=root, progress=False, log=logs.append)
    assert got.recipe.edit.theta == 0.5 and got.folder == folder
    assert any("channel relevance over 3 images" in line for line in logs)
    assert not torch.equal(read_relevance(folder / RELEVANCE_FILE), before)


def test_the_shapes_world_picks_its_preset():
    from zsgm.builtin_plugin import tiny_random_generator
    from zsgm.toy.assets import load_shapes_generator
    from zsgm_deltaedit.cli import is_shapes_world

    shapes, _ = load_shapes_generator()
    assert is_shapes_world(shapes)
    assert not is_shapes_world(tiny_random_generator()[0])
    assert not is_shapes_world(make_tiny_generator())
