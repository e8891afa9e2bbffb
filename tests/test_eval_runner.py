"""zsgm.metrics.runner and zsgm.metrics.samples: what is evaluated, which metrics run, the samples, the records.

The helpers at the top (hand-made run directories, a fake metric plugin) are imported by test_eval_cli.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import attrs
import pytest
import torch

from zsgm.builtin_plugin import tiny_random_generator
from zsgm.cache import weights_fingerprint
from zsgm.hookspecs import hookimpl
from zsgm.metrics.api import MetricError, MetricResult
from zsgm.metrics.runner import (
    EvalOptions,
    MetricRefused,
    Selected,
    evaluate,
    evaluate_steps,
    format_markdown,
    resolve_target,
    run_metrics,
    select_metrics,
    step_generators,
)
from zsgm.metrics.samples import SampleSettings, draw_samples
from zsgm.registry import MetricSpec


def tiny_recipe(generator: str = "tiny-random", *, target: str = "sketch", steps: int = 4, snapshot_every: int = 0):
    return {"source": "photo", "target": target, "generator": {"checkpoint": generator},
            "clip": {"models": [{"name": "tiny-random"}]}, "optim": {"steps": steps},
            "run": {"snapshot_every": snapshot_every, "progress": False, "device": "cpu"},
            "techniques": [{"use": "directional"}]}


def nudged(generator, seed: int, scale: float = 0.05):
    """``generator`` with every synthesis parameter moved a little (the mapping stays the source's, as in a run)."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in generator.named_parameters():
            if not name.startswith("style."):
                p.add_(scale * torch.randn(p.shape, generator=rng))
    return generator


def make_run(out: Path, generator: str = "tiny-random", *, target: str = "sketch", steps: int = 4,
             snapshot_every: int = 0, finished: bool = True) -> Path:
    """A run directory as ``zsgm adapt`` leaves it (recipe.toml, snapshots, generator.safetensors), with nudged
    copies of the source generator as the adapted ones (no training: fast)."""
    from zsgm.generator import save_generator
    from zsgm.io_utils import atomic_write_text
    from zsgm.plugins import get_registry
    from zsgm.recipe import dumps_recipe, recipe_from_dict

    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_from_dict(tiny_recipe(generator, target=target, steps=steps, snapshot_every=snapshot_every))
    atomic_write_text(out / "recipe.toml", dumps_recipe(recipe))
    g, _ = get_registry().generators.get(generator).load(device="cpu")
    for step in range(1, steps + 1):
        nudged(g, step)
        if snapshot_every and step % snapshot_every == 0:
            (out / "snapshots").mkdir(exist_ok=True)
            save_generator(g, out / "snapshots" / f"step-{step:06d}.safetensors")
    if finished:
        save_generator(g, out / "generator.safetensors")
    return out


def fake_compute(ctx) -> MetricResult:
    """Mean pixel of the samples, and whether the source samples came with them."""
    return MetricResult(values={"fake_mean": float(ctx.generated.double().mean()),
                                "fake_paired": float(ctx.source is not None)},
                        record={"protocol": "test", "n": int(ctx.generated.shape[0])})


def broken_compute(ctx) -> MetricResult:
    raise MetricError("weights missing: put fake.pth in /nowhere (--weights fake=PATH)")


def judge_compute(ctx) -> MetricResult:
    return MetricResult(values={"judge_dim": float(ctx.clip_judge.embed_dim),
                                "judge_is_guide": float(ctx.clip_judge_is_guide)})


class FakeMetricsPlugin:
    """Registers ``fake`` (default, always applies), ``broken`` (not default, fails with a MetricError) and
    ``judge`` (family "clip", reads the judge CLIP)."""

    __name__ = "fake_metrics_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_metrics(register):
        register(MetricSpec(name="fake", compute=fake_compute, family="fake", default=True,
                            description="test: mean pixel"))
        register(MetricSpec(name="broken", compute=broken_compute, family="fake", default=False,
                            description="test: always fails"))
        register(MetricSpec(name="judge", compute=judge_compute, family="clip", default=False,
                            applies=lambda ctx: None if ctx.clip_judge is not None else "no CLIP judge",
                            description="test: reads the judge"))


def fake_registry(monkeypatch=None, *, library: bool = False):
    """A registry with the fake metrics (and, with ``library``, the field's metrics of zsgm.metrics.library: left
    out by default, they would load CLIP and LPIPS networks); with ``monkeypatch``, also the process-wide one
    (for the CLI)."""
    import contextlib
    from unittest import mock

    import zsgm.plugins
    from zsgm.plugins import build_registry

    leave_out = contextlib.nullcontext() if library else mock.patch("zsgm.metrics.library.library_metrics",
                                                                    return_value=[])
    with leave_out:
        _, registry = build_registry(extra_modules=[FakeMetricsPlugin])
    if monkeypatch is not None:
        monkeypatch.setitem(zsgm.plugins._STATE, "registry", registry)
    return registry


# ---------------------------------------------------------------------------------------------------- tests


def options(**kw) -> EvalOptions:
    settings = kw.pop("settings", SampleSettings(n=6, seed=1))
    return EvalOptions(settings=settings, **kw)


def test_samples_follow_the_protocol_by_hand_and_pair_the_source():
    """One seeded stream: z [n, D], then one noise map per layer; the source's mapping and mean latent; the
    adapted generator synthesises the very codes and noise the source does."""
    g, _ = tiny_random_generator()
    t = nudged(copy.deepcopy(g), 0)
    settings = SampleSettings(n=5, seed=3, truncation=0.7, batch=2)
    src, gen = draw_samples([g, t], mapper=g, settings=settings)
    rng = torch.Generator().manual_seed(3)
    z = torch.randn(5, g.arch.style_dim, generator=rng)
    noise = [torch.randn((5, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)), generator=rng) for i in range(g.num_layers)]
    mean = g.mean_latent(4096, generator=torch.Generator().manual_seed(4)) if g.latent_avg is None else g.latent_avg
    with torch.no_grad():
        w = mean + 0.7 * (g.mapping(z) - mean)
        ws = w[:, None].repeat(1, g.n_latent, 1)
        want_src, want_gen = g.synthesis(ws, noise=noise), t.synthesis(ws, noise=noise)
    assert torch.allclose(src, want_src, atol=1e-5) and torch.allclose(gen, want_gen, atol=1e-5)
    assert src.dtype == torch.float32 and src.shape == (5, 3, 32, 32) and not torch.equal(src, gen)


