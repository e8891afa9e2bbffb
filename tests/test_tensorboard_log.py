"""Logging: the built-in ``tensorboard`` technique, and the README's W&B logger plugin (run with a stand-in
``wandb`` module)."""

from __future__ import annotations

import io
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsgm.loop import adapt
from zsgm.recipe import recipe_from_dict

README = Path(__file__).resolve().parents[1] / "README.md"


def tiny_recipe(steps=3, techniques=()):
    """As tests/test_loop.py's tiny recipe: random 32-px generator, random CLIP, seconds long."""
    return {
        "source": "photo",
        "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": steps, "batch_size": 2},
        "run": {"seed": 3, "sample_every": 2, "checkpoint_every": 0, "n_samples": 2, "progress": False},
        "techniques": [{"use": "directional"}, *techniques],
    }


def losses(out):
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


def test_tensorboard_scalars_equal_losses_jsonl_and_grids_are_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = recipe_from_dict(tiny_recipe(techniques=[{"use": "tensorboard"}]))
    adapt(recipe, out_dir=tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    logged = losses(tmp_path / "run")
    keys = [k for k in logged[0] if k != "step"]
    assert sorted(events.Tags()["scalars"]) == sorted(keys) == ["directional/directional", "total"]
    for key in keys:
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["step"] for r in logged]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in logged], rel=1e-6)
    images = events.Images("samples")  # after step 2 (sample_every) and after the last step (3)
    assert [i.step for i in images] == [2, 3]
    for image in images:  # the same picture as the loop's grid file of that step
        tb = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        png = np.asarray(Image.open(tmp_path / "run" / "samples" / f"step-{image.step:06d}.png").convert("RGB"))
        assert tb.shape == png.shape == (198, 198, 3) and np.array_equal(tb, png)  # 2 x 2 cells of 96 px


def test_with_log_every_tensorboard_gets_the_fetched_steps_and_losses_jsonl_every_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tiny_recipe(steps=3, techniques=[{"use": "tensorboard", "images_every": 0}])
    data["run"]["log_every"] = 2
    adapt(recipe_from_dict(data), out_dir=tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    logged = {r["step"]: r for r in losses(tmp_path / "run")}
    assert sorted(logged) == [0, 1, 2]
    total = events.Scalars("total")
    assert [s.step for s in total] == [1, 2]  # fetched after 2 steps and at the last step; step 0's log was None
    assert [s.value for s in total] == pytest.approx([logged[1]["total"], logged[2]["total"]], rel=1e-6)


def test_only_rank_0_writes_under_torchrun(tmp_path):
    from zsgm.tensorboard_log import TensorBoardConfig, TensorBoardLogger

    recipe = types.SimpleNamespace(run=types.SimpleNamespace(sample_every=1), optim=types.SimpleNamespace(steps=2))
    run = types.SimpleNamespace(out_dir=tmp_path, dist=types.SimpleNamespace(is_main=False), recipe=recipe)
    logger = TensorBoardLogger(TensorBoardConfig(images_every=0))
    logger.zsgm_setup(run=run)
    logger.zsgm_after_step(run=run, step=0, log={"total": 1.0})
    logger.zsgm_teardown(run=run, error=None)
    assert logger.writer is None and not (tmp_path / "tensorboard").exists()


def test_tensorboard_log_dir_option_and_no_images_at_images_every_0(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zsgm.tensorboard_log import TensorBoardConfig, TensorBoardLogger

    run = types.SimpleNamespace(out_dir=tmp_path / "run", recipe=types.SimpleNamespace(
        run=types.SimpleNamespace(sample_every=1), optim=types.SimpleNamespace(steps=2)))
    logger = TensorBoardLogger(TensorBoardConfig(log_dir=str(tmp_path / "tb"), images_every=0))
    logger.zsgm_setup(run=run)
    for step in range(2):
        logger.zsgm_after_step(run=run, step=step, log={"total": 1.0 + step})
    logger.zsgm_teardown(run=run, error=None)
    assert logger.writer is None and not (tmp_path / "run").exists()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Tags()["images"] == []
    assert [(s.step, s.value) for s in events.Scalars("total")] == [(0, 1.0), (1, 2.0)]


def test_after_step_skips_steps_whose_values_were_not_fetched():
    from zsgm.tensorboard_log import TensorBoardConfig, TensorBoardLogger

    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

    logger = TensorBoardLogger(TensorBoardConfig(images_every=0))
    logger.writer = Writer()
    logger.zsgm_after_step(run=None, step=4, log=None)
    logger.zsgm_after_step(run=None, step=5, log={"directional/directional": 0.5, "total": 0.5})
    assert logger.writer.scalars == [("directional/directional", 0.5, 5), ("total", 0.5, 5)]


def test_missing_tensorboard_is_one_line_naming_the_extra(monkeypatch):
    """Raised when the run builds the technique (a ValueError: the run reports it as ``techniques[i]: ...``)."""
    import importlib.util

    from zsgm.tensorboard_log import TensorBoardConfig, TensorBoardLogger, TensorBoardMissing

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(TensorBoardMissing) as info:
        TensorBoardLogger(TensorBoardConfig())
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert str(info.value) == ("the tensorboard technique needs the tensorboard package, which is not installed: "
                               "pip install 'zsgm[tensorboard]'")


def readme_wandb_plugin() -> str:
    """The Python block of the README's "Logging" section that defines the W&B logger."""
    section = README.read_text().split("\n## Logging\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    code = [b for b in blocks if "wandb" in b]
    assert len(code) == 1, "the README's Logging section should hold one W&B plugin block"
    return code[0]


def test_readme_wandb_logger_runs_with_a_stand_in_wandb(tmp_path, monkeypatch):
    """The README's plugin, as printed, registered and run: W&B receives exactly what losses.jsonl holds."""
    from zsgm.plugins import build_registry

    calls = {"init": [], "log": [], "finish": []}

    class FakeRun:
        def log(self, data, step=None):
            calls["log"].append((dict(data), step))

        def finish(self, exit_code=None):
            calls["finish"].append(exit_code)

    def init(**kwargs):
        calls["init"].append(kwargs)
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    plugin = types.ModuleType("readme_wandb_logger")
    exec(compile(readme_wandb_plugin(), "README.md (Logging)", "exec"), plugin.__dict__)
    _, registry = build_registry(extra_modules=[plugin])
    recipe = recipe_from_dict(tiny_recipe(techniques=[{"use": "wandb", "project": "demo"}]), registry=registry)
    adapt(recipe, out_dir=tmp_path / "run", registry=registry)
    assert len(calls["init"]) == 1 and calls["init"][0]["project"] == "demo"
    assert calls["log"] == [({k: v for k, v in r.items() if k != "step"}, r["step"]) for r in losses(tmp_path / "run")]
    assert calls["finish"] == [0]
