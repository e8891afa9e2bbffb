"""`zsgm sample` with NVIDIA gen_images.py's conventions: --seeds ranges, --trunc, --outdir seedNNNN.png, the
seed -> latent rule; and its bad options refused in one line naming the option."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from zsgm.builtin_plugin import tiny_random_generator
from zsgm.cli import USER_ERROR_EXIT, main, parse_seeds, seed_latent
from zsgm.generator import save_generator

from cli_output import one_error_line  # tests/cli_output.py


def nvidia_seed_latent(seed: int, z_dim: int) -> torch.Tensor:
    """NVIDIA gen_images.py: ``torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim))`` (float64), cast to
    float32 by the first line of its mapping network."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim))
    assert z.dtype == torch.float64
    return z.to(torch.float32)


@pytest.mark.parametrize("seed", [0, 1, 42, 1234, 2 ** 32 - 1])
@pytest.mark.parametrize("z_dim", [7, 64, 512])
def test_a_seed_gives_nvidias_latent_exactly(seed, z_dim):
    ours = seed_latent(seed, z_dim)
    assert ours.dtype == torch.float32 and ours.shape == (1, z_dim)
    assert torch.equal(ours, nvidia_seed_latent(seed, z_dim))


@pytest.mark.parametrize("spec, seeds", [
    ("0-3", [0, 1, 2, 3]), ("0-35,40", list(range(36)) + [40]), ("7", [7]), ("3,1,2", [3, 1, 2]),
    ("5-5", [5]), (" 0-1 , 9 ", [0, 1, 9]), ("4294967295", [2 ** 32 - 1]),
])
def test_seeds_syntax_is_nvidias(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec, words", [
    ("", "empty"), (" ", "empty"), ("0-", "'0-'"), ("a", "'a'"), ("5-2", "empty range"), ("1,,2", "''"),
    ("-3", "'-3'"), ("1.5", "'1.5'"), ("0-2-4", "'0-2-4'"), ("4294967296", "below 2**32"),
    ("0-4000000000", "at most"), ("0-3,2", "seed 2 twice"),
])
def test_bad_seeds_are_refused_naming_the_part(spec, words):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_seeds(spec)
    assert words in str(info.value)


@pytest.mark.parametrize("argv, option", [
    (["-n", "0"], "-n"), (["-n", "2.5"], "-n"), (["--cols", "0"], "--cols"), (["--seed", "-1"], "--seed"),
    (["--truncation", "-1"], "--trunc/--truncation"), (["--trunc", "nan"], "--trunc/--truncation"),
    (["--trunc", "inf"], "--trunc/--truncation"), (["--trunc", "x"], "--trunc/--truncation"),
    (["--seeds", "0-"], "--seeds"), (["--seeds", "5-2"], "--seeds"), (["--seeds", ""], "--seeds"),
    (["--seeds", "a"], "--seeds"), (["--noise-mode", "fresh"], "--noise-mode"),
])
def test_bad_sample_options_are_one_line_naming_the_option(tmp_path, capsys, argv, option):
    code = main(["sample", "tiny-random", "--outdir", str(tmp_path / "o"), *argv])
    line = one_error_line(capsys)
    assert code == USER_ERROR_EXIT
    assert line.startswith(f"zsgm: error: argument {option}:"), line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, words", [
    (["--seeds", "0-3", "-n", "4"], "--seeds cannot be combined with -n/--seed"),
    (["--seeds", "0-3", "--seed", "4"], "--seeds cannot be combined with -n/--seed"),
    (["--seed", str(2 ** 32 - 1), "-n", "2"], "below 2**32"),
])
def test_conflicting_or_out_of_range_seeds_are_refused(tmp_path, capsys, argv, words):
    assert main(["sample", "tiny-random", "--outdir", str(tmp_path / "o"), *argv]) == USER_ERROR_EXIT
    assert words in one_error_line(capsys)


