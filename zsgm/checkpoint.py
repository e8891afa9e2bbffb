"""Resumable run checkpoints: everything needed to continue a run bit-for-bit.

A checkpoint holds the target generator, the EMA copy, the optimiser state, every technique's
``state_dict``, the states of the techniques' own optimisers (``technique_optimizers``, keyed
``"<entry name>/<key>"``; absent in checkpoints written before they existed, which is read as none) and the next
step index. It is written atomically and read with
``torch.load(weights_only=True)``: loading executes no code.

A run keeps two: ``checkpoints/last.pt`` and ``checkpoints/previous.pt`` (the one before it). A
checkpoint is only written when every weight is finite, and it is *good* once the step after it has run
with a finite loss; when that step's loss is not finite, ``previous.pt`` is the good one
(:class:`KeptCheckpoints` keeps track and names it).

The generic parts (:class:`KeptCheckpoints`, :func:`read_checkpoint_file`, :func:`restore_optimizer`,
:func:`nonfinite_loss_error`) also serve :mod:`zsgm.fit`, whose checkpoints hold one module instead of a run.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
from pathlib import Path

import attrs
import torch

from zsgm.io_utils import WriteError, atomic_torch_save
from zsgm.run import RunError
from zsgm.run_dir import RunPaths
from zsgm.tensor_checks import nonfinite_names

FORMAT = "zsgm-run-checkpoint"
VERSION = 1
_KEYS = ("next_step", "target", "ema", "optimizer", "techniques")


class CheckpointMismatchError(RuntimeError):
    """A run checkpoint cannot be read, or does not fit the run it is resumed into."""


class NonFiniteError(RunError):
    """Training produced NaN or inf; the message names the last good checkpoint."""


class NonFiniteWeightsError(NonFiniteError):
    """Weights became (or a checkpoint holds) NaN or inf."""


class NonFiniteLossError(NonFiniteError):
    """A loss became NaN or infinite; the message names the last good checkpoint."""


#: What ``zsgm adapt``'s non-finite errors advise.
ADAPT_ADVICE = "try a lower optim.lr or check the technique weights, in a new run"


def checkpoint_path(out_dir: str | Path) -> Path:
    """``<out_dir>/checkpoints/last.pt``: the checkpoint a resume continues from (:class:`RunPaths` layout)."""
    return RunPaths(Path(out_dir)).checkpoint


def previous_checkpoint_path(out_dir: str | Path) -> Path:
    """``<out_dir>/checkpoints/previous.pt``: the checkpoint written before ``last.pt``."""
    return RunPaths(Path(out_dir)).previous_checkpoint


# ---------------------------------------------------------------------------------------------- writing


def run_checkpoint_state(run, optimizer: torch.optim.Optimizer, *, next_step: int) -> dict:
    """What a checkpoint of ``run`` holds (tensors stay where they are; ``torch.save`` copies them)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "next_step": next_step,
        "target": run.g_target.state_dict(),
        "ema": run.g_ema.state_dict() if run.g_ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "techniques": {use.name: tech.state_dict() for use, tech in zip(run.uses, run.techniques)},
        "technique_optimizers": {key: opt.state_dict() for key, opt in run.technique_optimizers.items()},
    }


def write_checkpoint_file(state: dict, path: str | Path) -> None:
    """``torch.save`` atomically; a full disk (any failed write) is a :class:`WriteError` naming ``path``
    (serialised in memory first, see :func:`zsgm.io_utils.atomic_torch_save`)."""
    atomic_torch_save(state, path)


