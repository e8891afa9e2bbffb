"""A technique that attaches its own module (``zsgm_attach``) and steps its own optimiser (``zsgm_optimizers``):
both are checkpointed, and a killed and resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json

import attrs
import pytest
import torch

from zsgm.checkpoint import CheckpointMismatchError, checkpoint_path
from zsgm.hookspecs import hookimpl
from zsgm.loop import adapt
from zsgm.plugins import build_registry
from zsgm.recipe import recipe_from_dict
from zsgm.registry import TechniqueSpec
from zsgm.technique import Technique


@attrs.define(kw_only=True)
class CriticConfig:
    lr: float = 0.05


class Critic(Technique):
    """A linear critic on the target images, trained by its own SGD-with-momentum optimiser each step on
    noise drawn from ``run.rng``; the generator's loss is the critic's mean score."""

    @hookimpl
    def zsgm_attach(self, run):
        size = run.g_source.arch.size
        rng = run.rng(0, f"{self.use.name}/init")
        self.head = torch.nn.Linear(3 * size * size, 1).to(run.device)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=rng) * 0.01)
            self.head.bias.zero_()

    @hookimpl
    def zsgm_optimizers(self, run):
        return {"critic": torch.optim.SGD(self.head.parameters(), lr=self.config.lr, momentum=0.9)}

    @hookimpl
    def zsgm_before_step(self, run, step):
        optimizer = run.technique_optimizers[f"{self.use.name}/critic"]
        rng = run.rng(step, f"{self.use.name}/critic")
        real = torch.randn((2, self.head.in_features), generator=rng)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.softplus(-self.head(real)).mean()
        loss.backward()
        optimizer.step()

    @hookimpl
    def zsgm_loss(self, run, step):
        x = run.batch.tgt_images.flatten(1)  # [N, 3*S*S]
        return [self.term("critic", torch.nn.functional.softplus(-self.head(x)).mean())]


class CriticPlugin:
    __name__ = "critic_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_techniques(register):
        register(TechniqueSpec(name="critic", config=CriticConfig, build=Critic))


def registry():
    return build_registry(extra_modules=[CriticPlugin()])[1]


def recipe(steps, reg):
    return recipe_from_dict({
        "source": "photo", "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": steps, "batch_size": 2, "noise": "fresh", "ema_decay": 0.9},
        "run": {"seed": 5, "sample_every": 0, "checkpoint_every": 2, "n_samples": 2, "progress": False},
        "techniques": [{"use": "critic"}],
    }, registry=reg)


def test_attached_module_and_own_optimiser_are_checkpointed_and_resume_bit_identical(tmp_path):
    reg = registry()
    adapt(recipe(5, reg), out_dir=tmp_path / "straight", registry=reg)
    adapt(recipe(5, reg), out_dir=tmp_path / "resumed", registry=reg, stop_after=3)
    adapt(recipe(5, reg), out_dir=tmp_path / "resumed", registry=reg, resume=True)
    a = torch.load(checkpoint_path(tmp_path / "straight"), weights_only=True)
    b = torch.load(checkpoint_path(tmp_path / "resumed"), weights_only=True)
    assert list(a["technique_optimizers"]) == ["critic/critic"]
    momentum_a = a["technique_optimizers"]["critic/critic"]["state"][0]["momentum_buffer"]
    momentum_b = b["technique_optimizers"]["critic/critic"]["state"][0]["momentum_buffer"]
    assert momentum_a.abs().sum() > 0 and torch.equal(momentum_a, momentum_b)
    for name in a["techniques"]["critic"]:
        assert torch.equal(a["techniques"]["critic"][name], b["techniques"]["critic"][name]), name
    for name in a["target"]:
        assert torch.equal(a["target"][name], b["target"][name]), name
    lines = [(tmp_path / d / "losses.jsonl").read_text().splitlines() for d in ("straight", "resumed")]
    assert lines[0] == lines[1] and len(lines[0]) == 5
    # the critic really trained: its weights moved away from the attached initial values
    first = json.loads(lines[0][0])["critic/critic"]
    assert first != json.loads(lines[0][-1])["critic/critic"]


def test_checkpoint_without_the_technique_optimiser_is_refused_naming_it(tmp_path):
    reg = registry()
    adapt(recipe(4, reg), out_dir=tmp_path, registry=reg, stop_after=2)
    path = checkpoint_path(tmp_path)
    state = torch.load(path, weights_only=True)
    del state["technique_optimizers"]  # as written by a zsgm before technique optimisers existed
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"technique optimisers \[\], this run has \['critic/critic'\]"):
        adapt(recipe(4, reg), out_dir=tmp_path, registry=reg, resume=True)


def test_a_nonfinite_technique_weight_is_named(tmp_path):
    from zsgm.checkpoint import nonfinite_in_checkpoint, nonfinite_weights
    from zsgm.run import build_run

    reg = registry()
    run = build_run(recipe(2, reg), out_dir=tmp_path, registry=reg)
    assert nonfinite_weights(run) == []
    with torch.no_grad():
        run.techniques[0].head.weight[0, 0] = float("nan")
    assert nonfinite_weights(run) == ["techniques.critic.head.weight"]
    state = {"target": run.g_target.state_dict(), "ema": None,
             "techniques": {"critic": run.techniques[0].state_dict()}}
    assert nonfinite_in_checkpoint(state) == ["techniques.critic.head.weight"]