def test_samples_do_not_depend_on_the_batch_and_change_with_the_seed():
    g, _ = tiny_random_generator()
    settings = SampleSettings(n=70, seed=5, batch=64)  # two stream chunks (64 + 6)
    (a,) = draw_samples([g], mapper=g, settings=settings)
    (b,) = draw_samples([g], mapper=g, settings=attrs.evolve(settings, batch=9))
    (c,) = draw_samples([g], mapper=g, settings=attrs.evolve(settings, n=10, seed=6))
    # the same latents and noise; the convolutions may differ in the last bits with the batch (threaded CPU kernels)
    assert a.shape[0] == 70 and torch.allclose(a, b, rtol=0, atol=1e-5)
    assert not torch.equal(a[:10], c)
    (k0,) = draw_samples([g], mapper=g, settings=SampleSettings(n=3, truncation=0.0, noise_mode="const"))
    assert torch.allclose(k0[0], k0[2], atol=1e-6)  # psi 0, stored noise: every sample is the mean image


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="noise mode must be one of random, const, none"):
        SampleSettings(noise_mode="fixed")
    with pytest.raises(ValueError, match="truncation must be in"):
        SampleSettings(truncation=1.5)


def test_run_directory_gets_the_default_metrics_and_the_reporting_record(tmp_path):
    registry = fake_registry()
    run = make_run(tmp_path / "run")
    record = evaluate(str(run), options=options(), registry=registry)
    from zsgm.generator import load_generator

    adapted, _ = load_generator(run / "generator.safetensors")
    source, _ = tiny_random_generator()
    _, want = draw_samples([source, adapted], mapper=source, settings=SampleSettings(n=6, seed=1))
    assert record["fake_mean"] == pytest.approx(float(want.double().mean()), abs=1e-6)
    assert record["fake_paired"] == 1.0  # the source samples came with them
    assert set(record["metrics"]) == {"fake"}  # broken / judge are not defaults
    assert record["metrics"]["fake"]["record"] == {"protocol": "test", "n": 6}
    assert "tiny-random" in record["skipped"]["target-rate"] and set(record["skipped"]) >= {
        "target-rate", "content-iou", "background-artefact", "diversity-ratio"}
    assert record["evaluated"] == {"spec": str(run), "kind": "run", "path": str(run / "generator.safetensors"),
                                   "step": 4, "weights_sha256": weights_fingerprint(adapted),
                                   "source_weights_sha256": weights_fingerprint(source)}
    assert record["device"] == "cpu"
    assert (record["source"], record["target"], record["techniques"], record["steps"]) == (
        "photo", "sketch", "directional", 4)
    assert (record["n"], record["seed"], record["truncation"], record["noise_mode"]) == (6, 1, 1.0, "random")
    assert record["sampling"]["mapping"] == "source" and record["sampling"]["batch"] == 64
    assert record["source_generator"] == "tiny-random" and record["generator_name"] == "tiny-random"
    assert record["task"] == "photo -> sketch" and record["clip_judge"] is None
    json.dumps(record)  # plain JSON


