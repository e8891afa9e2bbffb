"""Training a module that is not the generator (DeltaEdit's mapper, say): a small sibling of :mod:`zsgm.loop`.

A plugin describes what to train as a :class:`FitTask`; :func:`fit` gives it what ``zsgm adapt`` gives a
recipe: a locked run directory, a saved record of the settings that a resume must match, checkpoints of
finite weights only (the one before kept), a bit-identical resume on the CPU, ``losses.jsonl``, a progress
bar and one-line errors. Top to bottom::

    lock the run directory                 one process per run (zsgm.run_dir)
    resume: read the checkpoint, check the settings against the run's fit.toml; a finished run returns at once
    task.setup(out_dir, device)            e.g. build or reopen a data cache
    module = task.build(device)            seeded from the run's seed; resume: weights from the checkpoint
    optimiser = task.make_optimizer(module)                                 resume: its state too
    for step in steps:
        terms = task.loss(module, step, rng(seed, step, "loss"))   named; "total" is their sum unless given
        check finite; backward; optimiser step
        log, checkpoint (only of finite weights; the one before is kept)
    module.safetensors

A run directory of :func:`fit` holds::

    fit.toml                 task name, seed, steps and the task's config_record() (a resume must match it)
    fit.json                 task, seed, device, torch version; ``resumed_from`` when resumed
    losses.jsonl             one line per logged step
    checkpoints/last.pt      the newest resumable checkpoint (module, optimiser, next step)
    checkpoints/previous.pt  the one before it
    module.safetensors       the trained module's state dict (written once the last step is done)
    .zsgm.lock               held by the process running the run

Everything the task draws at random must come from the ``rng`` it is given (one CPU generator per step,
seeded from the run's seed, the step and the stream name, as :meth:`zsgm.run.Run.rng`): then a run stopped
and resumed from any checkpoint computes what an uninterrupted run computes, bit for bit on the CPU.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from pathlib import Path
from typing import Any, Protocol

import attrs
import torch
from tqdm.auto import tqdm

from zsgm.checkpoint import (
    CheckpointMismatchError,
    KeptCheckpoints,
    NonFiniteLossError,
    NonFiniteWeightsError,
    nonfinite_loss_error,
    read_checkpoint_file,
    refuse_nonfinite_checkpoint,
    restore_optimizer,
)
from zsgm.io_utils import WriteError, append_jsonl, atomic_write_bytes, atomic_write_text
from zsgm.run import RunError, resolve_device, step_rng
from zsgm.run_dir import (
    LOCK_NAME,
    ResumeMismatchError,
    RunDirLock,
    RunPaths,
    differing_fields,
    last_logged,
    prepare_run_dir,
    read_saved_settings,
    refuse_existing_run,
    reset_losses_log,
    set_aside_final,
    show_value,
)
from zsgm.tensor_checks import nonfinite_names
from zsgm.tomlwrite import dumps_toml

__all__ = ["FitPaths", "FitResult", "FitTask", "NonFiniteLossError", "NonFiniteWeightsError", "fit",
           "read_module_file"]

CHECKPOINT_FORMAT = "zsgm-fit-checkpoint"
CHECKPOINT_VERSION = 1
MODULE_FORMAT = "zsgm-fit-module"
_CHECKPOINT_KEYS = ("next_step", "task", "module", "optimizer")
_ADVICE = "try a lower learning rate in the task's settings, in a new run"
_TASK_METHODS = ("build", "make_optimizer", "setup", "loss", "config_record")


class FitTask(Protocol):
    """What a plugin provides to train a module with :func:`fit`."""

    name: str  # e.g. "deltaedit-mapper"; recorded in fit.toml and the checkpoints

    def build(self, device: torch.device) -> torch.nn.Module:
        """The module to train, on ``device`` (its initial weights are drawn under the run's seed)."""

    def make_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimiser over ``module``'s parameters (its state is checkpointed)."""

    def setup(self, out_dir: Path, device: torch.device) -> None:
        """Called once per start, before :meth:`build` (e.g. prepare or reopen a data cache; it must be
        resumable itself)."""

    def loss(self, module: torch.nn.Module, step: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """Named scalar loss terms of ``step``; ``"total"`` (what is minimised) is their sum unless given.
        Draw every random number from ``rng``."""

    def config_record(self) -> dict:
        """The task's settings that decide what is computed (TOML types: str, bool, int, float, lists, tables;
        None entries are left out): saved in ``fit.toml``, and a resume must give the same."""


@attrs.frozen
class FitPaths:
    """Where a :func:`fit` run's files are (see the module docstring); checkpoints, log and lock as in a
    ``zsgm adapt`` run directory (:class:`zsgm.run_dir.RunPaths`)."""

    out_dir: Path

    @property
    def settings(self) -> Path:
        return self.out_dir / "fit.toml"

    @property
    def record(self) -> Path:
        return self.out_dir / "fit.json"

    @property
    def losses(self) -> Path:
        return RunPaths(self.out_dir).losses

    @property
    def checkpoint(self) -> Path:
        return RunPaths(self.out_dir).checkpoint

    @property
    def previous_checkpoint(self) -> Path:
        return RunPaths(self.out_dir).previous_checkpoint

    @property
    def module(self) -> Path:
        return self.out_dir / "module.safetensors"

    @property
    def lock(self) -> Path:
        return self.out_dir / LOCK_NAME


@attrs.define
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        out_dir: the run directory; ``paths`` says where each of its files is.
        steps_done: steps the run has done in all (this call and earlier ones).
        steps_total: the run's ``steps``.
        last_losses: the last logged step's losses (``{}`` when none is logged).
        module_path: ``module.safetensors`` once the run has done all its steps (else None).
        seconds: wall time of this call.
        already_finished: a resume found the run finished: nothing was run or written.
        resume_changes: ``"field: old -> new"`` for each setting a resume changed (only ``steps`` may).
    """

    out_dir: Path
    steps_done: int
    steps_total: int
    last_losses: dict
    module_path: Path | None
    seconds: float = 0.0
    already_finished: bool = False
    resume_changes: list[str] = attrs.Factory(list)

    @property
    def paths(self) -> FitPaths:
        return FitPaths(Path(self.out_dir))


# ---------------------------------------------------------------------------------------------- settings


def check_task(task: Any) -> None:
    """Refuse, in one line, an object that is not a :class:`FitTask`."""
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"fit task {type(task).__name__}: name must be a non-empty string, got {name!r}")
    missing = [m for m in _TASK_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise TypeError(f"fit task {name!r}: missing method {', '.join(missing)} (see zsgm.fit.FitTask)")


def _check_counts(*, steps, seed, checkpoint_every, log_every, stop_after) -> None:
    for arg, value, least in (("steps", steps, 1), ("seed", seed, 0), ("checkpoint_every", checkpoint_every, 0),
                              ("log_every", log_every, 1), ("stop_after", stop_after, 0)):
        if arg == "stop_after" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"fit {arg} must be an integer >= {least}; got {value!r}")


def fit_settings(task: FitTask, *, steps: int, seed: int) -> dict:
    """What ``fit.toml`` holds, as read back (TOML types: tuples become lists, None entries are dropped).

    Raises:
        RunError: ``task.config_record()`` holds a value TOML cannot store (named).
    """
    record = task.config_record()
    if not isinstance(record, dict):
        raise RunError(f"fit task {task.name!r}: config_record() must return a dict, got {type(record).__name__}")
    try:
        text = dumps_toml({"task": task.name, "seed": seed, "steps": steps, "config": record})
    except TypeError as exc:
        raise RunError(f"fit task {task.name!r}: config_record() holds a value fit.toml cannot store ({exc})") \
            from None
    return tomllib.loads(text)


def check_resume_settings(paths: FitPaths, settings: dict, *, steps_done: int) -> list[str]:
    """Compare the settings of a resume with the run's ``fit.toml``; only ``steps`` may change, and not below
    ``steps_done``.

    Returns:
        ``"steps: old -> new"`` when the resume changes the number of steps.

    Raises:
        RunError: ``fit.toml`` is missing or unreadable.
        ResumeMismatchError: one line naming each other field that differs, with both values.
    """
    saved = read_saved_settings(paths.settings, what="task settings")
    allowed, refused = [], []
    for path, old, new in differing_fields(saved, settings):
        (allowed if path == "steps" else refused).append((path, old, new))
    problems = [f"{p}: {show_value(o)} in the run, {show_value(n)} now" for p, o, n in refused]
    if settings["steps"] < steps_done:
        problems.append(f"steps: the run has already done {steps_done}, this resume asks for {settings['steps']}")
        refused.append(("steps", steps_done, settings["steps"]))
    if problems:
        raise ResumeMismatchError(
            f"cannot resume {paths.out_dir}: the settings differ from the run's {paths.settings.name}: "
            + "; ".join(problems)
            + " (a resume may change only steps, not below the steps done; start a new run in another "
              "directory for anything else)", refused)
    return [f"{p}: {show_value(o)} -> {show_value(n)}" for p, o, n in allowed]


# ---------------------------------------------------------------------------------------------- checkpoints


def checkpoint_state(task: FitTask, module: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                     next_step: int) -> dict:
    """What a :func:`fit` checkpoint holds (tensors stay where they are; ``torch.save`` copies them)."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "task": task.name, "next_step": next_step,
            "module": module.state_dict(), "optimizer": optimizer.state_dict()}


def nonfinite_module_weights(module_state: dict) -> list[str]:
    """Names of the entries of a module's state dict holding NaN or inf (``module.<name>``)."""
    return nonfinite_names({f"module.{k}": v for k, v in module_state.items()})


def read_fit_checkpoint(path: Path, *, task_name: str) -> dict:
    """Read and check a :func:`fit` checkpoint onto the CPU (executes nothing); refuse non-finite weights.

    Raises:
        FileNotFoundError: no checkpoint (the message names ``previous.pt`` if there is one).
        CheckpointMismatchError: unreadable, foreign, or written for another task (one line naming the file).
        NonFiniteWeightsError: its weights hold NaN or inf.
    """
    state = read_checkpoint_file(path, tag=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, keys=_CHECKPOINT_KEYS,
                                 what="zsgm fit checkpoint")
    if not isinstance(state["module"], dict):
        raise CheckpointMismatchError(f"{path}: not a readable zsgm fit checkpoint (module is not a table of "
                                      f"tensors); start a new run in another directory")
    if state["task"] != task_name:
        raise CheckpointMismatchError(f"{path}: written by fit task {state['task']!r}, not {task_name!r}")
    refuse_nonfinite_checkpoint(path, nonfinite_module_weights(state["module"]))
    return state


def _restore(module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, *, path: Path) -> None:
    try:
        module.load_state_dict(state["module"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointMismatchError(f"{path}: the module does not fit this task's: {exc}") from None
    restore_optimizer(optimizer, state, path=path)


def write_module_file(task: FitTask, module: torch.nn.Module, path: Path, *, steps: int) -> Path:
    """``module.safetensors``: the module's state dict, metadata ``{"format", "task", "steps"}``; atomic (in
    memory first: a full disk is a :class:`WriteError` naming ``path``)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    meta = {"format": MODULE_FORMAT, "task": task.name, "steps": str(steps)}
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def read_module_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict and metadata of a ``module.safetensors`` written by :func:`fit` (onto the CPU).

    Raises:
        ValueError: one line naming the file when it is missing, unreadable or not written by :func:`fit`.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such module file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != MODULE_FORMAT:
        raise ValueError(f"{path}: not a module written by zsgm.fit (format {meta.get('format')!r})")
    return tensors, meta


# ---------------------------------------------------------------------------------------------- steps


def _build(task: FitTask, device: torch.device, *, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The task's module and optimiser; the module's initial weights are drawn under the run's seed without
    touching the caller's global random state."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(step_rng(seed, 0, "build").initial_seed())
        module = task.build(device)
    if not isinstance(module, torch.nn.Module):
        raise RunError(f"fit task {task.name!r}: build() returned {type(module).__name__}, not a torch.nn.Module")
    optimizer = task.make_optimizer(module)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise RunError(f"fit task {task.name!r}: make_optimizer() returned {type(optimizer).__name__}, not a "
                       f"torch.optim.Optimizer")
    return module.train(), optimizer


def step_terms(task: FitTask, module: torch.nn.Module, step: int, *, seed: int) -> dict[str, torch.Tensor]:
    """The task's named terms of ``step`` with ``"total"`` (their sum unless the task gives it)."""
    terms = task.loss(module, step, step_rng(seed, step, "loss"))
    if not isinstance(terms, dict) or not terms:
        raise RunError(f"fit task {task.name!r}: loss() must return a non-empty dict of named scalar tensors, "
                       f"got {terms!r:.80}")
    for name, value in terms.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise RunError(f"fit task {task.name!r}: loss term {name!r} at step {step} is not a scalar tensor "
                           f"({shape})")
    if "total" not in terms:
        terms = {**terms, "total": torch.stack(list(terms.values())).sum()}
    if not terms["total"].requires_grad:
        raise RunError(f"fit task {task.name!r}: the total loss at step {step} does not depend on the module's "
                       f"trainable parameters")
    return terms


def _write_record(paths: FitPaths, settings: dict, device: torch.device, *, resumed_from: int | None) -> None:
    atomic_write_text(paths.settings, dumps_toml(settings))
    record = {"task": settings["task"], "seed": settings["seed"], "device": str(device), "torch": torch.__version__,
              "resumed_from": resumed_from}
    atomic_write_text(paths.record, json.dumps(record, indent=2) + "\n")


def fit(task: FitTask, *, out_dir: str | Path, steps: int, seed: int = 0, resume: bool = False,
        device: str | torch.device = "cpu", checkpoint_every: int = 100, log_every: int = 1, progress: bool = True,
        stop_after: int | None = None) -> FitResult:
    """Train ``task``'s module for ``steps`` steps in the run directory ``out_dir``.

    Args:
        task: a :class:`FitTask`.
        out_dir: run directory (created). With ``resume=True`` it must hold ``checkpoints/last.pt``.
        steps: optimiser steps in all.
        seed: seeds the module's initial weights and every step's ``rng``.
        resume: continue from the last checkpoint. ``task.name``, ``seed`` and ``task.config_record()`` must
            equal the run's ``fit.toml``; ``steps`` may change, not below the steps done. A run that has done
            all its steps and written its module is not touched: the result says ``already_finished``.
        device: "cpu", "cuda[:i]" or "auto"; may change on a resume (then equal to float precision, not bit
            for bit).
        checkpoint_every: write ``checkpoints/last.pt`` every this many steps (0: only at the end of the call).
        log_every: append to ``losses.jsonl`` the steps that are multiples of this.
        progress: show a progress bar.
        stop_after: stop after this many steps of this call (simulates an interruption; tests).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError / TypeError: a bad argument or a task lacking a method (one line).
        RunError: ``out_dir`` is a file, holds a run (without ``resume``), is in use by another process
            (``RunDirBusyError``), or a resume's settings differ (``ResumeMismatchError``); the task returned
            something unusable; a loss or the weights became non-finite (``NonFiniteError``, naming the last
            good checkpoint).
        WriteError: a file could not be written (the message names it and the intact checkpoint).
        CheckpointMismatchError: the checkpoint is unreadable or does not fit the task.
    """
    started = time.time()
    check_task(task)
    _check_counts(steps=steps, seed=seed, checkpoint_every=checkpoint_every, log_every=log_every,
                  stop_after=stop_after)
    settings = fit_settings(task, steps=steps, seed=seed)
    device = resolve_device(str(device))
    paths = FitPaths(prepare_run_dir(out_dir, create=not resume).out_dir)
    with RunDirLock(paths.out_dir):
        state, changes = None, []
        if resume:
            state = read_fit_checkpoint(paths.checkpoint, task_name=task.name)
            changes = check_resume_settings(paths, settings, steps_done=state["next_step"])
            if state["next_step"] >= steps and paths.module.exists():
                return FitResult(out_dir=paths.out_dir, steps_done=state["next_step"], steps_total=steps,
                                 last_losses=last_logged(paths.losses), module_path=paths.module,
                                 seconds=time.time() - started, already_finished=True, resume_changes=changes)
            set_aside_final(paths.module, steps_done=state["next_step"])
        else:
            refuse_existing_run(paths, final=paths.module)
        result = _fit_steps(task, paths, settings, device, state=state, checkpoint_every=checkpoint_every,
                            log_every=log_every, progress=progress, stop_after=stop_after)
    result.seconds = time.time() - started
    result.resume_changes = changes
    return result


def _fit_steps(task: FitTask, paths: FitPaths, settings: dict, device: torch.device, *, state: dict | None,
               checkpoint_every: int, log_every: int, progress: bool, stop_after: int | None) -> FitResult:
    """Set up, build (restoring ``state`` if resuming), run the steps, write ``module.safetensors``."""
    steps, seed = settings["steps"], settings["seed"]
    start = 0 if state is None else state["next_step"]
    end = steps if stop_after is None else min(steps, start + stop_after)
    task.setup(paths.out_dir, device)
    module, optimizer = _build(task, device, seed=seed)
    if state is not None:
        _restore(module, optimizer, state, path=paths.checkpoint)
    _write_record(paths, settings, device, resumed_from=start if state is not None else None)
    reset_losses_log(paths.losses, resumed_from=start if state is not None else None)
    kept = KeptCheckpoints(paths.out_dir, last_step=start if state is not None else None)

    log: dict[str, float] = {}
    try:
        bar = tqdm(range(start, end), initial=start, total=steps, desc=task.name, unit="step", disable=not progress,
                   dynamic_ncols=True)
        for step in bar:
            terms = step_terms(task, module, step, seed=seed)
            total = float(terms["total"].detach())
            if not math.isfinite(total):
                log = {k: float(v.detach()) for k, v in terms.items()}
                weights = nonfinite_module_weights(module.state_dict())
                raise nonfinite_loss_error(step, log, kept, weights=weights, advice=_ADVICE)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            if step % log_every == 0:
                log = {k: float(v.detach()) for k, v in terms.items()}
                append_jsonl(paths.losses, {"step": step, **log})  # a failed write: WriteError naming the file
            bar.set_postfix(loss=f"{total:.4f}")
            done = step + 1
            if (checkpoint_every and done % checkpoint_every == 0) or done == end:
                kept.write(checkpoint_state(task, module, optimizer, next_step=done), next_step=done,
                           nonfinite=nonfinite_module_weights(module.state_dict()), advice=_ADVICE)
        bar.close()
        module_path = write_module_file(task, module, paths.module, steps=steps) if end == steps else None
    except WriteError as exc:  # disk full or the like: the newest checkpoint is still there, say which
        raise WriteError(exc.errno, f"{exc.strerror}; {kept.describe_intact()}") from None
    return FitResult(out_dir=paths.out_dir, steps_done=end, steps_total=steps,
                     last_losses=log or last_logged(paths.losses), module_path=module_path)
