"""Run checkpoints under failure: unreadable files, a full disk, and updates that explode into NaN/inf."""

from __future__ import annotations

import builtins
import errno
import json
import math
import re
from pathlib import Path

import attrs
import pytest
import torch

from zsgm.checkpoint import (
    CheckpointMismatchError,
    NonFiniteWeightsError,
    checkpoint_path,
    previous_checkpoint_path,
    read_run_checkpoint,
)
from zsgm.hookspecs import hookimpl
from zsgm.io_utils import WriteError
from zsgm.loop import NonFiniteLossError, adapt
from zsgm.plugins import build_registry
from zsgm.recipe import recipe_from_dict
from zsgm.registry import TechniqueSpec
from zsgm.technique import Technique


def tiny(steps=4, techniques=()):
    return {
        "source": "photo",
        "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": steps, "batch_size": 1},
        "run": {"seed": 3, "sample_every": 0, "checkpoint_every": 1, "n_samples": 1, "progress": False},
        "techniques": [{"use": "directional"}, *techniques],
    }


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["total"] for r in map(json.loads, (out / "losses.jsonl").read_text().splitlines())}


# ---------------------------------------------------------------------------------------------- unreadable files


class Foreign:
    """Any class: a safe load refuses to rebuild it."""


@pytest.mark.parametrize("content", ["truncated", "garbage", "foreign pickle", "missing keys"])
def test_an_unusable_checkpoint_is_one_line_that_never_advises_weakening_the_safety(tmp_path, content):
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    good = {"format": "zsgm-run-checkpoint", "version": 1, "next_step": 2, "target": {"w": torch.ones(3)},
            "ema": None, "optimizer": {}, "techniques": {}}
    if content == "truncated":
        torch.save(good, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif content == "foreign pickle":
        torch.save({"format": "zsgm-run-checkpoint", "x": Foreign()}, path)
    else:
        torch.save({k: v for k, v in good.items() if k != "target"}, path)
    previous_checkpoint_path(tmp_path).write_bytes(b"kept")
    with pytest.raises(CheckpointMismatchError) as info:
        read_run_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message and "unsafe" not in message.lower()
    assert message.startswith(f"{path}: not a readable zsgm run checkpoint (")
    assert message.endswith(f"start a new run in another directory, or copy {previous_checkpoint_path(tmp_path)} "
                            f"(the checkpoint before it) over it and resume")


def test_a_missing_checkpoint_names_the_previous_one(tmp_path):
    previous_checkpoint_path(tmp_path).parent.mkdir(parents=True)
    previous_checkpoint_path(tmp_path).write_bytes(b"kept")
    with pytest.raises(FileNotFoundError, match=r"last\.pt does not exist; copy .*previous\.pt to it"):
        read_run_checkpoint(checkpoint_path(tmp_path))


# ---------------------------------------------------------------------------------------------- disk full


class FillingFile:
    """A file on a disk that fills up: half of the write lands, then ENOSPC (as a real full disk does)."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.fh.close()

    def write(self, data):
        part = data[: len(data) // 2]
        self.fh.write(part if isinstance(part, str) else bytes(part))
        raise OSError(errno.ENOSPC, "No space left on device")


def filling_disk(monkeypatch, name: str, nth: int):
    """From the ``nth`` write of the file ``name`` (through its atomic temp file) on, the disk is full."""
    import zsgm.io_utils

    opened = []

    def open_on_a_filling_disk(path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode and Path(path).name.startswith(f".{name}."):
            opened.append(path)
            if len(opened) >= nth:
                return FillingFile(fh)
        return fh

    monkeypatch.setattr(zsgm.io_utils, "open", open_on_a_filling_disk, raising=False)


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint_and_names_it(tmp_path, monkeypatch):
    filling_disk(monkeypatch, "last.pt", 3)  # the third checkpoint (next step 3) does not fit
    with pytest.raises(WriteError) as info:
        adapt(recipe_from_dict(tiny(steps=4)), out_dir=tmp_path)
    last = checkpoint_path(tmp_path)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (f"[Errno 28] cannot write {last}: No space left on device; the checkpoint {last} "
                               f"(next step 2) is intact; free some space and resume the run")
    assert read_run_checkpoint(last)["next_step"] == 2
    assert read_run_checkpoint(previous_checkpoint_path(tmp_path))["next_step"] == 2  # rotated before the write
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "previous.pt"]  # no temp file left


def test_disk_full_writing_the_final_generator_names_it_and_the_intact_checkpoint(tmp_path, monkeypatch):
    filling_disk(monkeypatch, "generator.safetensors", 1)
    with pytest.raises(WriteError, match=rf"cannot write {tmp_path}/generator.safetensors: .*No space left.*; "
                                         rf"the checkpoint {checkpoint_path(tmp_path)} \(next step 2\) is intact"):
        adapt(recipe_from_dict(tiny(steps=2)), out_dir=tmp_path)


def test_disk_full_writing_the_loss_log_names_it_and_the_intact_checkpoint(tmp_path, monkeypatch):
    import zsgm.io_utils

    appended = []

    def open_on_a_filling_disk(path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)
        if "a" in mode and Path(path).name == "losses.jsonl":
            appended.append(path)
            if len(appended) == 3:  # the line of step 2 does not fit: a plain append error names no file
                return FillingFile(fh)
        return fh

    monkeypatch.setattr(zsgm.io_utils, "open", open_on_a_filling_disk, raising=False)
    with pytest.raises(WriteError) as info:
        adapt(recipe_from_dict(tiny(steps=4)), out_dir=tmp_path)
    assert str(info.value) == (f"[Errno 28] cannot write {tmp_path / 'losses.jsonl'}: No space left on device; the "
                               f"checkpoint {checkpoint_path(tmp_path)} (next step 2) is intact; free some space and "
                               f"resume the run")


# ---------------------------------------------------------------------------------------------- NaN / inf


@attrs.define(kw_only=True)
class BlowUpConfig:
    at_step: int = 2
    to: str = "nan"  # "nan": the update leaves NaN weights; "huge": finite weights whose next loss overflows


class BlowUp(Technique):
    """A loss term ``1e-12 * max|w|^2`` of one synthesis weight, and a bad update of that weight at ``at_step``."""

    def weight(self, run):
        return run.synthesis_parameters()[0]

    @hookimpl
    def zsgm_loss(self, run, step):
        return [self.term("size", run.batch.tgt_images.mean() * 0 + 1e-12 * self.weight(run).abs().max() ** 2)]

    @hookimpl
    def zsgm_after_step(self, run, step):
        if step == self.config.at_step:
            with torch.no_grad():
                w = self.weight(run)
                if self.config.to == "nan":
                    w.fill_(float("nan"))
                else:
                    w.mul_(1e30)  # still finite: 1e30 < 3.4e38


class BlowUpPlugin:
    __name__ = "blowup_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_techniques(register):
        register(TechniqueSpec(name="blowup", config=BlowUpConfig, build=BlowUp))


def named_good_checkpoint(message: str) -> Path:
    found = re.search(r"the last good checkpoint is (\S+\.pt)", message)
    assert found, message
    return Path(found.group(1))


def assert_really_good(path: Path, out: Path, failed_step: int) -> None:
    """Finite weights, and the step after the checkpoint ran with a finite loss."""
    state = read_run_checkpoint(path)
    assert all(torch.isfinite(t).all() for t in state["target"].values())
    assert state["next_step"] < failed_step and math.isfinite(losses(out)[state["next_step"]])


def test_an_update_to_nan_weights_is_caught_before_the_checkpoint_and_the_good_one_named(tmp_path):
    _, registry = build_registry(extra_modules=[BlowUpPlugin()])
    recipe = recipe_from_dict(tiny(steps=6, techniques=[{"use": "blowup", "at_step": 2, "to": "nan"}]),
                              registry=registry)
    with pytest.raises(NonFiniteWeightsError, match=r"non-finite weights after step 2 \(target\..*\); the last good "
                                                    r"checkpoint is .*last\.pt \(next step 2\)") as info:
        adapt(recipe, out_dir=tmp_path, registry=registry)
    assert_really_good(named_good_checkpoint(str(info.value)), tmp_path, failed_step=3)


def test_finite_weights_whose_next_loss_overflows_name_the_checkpoint_before(tmp_path):
    _, registry = build_registry(extra_modules=[BlowUpPlugin()])
    recipe = recipe_from_dict(tiny(steps=6, techniques=[{"use": "blowup", "at_step": 2, "to": "huge"}]),
                              registry=registry)
    with pytest.raises(NonFiniteLossError) as info:
        adapt(recipe, out_dir=tmp_path, registry=registry)
    message = str(info.value)
    assert message.startswith("non-finite loss at step 3: {")
    assert "the weights were finite" in message
    assert f"; {checkpoint_path(tmp_path)} (next step 3) leads straight into this step" in message
    good = named_good_checkpoint(message)
    assert good == previous_checkpoint_path(tmp_path)
    assert_really_good(good, tmp_path, failed_step=3)


def test_resuming_a_checkpoint_with_non_finite_weights_is_refused_before_anything_loads(tmp_path, monkeypatch):
    import zsgm.loop
    from zsgm.checkpoint import write_checkpoint_file

    recipe = recipe_from_dict(tiny(steps=3))
    adapt(recipe, out_dir=tmp_path, stop_after=2)  # checkpoints at 1 (previous.pt) and 2 (last.pt)
    last = checkpoint_path(tmp_path)
    state = read_run_checkpoint(last)
    name = next(iter(state["target"]))
    state["target"][name] = torch.full_like(state["target"][name], float("inf"))
    write_checkpoint_file(state, last)
    monkeypatch.setattr(zsgm.loop, "build_run", lambda *a, **k: pytest.fail("models were loaded"))
    with pytest.raises(NonFiniteWeightsError, match=rf"^{last} holds non-finite weights \(target\.{name}\) and cannot "
                                                    rf"be resumed; copy {previous_checkpoint_path(tmp_path)} over it"):
        adapt(recipe, out_dir=tmp_path, resume=True)
