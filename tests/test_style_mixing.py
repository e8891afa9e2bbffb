"""One-shot CLIP's inference-time style mixing: zsgm.style_mixing and `zsgm sample --mix-with/--mix-from`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from zsgm.builtin_plugin import tiny_random_generator
from zsgm.cli import USER_ERROR_EXIT, main, render_seed
from zsgm.generator import save_generator
from zsgm.generator.stylegan2 import Generator
from zsgm.io_utils import to_uint8
from zsgm.style_mixing import default_mix_slot, load_reference_latent, mix_fine_slots, mixing_latent

from cli_output import one_error_line  # tests/cli_output.py

TINY_SLOTS, TINY_DIM, TINY_MIX = 8, 64, 5  # tiny-random: 32 px, 8 W+ slots of 64


def oneshotclip_test_sample_mix(sample_w: torch.Tensor, w_mean: torch.Tensor, mix_idx: int) -> torch.Tensor:
    """OneshotCLIP test_sample.py's mixing in plain torch: start from the mean in every slot of every sample, then
    copy the sample's slots below mix_idx over it. sample_w [N, L, D], w_mean [1, D]."""
    n, slots, _ = sample_w.shape
    input_lat = w_mean.unsqueeze(1).repeat(n, slots, 1)
    input_lat[:, :mix_idx, :] = sample_w[:, :mix_idx, :]
    return input_lat


@pytest.mark.parametrize("n_latent, slot", [(18, 11), (16, 10), (14, 9), (12, 7), (10, 6), (8, 5), (4, 2),
                                             (2, 1), (3, 2)])
def test_default_mix_slot_is_the_papers_fraction(n_latent, slot):
    assert default_mix_slot(n_latent) == slot


@pytest.mark.parametrize("bad", [1, 0, -3, True, 8.0])
def test_default_mix_slot_refuses_non_generators(bad):
    with pytest.raises(ValueError, match="n_latent"):
        default_mix_slot(bad)


def test_mix_with_the_mean_is_oneshotclips_mixing():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 512, generator=gen)
    w_mean = torch.randn(1, 512, generator=gen)
    sample_w = torch.lerp(w, w_mean, 0.3).unsqueeze(1).repeat(1, 18, 1)  # test_sample.py's truncation, psi 0.7
    before = sample_w.clone()
    ours = mix_fine_slots(sample_w, with_=w_mean, from_slot=default_mix_slot(18))
    assert torch.equal(ours, oneshotclip_test_sample_mix(sample_w, w_mean, 11))
    assert torch.equal(sample_w, before)  # not changed in place


def test_mix_with_a_full_latent_and_the_edge_slots():
    gen = torch.Generator().manual_seed(1)
    ws, w_ref = torch.randn(3, 8, 16, generator=gen), torch.randn(1, 8, 16, generator=gen)
    mixed = mix_fine_slots(ws, with_=w_ref, from_slot=5)
    assert mixed.shape == (3, 8, 16)
    assert torch.equal(mixed[:, :5], ws[:, :5])
    assert torch.equal(mixed[:, 5:], w_ref[:, 5:].expand(3, -1, -1))
    assert torch.equal(mix_fine_slots(ws, with_=w_ref, from_slot=8), ws)
    assert torch.equal(mix_fine_slots(ws, with_=w_ref, from_slot=0), w_ref.expand(3, -1, -1))
    assert mix_fine_slots(ws.double(), with_=w_ref, from_slot=2).dtype == torch.float64


@pytest.mark.parametrize("with_shape, from_slot, words", [
    ((1, 7, 16), 5, "with_ must be"), ((2, 16), 5, "with_ must be"), ((1, 8, 15), 5, "with_ must be"),
    ((1, 16), 9, "from_slot"), ((1, 16), -1, "from_slot"), ((1, 16), 2.0, "from_slot"),
])
def test_mix_refuses_what_does_not_fit(with_shape, from_slot, words):
    with pytest.raises(ValueError, match=words):
        mix_fine_slots(torch.zeros(2, 8, 16), with_=torch.zeros(with_shape), from_slot=from_slot)
    with pytest.raises(ValueError, match=r"\[N, L, D\]"):
        mix_fine_slots(torch.zeros(8, 16), with_=torch.zeros(1, 16), from_slot=1)


@pytest.fixture
def recorded(monkeypatch):
    """Every ws [N, L, D] the generator's synthesis is called with."""
    calls = []
    original = Generator.synthesis

    def record(self, ws, *args, **kwargs):
        calls.append(ws.detach().clone())
        return original(self, ws, *args, **kwargs)

    monkeypatch.setattr(Generator, "synthesis", record)
    return calls


@pytest.fixture
def run_dir(tmp_path):
    """A finished run directory of the tiny-random generator with a reference latent."""
    generator, _ = tiny_random_generator()
    run = tmp_path / "run"
    save_generator(generator, run / "generator.safetensors")
    w_ref = torch.randn(1, TINY_SLOTS, TINY_DIM, generator=torch.Generator().manual_seed(9))
    (run / "reference").mkdir()
    save_file({"w_ref": w_ref}, str(run / "reference" / "latent.safetensors"))
    return run, w_ref


def _pngs(folder, seeds):
    return [np.asarray(Image.open(folder / f"seed{s:04d}.png")) for s in seeds]


