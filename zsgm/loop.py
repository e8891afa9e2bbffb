"""The optimisation loop, readable top to bottom.

    run = build_run(recipe)              generators, CLIP, technique instances
    setup hooks, optimiser               (resume: restore states first)
    for step in steps:
        before_step hooks                (layer freezing)
        batch = StepBatch(run, step)     lazy: source forward only if someone reads it
        terms = loss hooks               named, unweighted; weighted here by the recipe
        check finite, backward, after_backward hooks, optimiser step, EMA
        after_step hooks, log, grids, checkpoint
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

from zsgm.checkpoint import checkpoint_path, load_run_checkpoint, restore_optimizer, save_run_checkpoint
from zsgm.io_utils import append_jsonl, atomic_write_text, image_grid, save_png, truncate_jsonl
from zsgm.recipe import Recipe, dumps_recipe
from zsgm.run import Run, RunError, build_run
from zsgm.step import StepBatch, random_noise


class NonFiniteLossError(RunError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@attrs.define
class RunResult:
    """What :func:`adapt` returns."""

    out_dir: Path
    steps_done: int
    last_losses: dict
    generator_path: Path | None
    seconds: float


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


def _write_run_record(run: Run, *, resumed_from: int | None) -> None:
    atomic_write_text(run.out_dir / "recipe.toml", dumps_recipe(run.recipe))
    record = run.state_fingerprint()
    record["resumed_from"] = resumed_from
    atomic_write_text(run.out_dir / "run.json", json.dumps(record, indent=2) + "\n")


def adapt(recipe: Recipe, *, out_dir: str | Path, resume: bool = False, registry=None,
          stop_after: int | None = None) -> RunResult:
    """Run an adaptation.

    Args:
        recipe: a validated recipe.
        out_dir: run directory (created). With ``resume=True`` it must hold ``checkpoints/last.pt``.
        resume: continue from the last checkpoint (the recipe must match the saved one).
        registry: plugin registry (default: installed plugins).
        stop_after: stop after this many steps of this call (simulates an interruption; tests).

    Returns:
        A :class:`RunResult`.
    """
    started = time.time()
    out_dir = Path(out_dir)
    if not resume and checkpoint_path(out_dir).exists():
        raise RunError(f"{out_dir} already holds a run (checkpoints/last.pt); resume it with --resume or "
                       f"choose another output directory")
    run = build_run(recipe, out_dir=out_dir, registry=registry)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    state = None
    if resume:
        state = load_run_checkpoint(run)
        start = int(state["next_step"])
    _write_run_record(run, resumed_from=start if resume else None)
    log_path = out_dir / "losses.jsonl"
    if resume:
        truncate_jsonl(log_path, keep=lambda rec: rec.get("step", -1) < start)
    elif log_path.exists():
        log_path.unlink()

    error: BaseException | None = None
    steps = recipe.optim.steps
    end = steps if stop_after is None else min(steps, start + stop_after)
    log: dict[str, float] = {}
    generator_path = None
    grid_inputs = fixed_sample_inputs(run)
    try:
        run.pm.hook.zsgm_setup(run=run)
        optimizer = make_optimizer(run)
        if state is not None:
            restore_optimizer(optimizer, state, path=checkpoint_path(out_dir))
        if start == 0:
            write_grid(run, 0, grid_inputs)
        bar = tqdm(range(start, end), initial=start, total=steps, desc="adapt", unit="step",
                   disable=not recipe.run.progress, dynamic_ncols=True)
        for step in bar:
            run.step = step
            set_default_trainable(run)
            run.pm.hook.zsgm_before_step(run=run, step=step)
            run.batch = StepBatch(run, step)
            total, log = compute_losses(run, step)
            if not math.isfinite(log["total"]):
                bad = {k: v for k, v in log.items() if not math.isfinite(v)}
                kept = checkpoint_path(out_dir)
                where = f"the last good checkpoint is {kept}" if kept.exists() else "no checkpoint was written yet"
                raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}; {where} "
                                         f"(try a lower optim.lr or check the technique weights)")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            run.pm.hook.zsgm_after_backward(run=run, step=step)
            optimizer.step()
            update_ema(run)
            run.pm.hook.zsgm_after_step(run=run, step=step)
            run.batch = None
            append_jsonl(log_path, {"step": step, **log})
            bar.set_postfix(loss=f"{log['total']:.4f}")
            done = step + 1
            every_grid, every_ckpt = recipe.run.sample_every, recipe.run.checkpoint_every
            if every_grid and done % every_grid == 0 and done < steps:
                write_grid(run, done, grid_inputs)
            if (every_ckpt and done % every_ckpt == 0) or done == end:
                save_run_checkpoint(run, optimizer, next_step=done)
        bar.close()
        if end == steps:
            write_grid(run, steps, grid_inputs)
            from zsgm.generator import save_generator

            generator_path = out_dir / "generator.safetensors"
            save_generator(run.sample_generator(), generator_path)
    except BaseException as exc:
        error = exc
        raise
    finally:
        run.pm.hook.zsgm_teardown(run=run, error=error)
    return RunResult(out_dir=out_dir, steps_done=end, last_losses=log, generator_path=generator_path,
                     seconds=time.time() - started)
