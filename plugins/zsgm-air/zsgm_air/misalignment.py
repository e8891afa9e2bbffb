"""Offset misalignment ``1 - cos(ΔI, ΔT)`` between an image offset and a text offset (AIR's analysis, METHODS.md 5).

Three ways in:

- :func:`misalignment` with a run that uses the ``air`` technique: both curves' current values for ``G_t`` (or
  another generator) on the technique's fixed latent set, ``1 - cos(ΔI_{S->G}, ΔT_{S->T})`` and
  ``1 - cos(ΔI_{A->G}, ΔT_{A->T})``; with generators instead of a run, a concept pair
  (:func:`pair_misalignment`).
- :func:`embedding_misalignment`: precomputed image embeddings of two concepts (paired or not) and their
  template text features.
- The training log: the ``air`` technique writes both values at every refresh (and every ``monitor_every``
  steps) into ``air.jsonl``; ``python -m zsgm_air.misalignment RUN_DIR`` prints the curve and the refresh cost.

Offsets use the AIR rule (normalise each difference, average, normalise) on both sides. ``ΔT_{S->T}`` inside a
run is the run's own template direction (``recipe.clip.text_aggregate``; "air" in the ``air`` preset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Optional

import torch

from zsgm.clip import template_features
from zsgm.clip_templates import IMAGENET_TEMPLATES
from zsgm_air.formulas import air_offset, offset_misalignment, text_offset

__all__ = ["misalignment", "pair_misalignment", "embedding_misalignment", "read_log", "curve", "format_curve",
           "main"]


def embedding_misalignment(e_from: torch.Tensor, e_to: torch.Tensor, t_from: torch.Tensor,
                           t_to: torch.Tensor) -> float:
    """``1 - cos(offset(e_from, e_to), offset(t_from, t_to))``.

    Args:
        e_from / e_to: ``[N, D]`` unit image embeddings; paired rows (the same latent through two generators) or,
            for unpaired image sets, ``[1, D]`` means.
        t_from / t_to: ``[K, D]`` unit text features paired by template (or ``[1, D]``).
    """
    return offset_misalignment(air_offset(e_from, e_to), text_offset(t_from, t_to))


@torch.no_grad()
def pair_misalignment(g_from, g_to, clip_model, text_from: str, text_to: str, ws: torch.Tensor, *,
                      noise: Optional[list] = None, batch_size: int = 50,
                      templates: Iterable[str] = IMAGENET_TEMPLATES) -> dict:
    """Misalignment of a concept pair realised by two generators on the same W+ codes.

    Args:
        g_from / g_to: generators (e.g. the source and an adapted one).
        clip_model: a :class:`zsgm.clip.ClipModel`.
        text_from / text_to: the concept texts ("photo", "sketch").
        ws: ``[N, n_latent, D]`` W+ codes.
        noise: per-layer noise maps ``[N, 1, r, r]`` shared by both generators (default: ``g_from``'s stored
            noise buffers).
        batch_size: generator batch.
        templates: prompt templates of the text offset.

    Returns:
        ``{"misalignment": float, "image_offset": [D], "text_offset": [D]}``.
    """
    n = ws.shape[0]
    if noise is None:
        noise = g_from.make_noise(n, mode="const")
    e_from, e_to = [], []
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        chunk = [m[sl] for m in noise]
        e_from.append(clip_model.encode_image(g_from.synthesis(ws[sl], noise=chunk)))
        e_to.append(clip_model.encode_image(g_to.synthesis(ws[sl], noise=chunk)))
    d_img = air_offset(torch.cat(e_from), torch.cat(e_to))
    templates = list(templates)
    d_txt = text_offset(template_features(clip_model, text_from, templates=templates),
                        template_features(clip_model, text_to, templates=templates))
    return {"misalignment": offset_misalignment(d_img, d_txt), "image_offset": d_img, "text_offset": d_txt}


def misalignment(run_or_generator, *args, **kwargs):
    """Offset misalignment of a run or of a concept pair.

    ``misalignment(run, generator=None)``: for a run using the ``air`` technique (after its setup), a list with
    one dict per CLIP model, ``{"model", "source": 1 - cos(ΔI_{S->G}, ΔT_{S->T}), "anchor": 1 - cos(ΔI_{A->G},
    ΔT_{A->T})}``, for ``generator`` (default ``G_t``) on the technique's fixed latent set.

    ``misalignment(g_from, g_to, clip_model, text_from, text_to, ws, ...)``: :func:`pair_misalignment`.
    """
    if hasattr(run_or_generator, "techniques") and hasattr(run_or_generator, "recipe"):
        from zsgm_air.technique import Air

        run = run_or_generator
        airs = [t for t in run.techniques if isinstance(t, Air)]
        if not airs:
            raise ValueError("misalignment(run): the run has no 'air' technique (use pair_misalignment with "
                             "generators for other runs)")
        if airs[0].anchor_generator is None:
            raise ValueError("misalignment(run): the 'air' technique is not set up yet (call it during or after "
                             "the run's setup)")
        return airs[0].measure(run, *args, **kwargs)
    return pair_misalignment(run_or_generator, *args, **kwargs)


# ---------------------------------------------------------------------------------------------- the log


def read_log(path: str | Path) -> list[dict]:
    """Records of an ``air.jsonl`` (``path`` is the file or the run directory); cut lines are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / "air.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no AIR log (runs with the 'air' technique write air.jsonl)")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def curve(records: list[dict], *, model: int = 0) -> list[dict]:
    """The misalignment curve of one CLIP model: ``[{"step", "event", "source", "anchor", ...}]`` sorted by step."""
    out = []
    for rec in records:
        if rec.get("event") not in ("refresh", "monitor"):
            continue
        row = {"step": rec["step"], "event": rec["event"], "source": rec["mis_source"][model],
               "anchor": rec["mis_anchor"][model], "anchor_from": rec.get("anchor_from"),
               "seconds": rec.get("seconds")}
        if rec["event"] == "refresh":
            row["prompt_loss_start"] = rec["prompt_loss_start"][model]
            row["prompt_loss_end"] = rec["prompt_loss_end"][model]
        out.append(row)
    return sorted(out, key=lambda r: r["step"])