def test_sample_without_mix_is_the_unmixed_render(tmp_path):
    generator, _ = tiny_random_generator()
    assert main(["sample", "tiny-random", "--seeds", "0-2", "--outdir", str(tmp_path / "o")]) == 0
    mean = generator.default_mean_latent()
    for seed, png in zip(range(3), _pngs(tmp_path / "o", range(3))):
        with torch.no_grad():
            image = render_seed(generator, seed, truncation=0.7, mean=mean, noise_mode="const", device="cpu")
        assert np.array_equal(png, to_uint8(image)[0])


def test_sample_mixed_with_the_mean(tmp_path, recorded, capsys):
    generator, _ = tiny_random_generator()
    mean = generator.default_mean_latent()  # [1, D]
    assert main(["sample", "tiny-random", "--seeds", "0-2", "--outdir", str(tmp_path / "plain")]) == 0
    plain = recorded[:]
    recorded.clear()
    assert main(["sample", "tiny-random", "--seeds", "0-2", "--mix-with", "mean",
                 "--outdir", str(tmp_path / "mixed")]) == 0
    assert "W+ slots 5-7 of 0-7 from the mean latent" in capsys.readouterr().out
    assert len(recorded) == len(plain) == 3
    for ws, unmixed in zip(recorded, plain):
        assert torch.equal(ws, oneshotclip_test_sample_mix(unmixed, mean, TINY_MIX))
        assert torch.equal(ws[:, :TINY_MIX], unmixed[:, :TINY_MIX])
        assert torch.equal(ws[:, TINY_MIX:], mean[:, None].expand(1, TINY_SLOTS - TINY_MIX, TINY_DIM))
    assert any(not np.array_equal(a, b) for a, b in zip(_pngs(tmp_path / "plain", range(3)),
                                                         _pngs(tmp_path / "mixed", range(3))))


def test_mix_from_zero_makes_every_seed_the_mean_image(tmp_path):
    assert main(["sample", "tiny-random", "--seeds", "0-2", "--mix-with", "mean", "--mix-from", "0",
                 "--outdir", str(tmp_path / "o")]) == 0
    first, *rest = _pngs(tmp_path / "o", range(3))
    assert all(np.array_equal(first, other) for other in rest)


def test_sample_mixed_with_the_runs_reference_latent(tmp_path, run_dir, recorded):
    run, w_ref = run_dir
    assert main(["sample", str(run), "--seeds", "4,7", "--mix-with", "reference", "--mix-from", "3",
                 "--outdir", str(tmp_path / "o")]) == 0
    assert len(recorded) == 2
    for ws in recorded:
        assert torch.equal(ws[:, 3:], w_ref[:, 3:])
        assert not torch.equal(ws[:, :3], w_ref[:, :3])
    generator, _ = tiny_random_generator()
    assert torch.equal(mixing_latent(generator, "reference", run_dir=run), w_ref)


@pytest.mark.parametrize("argv, words", [
    (["tiny-random", "--mix-with", "reference"], "GENERATOR must be a zsgm run directory"),
    (["tiny-random", "--mix-from", "3"], "--mix-from needs --mix-with"),
    (["tiny-random", "--mix-with", "mean", "--mix-from", "9"], "--mix-from 9: this generator has 8 W+ slots"),
])
def test_bad_mix_options_are_one_line(tmp_path, capsys, argv, words):
    assert main(["sample", *argv, "--outdir", str(tmp_path / "o")]) == USER_ERROR_EXIT
    assert words in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_a_run_without_reference_latent_names_the_file(tmp_path, run_dir, capsys):
    run, _ = run_dir
    (run / "reference" / "latent.safetensors").unlink()
    assert main(["sample", str(run), "--mix-with", "reference", "--outdir", str(tmp_path / "o")]) == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert str(run / "reference" / "latent.safetensors") in line and "does not exist" in line


@pytest.mark.parametrize("tensors, words", [
    ({"w_ref": torch.zeros(1, 7, TINY_DIM)}, "has shape [1, 7, 64]; the generator needs [1, 8, 64]"),
    ({"w_ref": torch.zeros(TINY_SLOTS, TINY_DIM)}, "has shape [8, 64]"),
    ({"w": torch.zeros(1, TINY_SLOTS, TINY_DIM)}, "no tensor 'w_ref' (found: w)"),
    ({"w_ref": torch.full((1, TINY_SLOTS, TINY_DIM), float("nan"))}, "finite"),
])
def test_a_bad_reference_latent_is_one_line_naming_the_file(tmp_path, run_dir, capsys, tensors, words):
    run, _ = run_dir
    path = run / "reference" / "latent.safetensors"
    save_file(tensors, str(path))
    assert main(["sample", str(run), "--mix-with", "reference", "--outdir", str(tmp_path / "o")]) == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert str(path) in line and words in line and "--mix-with reference" in line


def test_an_unreadable_reference_latent_is_refused(run_dir):
    run, _ = run_dir
    (run / "reference" / "latent.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="unreadable safetensors file"):
        load_reference_latent(run)
    with pytest.raises(ValueError, match="mix_with must be one of mean, reference"):
        mixing_latent(tiny_random_generator()[0], "w_ref")


def test_help_states_the_mix_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--mix-with {mean,reference}" in text and "(default: no mixing)" in text
    assert "--mix-from SLOT" in text and "11 of 18" in text
