"""zsgm.fast_step on CPU: options from the recipe, TF32 flags, bf16 autocast (CPU autocast), channels-last,
the torch.compile fallback (compiler mocked to fail), deepcopy of wrapped modules, apply_fast_step on a run."""

from __future__ import annotations

import copy
import types
import warnings

import pytest
import torch
import torch.nn.functional as F

from zsgm import fast_step as fs
from zsgm.generator import Generator, GeneratorArch
from zsgm.recipe_model import RunConfig


class Tiny(torch.nn.Module):
    """A conv 'generator' (synthesis) and 'CLIP' (encode_image) in one; records what its methods saw."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.seen = []

    def synthesis(self, x):
        self.seen.append((x.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        y = self.conv(x)
        self.seen.append((y.dtype, None))
        return y

    def encode_image(self, x):
        return F.normalize(self.conv(x).mean([2, 3]), dim=-1)


def test_options_from_the_recipe_and_validation():
    cfg = RunConfig(tf32=True, autocast=["clip"], channels_last=True, compile=False)
    opts = fs.FastStepOptions.from_run_config(cfg)
    assert opts == fs.FastStepOptions(tf32=True, autocast=("clip",), channels_last=True) and opts.any
    assert not fs.FastStepOptions().any
    with pytest.raises(ValueError, match=r"run.autocast: unknown part\(s\) \['vae'\]"):
        fs.FastStepOptions(autocast=("vae",))


def test_tf32_sets_both_flags_exactly_and_restores():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    restore = fs.set_tf32(True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    fs.set_tf32(False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    restore()
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_autocast_runs_the_method_in_bf16_and_returns_float32():
    m = Tiny()
    x = torch.randn(2, 3, 8, 8)
    want = m.synthesis(x)
    m.seen.clear()
    fs.wrap_method(m, "synthesis", device="cpu", autocast=True)
    out = m.synthesis(x)
    assert m.seen[1][0] == torch.bfloat16 and out.dtype == torch.float32  # conv ran in bf16, result float32
    torch.testing.assert_close(out, want, rtol=5e-2, atol=5e-2)
    assert not torch.equal(out, want)
    out.sum().backward()  # gradients flow through the cast
    assert m.conv.weight.grad is not None and m.conv.weight.grad.dtype == torch.float32


def test_generator_under_autocast_uses_the_reference_ops_and_stays_close():
    torch.manual_seed(0)
    g = Generator(GeneratorArch.rosinality(16, channel_max=32, n_mlp=2, style_dim=32))
    ws = torch.randn(2, g.n_latent, 32)
    noise = g.make_noise(2, mode="const")
    want = g.synthesis(ws, noise=noise)
    fs.prepare_generator(g, fs.FastStepOptions(autocast=("generator",)), "cpu")
    assert all(getattr(m, "impl", "ref") == "ref" for m in g.modules())
    out = g.synthesis(ws, noise=noise)
    assert out.dtype == torch.float32 and out.shape == want.shape
    assert (out - want).abs().max() < 0.1 * want.abs().max()


def test_channels_last_converts_parameters_and_inputs():
    m = Tiny()
    fs.wrap_method(m, "synthesis", device="cpu", channels_last=True)
    assert m.conv.weight.is_contiguous(memory_format=torch.channels_last)
    m.synthesis(torch.randn(2, 3, 8, 8))
    assert m.seen[0] == (torch.float32, True)


def test_nothing_to_wrap_and_double_wrapping():
    m = Tiny()
    assert fs.wrap_method(m, "synthesis", device="cpu") is None and "synthesis" not in m.__dict__
    fs.wrap_method(m, "synthesis", device="cpu", autocast=True)
    with pytest.raises(ValueError, match="Tiny.synthesis is already wrapped"):
        fs.wrap_method(m, "synthesis", device="cpu", autocast=True)
    fs.unwrap_method(m, "synthesis")
    assert "synthesis" not in m.__dict__
    with pytest.raises(ValueError, match="Tiny has no method 'render'"):
        fs.wrap_method(m, "render", device="cpu", autocast=True)


def test_compile_failure_warns_once_and_runs_eagerly(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("inductor: no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    m = Tiny()
    x = torch.randn(1, 3, 8, 8)
    want = Tiny.synthesis(m, x)
    w = fs.wrap_method(m, "synthesis", device="cpu", compile=True)
    with pytest.warns(fs.FastStepWarning, match=r"torch.compile of Tiny.synthesis failed \(RuntimeError: inductor: "
                                                r"no C\+\+ compiler found\); running it eagerly"):
        out = m.synthesis(x)
    torch.testing.assert_close(out, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(m.synthesis(x), want)
    assert w.compile_error.startswith("RuntimeError")


def test_an_error_after_a_successful_compiled_call_is_raised(monkeypatch):
    calls = {"n": 0}

    def flaky_compile(fn, **kwargs):
        def run(*a, **k):
            calls["n"] += 1
            if calls["n"] > 1:
                raise RuntimeError("CUDA out of memory")
            return fn(*a, **k)
        return run

    monkeypatch.setattr(torch, "compile", flaky_compile)
    m = Tiny()
    fs.wrap_method(m, "synthesis", device="cpu", compile=True)
    m.synthesis(torch.randn(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="out of memory"):
        m.synthesis(torch.randn(1, 3, 8, 8))


def test_deepcopy_rewraps_the_copy():
    m = Tiny()
    fs.wrap_method(m, "synthesis", device="cpu", autocast=True)
    c = copy.deepcopy(m)
    assert isinstance(c.__dict__["synthesis"], fs.MethodWrapper) and c.synthesis.owner is c
    with torch.no_grad():
        c.conv.weight.zero_()
        c.conv.bias.zero_()
    x = torch.randn(1, 3, 8, 8)
    assert torch.count_nonzero(c.synthesis(x)) == 0 and torch.count_nonzero(m.synthesis(x)) > 0
    assert c.seen and c.seen[-1][0] == torch.bfloat16


def test_apply_fast_step_on_a_run():
    g_src, g_tgt, clip = Tiny(), Tiny(), Tiny()
    run = types.SimpleNamespace(recipe=types.SimpleNamespace(run=RunConfig(tf32=False, autocast=["clip"])),
                                g_source=g_src, g_target=g_tgt, g_ema=None, clip_models=[clip],
                                device=torch.device("cpu"), clip_device=torch.device("cpu"))
    restore = fs.set_tf32(True)
    try:
        opts = fs.apply_fast_step(run)
        assert opts.autocast == ("clip",) and torch.backends.cudnn.allow_tf32  # tf32 = false: flags left alone
        assert "synthesis" not in g_src.__dict__ and "synthesis" not in g_tgt.__dict__  # generator untouched
        assert isinstance(clip.__dict__["encode_image"], fs.MethodWrapper)
        assert clip.encode_image(torch.randn(2, 3, 8, 8)).dtype == torch.float32
    finally:
        restore()


def test_autocast_context_device_types():
    with fs.autocast_context("cpu"):
        assert torch.is_autocast_enabled("cpu")
    with fs.autocast_context("cpu", enabled=False):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="device type 'meta' is not supported"):
        fs.autocast_context("meta")


def test_the_recipe_options_reach_a_run(tmp_path):
    """A tiny adapt run with bf16 autocast of both forwards and channels-last: the run's models are wrapped and the
    losses stay finite and close to the float32 run's."""
    import json

    from zsgm.loop import adapt
    from zsgm.recipe import recipe_from_dict

    def recipe(**run):
        return recipe_from_dict({
            "source": "photo", "target": "sketch", "generator": {"checkpoint": "tiny-random"},
            "clip": {"models": [{"name": "tiny-random"}]}, "optim": {"steps": 2, "batch_size": 2},
            "run": {"seed": 1, "sample_every": 0, "checkpoint_every": 0, "n_samples": 2, "progress": False, **run},
            "techniques": [{"use": "directional"}]})

    adapt(recipe(), out_dir=tmp_path / "fp32")
    adapt(recipe(autocast=["generator", "clip"], channels_last=True), out_dir=tmp_path / "bf16")
    rows = {name: [json.loads(line) for line in (tmp_path / name / "losses.jsonl").read_text().splitlines()]
            for name in ("fp32", "bf16")}
    for a, b in zip(rows["fp32"], rows["bf16"]):
        assert b["total"] == pytest.approx(a["total"], abs=0.05)
    assert rows["fp32"] != rows["bf16"]  # bf16 really ran


