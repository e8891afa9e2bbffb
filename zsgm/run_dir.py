"""The run directory: its layout, the lock that gives one process at a time a run, and the resume contract.

A run directory holds::

    recipe.toml              the resolved recipe (a resume must match it, see below)
    run.json                 seed, device, versions; ``resumed_from`` when resumed
    losses.jsonl             one line per step
    samples/step-XXXXXX.png  source/adapted grids
    checkpoints/last.pt      the newest resumable checkpoint
    checkpoints/previous.pt  the one before it (kept in case the newest is bad)
    generator.safetensors    the final generator (written once the last step is done)
    .zsgm.lock               held (``flock``) by the process running the run; records its pid

A :func:`zsgm.fit.fit` run (a module other than the generator) uses the same lock, checkpoint names and log,
with ``fit.toml``/``fit.json``/``module.safetensors`` in place of the recipe, record and generator; the helpers
below that take a path or a ``final`` file serve both.

**What a resume may change.** A resumed run continues the trajectory its checkpoint lies on, so the recipe
must be the run's saved ``recipe.toml`` except for fields that do not change what is computed at any step:

- ``optim.steps``: may grow (continue a finished run) or shrink, never below the steps already done. A
  technique whose schedule is relative to the run length (AIR's refresh steps) follows the new length for
  the remaining steps.
- ``run.device``: where it runs (on another device the numbers match to float precision, not bit for bit).
- ``run.progress``, ``run.sample_every``, ``run.checkpoint_every``, ``run.snapshot_every``, ``run.log_every``:
  what is shown and how often it is saved or fetched.
- ``clip.device``: where the CLIP ensemble runs (float precision, as ``run.device``).
- ``optim.grad_checkpointing``: whether the generator's activations are kept or recomputed (the same gradients).
- the number of processes (``torchrun``): not a recipe field; a run may be resumed with any number, since the
  global batch does not depend on it (:mod:`zsgm.distributed`).
- ``clip.models[i].trust_torchscript``: whether a CLIP file may run its code when loaded (the same file
  gives the same model either way).

Any other difference is refused before anything is loaded or written, listing each field with the run's
value and the new one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any

import attrs

from zsgm.io_utils import WriteError, read_toml_file, truncate_jsonl
from zsgm.run import RunError

LOCK_NAME = ".zsgm.lock"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}  # flock unsupported here

#: Recipe fields a resume may change (``[]`` stands for any list index), with why, for the message.
RESUMABLE_FIELDS = {
    "optim.steps": "not below the steps already done",
    "run.device": "",
    "run.progress": "",
    "run.sample_every": "",
    "run.checkpoint_every": "",
    "run.snapshot_every": "",
    "run.log_every": "",
    "clip.device": "",
    "optim.grad_checkpointing": "",
    "clip.models[].trust_torchscript": "",
}


@attrs.frozen
class RunPaths:
    """Where a run's files are (see the module docstring)."""

    out_dir: Path

    @property
    def recipe(self) -> Path:
        return self.out_dir / "recipe.toml"

    @property
    def record(self) -> Path:
        return self.out_dir / "run.json"

    @property
    def losses(self) -> Path:
        return self.out_dir / "losses.jsonl"

    @property
    def samples(self) -> Path:
        return self.out_dir / "samples"

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "checkpoints" / "last.pt"

    @property
    def previous_checkpoint(self) -> Path:
        return self.out_dir / "checkpoints" / "previous.pt"

    @property
    def generator(self) -> Path:
        return self.out_dir / "generator.safetensors"

    @property
    def snapshots(self) -> Path:
        return self.out_dir / "snapshots"

    def snapshot(self, step: int) -> Path:
        """The sampling generator after ``step`` steps (``run.snapshot_every``)."""
        return self.snapshots / f"step-{step:06d}.safetensors"

    @property
    def lock(self) -> Path:
        return self.out_dir / LOCK_NAME


# ---------------------------------------------------------------------------------------------- creating


def prepare_run_dir(out_dir: str | Path, *, create: bool = True) -> RunPaths:
    """Create the run directory (and parents) and return its :class:`RunPaths`; loads nothing.

    ``create=False`` (a resume) requires the directory to exist instead.

    Raises:
        RunError: ``out_dir`` is an existing file (or a path through a file), or missing with ``create=False``.
        WriteError: the directory cannot be created (permissions, read-only file system, disk full).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"run directory {out_dir} is an existing file, not a directory; choose a directory "
                       f"for the run's outputs")
    if not create and not out_dir.is_dir():
        raise RunError(f"there is no run to resume in {out_dir}: the directory does not exist")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"run directory {out_dir}: part of the path is a file, not a directory") from None
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot create the run directory {out_dir}: {exc.strerror or exc}") from None
    return RunPaths(out_dir)


# ---------------------------------------------------------------------------------------------- locking


class RunDirBusyError(RunError):
    """Another process holds the run directory's lock."""