def format_curve(records: list[dict], *, model: int = 0) -> str:
    """A text table of :func:`curve` plus the refresh cost summary."""
    names = next((r.get("models") for r in records if r.get("event") in ("setup", "resume")), None) or []
    name = names[model] if model < len(names) else f"model {model}"
    lines = [f"AIR offset misalignment, 1 - cos(image offset, text offset), CLIP {name}",
             f"{'step':>6}  {'event':<8} {'S->G_t':>8} {'A->G_t':>8} {'anchor':>7}  {'prompt loss':<17} {'sec':>7}"]
    for row in curve(records, model=model):
        anchor = "source" if (row["anchor_from"] is None or row["anchor_from"] < 0) else f"@{row['anchor_from']}"
        prompt = f"{row['prompt_loss_start']:.4f}->{row['prompt_loss_end']:.4f}" if "prompt_loss_start" in row else ""
        sec = f"{row['seconds']:.2f}" if row["seconds"] is not None else ""
        lines.append(f"{row['step']:>6}  {row['event']:<8} {row['source']:>8.4f} {row['anchor']:>8.4f} "
                     f"{anchor:>7}  {prompt:<17} {sec:>7}")
    refreshes = [r for r in records if r.get("event") == "refresh"]
    ends = [r for r in records if r.get("event") == "end"]
    if refreshes or ends:
        last = max(refreshes + ends, key=lambda r: (r["step"], r.get("event") == "end"))
        total, run_s = last.get("refresh_seconds_total"), last.get("run_seconds")
        share = f" ({100 * total / run_s:.1f}% of {run_s:.1f} s)" if total is not None and run_s else ""
        mean = f", {total / len(refreshes):.2f} s each" if refreshes and total is not None else ""
        lines.append(f"refreshes: {len(refreshes)}, refresh time {total or 0:.2f} s{share}{mean}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zsgm_air.misalignment",
                                     description="Print the AIR offset-misalignment curve of a run (air.jsonl).")
    parser.add_argument("path", help="run directory or air.jsonl file")
    parser.add_argument("--model", type=int, default=0, help="CLIP model index (default 0)")
    parser.add_argument("--json", action="store_true", help="print the curve as JSON lines")
    args = parser.parse_args(argv)
    try:
        records = read_log(args.path)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in curve(records, model=args.model):
            print(json.dumps(row))
    else:
        print(format_curve(records, model=args.model))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
