"""End-to-end runs on a tiny random generator and a tiny random CLIP (CPU, seconds)."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from PIL import Image

from zsgm.checkpoint import checkpoint_path
from zsgm.hookspecs import hookimpl
from zsgm.loop import NonFiniteLossError, adapt
from zsgm.plugins import build_registry
from zsgm.recipe import load_recipe, recipe_from_dict
from zsgm.registry import TechniqueSpec
from zsgm.run import RunError
from zsgm.run_dir import ResumeMismatchError
from zsgm.technique import Technique


def tiny_recipe(steps=6, batch_size=2, **optim):
    return {
        "source": "photo",
        "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": steps, "batch_size": batch_size, **optim},
        "run": {"seed": 3, "sample_every": 4, "checkpoint_every": 2, "n_samples": 3, "progress": False},
        "techniques": [{"use": "directional"}, {"use": "layer-freeze", "k": 3, "auto_layer_batch": 2}],
    }


def losses(out):
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


def test_nada_run_writes_everything_and_directional_loss_falls(tmp_path):
    data = tiny_recipe(steps=40, lr=0.01, batch_size=4)
    data["techniques"] = [{"use": "directional"}]
    recipe = recipe_from_dict(data)
    result = adapt(recipe, out_dir=tmp_path)
    log = losses(tmp_path)
    assert [r["step"] for r in log] == list(range(40))
    assert log[0]["directional/directional"] == pytest.approx(1.0, abs=1e-3)  # step 0: G_t == G_s (guarded)
    first = sum(r["directional/directional"] for r in log[1:9]) / 8
    last = sum(r["directional/directional"] for r in log[-8:]) / 8
    assert last < first - 0.04, (first, last)
    grid = Image.open(tmp_path / "samples" / "step-000040.png")
    assert grid.size[0] > grid.size[1] > 0  # 3 columns x 2 rows
    assert (tmp_path / "samples" / "step-000000.png").exists()
    assert result.generator_path.exists() and checkpoint_path(tmp_path).exists()
    assert load_recipe(tmp_path / "recipe.toml").optim.steps == 40
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["seed"] == 3 and "zsgm-nada" in record["plugins"]


def test_killed_resumed_and_extended_run_ends_bit_identical_with_fresh_noise(tmp_path):
    """Interrupted at step 3 of 4, resumed to 4, then resumed with more steps (7): one 7-step run, bit for bit."""
    seven = recipe_from_dict(tiny_recipe(steps=7, ema_decay=0.9, noise="fresh"))
    four = recipe_from_dict(tiny_recipe(steps=4, ema_decay=0.9, noise="fresh"))
    adapt(seven, out_dir=tmp_path / "straight")
    adapt(four, out_dir=tmp_path / "resumed", stop_after=3)  # "killed" after step 2 (checkpoint at 3)
    assert not (tmp_path / "resumed" / "generator.safetensors").exists()
    assert adapt(four, out_dir=tmp_path / "resumed", resume=True).generator_path.exists()
    extended = adapt(seven, out_dir=tmp_path / "resumed", resume=True)
    assert extended.resume_changes == ["optim.steps: 4 -> 7"] and not extended.already_finished
    assert load_recipe(tmp_path / "resumed" / "recipe.toml").optim.steps == 7
    a = torch.load(checkpoint_path(tmp_path / "straight"), weights_only=True)
    b = torch.load(checkpoint_path(tmp_path / "resumed"), weights_only=True)
    for key in ("target", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


def test_extending_a_finished_run_sets_its_final_generator_aside_until_the_new_one_exists(tmp_path):
    """A killed extension must not leave the shorter run's generator.safetensors posing as the run's weights."""
    from zsgm.generator.sources import load_generator_source
    from zsgm.plugins import get_registry

    adapt(recipe_from_dict(tiny_recipe(steps=2)), out_dir=tmp_path)
    old = (tmp_path / "generator.safetensors").read_bytes()
    adapt(recipe_from_dict(tiny_recipe(steps=6)), out_dir=tmp_path, resume=True, stop_after=2)  # killed at step 4
    assert not (tmp_path / "generator.safetensors").exists()
    assert (tmp_path / "generator-step000002.safetensors").read_bytes() == old  # kept, under its step count
    generator, _ = load_generator_source(str(tmp_path), registry=get_registry(), device="cpu")
    ckpt = torch.load(checkpoint_path(tmp_path), weights_only=True)
    assert ckpt["next_step"] == 4
    for name, value in generator.state_dict().items():  # sampling the run now reads the running checkpoint
        if name in ckpt["target"]:
            assert torch.equal(value, ckpt["target"][name]), name
    assert adapt(recipe_from_dict(tiny_recipe(steps=6)), out_dir=tmp_path, resume=True).generator_path.exists()


def test_resuming_a_finished_run_says_so_and_writes_nothing(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(steps=2))
    first = adapt(recipe, out_dir=tmp_path)
    written = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*")
               if p.is_file() and p.name != ".zsgm.lock"}  # the lock records who holds the directory
    again = adapt(recipe, out_dir=tmp_path, resume=True)
    assert again.already_finished and not first.already_finished
    assert again.steps_done == again.steps_total == 2
    assert again.last_losses == first.last_losses and "total" in again.last_losses
    assert again.generator_path == tmp_path / "generator.safetensors"
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in written} == written
    assert (again.paths.samples, again.paths.losses, again.paths.checkpoint, again.paths.recipe) == (
        tmp_path / "samples", tmp_path / "losses.jsonl", tmp_path / "checkpoints" / "last.pt",
        tmp_path / "recipe.toml")


def test_resume_with_a_different_recipe_loses_nothing(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(steps=2))
    adapt(recipe, out_dir=tmp_path)
    written = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    data = tiny_recipe(steps=2)
    data["target"] = "cartoon"
    data["techniques"][1]["k"] = 2
    with pytest.raises(ResumeMismatchError, match=r"(?s)target: 'sketch' in the run, 'cartoon' in this recipe\n"
                                                  r"  techniques\[1\]\.k: 3 in the run, 2 in this recipe"):
        adapt(recipe_from_dict(data), out_dir=tmp_path, resume=True)
    assert {p: p.read_bytes() for p in written} == written


def test_existing_run_is_not_overwritten(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(steps=2))
    adapt(recipe, out_dir=tmp_path)
    with pytest.raises(RunError, match="already holds a run"):
        adapt(recipe, out_dir=tmp_path)


@attrs.define(kw_only=True)
class ExplodeConfig:
    at_step: int = 2


class Explode(Technique):
    @hookimpl
    def zsgm_loss(self, run, step):
        value = run.batch.tgt_images.mean() * 0
        if step >= self.config.at_step:
            value = value + float("nan")
        return [self.term("boom", value)]


class LoopTestPlugin:
    """The techniques these tests add (explode, log-recorder)."""

    __name__ = "loop_test_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_techniques(register):
        register(TechniqueSpec(name="explode", config=ExplodeConfig, build=Explode))
        register(TechniqueSpec(name="log-recorder", config=LogRecorderConfig, build=LogRecorder))


def test_non_finite_loss_stops_with_diagnostic_and_keeps_last_checkpoint(tmp_path):
    _, registry = build_registry(extra_modules=[LoopTestPlugin()])
    data = tiny_recipe(steps=6)
    data["techniques"].append({"use": "explode", "at_step": 3})
    recipe = recipe_from_dict(data, registry=registry)
    with pytest.raises(NonFiniteLossError, match="step 3.*explode/boom.*last good checkpoint"):
        adapt(recipe, out_dir=tmp_path, registry=registry)
    state = torch.load(checkpoint_path(tmp_path), weights_only=True)
    assert state["next_step"] == 2


def test_two_direction_providers_are_rejected_when_the_run_is_built(tmp_path):
    data = tiny_recipe()
    data["target_images"] = ["a.png"]
    data["techniques"] += [{"use": "image-target"}, {"use": "image-target", "label": "again"}]
    with pytest.raises(Exception, match="provide text directions"):
        adapt(recipe_from_dict(data), out_dir=tmp_path)


def test_snapshots_hold_the_sampling_generator_at_their_steps(tmp_path):
    from zsgm.generator import load_generator

    data = tiny_recipe(steps=4)
    data["run"]["snapshot_every"] = 2
    result = adapt(recipe_from_dict(data), out_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["step-000002.safetensors",
                                                                           "step-000004.safetensors"]
    final, _ = load_generator(result.generator_path)
    at_2, _ = load_generator(tmp_path / "snapshots" / "step-000002.safetensors")
    at_4, _ = load_generator(tmp_path / "snapshots" / "step-000004.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), at_4.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(at_2.state_dict().values(), at_4.state_dict().values()))


@attrs.define(kw_only=True)
class LogRecorderConfig:
    pass


class LogRecorder(Technique):
    seen: list = []

    @hookimpl
    def zsgm_after_step(self, run, step, log):
        type(self).seen.append((step, log))


def test_after_step_hook_receives_the_logged_values(tmp_path):
    _, registry = build_registry(extra_modules=[LoopTestPlugin()])
    data = tiny_recipe(steps=3)
    data["techniques"].append({"use": "log-recorder"})
    LogRecorder.seen = []
    adapt(recipe_from_dict(data, registry=registry), out_dir=tmp_path, registry=registry)
    assert [s for s, _ in LogRecorder.seen] == [0, 1, 2]
    for (step, log), row in zip(LogRecorder.seen, losses(tmp_path)):
        assert log == {k: v for k, v in row.items() if k != "step"}


def test_values_are_fetched_every_log_every_steps_and_losses_jsonl_keeps_every_step(tmp_path):
    """run.log_every = 3 over 7 steps, checkpoints every 2: fetches after steps 1, 2, 3, 5 (checkpoints and
    multiples of 3) and 6 (the last); the hook's log is None on the other steps; the values do not change."""
    _, registry = build_registry(extra_modules=[LoopTestPlugin()])
    data = tiny_recipe(steps=7)
    data["techniques"].append({"use": "log-recorder"})
    LogRecorder.seen = []
    adapt(recipe_from_dict(data, registry=registry), out_dir=tmp_path / "every", registry=registry)
    every = list(LogRecorder.seen)
    data["run"]["log_every"] = 3
    LogRecorder.seen = []
    result = adapt(recipe_from_dict(data, registry=registry), out_dir=tmp_path / "three", registry=registry)
    fetched = [step for step, log in LogRecorder.seen if log is not None]
    assert fetched == [1, 2, 3, 5, 6]
    assert all(log == every[step][1] for step, log in LogRecorder.seen if log is not None)
    assert losses(tmp_path / "three") == losses(tmp_path / "every")
    assert [r["step"] for r in losses(tmp_path / "three")] == list(range(7))
    assert result.last_losses == every[-1][1]