def test_requested_metric_that_does_not_apply_is_refused_before_any_sampling(tmp_path, monkeypatch):
    import zsgm.metrics.runner as runner

    registry = fake_registry()
    run = make_run(tmp_path / "run")
    monkeypatch.setattr(runner, "sample_pair", lambda *a, **k: pytest.fail("sampled before refusing"))
    with pytest.raises(MetricRefused, match=r"^'shapes' \(its metric '.*'\) does not apply to .*run: the shapes "
                                            r"judges read only the shapes world's generator, not the generator "
                                            r"'tiny-random'$"):
        evaluate(str(run), options=options(metrics=["shapes"]), registry=registry)
    with pytest.raises(MetricRefused, match="^metric 'target-rate' does not apply"):
        evaluate(str(run), options=options(metrics=["fake", "target-rate"]), registry=registry)


def test_metric_names_and_families_select_in_order_without_repeats():
    from zsgm.registry import RegistryError

    registry = fake_registry()
    chosen = select_metrics(registry, ["broken", "fake", "shapes", "target-rate"])
    assert [s.spec.name for s in chosen] == ["broken", "fake", "background-artefact", "content-iou",
                                             "diversity-ratio", "target-rate"]
    assert all(s.explicit for s in chosen)
    assert {s.spec.name for s in select_metrics(registry, None)} >= {"fake", "target-rate"}
    with pytest.raises(RegistryError, match="unknown metric or metric family 'shape'. Did you mean 'shapes'") as err:
        select_metrics(registry, ["shape"])
    listed = str(err.value).split("Installed: ")[1].rstrip(".").split(", ")
    assert "fake" in listed and len(listed) == len(set(listed))  # a metric named as its family is listed once


def test_a_failing_metric_raises_when_asked_for_and_is_skipped_among_defaults(tmp_path):
    from zsgm.metrics.api import EvalContext, MetricError

    registry = fake_registry()
    run = make_run(tmp_path / "run")
    with pytest.raises(MetricError, match="put fake.pth in /nowhere"):
        evaluate(str(run), options=options(metrics=["broken"]), registry=registry)
    spec = registry.metrics.get("broken")
    target = resolve_target(str(run), registry=registry)
    results, skipped = run_metrics([Selected(spec, False)], EvalContext(generated=torch.zeros(2, 3, 4, 4)), target)
    assert results == {} and "put fake.pth in /nowhere" in skipped["broken"]


