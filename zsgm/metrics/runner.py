"""What ``zsgm eval`` does: resolve what to evaluate, pick the metrics, draw the samples once, run the metrics,
write ``eval.json`` and ``eval.md``; with ``--at-checkpoints``, the same over a run's snapshots and a
metric-vs-step picture.

What can be evaluated (:func:`resolve_target`):

- a run directory: the generator is its ``generator.safetensors`` (a finished run), else its
  ``checkpoints/last.pt`` (with a note); the source generator and the domain texts come from its ``recipe.toml``;
- a generator file (``.pt``, ``.pkl``, ``.safetensors``): bare, unless it lies in a run directory
  (``RUN/generator.safetensors``, ``RUN/snapshots/*.safetensors``, ``RUN/checkpoints/*.pt``), whose recipe then
  gives the source and the texts;
- a registered generator name.

Metrics are whatever the registry holds (:class:`zsgm.registry.MetricSpec`, interface in
:mod:`zsgm.metrics.api`). ``metrics=None`` runs every default metric that applies and lists the defaults that do
not, with their reason; a metric asked for by name or family that does not apply is refused
(:class:`MetricRefused`, one line).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

import attrs
import torch

from zsgm.metrics.api import EvalContext, MetricError, MetricResult
from zsgm.metrics.samples import SampleSettings, draw_samples, sample_pair, save_samples

JUDGE_FAMILIES = frozenset({"clip"})  # metric families that read ctx.clip_judge: the judge loads only for them
EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"
STEPS_JSON = "eval-steps.json"
STEPS_PNG = "eval-steps.png"
SNAPSHOT_PATTERN = re.compile(r"^step-(\d+)\.safetensors$")
# keys of an eval.json record that a metric's value may not shadow when values are copied to the top level
RESERVED = frozenset({"run", "evaluated", "source", "target", "techniques", "steps", "task", "n", "seed",
                      "truncation", "noise_mode", "sampling", "clip_judge", "real_dir", "weights", "metrics",
                      "skipped", "notes", "source_generator", "generator_name", "zsgm_version", "rows", "step",
                      "device", "samples_dir"})


class MetricRefused(ValueError):
    """A metric asked for by name or family cannot run on this input (one line saying why)."""


@attrs.define(kw_only=True)
class EvalTarget:
    """A generator to evaluate and what is known around it.

    Attributes:
        spec: what the user gave. kind: "run", "file" or "name". label: a short name for tables.
        generator: the evaluated generator (eval mode). path: its file, None for a registered name.
        step: the training step of its weights when known.
        source: the run's source generator, or None. source_spec: how the recipe names it.
        generator_name: the registered name of the source generator (of the generator itself for a name).
        recipe: the run's recipe, or None. run_dir: the run directory, or None.
        notes: what the user should know (an unfinished run).
    """

    spec: str
    kind: str
    label: str
    generator: torch.nn.Module
    path: Optional[Path] = None
    step: Optional[int] = None
    source: Optional[torch.nn.Module] = None
    source_spec: Optional[str] = None
    generator_name: Optional[str] = None
    recipe: Any = None
    run_dir: Optional[Path] = None
    notes: list[str] = attrs.Factory(list)

    def describe(self) -> dict:
        """The ``evaluated`` entry of the record (with the weights' fingerprint)."""
        from zsgm.cache import weights_fingerprint

        return {"spec": self.spec, "kind": self.kind, "path": None if self.path is None else str(self.path),
                "step": self.step, "weights_sha256": weights_fingerprint(self.generator),
                "source_weights_sha256": None if self.source is None else weights_fingerprint(self.source)}


@attrs.define(kw_only=True)
class EvalOptions:
    """Everything of a ``zsgm eval`` call besides the target.

    Attributes:
        metrics: metric names or family names; None: the default metrics.
        settings: how the samples are drawn.
        real_dir: a folder of real target-domain images (FID/KID).
        weights: local weight files by key (``ctx.weights``).
        clip: the judge CLIP ``{"name": ..., "pretrained": ...}``; None: the run's guide CLIP (its first model).
        target_text: overrides the run's target text (the shapes judges' task).
        options: per-metric options (``ctx.options``).
        device: where generators and metrics run.
        progress: show progress bars.
        samples_dir: also write the samples there as PNG (:func:`zsgm.metrics.samples.save_samples`); None: not.
    """

    metrics: Optional[list[str]] = None
    settings: SampleSettings = attrs.Factory(SampleSettings)
    real_dir: Optional[Path] = None
    weights: dict[str, str] = attrs.Factory(dict)
    clip: Optional[dict] = None
    target_text: Optional[str] = None
    options: dict[str, dict[str, Any]] = attrs.Factory(dict)
    device: torch.device = attrs.Factory(lambda: torch.device("cpu"))
    progress: bool = False
    samples_dir: Optional[Path] = None


# ------------------------------------------------------------------------------------------------ targets


def _registry(registry):
    if registry is not None:
        return registry
    from zsgm.plugins import get_registry

    return get_registry()


def _enclosing_run(path: Path) -> Optional[Path]:
    """The run directory a generator file lies in (``RUN/x`` or ``RUN/sub/x`` beside a ``recipe.toml``)."""
    for candidate in (path.parent, path.parent.parent):
        if (candidate / "recipe.toml").is_file():
            return candidate
    return None


def _load_source(recipe, run_dir: Path, registry, device):
    """The run's source generator (``generator.checkpoint``; a relative path is tried from the working
    directory, then from the run directory)."""
    from zsgm.generator.sources import locate_source
    from zsgm.run import load_generator_asset

    source, _ = load_generator_asset(locate_source(recipe.generator.checkpoint, run_dir, registry), registry, device)
    return source.to(device).eval()


def _load_run_recipe(run_dir: Path, registry, notes: list[str]):
    """The run's ``recipe.toml``, read so that its ``target_images`` need not be where the run saw them.

    A relative entry missing from the working directory is tried from the run directory (as the source generator
    is, :func:`_load_source`). An entry found in neither place is left out with a note, so that only the metrics
    needing target images are skipped (with their reason), not the whole evaluation; the rest of the recipe is
    validated as ``load_recipe`` validates it.
    """
    from zsgm.recipe import read_recipe_file, recipe_from_dict

    path = run_dir / "recipe.toml"
    data = read_recipe_file(path)
    images = data.get("target_images")
    if not isinstance(images, list) or not all(isinstance(x, str) and x.strip() for x in images):
        return recipe_from_dict(data, registry=registry, source=str(path))  # reports what is wrong with them
    located, missing = [], []
    for name in images:
        beside = run_dir / name
        if not Path(name).exists() and not Path(name).is_absolute() and beside.exists():
            name = str(beside)
        located.append(name)
        if not Path(name).is_file():
            missing.append(name)
    # A missing entry is validated as the recipe file itself (an existing file) and dropped after: the rest of the
    # recipe (target text or images, the techniques reading them) is checked as written.
    data = {**data, "target_images": [str(path) if name in missing else name for name in located]}
    recipe = recipe_from_dict(data, registry=registry, source=str(path))
    if missing:
        recipe.target_images = [name for name in located if name not in missing]
        notes.append(f"target_images not found (from the working directory or the run directory {run_dir}): "
                     f"{', '.join(missing)}; metrics that need target images are skipped")
    return recipe


def resolve_target(spec: str, *, registry=None, device="cpu") -> EvalTarget:
    """What ``spec`` (a run directory, a generator file or a registered name) evaluates; see the module docstring.

    Raises:
        RecipeError: the run's ``recipe.toml`` is missing or wrong. CheckpointError: no loadable generator.
    """
    from zsgm.generator import load_generator
    from zsgm.generator.sources import RUN_CHECKPOINT, RUN_GENERATOR, load_generator_source

    registry = _registry(registry)
    device = torch.device(device)
    text = str(spec)
    if text in registry.generators:
        generator, _ = load_generator_source(text, registry=registry, device=device)
        return EvalTarget(spec=text, kind="name", label=text, generator=generator.to(device).eval(),
                          generator_name=text)
    path = Path(text)
    run_dir = path if path.is_dir() else (_enclosing_run(path) if path.is_file() else None)
    recipe = None
    notes: list[str] = []
    if run_dir is not None:
        recipe = _load_run_recipe(run_dir, registry, notes)
    if path.is_dir():
        final = path / RUN_GENERATOR
        unfinished = path / RUN_CHECKPOINT
        if final.is_file():
            file, step = final, recipe.optim.steps
        elif unfinished.is_file():
            file, step = unfinished, None
        else:
            from zsgm.generator.errors import CheckpointError

            raise CheckpointError(f"{path}: a run directory without a generator (expected {RUN_GENERATOR} of a "
                                  f"finished run, or {RUN_CHECKPOINT.as_posix()} of a run in progress)")
        generator, info = load_generator(file, map_location="cpu")
        if file == unfinished:
            step = info.get("next_step")
            notes.append(f"the run has not finished: evaluating {RUN_CHECKPOINT.as_posix()} (after {step} of "
                         f"{recipe.optim.steps} steps)")
        kind, label = "run", path.resolve().name
    else:
        generator, info = load_generator_source(text, registry=registry, device="cpu")
        file, kind, label = path, "file", path.name
        match = SNAPSHOT_PATTERN.match(path.name)
        step = int(match.group(1)) if match else info.get("next_step")
        if recipe is not None and path.name == RUN_GENERATOR:
            step = recipe.optim.steps
    target = EvalTarget(spec=text, kind=kind, label=label, generator=generator.to(device).eval(), path=file,
                        step=step, recipe=recipe, run_dir=run_dir, notes=notes)
    if recipe is not None:
        target.source_spec = recipe.generator.checkpoint
        target.source = _load_source(recipe, run_dir, registry, device)
        if recipe.generator.checkpoint in registry.generators:
            target.generator_name = recipe.generator.checkpoint
    return target


# ------------------------------------------------------------------------------------------------ metrics


@attrs.define(frozen=True)
class Selected:
    """A metric to run; ``explicit``: asked for by name or family (then refusals are errors), ``asked``: the
    name that selected it (a metric's or a family's)."""

    spec: Any
    explicit: bool
    asked: Optional[str] = None


def select_metrics(registry, requested: Optional[list[str]]) -> list[Selected]:
    """The metrics ``requested`` names (metric or family names, in order, without repeats), or the defaults (by
    family, then name).

    Raises:
        RegistryError: a name that is neither a metric nor a family (the installed ones listed).
    """
    from zsgm.registry import RegistryError, unknown_name_message

    specs = sorted((registry.metrics.get(name) for name in registry.metrics.names()), key=lambda s: (s.family, s.name))
    if requested is None:
        return [Selected(s, False) for s in specs if s.default]
    families = sorted({s.family for s in specs if s.family})
    chosen: list[Selected] = []
    for name in requested:
        if name in registry.metrics:
            matched = [registry.metrics.get(name)]
        elif name in families:
            matched = [s for s in specs if s.family == name]
        else:
            raise RegistryError(unknown_name_message("metric or metric family", name,
                                                     sorted(set(registry.metrics.names()) | set(families))))
        chosen += [Selected(s, True, name) for s in matched if all(c.spec.name != s.name for c in chosen)]
    return chosen


def _needs_judge(spec) -> bool:
    return spec.family in JUDGE_FAMILIES


_JUDGE: dict[str, Any] = {}  # the last judge CLIP loaded, with what it was loaded from


def load_judge(target: EvalTarget, clip: Optional[dict], *, registry, device) -> tuple[Any, Optional[dict]]:
    """``(judge CLIP or None, its record)``: ``clip`` if given, else the run's first guide CLIP.

    Raises:
        ClipLoadError: the judge does not load (the message says which judge and where it was named).
    """
    from zsgm.clip import ClipLoadError
    from zsgm.recipe import ClipModelConfig
    from zsgm.run import load_clip_asset

    recipe = target.recipe
    guides = list(recipe.clip.models) if recipe is not None else []
    if clip is None:
        if not guides:
            return None, None
        spec = guides[0]
    else:
        spec = ClipModelConfig(name=clip["name"], pretrained=clip.get("pretrained"))
    preprocess = recipe.clip.preprocess if recipe is not None else "nada"
    key = (spec.name, spec.pretrained, preprocess, str(torch.device(device)))
    try:
        if _JUDGE.get("key") != key or _JUDGE.get("registry") is not registry:
            _JUDGE.clear()  # one judge at a time: the targets of one `zsgm eval` share it
            _JUDGE.update(key=key, registry=registry,
                          model=load_clip_asset(spec, registry, torch.device(device), preprocess=preprocess))
        model = _JUDGE["model"]
    except ClipLoadError as exc:
        where = "--clip" if clip is not None else "the run's guide, clip.models[0]"
        raise ClipLoadError(f"the judge CLIP {spec.name!r} ({where}): {exc}") from None
    is_guide = any(g.name == spec.name and g.pretrained == spec.pretrained for g in guides)
    return model, {"name": spec.name, "pretrained": spec.pretrained, "is_guide": is_guide}


def _texts(target: EvalTarget, options: EvalOptions) -> tuple[Optional[str], Optional[str], list[Path]]:
    recipe = target.recipe
    source_text = recipe.source if recipe is not None else None
    target_text = options.target_text or (recipe.target if recipe is not None else None)
    images = [Path(p) for p in recipe.target_images] if recipe is not None else []
    return source_text, target_text, images


def make_context(target: EvalTarget, options: EvalOptions, *, generated: torch.Tensor,
                 source: Optional[torch.Tensor], judge=None, judge_record: Optional[dict] = None) -> EvalContext:
    """The :class:`EvalContext` every metric reads for these samples."""
    source_text, target_text, images = _texts(target, options)
    s = options.settings
    return EvalContext(generated=generated, source=source, source_text=source_text, target_text=target_text,
                       target_images=images, real_dir=options.real_dir, generator_name=target.generator_name,
                       seed=s.seed, truncation=s.truncation, noise_mode=s.noise_mode, weights=dict(options.weights),
                       clip_judge=judge, clip_judge_is_guide=bool(judge_record and judge_record["is_guide"]),
                       device=options.device, options=options.options)


def _probe(target: EvalTarget, options: EvalOptions, judge, judge_record) -> EvalContext:
    """A context of the right shapes without drawing anything (``applies`` before the sampling)."""
    size = int(target.generator.arch.size)
    blank = torch.zeros(1, 3, size, size).expand(options.settings.n, -1, -1, -1)
    return make_context(target, options, generated=blank, source=blank if target.source is not None else None,
                        judge=judge, judge_record=judge_record)


def _refuse(sel: Selected, target: EvalTarget, reason: str) -> MetricRefused:
    which = f"metric {sel.spec.name!r}" if sel.asked in (None, sel.spec.name) else \
        f"{sel.asked!r} (its metric {sel.spec.name!r})"
    return MetricRefused(f"{which} does not apply to {target.spec}: {reason}")


def check_metrics(selected: list[Selected], ctx: EvalContext, target: EvalTarget) \
        -> tuple[list[Selected], dict[str, str]]:
    """``(the metrics that apply, {skipped default: reason})``.

    Raises:
        MetricRefused: an explicitly requested metric does not apply.
    """
    runnable, skipped = [], {}
    for sel in selected:
        reason = sel.spec.applies(ctx) if sel.spec.applies is not None else None
        if reason is None:
            runnable.append(sel)
        elif sel.explicit:
            raise _refuse(sel, target, reason)
        else:
            skipped[sel.spec.name] = reason
    return runnable, skipped


def run_metrics(selected: list[Selected], ctx: EvalContext, target: EvalTarget, *, progress: bool = False) \
        -> tuple[dict[str, dict], dict[str, str]]:
    """``({name: {"family", "values", "record"}}, {skipped default: reason})``; a default metric whose
    computation fails with a :class:`MetricError` is skipped with its message, an explicit one raises it."""
    from tqdm import tqdm

    results, skipped = {}, {}
    for sel in tqdm(selected, desc="metrics", unit="metric", disable=not progress or len(selected) < 2,
                    leave=False, dynamic_ncols=True):
        try:
            result = sel.spec.compute(ctx)
        except MetricError as exc:
            if sel.explicit:
                raise
            skipped[sel.spec.name] = str(exc).removeprefix(f"{sel.spec.name}: ")  # the line names it already
            continue
        if not isinstance(result, MetricResult):
            raise TypeError(f"metric {sel.spec.name!r} returned {type(result).__name__}, not a MetricResult")
        results[sel.spec.name] = {"family": sel.spec.family, "values": {k: float(v) for k, v in result.values.items()},
                                  "record": result.record}
    return results, skipped


def flat_values(results: dict[str, dict]) -> dict[str, float]:
    """Every metric's values in one dict (metric order)."""
    return {k: v for r in results.values() for k, v in r["values"].items()}


def _prepare(target: EvalTarget, options: EvalOptions, registry) \
        -> tuple[list[Selected], dict[str, str], Any, Optional[dict]]:
    """Select the metrics, load the judge if one of them reads it, and refuse / skip those that do not apply."""
    selected = select_metrics(registry, options.metrics)
    skipped: dict[str, str] = {}
    judge = judge_record = None
    if any(_needs_judge(s.spec) for s in selected):
        from zsgm.clip import ClipLoadError

        try:
            judge, judge_record = load_judge(target, options.clip, registry=registry, device=options.device)
        except (ClipLoadError, OSError, ValueError) as exc:
            if any(s.explicit and _needs_judge(s.spec) for s in selected):
                raise
            for s in selected:
                if _needs_judge(s.spec):
                    skipped[s.spec.name] = str(exc) if isinstance(exc, ClipLoadError) else \
                        f"the judge CLIP did not load: {exc}"
            selected = [s for s in selected if not _needs_judge(s.spec)]
    runnable, not_applying = check_metrics(selected, _probe(target, options, judge, judge_record), target)
    if judge_record and judge_record["is_guide"] and any(_needs_judge(s.spec) for s in runnable):
        print(f"zsgm: warning: {target.label}: the CLIP judge {judge_record['name']!r} guided the run, so its scores "
              f"are inflated; judge with another CLIP (--clip NAME[:PRETRAINED])", file=sys.stderr)
    return runnable, {**skipped, **not_applying}, judge, judge_record


def _header(target: EvalTarget, options: EvalOptions, judge_record, mapping: str) -> dict:
    """The record's fields about what was evaluated and how (the reporting record's common part)."""
    from zsgm import __version__

    recipe = target.recipe
    source_text, target_text, _ = _texts(target, options)
    s = options.settings
    return {
        "run": str(target.run_dir) if target.kind == "run" else target.spec,
        "evaluated": target.describe(),
        "source": source_text,
        "target": target_text,
        "techniques": "+".join(t.name for t in recipe.techniques) if recipe is not None else None,
        "steps": recipe.optim.steps if recipe is not None else None,
        "source_generator": target.source_spec,
        "generator_name": target.generator_name,
        "n": s.n, "seed": s.seed, "truncation": s.truncation, "noise_mode": s.noise_mode,
        "sampling": s.record(mapping=mapping),
        "clip_judge": judge_record,
        "real_dir": None if options.real_dir is None else str(options.real_dir),
        "weights": dict(options.weights),
        "device": str(options.device),
        "samples_dir": None if options.samples_dir is None else str(options.samples_dir),
        "zsgm_version": __version__,
    }


def _task(results: dict[str, dict], source_text, target_text) -> Optional[str]:
    for r in results.values():
        if "task" in r["record"]:
            return str(r["record"]["task"])
    if target_text:
        return f"{source_text or '?'} -> {target_text}"
    return None


def evaluate(target: str | EvalTarget, *, options: Optional[EvalOptions] = None, registry=None) -> dict:
    """Evaluate one generator: the record written as ``eval.json`` (see :func:`write_results`).

    The record holds the header (what, how sampled, judge), ``metrics`` (per metric: family, values, reporting
    record), ``skipped`` (default metrics that did not apply, with why), ``notes``, and every value copied to the
    top level (``record["fid"]``), beside ``task``.

    Raises:
        MetricRefused: a requested metric does not apply. MetricError: a requested metric failed (missing weights).
    """
    options = options or EvalOptions()
    registry = _registry(registry)
    if not isinstance(target, EvalTarget):
        target = resolve_target(target, registry=registry, device=options.device)
    runnable, skipped, judge, judge_record = _prepare(target, options, registry)
    results: dict[str, dict] = {}
    mapping = "source" if target.source is not None else "own"
    if runnable or options.samples_dir is not None:
        samples = sample_pair(target.generator, target.source, settings=options.settings, device=options.device,
                              progress=options.progress)
        if options.samples_dir is not None:
            save_samples(samples, options.samples_dir)
        ctx = make_context(target, options, generated=samples.generated, source=samples.source, judge=judge,
                           judge_record=judge_record)
        runnable, late = check_metrics(runnable, ctx, target)
        results, failed = run_metrics(runnable, ctx, target, progress=options.progress)
        skipped.update(late)
        skipped.update(failed)
    record = _header(target, options, judge_record, mapping)
    record["task"] = _task(results, record["source"], record["target"])
    record.update({k: v for k, v in flat_values(results).items() if k not in RESERVED})
    record.update(metrics=results, skipped=skipped, notes=list(target.notes))
    if not results:
        record["notes"].append("no metric ran" + (" (none applies)" if skipped else " (none selected)"))
    return record


# ------------------------------------------------------------------------------------------------ steps


def step_generators(target: EvalTarget) -> list[tuple[int, str, Optional[Path]]]:
    """``(step, what, file)`` of a run: step 0 (the source), each snapshot, and the final generator (or
    ``checkpoints/last.pt`` of an unfinished run); one entry per step (the final generator wins)."""
    from zsgm.generator.sources import RUN_GENERATOR
    from zsgm.run_dir import RunPaths

    paths = {}
    snapshots = RunPaths(target.run_dir).snapshots
    if snapshots.is_dir():
        for p in sorted(snapshots.iterdir()):
            match = SNAPSHOT_PATTERN.match(p.name)
            if match:
                paths[int(match.group(1))] = ("snapshot", p)
    if target.step is not None:
        paths[int(target.step)] = ("final" if target.path.name == RUN_GENERATOR else "checkpoint", target.path)
    rows = [(0, "source", None)]
    rows += [(step, what, p) for step, (what, p) in sorted(paths.items()) if step > 0]
    return rows


def evaluate_steps(target: str | EvalTarget, *, options: Optional[EvalOptions] = None, registry=None) -> dict:
    """Evaluate a run at step 0 (its source generator), at each ``snapshots/step-*.safetensors``
    (``run.snapshot_every``) and at its final generator, on the same latents and noise: the record written as
    ``eval-steps.json`` (``rows``: one per step with ``step``, ``generator``, ``values``, ``metrics``).

    Raises:
        ValueError: ``target`` is not a run directory. MetricRefused / MetricError: as :func:`evaluate`.
    """
    from tqdm import tqdm

    from zsgm.generator import load_generator

    options = options or EvalOptions()
    registry = _registry(registry)
    if not isinstance(target, EvalTarget):
        target = resolve_target(target, registry=registry, device=options.device)
    if target.kind != "run":
        raise ValueError(f"{target.spec}: --at-checkpoints needs a run directory (its snapshots/ and recipe), "
                         f"not a {target.kind}")
    runnable, skipped, judge, judge_record = _prepare(target, options, registry)
    steps = step_generators(target)
    notes = list(target.notes)
    if len(steps) <= 2:
        notes.append("no snapshots: steps 0 and final only (set run.snapshot_every in the recipe)")
    rows = []
    source_images = None
    if runnable:
        (source_images,) = draw_samples([target.source], mapper=target.source, settings=options.settings,
                                        device=options.device, progress=options.progress, desc="source samples")
    for step, what, path in tqdm(steps, desc="steps", unit="step", disable=not options.progress,
                                 dynamic_ncols=True):
        row = {"step": step, "generator": what if path is None else str(path), "values": {}, "metrics": {}}
        if runnable:
            if path is None:
                images = source_images
            else:
                generator = target.generator if path == target.path else \
                    load_generator(path, map_location="cpu")[0].to(options.device).eval()
                (images,) = draw_samples([generator], mapper=target.source, settings=options.settings,
                                         device=options.device, progress=options.progress, desc=f"step {step}")
            ctx = make_context(target, options, generated=images, source=source_images, judge=judge,
                               judge_record=judge_record)
            ok, late = check_metrics(runnable, ctx, target)
            results, failed = run_metrics(ok, ctx, target)
            row.update(values=flat_values(results), metrics=results, skipped={**late, **failed})
        rows.append(row)
    record = _header(target, options, judge_record, "source")
    record.update(rows=rows, skipped=skipped, notes=notes)
    return record


# ------------------------------------------------------------------------------------------------ writing


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def _label(record: dict) -> str:
    return Path(str(record["run"])).name


def _grouped(skipped: dict[str, str]) -> list[tuple[str, str]]:
    """``[("a, b", reason), ...]``: the skipped metrics that share a reason, named together."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    return [(", ".join(names), reason) for reason, names in by_reason.items()]


def format_markdown(records: list[dict]) -> str:
    """A Markdown table (one row per record: run, task, techniques, every value), then how the samples were
    drawn, the skipped metrics and the notes."""
    columns: list[str] = []
    for r in records:
        columns += [k for k in flat_values(r["metrics"]) if k not in columns]
    head = "| run | task | techniques | " + " | ".join(columns) + " |" if columns else "| run | task | techniques |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for r in records:
        values = flat_values(r["metrics"])
        cells = [_label(r), _cell(r.get("task")), _cell(r.get("techniques"))] + [_cell(values.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in records:
        judge = r.get("clip_judge")
        judged = f"; CLIP judge {judge['name']}{' (a guide of the run)' if judge['is_guide'] else ''}" if judge else ""
        lines.append(f"- {_label(r)}: {r['n']} samples, seed {r['seed']}, truncation {r['truncation']}, "
                     f"noise {r['noise_mode']}, {r['sampling']['mapping']} mapping{judged}")
        for names, reason in _grouped(r["skipped"]):
            lines.append(f"  - skipped {names}: {reason}")
        for note in r["notes"]:
            lines.append(f"  - note: {note}")
    return "\n".join(lines) + "\n"


def format_steps_markdown(record: dict) -> str:
    """A Markdown table of an :func:`evaluate_steps` record: one row per step."""
    columns: list[str] = []
    for row in record["rows"]:
        columns += [k for k in row["values"] if k not in columns]
    lines = ["| step | generator | " + " | ".join(columns) + " |", "|" + "---|" * (2 + len(columns))]
    for row in record["rows"]:
        name = row["generator"] if row["generator"] == "source" else Path(row["generator"]).name
        lines.append("| " + " | ".join([str(row["step"]), name] + [_cell(row["values"].get(c)) for c in columns])
                     + " |")
    for names, reason in _grouped(record["skipped"]):
        lines.append(f"- skipped {names}: {reason}")
    for note in record["notes"]:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


def write_results(record: dict | list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """``OUT/eval.json`` (the record, or ``{"results": [...]}`` for several) and ``OUT/eval.md``."""
    from zsgm.io_utils import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = record if isinstance(record, list) else [record]
    data = records[0] if len(records) == 1 else {"results": records}
    atomic_write_text(out_dir / EVAL_JSON, json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / EVAL_MD, format_markdown(records))
    return out_dir / EVAL_JSON, out_dir / EVAL_MD


def plot_steps(record: dict, path: str | Path) -> Path:
    """A PNG of every value over the steps, one panel per value (:func:`zsgm.plots.plot_panels`, no smoothing)."""
    from zsgm.plots import plot_panels

    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in record["rows"]:
        for key, value in row["values"].items():
            xs, ys = series.setdefault(key, ([], []))
            xs.append(row["step"])
            ys.append(value)
    if not series:
        series["no metric values"] = ([], [])
    title = (f"{_label(record)}: metrics vs step (n={record['n']}, seed {record['seed']}, "
             f"truncation {record['truncation']})")
    return plot_panels(series, path, title=title, smooth=False)


def write_steps(record: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """``OUT/eval-steps.json`` and ``OUT/eval-steps.png``."""
    from zsgm.io_utils import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / STEPS_JSON, json.dumps(record, indent=2, default=str) + "\n")
    return out_dir / STEPS_JSON, plot_steps(record, out_dir / STEPS_PNG)


__all__ = ["EVAL_JSON", "EVAL_MD", "EvalOptions", "EvalTarget", "JUDGE_FAMILIES", "MetricRefused", "STEPS_JSON",
           "STEPS_PNG", "Selected", "check_metrics", "evaluate", "evaluate_steps", "flat_values", "format_markdown",
           "format_steps_markdown", "load_judge", "make_context", "plot_steps", "resolve_target", "run_metrics",
           "select_metrics", "step_generators", "write_results", "write_steps"]
