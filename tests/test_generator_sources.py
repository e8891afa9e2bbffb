"""One resolver for every command that takes a generator: registered names, run directories, run checkpoints, files.

Run checkpoints are written here with the keys of :mod:`zsgm.checkpoint` (``format``, ``version``, ``next_step``,
``target``, ``ema``, ``optimizer``, ``techniques``) around real generator state dicts, and the run's
``recipe.toml`` names the source generator the way ``zsgm adapt`` writes it (``[generator] checkpoint = ...``).
"""

from __future__ import annotations

import pytest
import torch

from zsgm.generator import CheckpointError, Generator, GeneratorArch, export_rosinality, load_generator, save_generator


def small(seed=0):
    torch.manual_seed(seed)
    g = Generator(GeneratorArch.rosinality(16, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16))
    g.latent_avg = torch.randn(32)
    return g


def shifted(g, by):
    """A copy of ``g`` whose synthesis weights moved (what training does); the mapping stays the source's."""
    out = Generator(g.arch)
    out.load_state_dict(g.state_dict())
    with torch.no_grad():
        for name, p in out.named_parameters():
            if not name.startswith("style."):
                p.add_(by)
    return out


def write_run(run, source_spec, *, target, ema=None, finished=None):
    """A zsgm run directory: recipe.toml, checkpoints/last.pt and (when ``finished``) generator.safetensors."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "recipe.toml").write_text(f'source = "photo"\ntarget = "sketch"\n\n[generator]\n'
                                     f'checkpoint = "{source_spec}"\nsample_truncation = 0.7\n')
    (run / "checkpoints").mkdir(exist_ok=True)
    torch.save({"format": "zsgm-run-checkpoint", "version": 1, "next_step": 5, "target": target.state_dict(),
                "ema": ema.state_dict() if ema is not None else None, "optimizer": {"state": {}, "param_groups": []},
                "techniques": {}}, run / "checkpoints" / "last.pt")
    if finished is not None:
        save_generator(finished, run / "generator.safetensors")
    return run


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def load(spec, **kw):
    from zsgm.generator.sources import load_generator_source

    return load_generator_source(spec, **kw)


def test_run_checkpoint_takes_ema_weights_and_the_sources_architecture_and_latent_avg(tmp_path):
    src = small()
    export_rosinality(src, tmp_path / "src.pt")
    target, ema = shifted(src, 0.5), shifted(src, 0.25)
    run = write_run(tmp_path / "run", tmp_path / "src.pt", target=target, ema=ema)
    for spec in (run, run / "checkpoints" / "last.pt", str(run / "checkpoints" / "last.pt")):
        g, info = load(spec)
        assert same_weights(g, ema) and g.arch == src.arch and torch.equal(g.latent_avg, src.latent_avg)
        assert info["format"] == "zsgm-run-checkpoint" and info["weights"] == "ema" and info["next_step"] == 5
        assert info["source"]["format"] == "rosinality"
    # load_generator on the file itself resolves the same way
    g, _ = load_generator(run / "checkpoints" / "last.pt")
    assert same_weights(g, ema)
    # without an EMA copy the target weights are the generator
    write_run(run, tmp_path / "src.pt", target=target)
    g, info = load(run)
    assert same_weights(g, target) and info["weights"] == "target"


def test_a_finished_run_directory_means_its_generator_safetensors(tmp_path):
    src = small()
    export_rosinality(src, tmp_path / "src.pt")
    final = shifted(src, 1.0)
    run = write_run(tmp_path / "run", tmp_path / "src.pt", target=shifted(src, 0.5), finished=final)
    g, info = load(run)
    assert same_weights(g, final) and info["format"] == "zsgm" and info["run"] == str(run)


def test_source_named_by_registered_name_or_a_path_relative_to_the_run(tmp_path, monkeypatch):
    from zsgm.builtin_plugin import tiny_random_generator

    tiny, _ = tiny_random_generator()
    run = write_run(tmp_path / "named", "tiny-random", target=shifted(tiny, 0.1))
    g, info = load(run)
    assert g.arch == tiny.arch and same_weights(g, shifted(tiny, 0.1)) and info["source"]["spec"] == "tiny-random"
    src = small()
    (tmp_path / "rel").mkdir()
    export_rosinality(src, tmp_path / "rel" / "src.pt")
    run = write_run(tmp_path / "rel", "src.pt", target=shifted(src, 0.3))
    monkeypatch.chdir(tmp_path)  # "src.pt" is not in the working directory: found beside the run's recipe
    g, _ = load(run)
    assert same_weights(g, shifted(src, 0.3))


def test_run_checkpoint_problems_are_one_clear_error(tmp_path, monkeypatch):
    src = small()
    export_rosinality(src, tmp_path / "src.pt")
    last = write_run(tmp_path / "run", tmp_path / "src.pt", target=shifted(src, 0.5)) / "checkpoints" / "last.pt"
    # a copy away from its run has no recipe to name the architecture
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "ckpt.pt").write_bytes(last.read_bytes())
    with pytest.raises(CheckpointError, match=r"ckpt.pt: a zsgm run checkpoint holds no architecture and no "
                                              r"latent_avg; .* recipe.toml, which is not there"):
        load(tmp_path / "loose" / "ckpt.pt")
    # the source the recipe names is gone
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "run", "gone.pt", target=shifted(src, 0.5))
    with pytest.raises(CheckpointError, match=r"last.pt: needs the run's source generator 'gone.pt' \(generator."
                                              r"checkpoint in .*recipe.toml\) for its architecture and latent_avg"):
        load(tmp_path / "run")
    # the source does not fit the weights
    other = Generator(GeneratorArch.rosinality(16, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=8))
    export_rosinality(other, tmp_path / "other.pt")
    write_run(tmp_path / "run", tmp_path / "other.pt", target=shifted(src, 0.5))
    with pytest.raises(CheckpointError, match=r"last.pt \[target\]: key 'input.input' has shape \[1, 16, 4, 4\], the "
                                              r"run's source generator '.*other.pt' expects \[1, 8, 4, 4\]"):
        load(tmp_path / "run")
    # a run whose recipe names the run itself
    write_run(tmp_path / "run", tmp_path / "run", target=shifted(src, 0.5))
    with pytest.raises(CheckpointError, match=r"leads back to this run"):
        load(tmp_path / "run")
    # a recipe that is not TOML
    write_run(tmp_path / "run", tmp_path / "src.pt", target=shifted(src, 0.5))
    (tmp_path / "run" / "recipe.toml").write_text("generator = [", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"recipe.toml: cannot read the run's recipe \(.+\)"):
        load(tmp_path / "run")
    # a run that diverged
    bad = shifted(src, 0.5)
    with torch.no_grad():
        bad.convs[1].conv.weight[0, 0, 0] = float("nan")
    write_run(tmp_path / "run", tmp_path / "src.pt", target=bad, ema=bad)
    with pytest.raises(CheckpointError, match=r"last.pt \[ema\]: 1 of \d+ tensors hold non-finite values .* the "
                                              r"first is 'convs.1.conv.weight' \(9 of 2304 values\)"):
        load(tmp_path / "run")


def test_paths_without_a_generator_name_the_path(tmp_path):
    from zsgm.generator.sources import GeneratorNotFoundError

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: a directory without a generator \(expected generator."
                                              r"safetensors .* or checkpoints/last.pt"):
        load(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello, this is not a generator\n")
    with pytest.raises(CheckpointError, match=r"notes.txt: unknown file format"):
        load(tmp_path / "notes.txt")
    with pytest.raises(GeneratorNotFoundError, match=r"nowhere: not a registered generator name \(installed: .*"
                                                     r"tiny-random.*\) and not an existing file or run directory"):
        load(str(tmp_path / "nowhere"))


def test_load_generator_asset_delegates_and_keeps_the_recipe_error(tmp_path):
    from zsgm.plugins import get_registry
    from zsgm.recipe import RecipeError
    from zsgm.run import load_generator_asset

    src = small()
    export_rosinality(src, tmp_path / "src.pt")
    ema = shifted(src, 0.25)
    run = write_run(tmp_path / "run", tmp_path / "src.pt", target=shifted(src, 0.5), ema=ema)
    g, info = load_generator_asset(str(run), get_registry(), torch.device("cpu"))
    assert same_weights(g, ema) and info["weights"] == "ema"
    with pytest.raises(RecipeError, match=r"generator.checkpoint: unknown generator 'no-such-gan'"):
        load_generator_asset("no-such-gan", get_registry(), torch.device("cpu"))


def test_convert_takes_every_source_sample_takes(tmp_path):
    from zsgm.builtin_plugin import tiny_random_generator
    from zsgm.generator import convert_checkpoint

    convert_checkpoint("tiny-random", tmp_path / "tiny.safetensors")
    assert same_weights(load_generator(tmp_path / "tiny.safetensors")[0], tiny_random_generator()[0])
    src = small()
    export_rosinality(src, tmp_path / "src.pt")
    ema = shifted(src, 0.25)
    run = write_run(tmp_path / "run", tmp_path / "src.pt", target=shifted(src, 0.5), ema=ema)
    for spec, out in ((run, "a.pt"), (run / "checkpoints" / "last.pt", "b.safetensors")):
        info = convert_checkpoint(spec, tmp_path / out)
        g = load_generator(tmp_path / out)[0]
        assert info["weights"] == "ema" and same_weights(g, ema) and torch.equal(g.latent_avg, src.latent_avg)


def test_cli_sample_and_convert_take_run_directories_and_names(tmp_path, capsys):
    from zsgm.cli import main

    src = small()
    export_rosinality(src, tmp_path / "src.pt")
    run = write_run(tmp_path / "run", tmp_path / "src.pt", target=shifted(src, 0.01))
    assert main(["sample", str(run / "checkpoints" / "last.pt"), "--out", str(tmp_path / "grid.png"), "-n", "2"]) == 0
    assert (tmp_path / "grid.png").is_file()
    assert main(["convert", "shapes", str(tmp_path / "shapes.pt")]) == 0
    assert load_generator(tmp_path / "shapes.pt")[0].arch.size == 32
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    for args in (["sample", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")],
                 ["convert", str(tmp_path / "empty"), str(tmp_path / "x.pt")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "empty: a directory without a generator" in err