def test_files_and_names_are_evaluated_bare_and_files_in_a_run_read_its_recipe(tmp_path):
    from zsgm.generator import export_rosinality, save_generator

    registry = fake_registry()
    g, _ = tiny_random_generator()
    (tmp_path / "files").mkdir()
    export_rosinality(g, tmp_path / "files" / "g.pt")
    save_generator(g, tmp_path / "files" / "g.safetensors")
    for name in ("g.pt", "g.safetensors"):
        record = evaluate(str(tmp_path / "files" / name), options=options(), registry=registry)
        assert record["evaluated"]["kind"] == "file" and record["fake_paired"] == 0.0, name
        assert record["sampling"]["mapping"] == "own" and record["source"] is None and record["steps"] is None
    named = evaluate("tiny-random", options=options(), registry=registry)
    assert named["evaluated"]["kind"] == "name" and named["generator_name"] == "tiny-random"
    assert named["fake_mean"] == pytest.approx(record["fake_mean"], abs=1e-6)  # same generator, same samples
    run = make_run(tmp_path / "run", snapshot_every=2)
    inside = resolve_target(str(run / "snapshots" / "step-000002.safetensors"), registry=registry)
    assert inside.kind == "file" and inside.step == 2 and inside.source is not None and inside.recipe.target == "sketch"


def test_unfinished_run_evaluates_its_last_checkpoint_with_a_note(tmp_path):
    registry = fake_registry()
    run = make_run(tmp_path / "run", finished=False)
    g = nudged(tiny_random_generator()[0], 9)
    (run / "checkpoints").mkdir()
    torch.save({"format": "zsgm-run-checkpoint", "target": g.state_dict(), "next_step": 3},
               run / "checkpoints" / "last.pt")
    record = evaluate(str(run), options=options(), registry=registry)
    assert record["evaluated"]["step"] == 3 and record["evaluated"]["path"].endswith("last.pt")
    assert record["notes"][0] == "the run has not finished: evaluating checkpoints/last.pt (after 3 of 4 steps)"
    assert record["evaluated"]["weights_sha256"] == weights_fingerprint(g)


@pytest.mark.slow  # ~12 s: the first CLIP load imports open_clip
def test_judge_is_the_runs_guide_unless_another_is_given(tmp_path, capsys):
    registry = fake_registry()
    run = make_run(tmp_path / "run")
    record = evaluate(str(run), options=options(metrics=["judge"]), registry=registry)
    assert record["judge_is_guide"] == 1.0
    assert record["clip_judge"] == {"name": "tiny-random", "pretrained": None, "is_guide": True}
    assert capsys.readouterr().err.splitlines() == [  # on stderr too, not only in the record
        "zsgm: warning: run: the CLIP judge 'tiny-random' guided the run, so its scores are inflated; judge with "
        "another CLIP (--clip NAME[:PRETRAINED])"]
    other = evaluate(str(run), options=options(metrics=["judge"], clip={"name": "tiny-random", "pretrained": "seed:7"}),
                     registry=registry)
    assert other["judge_is_guide"] == 0.0 and other["clip_judge"]["is_guide"] is False
    assert "warning" not in capsys.readouterr().err
    bare = evaluate("tiny-random", options=options(metrics=["fake"]), registry=registry)
    assert bare["clip_judge"] is None  # no judge needed, none loaded
    with pytest.raises(MetricRefused, match="metric 'judge' does not apply to tiny-random: no CLIP judge"):
        evaluate("tiny-random", options=options(metrics=["judge"]), registry=registry)


class DefaultJudgePlugin:
    __name__ = "default_judge_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_metrics(register):
        register(MetricSpec(name="judge-default", compute=judge_compute, family="clip", default=True))


@pytest.mark.slow  # ~12 s: open_clip is imported to look the name up
def test_a_judge_that_does_not_load_is_refused_when_asked_for_and_skips_the_default_clip_metrics(tmp_path):
    from zsgm.clip import ClipLoadError
    from zsgm.plugins import build_registry

    _, registry = build_registry(extra_modules=[FakeMetricsPlugin, DefaultJudgePlugin])
    run = make_run(tmp_path / "run")
    missing = {"name": str(tmp_path / "no-such-clip.pt")}
    with pytest.raises(ClipLoadError, match=r"^the judge CLIP '.*no-such-clip.pt' \(--clip\): "):
        evaluate(str(run), options=options(metrics=["judge"], clip=missing), registry=registry)
    record = evaluate(str(run), options=options(clip=missing), registry=registry)
    assert record["skipped"]["judge-default"].startswith("the judge CLIP '")
    assert "fake" in record["metrics"] and record["clip_judge"] is None


