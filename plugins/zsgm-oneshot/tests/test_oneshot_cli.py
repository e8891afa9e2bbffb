"""``zsgm adapt --preset oneclip --reference IMAGE``: refusals in one line, and a short offline run on shapes."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from zsgm.cli import USER_ERROR_EXIT, main


def _args(reference, out, *extra):
    return ["adapt", "--preset", "oneclip", "--reference", str(reference), "--generator", "shapes", "--clip",
            "shapes", "--out", str(out), "--no-progress", *extra]


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("no pixels here"), "not an image file"),
    (lambda p: Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(p), "too small"),
])
def test_an_unusable_reference_is_refused_in_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "ref.png"
    make(path)
    assert main(_args(path, tmp_path / "run")) == USER_ERROR_EXIT
    line = _one_line(capsys)
    assert message in line and str(path) in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_preset_runs_offline_on_shapes(tmp_path, reference, monkeypatch):
    """The preset's command on the shapes world for 2 steps; the 1,001-step search is replaced by w̄ (it is tested on
    its own), everything else is the preset's."""
    from zsgm_oneshot.reference import ReferenceSearch

    def mean_only(self, run):
        return run.g_source.mean_latent(64, generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(ReferenceSearch, "search", mean_only)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(_args(reference, tmp_path / "run", "--steps", "2")) == 0
    assert (tmp_path / "run" / "generator.safetensors").is_file()
    assert (tmp_path / "run" / "reference" / "latent.safetensors").is_file()