def test_a_non_finite_loss_between_fetches_is_named_at_its_step_when_fetched(tmp_path):
    _, registry = build_registry(extra_modules=[LoopTestPlugin()])
    data = tiny_recipe(steps=6)
    data["run"].update(log_every=3, checkpoint_every=0)
    data["techniques"].append({"use": "explode", "at_step": 3})
    recipe = recipe_from_dict(data, registry=registry)
    with pytest.raises(NonFiniteLossError, match=r"step 3: .*explode/boom.*found at step 5 \(values are fetched "
                                                 r"every 3 steps, run.log_every\).*no checkpoint was written yet"):
        adapt(recipe, out_dir=tmp_path, registry=registry)
    assert [r["step"] for r in losses(tmp_path)] == [0, 1, 2]  # the finite steps before it are logged


def test_log_every_clip_device_and_grad_checkpointing_may_change_on_resume(tmp_path):
    adapt(recipe_from_dict(tiny_recipe(steps=4)), out_dir=tmp_path, stop_after=2)
    data = tiny_recipe(steps=4)
    data["run"]["log_every"] = 2
    data["clip"]["device"] = "cpu"
    data["optim"]["grad_checkpointing"] = True
    result = adapt(recipe_from_dict(data), out_dir=tmp_path, resume=True)
    assert sorted(result.resume_changes) == ["clip.device: (not set) -> 'cpu'",
                                             "optim.grad_checkpointing: false -> true",
                                             "run.log_every: 1 -> 2"]
