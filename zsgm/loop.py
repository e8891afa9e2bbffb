"""The optimisation loop, readable top to bottom.

    processes: one, or N under torchrun (zsgm.distributed): rank 0 alone reads and writes the run directory
    lock the run directory               one process per run (zsgm.run_dir)
    resume: read the checkpoint, check the recipe against the run's; a finished run returns at once
    run = build_run(recipe)              generators, CLIP (on clip.device), technique instances
    setup hooks, optimisers              the generator's and the techniques' own (resume: restore the checkpoint
                                         first); under torchrun rank 0 sets up and the other ranks get its state
    for step in steps:
        before_step hooks                (layer freezing)
        batch = StepBatch(run, step)     lazy: source forward only if someone reads it; this rank's rows
        terms = loss hooks               named, unweighted; weighted here by the recipe; values stay on the device
        fetch (every run.log_every steps, at checkpoints, at the last step): the values since the last fetch,
                                         averaged over the ranks, checked finite, one losses.jsonl line per step
        unless a skip_update hook says so: backward, gradients averaged over the ranks, after_backward hooks,
                                         optimiser step, EMA
        after_step hooks (log: the fetched values, else None), grids, snapshots,
        checkpoint (only of finite weights; the one before is kept)
    final generator + grid; teardown hooks
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
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
    run_checkpoint_state,
    state_on_cpu,
)
from zsgm.distributed import Distributed, session
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


def compute_terms(run: Run, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Call the loss hooks of the techniques active at ``step`` and weight their terms; nothing is fetched.

    Returns:
        ``(total, values)`` where ``values`` maps ``"<technique>/<term>"`` to the unweighted values and
        ``"total"`` to the weighted sum, as detached 0-d tensors on the run's device.
    """
    inactive = [t for t, use in zip(run.techniques, run.uses) if step % use.every != 0]
    caller = run.pm.subset_hook_caller("zsgm_loss", remove_plugins=inactive) if inactive else run.pm.hook.zsgm_loss
    total = None
    values: dict[str, torch.Tensor] = {}
    for terms in caller(run=run, step=step):
        for term in terms or []:
            use = term.owner.use
            value = term.value
            if value.dim() != 0:
                raise RunError(f"technique {use.name!r} returned a non-scalar term {term.name!r} "
                               f"of shape {tuple(value.shape)}")
            values[f"{use.name}/{term.name}"] = value.detach()
            weighted = use.weight * value
            total = weighted if total is None else total + weighted
    if total is None:
        raise RunError("no technique produced a loss term at step "
                       f"{step}; add one (e.g. [[techniques]] use = \"directional\")")
    values["total"] = total.detach()
    return total, values


