"""The optimisation loop, readable top to bottom.

    lock the run directory               one process per run (zsgm.run_dir)
    resume: read the checkpoint, check the recipe against the run's; a finished run returns at once
    run = build_run(recipe)              generators, CLIP, technique instances (restored on resume)
    setup hooks, optimisers              the generator's and the techniques' own (resume: restore their states)
    for step in steps:
        before_step hooks                (layer freezing)
        batch = StepBatch(run, step)     lazy: source forward only if someone reads it
        terms = loss hooks               named, unweighted; weighted here by the recipe
        check finite; unless a skip_update hook says so: backward, after_backward hooks, optimiser step, EMA
        after_step hooks, log, grids, snapshots, checkpoint (only of finite weights; the one before is kept)
    final generator + grid; teardown hooks
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import attrs
import torch
from tqdm.auto import tqdm

from zsgm.checkpoint import (
    ADAPT_ADVICE,
    KeptCheckpoints,
    NonFiniteError,
    NonFiniteLossError,
    NonFiniteWeightsError,
    apply_run_checkpoint,
    nonfinite_in_checkpoint,
    nonfinite_loss_error,
    nonfinite_weights,
    read_run_checkpoint,
    refuse_nonfinite_checkpoint,
    restore_optimizer,
    restore_technique_optimizers,
)
from zsgm.io_utils import WriteError, append_jsonl, atomic_write_text, image_grid, save_png
from zsgm.recipe import Recipe, dumps_recipe
from zsgm.run import Run, RunError, build_run
from zsgm.run_dir import (
    RunDirLock,
    RunPaths,
    check_resume_recipe,
    last_logged,
    prepare_run_dir,
    refuse_existing_run,
    reset_losses_log,
    set_aside_final,
)
from zsgm.step import StepBatch, random_noise

__all__ = ["NonFiniteError", "NonFiniteLossError", "NonFiniteWeightsError", "RunResult", "adapt"]


@attrs.define
class RunResult:
    """What :func:`adapt` returns.

    Attributes:
        out_dir: the run directory; ``paths`` says where each of its files is.
        steps_done: steps the run has done in all (this call and earlier ones).
        steps_total: ``optim.steps`` of the recipe.
        last_losses: the last step's logged losses (``{}`` when this call ran no step and none is logged).
        generator_path: the final generator, once the run has done all its steps (else None).
        seconds: wall time of this call.
        already_finished: a resume found the run finished: nothing was run or written.
        resume_changes: ``"field: old -> new"`` for each field a resume changed (see :mod:`zsgm.run_dir`).
    """

    out_dir: Path
    steps_done: int
    last_losses: dict
    generator_path: Path | None
    seconds: float
    steps_total: int = 0
    already_finished: bool = False
    resume_changes: list[str] = attrs.Factory(list)

    @property
    def paths(self) -> RunPaths:
        return RunPaths(Path(self.out_dir))


def make_optimizer(run: Run) -> torch.optim.Adam:
    """Adam with the rosinality convention: lr * r, betas (beta1 ** r, beta2 ** r), r = reg_ratio."""
    o = run.recipe.optim
    r = o.reg_ratio
    groups = [{"params": run.synthesis_parameters()}]
    for extra in run.pm.hook.zsgm_trainable(run=run):
        groups.extend(extra or [])
    return torch.optim.Adam(groups, lr=o.lr * r, betas=(o.beta1 ** r, o.beta2 ** r))


@torch.no_grad()
def update_ema(run: Run) -> None:
    """``ema = decay * ema + (1 - decay) * target`` over synthesis parameters; buffers copied."""
    decay = run.recipe.optim.ema_decay
    if run.g_ema is None or decay is None:
        return
    target = dict(run.g_target.named_parameters())
    for name, p in run.g_ema.named_parameters():
        p.lerp_(target[name], 1.0 - decay)
    target_buffers = dict(run.g_target.named_buffers())
    for name, b in run.g_ema.named_buffers():
        b.copy_(target_buffers[name])


def set_default_trainable(run: Run) -> None:
    """Every synthesis parameter trainable (techniques may freeze some in ``zsgm_before_step``)."""
    for p in run.synthesis_parameters():
        p.requires_grad_(True)


def compute_losses(run: Run, step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Call the loss hooks of the techniques active at ``step`` and weight their terms.

    Returns:
        ``(total, log)`` where ``log`` maps ``"<technique>/<term>"`` to unweighted values and ``"total"``.
    """
    inactive = [t for t, use in zip(run.techniques, run.uses) if step % use.every != 0]
    caller = run.pm.subset_hook_caller("zsgm_loss", remove_plugins=inactive) if inactive else run.pm.hook.zsgm_loss
    total = None
    log: dict[str, float] = {}
    for terms in caller(run=run, step=step):
        for term in terms or []:
            use = term.owner.use
            key = f"{use.name}/{term.name}"
            value = term.value
            if value.dim() != 0:
                raise RunError(f"technique {use.name!r} returned a non-scalar term {term.name!r} "
                               f"of shape {tuple(value.shape)}")
            log[key] = float(value.detach())
            weighted = use.weight * value
            total = weighted if total is None else total + weighted
    if total is None:
        raise RunError("no technique produced a loss term at step "
                       f"{step}; add one (e.g. [[techniques]] use = \"directional\")")
    log["total"] = float(total.detach())
    return total, log