def test_outdir_gets_one_nvidia_named_png_per_seed_and_the_grid(tmp_path, capsys):
    out = tmp_path / "imgs"
    assert main(["sample", "tiny-random", "--seeds", "0-2,10", "--outdir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png",
                                                     "seed0010.png"]
    assert Image.open(out / "seed0010.png").size == (32, 32)
    printed = capsys.readouterr().out
    assert "wrote 4 images" in printed and str(out / "grid.png") in printed


def render_like_nvidia(seed: int, psi: float) -> np.ndarray:
    """The image of ``seed`` built from NVIDIA's latent and ``w_avg.lerp(w, psi)``, stored noise, as uint8."""
    from zsgm.io_utils import to_uint8

    generator, _ = tiny_random_generator()
    generator.eval()
    with torch.no_grad():
        w = generator.mapping(nvidia_seed_latent(seed, generator.arch.style_dim))
        w_avg = generator.default_mean_latent()
        w = torch.lerp(w_avg, w, psi)
        ws = w[:, None, :].repeat(1, generator.n_latent, 1)
        return to_uint8(generator.synthesis(ws, noise_mode="const"))[0]


@pytest.mark.parametrize("psi", [0.5, 1.0, 1.5])
def test_each_seed_image_is_rendered_from_nvidias_latent_and_truncation(tmp_path, psi):
    out = tmp_path / "imgs"
    assert main(["sample", "tiny-random", "--seeds", "3", "--trunc", str(psi), "--outdir", str(out)]) == 0
    written = np.asarray(Image.open(out / "seed0003.png").convert("RGB"))
    assert np.array_equal(written, render_like_nvidia(3, psi))


def test_truncation_above_one_extrapolates_and_the_old_option_is_an_alias(tmp_path):
    images = {}
    for option, psi in (("--trunc", "1"), ("--trunc", "1.5"), ("--truncation", "1.5")):
        out = tmp_path / f"{option}-{psi}"
        assert main(["sample", "tiny-random", "--seeds", "0", option, psi, "--outdir", str(out)]) == 0
        images[option, psi] = np.asarray(Image.open(out / "seed0000.png"))
    assert not np.array_equal(images["--trunc", "1"], images["--trunc", "1.5"])
    assert np.array_equal(images["--trunc", "1.5"], images["--truncation", "1.5"])


def test_help_states_every_default_including_truncation(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sample", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--trunc PSI, --truncation PSI" in text and "(default: 0.7)" in text
    assert "(default: 0-15)" in text and "(default: const)" in text


def test_cols_shapes_the_grid(tmp_path):
    grid = tmp_path / "g.png"
    assert main(["sample", "tiny-random", "--seeds", "0-4", "--cols", "5", "--out", str(grid)]) == 0
    wide = Image.open(grid).size
    assert main(["sample", "tiny-random", "--seeds", "0-4", "--cols", "1", "--out", str(grid)]) == 0
    tall = Image.open(grid).size
    assert wide[0] > wide[1] and tall[1] > tall[0]


def test_a_finished_run_directory_is_sampled_from_its_generator(tmp_path):
    generator, _ = tiny_random_generator()
    run = tmp_path / "run"
    save_generator(generator, run / "generator.safetensors")
    from_run, from_name = tmp_path / "a", tmp_path / "b"
    assert main(["sample", str(run), "--seeds", "1", "--outdir", str(from_run)]) == 0
    assert main(["sample", "tiny-random", "--seeds", "1", "--outdir", str(from_name)]) == 0
    assert np.array_equal(np.asarray(Image.open(from_run / "seed0001.png")),
                          np.asarray(Image.open(from_name / "seed0001.png")))


def test_a_checkpoint_holding_nan_is_refused_before_any_image_is_written(tmp_path, capsys):
    generator, _ = tiny_random_generator()
    with torch.no_grad():
        next(p for name, p in generator.named_parameters() if name.startswith("convs.")).fill_(float("nan"))
    path = tmp_path / "nan.safetensors"
    save_generator(generator, path)
    assert main(["sample", str(path), "--outdir", str(tmp_path / "o")]) == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert str(path) in line and "NaN" in line and "convs." in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("make, argv, words", [
    (lambda d: (d / "f").write_text("x"), ["--outdir", "{d}/f"], "is a file, not a directory"),
    (lambda d: (d / "f").write_text("x"), ["--outdir", "{d}/f/sub"], "is a file, so no directory"),
    (lambda d: (d / "g.png").mkdir(), ["--out", "{d}/g.png"], "is a directory"),
    (lambda d: None, [], "give --outdir DIR"),
    (lambda d: None, ["--outdir", "{d}/a", "--out", "{d}/b.png"], "not both"),
])
def test_bad_output_paths_are_refused_before_the_generator_loads(tmp_path, capsys, monkeypatch, make, argv,
                                                                    words):
    import zsgm.run

    make(tmp_path)
    monkeypatch.setattr(zsgm.run, "load_generator_asset", lambda *a, **k: pytest.fail("generator loaded"))
    argv = [a.format(d=tmp_path) for a in argv]
    assert main(["sample", "tiny-random", *argv]) == USER_ERROR_EXIT
    assert words in one_error_line(capsys)


@pytest.mark.parametrize("device", ["tpu9", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is available here"))])
def test_an_unusable_device_is_named_as_the_option(tmp_path, capsys, device):
    assert main(["sample", "tiny-random", "--device", device, "--outdir", str(tmp_path / "o")]) == USER_ERROR_EXIT
    assert one_error_line(capsys).startswith(f"zsgm: error: --device {device}: ")