class RunDirLock:
    """An exclusive ``flock`` on ``<out_dir>/.zsgm.lock`` for as long as a run uses the directory.

    The kernel drops the lock when the holder's file is closed, including when the process dies (crash,
    ``kill -9``), so a stale lock cannot outlive its run. Use as a context manager::

        with RunDirLock(out_dir):
            ...  # only this process writes the run

    On a file system without file locks it warns and runs unlocked.

    Raises (on entering):
        RunDirBusyError: another process holds the lock; the message names the directory and its pid.
        WriteError: the lock file cannot be created (directory not writable).
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise WriteError(exc.errno, f"cannot write to the run directory {self.out_dir}: "
                                        f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise RunDirBusyError(f"run directory {self.out_dir} is in use by another zsgm run{who}; wait "
                                      f"for it to finish or choose another directory") from None
            if exc.errno in _NO_LOCKS:
                warnings.warn(f"the file system of {self.out_dir} has no file locks: nothing stops a second "
                              f"zsgm run from writing into this run directory at the same time", RuntimeWarning,
                              stacklevel=2)
                return
            raise WriteError(exc.errno, f"cannot lock the run directory {self.out_dir}: "
                                        f"{exc.strerror or exc}") from None
        try:  # who holds it, for the message another run shows; the lock itself needs no data
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """The pid the lock holder wrote into the lock file ("" if unreadable)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


# ---------------------------------------------------------------------------------------------- existing runs


def refuse_existing_run(paths: RunPaths, *, final: Path | None = None) -> None:
    """A new run must not overwrite one: refuse a directory holding a checkpoint or a final output
    (``final``, default the run's ``generator.safetensors``; :mod:`zsgm.fit` passes its ``module.safetensors``)."""
    for path in (paths.checkpoint, paths.previous_checkpoint, final or paths.generator):
        if path.exists():
            raise RunError(f"{paths.out_dir} already holds a run ({path.relative_to(paths.out_dir)}); resume "
                           f"it with --resume or choose another output directory")


def set_aside_final(path: Path, *, steps_done: int) -> Path | None:
    """A resume that extends a finished run renames its final output ``NAME.EXT`` to
    ``NAME-step{steps_done:06d}.EXT``: kept, and no longer mistaken for the run's current weights.

    Returns:
        The new path, or None when there was no final output.
    """
    if not path.exists():
        return None
    kept = path.with_name(f"{path.stem}-step{steps_done:06d}{path.suffix}")
    os.replace(path, kept)
    return kept


def last_logged(losses: Path) -> dict:
    """The last readable record of a ``losses.jsonl`` without its step (``{}`` if none is readable)."""
    try:
        lines = losses.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            return {k: v for k, v in record.items() if k != "step"}
    return {}


def reset_losses_log(losses: Path, *, resumed_from: int | None) -> None:
    """A fresh run starts ``losses.jsonl`` empty; a resume keeps only the steps before ``resumed_from``
    (a run killed after its last checkpoint logged steps that it now runs again)."""
    if resumed_from is not None:
        truncate_jsonl(losses, keep=lambda rec: rec.get("step", -1) < resumed_from)
    elif losses.exists():
        losses.unlink()


class ResumeMismatchError(RunError):
    """The recipe given to a resume differs from the run's saved recipe in a field that may not change.

    ``differences`` lists ``(field path, run's value, new value)``.
    """

    def __init__(self, message: str, differences: list[tuple[str, Any, Any]]):
        super().__init__(message)
        self.differences = differences


#: A field one side of a comparison lacks (shown as "(not set)").
ABSENT = object()

# Fields added to zsgm after runs were made, with the value that reproduces what such a run did (issue 14).
FORMER_BEHAVIOUR = {"optim.noise": "shared", "frozen_adam": "skip", "update_at_step_0": True}


def _former_value(path: str) -> Any:
    """The value of a newer field that reproduces what a run made before it did, or ``ABSENT``."""
    return FORMER_BEHAVIOUR.get(path, FORMER_BEHAVIOUR.get(path.rsplit(".", 1)[-1], ABSENT))