def test_run_records_its_fast_step_options(tmp_path):
    from zsgm.recipe import recipe_from_dict
    from zsgm.run import build_run

    r = recipe_from_dict({"source": "photo", "target": "sketch", "generator": {"checkpoint": "tiny-random"},
                          "clip": {"models": [{"name": "tiny-random"}]},
                          "run": {"autocast": ["clip"], "progress": False}, "techniques": [{"use": "directional"}]})
    run = build_run(r, out_dir=tmp_path)
    assert run.fast_step.autocast == ("clip",) and not run.fast_step.tf32


def test_tf32_of_one_run_does_not_leak_into_the_next_run_of_the_process(tmp_path, monkeypatch):
    import zsgm.loop
    from zsgm.loop import adapt
    from zsgm.recipe import recipe_from_dict

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    r = recipe_from_dict({"source": "photo", "target": "sketch", "generator": {"checkpoint": "tiny-random"},
                          "clip": {"models": [{"name": "tiny-random"}]}, "optim": {"steps": 1},
                          "run": {"tf32": True, "progress": False, "sample_every": 0},
                          "techniques": [{"use": "directional"}]})
    seen, original = [], zsgm.loop.optimisation_step

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return original(*args, **kwargs)

    monkeypatch.setattr(zsgm.loop, "optimisation_step", spy)
    adapt(r, out_dir=tmp_path)
    assert seen == [True]  # on during the run
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before  # restored after


def test_a_run_that_fails_to_build_leaves_the_tf32_flags_as_they_were(tmp_path, monkeypatch):
    from zsgm.recipe import recipe_from_dict
    from zsgm.run import Run, build_run

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    r = recipe_from_dict({"source": "photo", "target": "sketch", "generator": {"checkpoint": "tiny-random"},
                          "clip": {"models": [{"name": "tiny-random"}]},
                          "run": {"tf32": True, "progress": False}, "techniques": [{"use": "directional"}]})
    seen = []

    def fail(self):  # after apply_fast_step has switched TF32 on
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        raise RuntimeError("technique failed to attach")

    monkeypatch.setattr(Run, "_check_direction_providers", fail)
    with pytest.raises(RuntimeError, match="failed to attach"):
        build_run(r, out_dir=tmp_path)
    assert seen == [True]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