def test_steps_are_the_source_each_snapshot_and_the_end_on_the_same_codes(tmp_path):
    from zsgm.metrics.runner import write_steps

    registry = fake_registry()
    run = make_run(tmp_path / "run", steps=4, snapshot_every=2)
    target = resolve_target(str(run), registry=registry)
    assert [(s, w) for s, w, _ in step_generators(target)] == [(0, "source"), (2, "snapshot"), (4, "final")]
    record = evaluate_steps(target, options=options(), registry=registry)
    assert [row["step"] for row in record["rows"]] == [0, 2, 4]
    final = evaluate(target, options=options(), registry=registry)
    assert record["rows"][2]["values"]["fake_mean"] == pytest.approx(final["fake_mean"], abs=1e-6)
    source = evaluate("tiny-random", options=options(), registry=registry)
    assert record["rows"][0]["values"]["fake_mean"] == pytest.approx(source["fake_mean"], abs=1e-6)
    json_path, png = write_steps(record, tmp_path / "out")
    assert json.loads(json_path.read_text())["rows"][1]["generator"].endswith("step-000002.safetensors")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="--at-checkpoints needs a run directory"):
        evaluate_steps("tiny-random", options=options(), registry=registry)


def test_markdown_names_each_run_and_groups_the_skipped(tmp_path):
    registry = fake_registry()
    run = make_run(tmp_path / "sketch-run")
    text = format_markdown([evaluate(str(run), options=options(), registry=registry)])
    lines = text.splitlines()
    assert lines[0] == "| run | task | techniques | fake_mean | fake_paired |"
    assert lines[2].startswith("| sketch-run | photo -> sketch | directional | ") and lines[2].endswith(" | 1.000 |")
    assert "  - skipped background-artefact, content-iou, diversity-ratio, target-rate: the shapes judges read " \
           "only the shapes world's generator, not the generator 'tiny-random'" in lines


def test_the_builtin_plugin_registers_the_shapes_family_and_the_library():
    from zsgm.plugins import build_registry

    _, registry = build_registry()
    shapes = [registry.metrics.get(n) for n in ("target-rate", "content-iou", "background-artefact",
                                                 "diversity-ratio")]
    assert all(s.family == "shapes" and s.default for s in shapes)
    assert {"fid", "kid", "intra-lpips", "clip-text", "clip-image", "sifid", "identity"} <= set(registry.metrics.names())
    assert all(registry.metrics.origin(s.name) == "zsgm (zsgm.builtin)" for s in shapes)


def test_relative_target_images_are_found_beside_the_run_or_left_out_with_a_note(tmp_path, monkeypatch):
    """A run's recipe with a relative ``target_images`` entry, evaluated from another working directory: the entry
    is read from the run directory; when it is nowhere, only the metrics needing target images lose it (a note),
    the evaluation itself runs."""
    from PIL import Image

    from zsgm.recipe import read_recipe_file
    from zsgm.tomlwrite import dumps_toml

    registry = fake_registry()
    run = make_run(tmp_path / "run")
    data = read_recipe_file(run / "recipe.toml")
    data.pop("target")  # image-only: the recipe is valid only with its target images
    data["target_images"] = ["ref.png"]
    data["techniques"] = [{"use": "directional"}, {"use": "image-target"}]
    (run / "recipe.toml").write_text(dumps_toml(data))
    Image.new("RGB", (8, 8), (200, 10, 10)).save(run / "ref.png")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    target = resolve_target(str(run), registry=registry)
    assert target.recipe.target_images == [str(run / "ref.png")] and target.notes == []

    (run / "ref.png").unlink()
    record = evaluate(str(run), options=options(), registry=registry)
    assert "fake" in record["metrics"]
    assert [n for n in record["notes"] if n.startswith("target_images not found")] == [
        f"target_images not found (from the working directory or the run directory {run}): ref.png; metrics that "
        f"need target images are skipped"]
    assert resolve_target(str(run), registry=registry).recipe.target_images == []