def check_loss_finite(run: Run, step: int, log: dict[str, float], kept: KeptCheckpoints) -> None:
    """Stop with a diagnostic naming the last good checkpoint when a loss of ``step`` is NaN or inf."""
    if not math.isfinite(log["total"]):  # the weights are looked at only on this error path: no per-step sync
        raise nonfinite_loss_error(step, log, kept, weights=nonfinite_weights(run), advice=ADAPT_ADVICE)


def optimisation_step(run: Run, optimizer: torch.optim.Optimizer, step: int, kept: KeptCheckpoints) -> dict:
    """One step: hooks, losses, backward, update, EMA (the update unless a technique skips it). Returns the log."""
    run.step = step
    set_default_trainable(run)
    run.pm.hook.zsgm_before_step(run=run, step=step)
    run.batch = StepBatch(run, step)
    total, log = compute_losses(run, step)
    check_loss_finite(run, step, log, kept)
    if not any(run.pm.hook.zsgm_skip_update(run=run, step=step)):
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        run.pm.hook.zsgm_after_backward(run=run, step=step)
        optimizer.step()
        update_ema(run)
    run.pm.hook.zsgm_after_step(run=run, step=step, log=log)
    run.batch = None
    return log


def fixed_sample_inputs(run: Run):
    """Latents and noise for the image grids: fixed for the whole run, truncated as the recipe says."""
    n = run.recipe.run.n_samples
    rng = run.rng(0, "grid")
    g = run.g_source
    z = torch.randn((n, g.arch.style_dim), generator=rng).to(run.device)
    noise = random_noise(g, n, rng, run.device)
    with torch.no_grad():
        w = g.mapping(z)
        psi = run.recipe.generator.sample_truncation
        if psi < 1:
            mean = g.latent_avg if g.latent_avg is not None else g.mean_latent(4096, generator=run.rng(0, "mean"))
            w = mean.reshape(1, -1).to(w) + psi * (w - mean.reshape(1, -1).to(w))
        ws = w[:, None, :].repeat(1, g.n_latent, 1)
    return ws, noise


@torch.no_grad()
def write_grid(run: Run, step: int, inputs) -> Path:
    """``samples/step-XXXXXX.png``: top row source, bottom row adapted (EMA if kept), same latents."""
    ws, noise = inputs
    src = run.g_source.synthesis(ws, noise=noise)
    tgt = run.sample_generator().synthesis(ws, noise=noise)
    path = run.out_dir / "samples" / f"step-{step:06d}.png"
    save_png(image_grid([src, tgt]), path)
    return path


def write_final_generator(run: Run, paths: RunPaths) -> Path:
    """``generator.safetensors`` from the sampling generator (EMA if kept); a failed write (full disk) is a
    :class:`WriteError` naming the file (the serialisation happens in memory, see ``save_generator``)."""
    from zsgm.generator import save_generator

    save_generator(run.sample_generator(), paths.generator)
    return paths.generator


def write_snapshot(run: Run, paths: RunPaths, step: int) -> Path:
    """``snapshots/step-XXXXXX.safetensors``: the sampling generator after ``step`` steps (``run.snapshot_every``),
    for metric-vs-step curves (``zsgm eval --at-checkpoints``). Not written for non-finite weights."""
    from zsgm.generator import save_generator

    path = paths.snapshot(step)
    if not nonfinite_weights(run):
        save_generator(run.sample_generator(), path)
    return path


def _write_run_record(run: Run, *, resumed_from: int | None) -> None:
    atomic_write_text(run.out_dir / "recipe.toml", dumps_recipe(run.recipe))
    record = run.state_fingerprint()
    record["resumed_from"] = resumed_from
    atomic_write_text(run.out_dir / "run.json", json.dumps(record, indent=2) + "\n")


def open_resume(paths: RunPaths, recipe: Recipe) -> tuple[dict, list[str]]:
    """Read the run's checkpoint and check ``recipe`` against the run's saved one; loads no model.

    Returns:
        ``(checkpoint state on the CPU, allowed changes)``.
    """
    state = read_run_checkpoint(paths.checkpoint)
    changes = check_resume_recipe(paths, recipe, steps_done=state["next_step"])
    refuse_nonfinite_checkpoint(paths.checkpoint, nonfinite_in_checkpoint(state))
    return state, changes