def stack_values(run: Run, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[len(values)]`` float32 on the run's device: one tensor to fetch (or all-reduce) at once."""
    return torch.stack([v.float().to(run.device) for v in values.values()])


def compute_losses(run: Run, step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`compute_terms` with the values fetched as floats (one host synchronisation)."""
    total, values = compute_terms(run, step)
    return total, dict(zip(values, stack_values(run, values).tolist()))


class LossLog:
    """The steps' loss values: kept on the device, fetched together (one host synchronisation), averaged over
    the ranks, checked finite, and written to ``losses.jsonl`` one line per step (by rank 0).

    Args:
        run: the run (its device and ranks).
        path: ``losses.jsonl``.
        kept: the run's checkpoints, named by the error for a non-finite value.
    """

    def __init__(self, run: Run, path: Path, kept: KeptCheckpoints):
        self.run, self.path, self.kept = run, path, kept
        self.pending: list[tuple[int, list[str], torch.Tensor]] = []  # (step, keys, values [len(keys)])

    def add(self, step: int, values: dict[str, torch.Tensor]) -> None:
        self.pending.append((step, list(values), stack_values(self.run, values)))

    def fetch(self, step: int) -> dict[str, float]:
        """Fetch every pending step's values (at ``step``) and write them; returns the last step's.

        Raises:
            NonFiniteLossError: a value is NaN or inf: the first such step is named (with ``step``, where it was
                found) and the steps before it are written.
        """
        flat = self.run.dist.mean(torch.cat([values for _, _, values in self.pending]))
        numbers = flat.tolist()  # the one host synchronisation
        records, offset = [], 0
        for at, keys, _ in self.pending:
            records.append((at, dict(zip(keys, numbers[offset:offset + len(keys)]))))
            offset += len(keys)
        self.pending = []
        for i, (at, log) in enumerate(records):
            if not math.isfinite(log["total"]):  # the weights are looked at only on this error path
                self._write(records[:i])
                raise nonfinite_loss_error(at, log, self.kept, weights=nonfinite_weights(self.run),
                                           advice=ADAPT_ADVICE, found_at=step,
                                           log_every=self.run.recipe.run.log_every)
        self._write(records)
        return records[-1][1]

    def _write(self, records: list[tuple[int, dict]]) -> None:
        if self.run.dist.is_main:
            for at, log in records:
                append_jsonl(self.path, {"step": at, **log})  # a failed write: WriteError naming the file


def fetch_due(recipe: Recipe, done: int, end: int) -> bool:
    """Whether the step after which ``done`` steps are done fetches its values: every ``run.log_every`` steps,
    at every checkpoint and at the last step of this call."""
    every_ckpt = recipe.run.checkpoint_every
    return done % recipe.run.log_every == 0 or done == end or bool(every_ckpt and done % every_ckpt == 0)


def optimisation_step(run: Run, optimizer: torch.optim.Optimizer, step: int, losses: LossLog, *,
                      fetch: bool = True) -> dict[str, float] | None:
    """One step: hooks, losses, backward, update, EMA (the update unless a technique skips it).

    Returns:
        The step's logged values when ``fetch`` (then they and every pending step's are checked finite before
        the update and written), else None (the values stay on the device until the next fetch).
    """
    run.step = step
    set_default_trainable(run)
    run.pm.hook.zsgm_before_step(run=run, step=step)
    run.batch = StepBatch(run, step)
    total, values = compute_terms(run, step)
    losses.add(step, values)
    log = losses.fetch(step) if fetch else None
    if not any(run.pm.hook.zsgm_skip_update(run=run, step=step)):
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        run.dist.average_gradients(p for group in optimizer.param_groups for p in group["params"])
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
def grid_image(run: Run, inputs):
    """The sample grid now (a PIL image): top row source, bottom row adapted (EMA if kept), same latents and
    noise (``inputs`` from :func:`fixed_sample_inputs`)."""
    ws, noise = inputs
    src = run.g_source.synthesis(ws, noise=noise)  # [n, 3, S, S] in [-1, 1]
    tgt = run.sample_generator().synthesis(ws, noise=noise)
    return image_grid([src, tgt])


def write_grid(run: Run, step: int, inputs) -> Path:
    """``samples/step-XXXXXX.png``: :func:`grid_image`."""
    path = run.out_dir / "samples" / f"step-{step:06d}.png"
    save_png(grid_image(run, inputs), path)
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


@attrs.define
class Opening:
    """What rank 0 found when it opened the run directory (sent to the other ranks without ``state``).

    Attributes:
        start: the first step this call runs.
        resumed: whether it continues a checkpoint.
        changes: the resume's allowed recipe changes.
        finished: the run had done all its steps: nothing to do.
        last_losses: the last logged values (for a finished run's result).
        state: the resume's checkpoint (rank 0 only).
    """

    start: int = 0
    resumed: bool = False
    changes: list[str] = attrs.Factory(list)
    finished: bool = False
    last_losses: dict = attrs.Factory(dict)
    state: dict | None = None


def open_run_dir(recipe: Recipe, out_dir: str | Path, *, resume: bool, stack: contextlib.ExitStack) -> Opening:
    """Create (or, resuming, check) the run directory and lock it for the rest of ``stack``; a resume reads the
    checkpoint and checks the recipe against the run's, and a run extended beyond its end has its final
    generator set aside."""
    paths = prepare_run_dir(out_dir, create=not resume)
    stack.enter_context(RunDirLock(paths.out_dir))
    if not resume:
        refuse_existing_run(paths)
        return Opening()
    state, changes = open_resume(paths, recipe)
    done = state["next_step"]
    if done >= recipe.optim.steps and paths.generator.exists():
        return Opening(start=done, resumed=True, changes=changes, finished=True,
                       last_losses=last_logged(paths.losses))
    set_aside_final_generator(paths, steps_done=done)
    return Opening(start=done, resumed=True, changes=changes, state=state)


def adapt(recipe: Recipe, *, out_dir: str | Path, resume: bool = False, registry=None,
          stop_after: int | None = None) -> RunResult:
    """Run an adaptation, in this process or (under ``torchrun``) as one rank of a data-parallel run.

    Args:
        recipe: a validated recipe.
        out_dir: run directory (created). With ``resume=True`` it must hold ``checkpoints/last.pt``.
        resume: continue from the last checkpoint. The recipe must equal the run's saved ``recipe.toml``
            except the fields :data:`zsgm.run_dir.RESUMABLE_FIELDS` lists (``optim.steps`` not below the steps
            done, ``run.device``, ``clip.device``, what is shown, saved and fetched, ...). The number of
            processes may differ from the run's. A run that has done all its steps and written its generator
            is not touched: the result says ``already_finished``.
        registry: plugin registry (default: installed plugins).
        stop_after: stop after this many steps of this call (simulates an interruption; tests).

    Returns:
        A :class:`RunResult` (on every rank; rank 0 alone has written the files).

    Raises:
        RunError: ``out_dir`` is a file, holds a run (without ``resume``), is in use by another process
            (``RunDirBusyError``), or the resume's recipe differs (``ResumeMismatchError``); a loss or the
            weights became non-finite (``NonFiniteError``, naming the last good checkpoint);
            ``optim.batch_size`` is not a multiple of the processes.
        WriteError: a file could not be written (the message names it and the intact checkpoint).
        CheckpointMismatchError: the checkpoint is unreadable or does not fit.
    """
    started = time.time()
    with session(recipe.run.device) as dist, contextlib.ExitStack() as stack:
        dist.check_batch_size(recipe.optim.batch_size)
        opening = dist.share_from_main(lambda: open_run_dir(recipe, out_dir, resume=resume, stack=stack),
                                       public=lambda o: attrs.evolve(o, state=None))
        paths = RunPaths(Path(out_dir))
        if opening.finished:
            return RunResult(out_dir=paths.out_dir, steps_done=opening.start, last_losses=opening.last_losses,
                             generator_path=paths.generator, seconds=time.time() - started,
                             steps_total=recipe.optim.steps, already_finished=True, resume_changes=opening.changes)
        work_dir = paths.out_dir if dist.is_main else Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=f"zsgm-rank{dist.rank}-")))  # what techniques write on the other ranks goes nowhere
        result = _train(recipe, paths, opening, work_dir=work_dir, registry=registry, stop_after=stop_after,
                        dist=dist)
    result.seconds = time.time() - started
    result.resume_changes = opening.changes
    return result


def set_aside_final_generator(paths: RunPaths, *, steps_done: int) -> Path | None:
    """A resume that extends a finished run renames its ``generator.safetensors`` to
    ``generator-step{steps_done:06d}.safetensors``: kept, and no longer mistaken for the run's current weights
    (``zsgm sample RUN`` then reads ``checkpoints/last.pt`` until the new final generator is written)."""
    return set_aside_final(paths.generator, steps_done=steps_done)


def set_up(run: Run, state: dict | None, *, path) -> torch.optim.Optimizer:
    """Restore a resume's checkpoint ``state``, run the setup hooks, make the optimisers (restoring theirs).

    Under torchrun rank 0 does this and sends the run's state (an in-memory checkpoint) to the other ranks,
    which then set up as a resume from it does: the setup-time work (Fisher, prompt learners, anchors,
    reference search) is done once, and the techniques skip what their restored state already holds.
    """
    def restore_and_set_up(state: dict | None, path) -> torch.optim.Optimizer:
        if state is not None:
            apply_run_checkpoint(run, state, path=path)
        run.pm.hook.zsgm_setup(run=run)
        optimizer = make_optimizer(run)
        run.collect_technique_optimizers()
        if state is not None:
            restore_optimizer(optimizer, state, path=path)
            restore_technique_optimizers(run, state, path=path)
        return optimizer

    dist = run.dist
    if not dist.active:
        return restore_and_set_up(state, path)
    made: list[torch.optim.Optimizer] = []

    def on_main() -> dict:
        made.append(restore_and_set_up(state, path))
        return state_on_cpu(run_checkpoint_state(run, made[0], next_step=run.step))

    shared = dist.share_from_main(on_main)
    optimizer = made[0] if dist.is_main else restore_and_set_up(shared, "rank 0's state")
    dist.average_before_step(run.technique_optimizers.values())
    return optimizer


def _train(recipe: Recipe, paths: RunPaths, opening: Opening, *, work_dir: Path, registry,
           stop_after: int | None, dist: Distributed) -> RunResult:
    """Build the run, restore a resume's state, run the steps, write the final outputs (rank 0)."""
    main = dist.is_main
    run = build_run(recipe, out_dir=work_dir, registry=registry, dist=dist)
    start = run.step = opening.start
    if main:
        _write_run_record(run, resumed_from=start if opening.resumed else None)
        reset_losses_log(paths.losses, resumed_from=start if opening.resumed else None)
    kept = KeptCheckpoints(paths.out_dir, last_step=start if opening.resumed else None)
    losses = LossLog(run, paths.losses, kept)

    error: BaseException | None = None
    steps = recipe.optim.steps
    end = steps if stop_after is None else min(steps, start + stop_after)
    every_grid, every_ckpt = recipe.run.sample_every, recipe.run.checkpoint_every
    every_snapshot = recipe.run.snapshot_every
    log: dict[str, float] = {}
    generator_path = None
    grid_inputs = fixed_sample_inputs(run) if main else None
    try:
        optimizer = set_up(run, opening.state, path=paths.checkpoint)
        if start == 0 and main:
            write_grid(run, 0, grid_inputs)
        bar = tqdm(range(start, end), initial=start, total=steps, desc="adapt", unit="step",
                   disable=not (recipe.run.progress and main), dynamic_ncols=True)
        for step in bar:
            done = step + 1
            fetched = optimisation_step(run, optimizer, step, losses, fetch=fetch_due(recipe, done, end))
            if fetched is not None:
                log = fetched
                bar.set_postfix(loss=f"{log['total']:.4f}")
            if main and every_grid and done % every_grid == 0 and done < steps:
                write_grid(run, done, grid_inputs)
            if main and every_snapshot and done % every_snapshot == 0:
                write_snapshot(run, paths, done)
            if main and ((every_ckpt and done % every_ckpt == 0) or done == end):
                kept.save(run, optimizer, next_step=done)
        bar.close()
        if end == steps and main:  # the last checkpoint (or the resumed one) holds these weights: they are finite
            write_grid(run, steps, grid_inputs)
            generator_path = write_final_generator(run, paths)
        dist.barrier()  # every rank returns once rank 0's files are written
    except WriteError as exc:  # disk full or the like: the newest checkpoint is still there, say which
        error = exc
        raise WriteError(exc.errno, f"{exc.strerror}; {kept.describe_intact()}") from None
    except BaseException as exc:
        error = exc
        raise
    finally:
        run.pm.hook.zsgm_teardown(run=run, error=error)
        run.release()
    if end == steps and not main:
        generator_path = paths.generator
    return RunResult(out_dir=paths.out_dir, steps_done=end, last_losses=log or last_logged(paths.losses),
                     generator_path=generator_path, seconds=0.0, steps_total=steps)
