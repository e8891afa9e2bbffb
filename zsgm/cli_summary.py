"""What ``zsgm adapt`` prints when it ends: the outcome, the final loss, where each output is, the next commands."""

from __future__ import annotations

from pathlib import Path


def _last_logged_loss(log_path: Path):
    """The ``total`` of the last record in ``losses.jsonl`` (None if there is none)."""
    import json

    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            return json.loads(line).get("total")
        except (json.JSONDecodeError, AttributeError):
            continue
    return None


def _format_loss(value) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def run_summary(result, out: Path, *, recipe, resumed: bool) -> list[str]:
    """What ``zsgm adapt`` prints at the end: what happened, where each output is, the next commands.

    A resumed run that had already finished says so, with the loss logged last. Reads ``result.paths``,
    ``result.already_finished`` and ``result.resume_changes`` where :class:`zsgm.loop.RunResult` has them.
    """
    finished_before = getattr(result, "already_finished", None)
    if finished_before is None:  # a RunResult without the flag: a resumed run that took no step
        finished_before = resumed and not result.last_losses
    loss = result.last_losses.get("total")
    if loss is None:
        loss = _last_logged_loss(out / "losses.jsonl")
    if finished_before:
        lines = [f"{out} already holds the finished run ({result.steps_done} steps); nothing to do. "
                 f"Final loss {_format_loss(loss)}"]
    else:
        lines = [f"done: {result.steps_done} steps in {result.seconds:.1f} s; final loss {_format_loss(loss)}"]
    changes = getattr(result, "resume_changes", None) or []
    if changes:
        lines.append("resumed with these changes to the run's recipe:")
        lines.extend(f"  {change}" for change in changes)
    paths = getattr(result, "paths", None)
    generator = result.generator_path or getattr(paths, "generator", out / "generator.safetensors")
    places = (("grids", getattr(paths, "samples", out / "samples")), ("generator", generator),
              ("losses", getattr(paths, "losses", out / "losses.jsonl")),
              ("checkpoint", getattr(paths, "checkpoint", out / "checkpoints" / "last.pt")),
              ("recipe", getattr(paths, "recipe", out / "recipe.toml")),
              ("run record", getattr(paths, "record", out / "run.json")))
    width = max(len(label) for label, _ in places) + 1
    lines.append("outputs:")
    lines.extend(f"  {label + ':':<{width}} {path}" for label, path in places if Path(path).exists())
    lines.append("next:")
    lines.append(f"  zsgm sample {out} --seeds 0-15 --outdir {out / 'seeds'}    # one PNG per seed + grid.png")
    if recipe.generator.checkpoint == "shapes":
        lines.append(f"  zsgm eval {out}    # judge the shapes-world run with the ground-truth judges")
    return lines