def keep_previous_checkpoint(out_dir: str | Path) -> bool:
    """Make ``previous.pt`` the current ``last.pt`` (a hard link, else a copy), atomically; ``last.pt`` stays
    in place throughout, so a crash or a full disk at any point leaves a readable ``last.pt``.

    Returns:
        Whether there was a ``last.pt`` to keep.
    """
    last, previous = checkpoint_path(out_dir), previous_checkpoint_path(out_dir)
    if not last.exists():
        return False
    tmp = previous.with_name(f".{previous.name}.{os.getpid()}.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(last, tmp)
        except OSError:  # no hard links on this file system
            shutil.copyfile(last, tmp)
        os.replace(tmp, previous)
    except OSError as exc:
        if tmp.exists():
            tmp.unlink()
        raise WriteError(exc.errno, f"cannot write {previous}: {exc.strerror or exc}") from None
    return True


# ---------------------------------------------------------------------------------------------- finiteness


def nonfinite_weights(run, optimizer: torch.optim.Optimizer | None = None) -> list[str]:
    """Names of the run's weights holding NaN or inf: target generator, EMA copy, every technique's state (a
    discriminator a technique trains with its own optimiser, say), and whatever else the optimiser trains
    (named by optimiser group and index)."""
    named = {f"target.{k}": v for k, v in run.g_target.state_dict().items()}
    if run.g_ema is not None:
        named.update({f"ema.{k}": v for k, v in run.g_ema.state_dict().items()})
    for use, technique in zip(run.uses, run.techniques):
        named.update({f"techniques.{use.name}.{k}": v for k, v in technique.state_dict().items()})
    if optimizer is not None:
        known = {id(p) for p in run.g_target.parameters()}
        for i, group in enumerate(optimizer.param_groups):
            for j, p in enumerate(group["params"]):
                if id(p) not in known:
                    named[f"optimizer group {i} parameter {j}"] = p.detach()
    return nonfinite_names(named)


def nonfinite_in_checkpoint(state: dict) -> list[str]:
    """Names of a read checkpoint's weights holding NaN or inf: generators and technique states."""
    named = {f"target.{k}": v for k, v in state["target"].items()}
    named.update({f"ema.{k}": v for k, v in (state["ema"] or {}).items()})
    for technique, tensors in (state.get("techniques") or {}).items():
        if isinstance(tensors, dict):
            named.update({f"techniques.{technique}.{k}": v for k, v in tensors.items()})
    return nonfinite_names(named)


def refuse_nonfinite_checkpoint(path: Path, bad: list[str]) -> None:
    """A resume from the checkpoint ``path`` whose weights ``bad`` hold NaN or inf is refused, pointing to
    ``previous.pt`` when there is one."""
    if not bad:
        return
    previous = previous_checkpoint_path(path.parent.parent)
    raise NonFiniteWeightsError(
        f"{path} holds non-finite weights ({', '.join(bad[:3])}) and cannot be resumed"
        + (f"; copy {previous} over it to resume from the checkpoint before"
           if previous.exists() else "; start a new run in another directory"))


def _names(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


@attrs.define
class KeptCheckpoints:
    """A run's ``last.pt`` and ``previous.pt``: writes them and knows which one is good.

    Attributes:
        out_dir: the run directory.
        last_step: ``next_step`` of ``last.pt`` (None: none written by or resumed into this run).
        previous_step: ``next_step`` of ``previous.pt`` when known.
    """

    out_dir: Path
    last_step: int | None = None
    previous_step: int | None = None

    def save(self, run, optimizer: torch.optim.Optimizer, *, next_step: int) -> Path:
        """Write the run's ``last.pt`` (keeping the old one as ``previous.pt``) if every weight is finite
        (:meth:`write`)."""
        return self.write(run_checkpoint_state(run, optimizer, next_step=next_step), next_step=next_step,
                          nonfinite=nonfinite_weights(run, optimizer), advice=ADAPT_ADVICE)

    def write(self, state: dict, *, next_step: int, nonfinite: list[str], advice: str) -> Path:
        """Write ``state`` as ``last.pt`` (keeping the old one as ``previous.pt``) unless weights are not finite.

        Args:
            state: the checkpoint (tensors anywhere; ``torch.save`` copies them).
            next_step: the step a resume from it runs next.
            nonfinite: names of the weights holding NaN or inf (nothing is written when any does).
            advice: what the error advises, e.g. :data:`ADAPT_ADVICE`.

        Raises:
            NonFiniteWeightsError: the update of step ``next_step - 1`` made weights NaN/inf; nothing is
                written and the message names the good checkpoint.
            WriteError: the write failed (disk full...); ``last.pt`` is intact (:meth:`describe_intact`).
        """
        if nonfinite:
            raise NonFiniteWeightsError(
                f"non-finite weights after step {next_step - 1} ({_names(nonfinite)}); "
                f"{self.describe_good(next_step)} ({advice})")
        if keep_previous_checkpoint(self.out_dir):
            self.previous_step = self.last_step
        path = checkpoint_path(self.out_dir)
        write_checkpoint_file(state, path)
        self.last_step = next_step
        return path

    def good(self, first_bad_step: int) -> tuple[Path, int | None] | None:
        """The newest good checkpoint when step ``first_bad_step`` is the first that failed (its loss was
        not finite, or it starts from weights that are not), with its ``next_step`` if known."""
        last, previous = checkpoint_path(self.out_dir), previous_checkpoint_path(self.out_dir)
        if self.last_step is None:
            return None
        if self.last_step < first_bad_step and last.exists():
            return last, self.last_step  # the step after it ran with a finite loss
        if previous.exists():
            return previous, self.previous_step  # last.pt leads straight into the failure
        return None

    def describe_good(self, first_bad_step: int) -> str:
        """``"the last good checkpoint is ..."`` for a failure at ``first_bad_step``."""
        found = self.good(first_bad_step)
        last = checkpoint_path(self.out_dir)
        if found is None:
            if self.last_step is not None and last.exists():
                return f"no good checkpoint was kept ({last} leads straight into this step)"
            return "no checkpoint was written yet"
        path, step = found
        text = f"the last good checkpoint is {path}" + (f" (next step {step})" if step is not None else "")
        if path != last and last.exists():
            text += f"; {last} (next step {self.last_step}) leads straight into this step"
        return text

    def describe_intact(self) -> str:
        """Which checkpoint survives a failed write."""
        last = checkpoint_path(self.out_dir)
        if self.last_step is not None and last.exists():
            return f"the checkpoint {last} (next step {self.last_step}) is intact; free some space and resume the run"
        return "no checkpoint had been written yet"


def nonfinite_loss_error(step: int, log: dict[str, float], kept: KeptCheckpoints, *, weights: list[str],
                         advice: str, found_at: int | None = None, log_every: int = 1) -> NonFiniteLossError:
    """The error for a NaN/inf loss at ``step``: the bad terms of ``log``, whether the ``weights`` named were
    already non-finite, the last good checkpoint, and ``advice``.

    ``found_at``: the later step at which the value was fetched from the device (``run.log_every`` =
    ``log_every`` > 1); the weights named are then those after the updates up to that step."""
    bad = {k: v for k, v in log.items() if not math.isfinite(v)}
    now = "are" if found_at is not None and found_at != step else "were already"
    cause = (f"the weights {now} non-finite ({', '.join(weights[:3])})" if weights
             else f"the weights {'are' if now == 'are' else 'were'} finite")
    if found_at is not None and found_at != step:
        cause = f"found at step {found_at} (values are fetched every {log_every} steps, run.log_every); {cause}"
    return NonFiniteLossError(f"non-finite loss at step {step}: {bad}; {cause}; {kept.describe_good(step)} ({advice})")


# ---------------------------------------------------------------------------------------------- reading


def _unreadable(path: Path, why: str, what: str = "zsgm run checkpoint") -> CheckpointMismatchError:
    """One line: the file, that it is not a usable checkpoint, and what to do (never a weaker safety)."""
    previous = previous_checkpoint_path(path.parent.parent)
    advice = "start a new run in another directory"
    if path.name == "last.pt" and previous.exists():
        advice += f", or copy {previous} (the checkpoint before it) over it and resume"
    return CheckpointMismatchError(f"{path}: not a readable {what} ({why}); {advice}")


def read_run_checkpoint(path: str | Path) -> dict:
    """Read and check a run checkpoint onto the CPU (``weights_only``: executes nothing); builds no model.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names ``previous.pt`` if there is one).
        CheckpointMismatchError: one line naming the file when it is truncated, corrupt, foreign or of
            another format version.
    """
    path = Path(path)
    state = read_checkpoint_file(path, tag=FORMAT, version=VERSION, keys=_KEYS, what="zsgm run checkpoint")
    if not isinstance(state["target"], dict) or not isinstance(state["techniques"], dict):
        raise _unreadable(path, "target or techniques is not a table of tensors")
    return state


def read_checkpoint_file(path: str | Path, *, tag: str, version: int, keys: tuple[str, ...],
                         what: str) -> dict:
    """Read a checkpoint whose ``format`` is ``tag`` onto the CPU (``weights_only``: executes nothing) and check its tag,
    its version (at most ``version``), that it has ``keys`` and a ``next_step`` >= 0.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names ``previous.pt`` if there is one).
        CheckpointMismatchError: one line naming the file (and calling it ``what``) when it is truncated,
            corrupt, foreign or of a newer format version.
    """
    path = Path(path)
    if not path.exists():
        previous = previous_checkpoint_path(path.parent.parent)
        hint = f"; copy {previous} to it to resume from the checkpoint before" if previous.exists() else ""
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except IsADirectoryError:
        raise _unreadable(path, "it is a directory", what) from None
    except PermissionError as exc:
        raise CheckpointMismatchError(f"{path}: cannot read the checkpoint ({exc.strerror})") from None
    except pickle.UnpicklingError:
        raise _unreadable(path, "it holds objects a safe load refuses: not written by zsgm", what) from None
    except Exception:  # noqa: BLE001 - torch's messages advise weakening the safety; never shown
        raise _unreadable(path, "truncated, corrupt or not written by zsgm", what) from None
    if not isinstance(state, dict) or state.get("format") != tag:
        raise _unreadable(path, f"no {tag!r} format tag", what)
    if not isinstance(state.get("version"), int) or state["version"] > version:
        raise _unreadable(path, f"format version {state.get('version')!r}; this zsgm reads up to {version}", what)
    missing = [k for k in keys if k not in state]
    if missing:
        raise _unreadable(path, f"missing {', '.join(missing)}", what)
    step = state["next_step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise _unreadable(path, f"next_step is {step!r}", what)
    return state


def state_on_cpu(state: dict) -> dict:
    """A copy of a checkpoint ``state`` with every tensor on the CPU (what rank 0 sends the other ranks)."""
    return _to_device(state, torch.device("cpu"))


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, _to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def apply_run_checkpoint(run, state: dict, *, path: str | Path) -> None:
    """Restore the generators and technique states of ``run`` from a read checkpoint.

    The caller restores ``state["optimizer"]`` once the optimiser exists (techniques may add parameter groups
    during setup) and continues from ``state["next_step"]``.
    """
    names = [use.name for use in run.uses]
    saved = list(state["techniques"])
    if saved != names:
        raise CheckpointMismatchError(
            f"{path}: the checkpoint was written by a run with techniques {saved}, this recipe has {names}"
        )
    try:
        run.g_target.load_state_dict(state["target"])
        if run.g_ema is not None:
            if state["ema"] is None:
                raise CheckpointMismatchError(f"{path}: the recipe keeps an EMA generator but the checkpoint has none")
            run.g_ema.load_state_dict(state["ema"])
        for use, tech in zip(run.uses, run.techniques):
            tech.load_state_dict(_to_device(state["techniques"][use.name], run.device))
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, CheckpointMismatchError):
            raise
        raise CheckpointMismatchError(f"{path}: does not fit this run: {exc}") from None


def load_run_checkpoint(run) -> dict:
    """Read ``checkpoints/last.pt`` of ``run`` and restore its generators and technique states.

    Returns:
        The checkpoint dict (see :func:`apply_run_checkpoint` for the optimiser).
    """
    path = checkpoint_path(run.out_dir)
    state = read_run_checkpoint(path)
    apply_run_checkpoint(run, state, path=path)
    return state


def restore_technique_optimizers(run, state: dict, *, path: str | Path = "checkpoint") -> None:
    """Load the saved states of the techniques' own optimisers (``run.technique_optimizers``) by key."""
    saved = state.get("technique_optimizers") or {}
    if sorted(saved) != sorted(run.technique_optimizers):
        raise CheckpointMismatchError(
            f"{path}: the checkpoint holds technique optimisers {sorted(saved)}, this run has "
            f"{sorted(run.technique_optimizers)}")
    for key, optimizer in run.technique_optimizers.items():
        try:
            optimizer.load_state_dict(saved[key])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointMismatchError(f"{path}: state of optimiser {key!r} does not fit this run: {exc}") \
                from None


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict, *, path: str | Path = "checkpoint") -> None:
    """Load the optimiser state saved with a run (or :mod:`zsgm.fit`) checkpoint (tensors move to their
    parameters' devices)."""
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointMismatchError(f"{path}: optimiser state does not fit this run: {exc}") from None
