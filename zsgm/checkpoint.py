"""Resumable run checkpoints: everything needed to continue a run bit-for-bit.

A checkpoint holds the target generator, the EMA copy, the optimiser state, every technique's
``state_dict`` and the next step index. It is written atomically and read with
``torch.load(weights_only=True)``: loading executes no code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zsgm.io_utils import atomic_torch_save

FORMAT = "zsgm-run-checkpoint"
VERSION = 1


class CheckpointMismatchError(RuntimeError):
    """A run checkpoint does not fit the run it is resumed into."""


def checkpoint_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints" / "last.pt"


def save_run_checkpoint(run, optimizer: torch.optim.Optimizer, *, next_step: int) -> Path:
    """Write ``checkpoints/last.pt`` for ``run`` (atomic)."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "next_step": next_step,
        "target": run.g_target.state_dict(),
        "ema": run.g_ema.state_dict() if run.g_ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "techniques": {use.name: tech.state_dict() for use, tech in zip(run.uses, run.techniques)},
    }
    path = checkpoint_path(run.out_dir)
    atomic_torch_save(state, path)
    return path


def load_run_checkpoint(run) -> dict:
    """Restore the generators and technique states of ``run`` from ``checkpoints/last.pt``.

    Returns:
        The checkpoint dict; the caller restores ``state["optimizer"]`` once the optimiser exists
        (techniques may add parameter groups during setup) and continues from ``state["next_step"]``.
    """
    path = checkpoint_path(run.out_dir)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, map_location=run.device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or unsafe file
        raise CheckpointMismatchError(f"{path}: not a readable zsgm run checkpoint ({type(exc).__name__}: {exc})") \
            from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{path}: not a zsgm run checkpoint (missing format tag {FORMAT!r})")
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
            tech.load_state_dict(state["techniques"][use.name])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointMismatchError(f"{path}: does not fit this run: {exc}") from None
    return state


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict, *, path: str | Path = "checkpoint") -> None:
    """Load the optimiser state saved with a run checkpoint."""
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointMismatchError(f"{path}: optimiser state does not fit this run: {exc}") from None
