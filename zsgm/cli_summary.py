"""What ``zsgm adapt`` prints when it ends: the outcome, the final loss, where each output is, the next commands."""

from __future__ import annotations

from pathlib import Path


def _format_loss(value) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def run_summary(result, out: Path, *, recipe) -> list[str]:
    """What ``zsgm adapt`` prints at the end: what happened, where each output is, the next commands.

    ``result`` is the :class:`zsgm.loop.RunResult`; a resumed run that had already finished says so, with the
    loss logged last (``RunResult.last_losses`` holds it then).
    """
    loss = result.last_losses.get("total")
    if result.already_finished:
        lines = [f"{out} already holds the finished run ({result.steps_done} steps); nothing to do. "
                 f"Final loss {_format_loss(loss)}"]
    else:
        lines = [f"done: {result.steps_done} steps in {result.seconds:.1f} s; final loss {_format_loss(loss)}"]
    if result.resume_changes:
        lines.append("resumed with these changes to the run's recipe:")
        lines.extend(f"  {change}" for change in result.resume_changes)
    paths = result.paths
    places = (("grids", paths.samples), ("generator", result.generator_path or paths.generator),
              ("losses", paths.losses), ("checkpoint", paths.checkpoint), ("recipe", paths.recipe),
              ("run record", paths.record))
    width = max(len(label) for label, _ in places) + 1
    lines.append("outputs:")
    lines.extend(f"  {label + ':':<{width}} {path}" for label, path in places if Path(path).exists())
    lines.append("next:")
    lines.append(f"  zsgm sample {out} --seeds 0-15 --outdir {out / 'seeds'}    # one PNG per seed + grid.png")
    if recipe.generator.checkpoint == "shapes":
        lines.append(f"  zsgm eval {out}    # judge the shapes-world run with the ground-truth judges")
    return lines