def _describe_difference(path: str, old: Any, new: Any) -> str:
    """``path: old in the run, new in this recipe``; a field the run's recipe lacks says how to resume the run
    as it was made."""
    text = f"{path}: {show_value(old)} in the run, {show_value(new)} in this recipe"
    former = _former_value(path)
    if old is ABSENT and former is not ABSENT:
        text += (f" (the field is newer than the run; set {path.rsplit('.', 1)[-1]} = {json.dumps(former)} in the "
                 f"recipe to resume the run as it was made)")
    return text


def check_resume_recipe(paths: RunPaths, recipe, *, steps_done: int) -> list[str]:
    """Compare ``recipe`` (resolved) with the run's saved ``recipe.toml``; loads no model, writes nothing.

    Both sides are compared as the TOML the run would save, field by field, so a default that changed
    between versions (a field the saved recipe lacks) counts as a difference too.

    Returns:
        ``"path: old -> new"`` for each allowed change (for the caller to report).

    Raises:
        RunError: the saved recipe is missing or unreadable.
        ResumeMismatchError: a field outside :data:`RESUMABLE_FIELDS` differs, or ``optim.steps`` is
            below ``steps_done``; the message lists every offending field with both values.
    """
    from zsgm.recipe import dumps_recipe

    saved = read_saved_settings(paths.recipe)
    now = tomllib.loads(dumps_recipe(recipe))
    allowed, refused = [], []
    for path, old, new in differing_fields(saved, now):
        if old is ABSENT and new == _former_value(path) and new is not ABSENT:
            continue  # a newer field set to what the run did before it existed
        if _resumable(path):
            allowed.append((path, old, new))
        else:
            refused.append((path, old, new))
    problems = [_describe_difference(p, o, n) for p, o, n in refused]
    if recipe.optim.steps < steps_done:
        problems.append(f"optim.steps: the run has already done {steps_done} steps; this recipe asks for "
                        f"{recipe.optim.steps} (give at least {steps_done})")
        refused.append(("optim.steps", steps_done, recipe.optim.steps))
    if problems:
        may = ", ".join(f"{k} ({why})" if why else k for k, why in RESUMABLE_FIELDS.items())
        raise ResumeMismatchError(
            f"cannot resume {paths.out_dir}: the recipe differs from the run's {paths.recipe.name} "
            f"(a resume may change only {may}; start a new run in another directory for anything else):\n  "
            + "\n  ".join(problems),
            refused,
        )
    return [f"{p}: {show_value(o)} -> {show_value(n)}" for p, o, n in allowed]


def read_saved_settings(path: Path, *, what: str = "recipe") -> dict:
    """The settings a run saved at its start (``recipe.toml``; :mod:`zsgm.fit`'s ``fit.toml``) for a resume to
    be checked against; ``what`` names them in the one-line :class:`RunError` when missing or unreadable."""
    def error(exc: Exception) -> RunError:
        if isinstance(exc, FileNotFoundError):
            return RunError(f"{path} is missing, so the {what} of this resume cannot be checked against the run's; "
                            f"restore it, or start a new run in another directory")
        return RunError(f"{path}: the run's saved {what} is unreadable ({exc}); restore it, or start a new run "
                        f"in another directory")

    return read_toml_file(path, error=error)


def differing_fields(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(field path, old value, new value)`` for each field in which two nested tables differ, in the order
    they list their fields (old first); a field one side lacks has :data:`ABSENT` there. ``1`` and ``true``
    differ. Used for a run's recipe and for :mod:`zsgm.fit`'s task record."""
    old_fields, new_fields = _flatten(old), _flatten(new)
    out = []
    for path in sorted(set(old_fields) | set(new_fields), key=_field_order(old_fields, new_fields)):
        a, b = old_fields.get(path, ABSENT), new_fields.get(path, ABSENT)
        if not (a == b and isinstance(a, bool) == isinstance(b, bool)):
            out.append((path, a, b))
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}, "techniques": [{"use": "x"}]}`` -> ``{"optim.lr": 1, "techniques[0].use": "x"}``.

    Lists of tables are indexed; lists of scalars stay whole values.
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _field_order(*field_maps: dict[str, Any]):
    """Sort key: fields in the order the recipes list them (old first, then new)."""
    order: dict[str, int] = {}
    for fields in field_maps:
        for key in fields:
            order.setdefault(key, len(order))
    return lambda key: order[key]


def _resumable(path: str) -> bool:
    return re.sub(r"\[\d+\]", "[]", path) in RESUMABLE_FIELDS


def show_value(value: Any) -> str:
    """A field's value as a message shows it (TOML spelling; :data:`ABSENT` is "(not set)")."""
    if value is ABSENT:
        return "(not set)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