def adapt(recipe: Recipe, *, out_dir: str | Path, resume: bool = False, registry=None,
          stop_after: int | None = None) -> RunResult:
    """Run an adaptation.

    Args:
        recipe: a validated recipe.
        out_dir: run directory (created). With ``resume=True`` it must hold ``checkpoints/last.pt``.
        resume: continue from the last checkpoint. The recipe must equal the run's saved ``recipe.toml``
            except ``optim.steps`` (not below the steps done), ``run.device``, ``run.progress``,
            ``run.sample_every``, ``run.checkpoint_every`` and ``clip.models[i].trust_torchscript``
            (:mod:`zsgm.run_dir`). A run that has done all its steps and written its generator is not
            touched: the result says ``already_finished``.
        registry: plugin registry (default: installed plugins).
        stop_after: stop after this many steps of this call (simulates an interruption; tests).

    Returns:
        A :class:`RunResult`.

    Raises:
        RunError: ``out_dir`` is a file, holds a run (without ``resume``), is in use by another process
            (``RunDirBusyError``), or the resume's recipe differs (``ResumeMismatchError``); a loss or the
            weights became non-finite (``NonFiniteError``, naming the last good checkpoint).
        WriteError: a file could not be written (the message names it and the intact checkpoint).
        CheckpointMismatchError: the checkpoint is unreadable or does not fit.
    """
    started = time.time()
    paths = prepare_run_dir(out_dir, create=not resume)
    with RunDirLock(paths.out_dir):
        state, changes = None, []
        if resume:
            state, changes = open_resume(paths, recipe)
            if state["next_step"] >= recipe.optim.steps and paths.generator.exists():
                return RunResult(out_dir=paths.out_dir, steps_done=state["next_step"],
                                 last_losses=last_logged(paths.losses),
                                 generator_path=paths.generator, seconds=time.time() - started,
                                 steps_total=recipe.optim.steps, already_finished=True, resume_changes=changes)
            set_aside_final_generator(paths, steps_done=state["next_step"])
        else:
            refuse_existing_run(paths)
        result = _train(recipe, paths, state=state, registry=registry, stop_after=stop_after)
    result.seconds = time.time() - started
    result.resume_changes = changes
    return result


def set_aside_final_generator(paths: RunPaths, *, steps_done: int) -> Path | None:
    """A resume that extends a finished run renames its ``generator.safetensors`` to
    ``generator-step{steps_done:06d}.safetensors``: kept, and no longer mistaken for the run's current weights
    (``zsgm sample RUN`` then reads ``checkpoints/last.pt`` until the new final generator is written)."""
    return set_aside_final(paths.generator, steps_done=steps_done)


def _train(recipe: Recipe, paths: RunPaths, *, state: dict | None, registry, stop_after: int | None) -> RunResult:
    """Build the run, restore ``state`` if resuming, run the steps, write the final outputs."""
    run = build_run(recipe, out_dir=paths.out_dir, registry=registry)
    start = 0 if state is None else state["next_step"]
    if state is not None:
        apply_run_checkpoint(run, state, path=paths.checkpoint)
    _write_run_record(run, resumed_from=start if state is not None else None)
    reset_losses_log(paths.losses, resumed_from=start if state is not None else None)
    kept = KeptCheckpoints(paths.out_dir, last_step=start if state is not None else None)

    error: BaseException | None = None
    steps = recipe.optim.steps
    end = steps if stop_after is None else min(steps, start + stop_after)
    every_grid, every_ckpt = recipe.run.sample_every, recipe.run.checkpoint_every
    every_snapshot = recipe.run.snapshot_every
    log: dict[str, float] = {}
    generator_path = None
    grid_inputs = fixed_sample_inputs(run)
    try:
        run.pm.hook.zsgm_setup(run=run)
        optimizer = make_optimizer(run)
        run.collect_technique_optimizers()
        if state is not None:
            restore_optimizer(optimizer, state, path=paths.checkpoint)
            restore_technique_optimizers(run, state, path=paths.checkpoint)
        if start == 0:
            write_grid(run, 0, grid_inputs)
        bar = tqdm(range(start, end), initial=start, total=steps, desc="adapt", unit="step",
                   disable=not recipe.run.progress, dynamic_ncols=True)
        for step in bar:
            log = optimisation_step(run, optimizer, step, kept)
            append_jsonl(paths.losses, {"step": step, **log})  # a failed write: WriteError naming the file
            bar.set_postfix(loss=f"{log['total']:.4f}")
            done = step + 1
            if every_grid and done % every_grid == 0 and done < steps:
                write_grid(run, done, grid_inputs)
            if every_snapshot and done % every_snapshot == 0:
                write_snapshot(run, paths, done)
            if (every_ckpt and done % every_ckpt == 0) or done == end:
                kept.save(run, optimizer, next_step=done)
        bar.close()
        if end == steps:  # the last checkpoint (or the resumed one) holds these weights: they are finite
            write_grid(run, steps, grid_inputs)
            generator_path = write_final_generator(run, paths)
    except WriteError as exc:  # disk full or the like: the newest checkpoint is still there, say which
        error = exc
        raise WriteError(exc.errno, f"{exc.strerror}; {kept.describe_intact()}") from None
    except BaseException as exc:
        error = exc
        raise
    finally:
        run.pm.hook.zsgm_teardown(run=run, error=error)
    return RunResult(out_dir=paths.out_dir, steps_done=end, last_losses=log or last_logged(paths.losses),
                     generator_path=generator_path, seconds=0.0, steps_total=steps)
