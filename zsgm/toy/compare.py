"""The method comparison on the shapes world: every registered preset that takes a text target, fixed tasks and
seeds, judged by the shapes judges, written as one Markdown document.

    python -m zsgm.toy.compare --out runs/compare --table docs/METHOD_COMPARISON.md

Each (preset, task, seed) run is the benchmark's (:func:`zsgm.toy.benchmark.run_one`: the shipped shapes
generator and shapes CLIP, the preset's own settings) in ``<out>/seed-<seed>/``. A run whose ``eval.json`` holds
its wall time is finished and is read back, not run again, so an interrupted comparison continues where it stopped
(a half-done run resumes from its checkpoint; its wall time is then that of the resumed part only).
``--noise preset shared`` runs everything twice: with each preset's own ``optim.noise`` and with shared noise.

Presets that cannot run from a text target alone (one-shot presets read a reference image) are listed with the
reason and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from zsgm.io_utils import atomic_write_text
from zsgm.toy.benchmark import run_dir_name, run_one, shapes_recipe_data, task_texts, write_results
from zsgm.toy.evaluate import COLUMNS

DEFAULT_TASKS = ("photo:sketch", "red:blue", "photo:pastel")
DEFAULT_SEEDS = (0,)
DEFAULT_N_EVAL = 256
COMMAND = "python -m zsgm.toy.compare"


def shapes_presets(registry) -> tuple[list[str], list[tuple[str, str]]]:
    """Split the registered presets into those that run on the shapes world from a text target and the others.

    A preset applies when none of its techniques reads target images (a one-shot reference) and its recipe,
    on the shapes generator with the text task photo -> sketch, builds without error.

    Returns:
        ``(applicable names, [(skipped name, one-line reason), ...])``, both sorted by name.
    """
    from zsgm.recipe import recipe_from_dict

    applicable, skipped = [], []
    for name in registry.presets.names():
        try:
            data = shapes_recipe_data(name, "photo", "sketch", registry, seed=0)
        except Exception as exc:  # noqa: BLE001 - a preset that cannot even build is reported, not fatal
            skipped.append((name, f"its recipe does not build for the shapes generator: {exc}"))
            continue
        readers = [t["use"] for t in data.get("techniques", [])
                   if t.get("use") in registry.techniques and registry.techniques.get(t["use"]).reads_target_images]
        if readers:
            skipped.append((name, f"needs a reference image (read by {', '.join(readers)}), not a text target"))
            continue
        try:
            recipe_from_dict(data, registry=registry, source=f"preset {name} on shapes")
        except Exception as exc:  # noqa: BLE001
            skipped.append((name, " ".join(str(exc).split())))
            continue
        applicable.append(name)
    return applicable, skipped


def run_dir(out: Path, preset: str, task: str, seed: int, *, noise: str | None = None) -> Path:
    """Where :func:`zsgm.toy.benchmark.run_one` puts the run of ``preset`` on ``task`` for ``seed``
    (:func:`zsgm.toy.benchmark.run_dir_name` under ``seed-<seed>``)."""
    return Path(out) / f"seed-{seed}" / run_dir_name(preset, task, noise=noise)


def finished_record(path: Path) -> dict | None:
    """The record in ``path/eval.json`` when the run was adapted and judged by this comparison, else None."""
    try:
        record = json.loads((path / "eval.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "seconds" in record and "method" in record else None


def compare(out: str | Path, *, presets: list[str] | None = None, tasks=DEFAULT_TASKS, seeds=DEFAULT_SEEDS,
            n_eval: int = DEFAULT_N_EVAL, steps: int | None = None, noises=(None,), registry=None,
            progress=print) -> tuple[list[dict], list[tuple[str, str]]]:
    """Run (or read back) every (preset, task, seed) and judge it.

    Args:
        out: root folder of the runs (``<out>/seed-<seed>/<preset>--<source>-to-<target>``).
        presets: preset names (default: every applicable one, :func:`shapes_presets`).
        steps: override every preset's step count (quick checks; the table says so per row).
        noises: run everything once per entry: None keeps each preset's ``optim.noise``, "fresh" or "shared"
            overrides it (the row then says so).
        progress: called with one line per finished row.

    Returns:
        ``(records, skipped presets with reasons)``; each record is the benchmark's (judges' scores, ``method``,
        ``seconds``) plus ``preset`` and ``seed``.
    """
    from zsgm.plugins import get_registry

    registry = registry or get_registry()
    applicable, skipped = shapes_presets(registry)
    if presets is None:
        presets = applicable
    else:
        reasons = dict(skipped)
        bad = [p for p in presets if p not in applicable]
        if bad:
            known = ", ".join(applicable)
            raise ValueError("; ".join(f"preset {p!r}: {reasons.get(p, 'not registered')}" for p in bad)
                             + f" (applicable: {known})")
    for task in tasks:
        task_texts(task)  # a malformed task fails before any run
    records = []
    for noise in noises:
        for seed in seeds:
            for task in tasks:
                for preset in presets:
                    path = run_dir(Path(out), preset, task, seed, noise=noise)
                    record = finished_record(path)
                    if record is None:
                        record = run_one(preset, task, out_root=path.parent, steps=steps, seed=seed,
                                         registry=registry, n_eval=n_eval, noise=noise)
                        record.update({"preset": preset, "seed": seed, "noise": noise})
                        atomic_write_text(path / "eval.json", json.dumps(record, indent=2) + "\n")
                    records.append(record)
                    progress(table_rows([record])[-1])
    return records, skipped


HEAD = ["preset", "task", "seed", "steps"] + [label for _, label in COLUMNS] + ["wall seconds"]


def table_rows(records: list[dict]) -> list[str]:
    """Markdown rows (no header) of comparison records."""
    rows = []
    for r in records:
        cells = [r["method"], f"{r['source']} -> {r['target']}", str(r["seed"]), str(r["steps"])] \
            + [f"{r[k]:.3f}" for k, _ in COLUMNS] + [f"{r['seconds']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def table(records: list[dict]) -> str:
    """The comparison table: one row per (preset, task, seed)."""
    head = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    return "\n".join(head + table_rows(records)) + "\n"


def summary(records: list[dict]) -> str:
    """Mean of each judge and of the wall time per preset, over its tasks and seeds."""
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    head = ["preset", "runs"] + [f"mean {label}" for _, label in COLUMNS] + ["mean wall seconds"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, rs in by_method.items():
        means = [sum(r[k] for r in rs) / len(rs) for k, _ in COLUMNS]
        wall = sum(r["seconds"] for r in rs) / len(rs)
        rows.append("| " + " | ".join([method, str(len(rs))] + [f"{m:.3f}" for m in means] + [f"{wall:.0f}"]) + " |")
    return "\n".join(rows) + "\n"


def document(records: list[dict], skipped: list[tuple[str, str]], *, command: str, date: str,
             n_eval: int, note: str = "") -> str:
    """The whole Markdown document: how it was made, the table, the per-preset means, the skipped presets."""
    lines = [
        "# Method comparison on the shapes world",
        "",
        f"Generated by `zsgm.toy.compare` on {date}:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Every registered preset that adapts from a text target, with its own settings (steps, batch, learning",
        "rate, noise, layer freezing; a row marked \"shared noise\" replaces the preset's `optim.noise` by one noise",
        "draw per step, the shapes recipes' setting), on the shipped 32-px shapes generator guided by the shipped",
        f"shapes CLIP; each run is judged on {n_eval} source/adapted sample pairs (same latents and noise) by the",
        "shapes world's ground-truth judges (`zsgm/toy/judges.py`, as `zsgm eval` on a shapes run).",
        "",
        "Columns: **target rate**, the share of adapted samples judged to be in the target style (colour tasks: the",
        "target colour, still a photo); **content IoU**, foreground-mask IoU between each adapted sample and its",
        "source sample; **background artefact**, how far the adapted background is from the target style's, relative",
        "to the source's (0 = exactly the target's); **diversity ratio**, pairwise mask diversity of the adapted set",
        "over the source set's; **wall seconds**, the adaptation's wall time on this machine (not the judging).",
        "True edits of the same shapes score 1.00 / 0.99-1.00 / 0.01-0.02 / 1.00 (`docs/SHAPES_BENCHMARK.md`).",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += [table(records), "Per preset, over its tasks and seeds:", "", summary(records)]
    if skipped:
        lines += ["Presets not in the table:", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in skipped]
        lines += [""]
    lines += ["DeltaEdit (`zsgm edit`, plugin zsgm-deltaedit) edits the samples of a fixed generator instead of",
              "adapting it, so it is not a preset and has no row here; `docs/DELTAEDIT_SHAPES.md` measures it on the",
              "shapes world.",
              ""]
    return "\n".join(lines)


def shown_command(argv: list[str]) -> str:
    """The command line as the document prints it: the thread setting if one is set, and ``--note TEXT`` without its
    text (the note is printed under the command anyway)."""
    args, skip = [], False
    for a in argv:
        if skip:
            args.append("TEXT")
            skip = False
            continue
        if a.startswith("--note="):
            a = "--note=TEXT"
        skip = a == "--note"
        args.append(shlex.quote(a))  # the placeholders TEXT and --note=TEXT come back unchanged
    threads = os.environ.get("OMP_NUM_THREADS")
    return " ".join(([f"OMP_NUM_THREADS={shlex.quote(threads)}"] if threads else []) + [COMMAND] + args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="root folder of the runs (resumable: finished runs are read back)")
    parser.add_argument("--table", help="write the Markdown document here (e.g. docs/METHOD_COMPARISON.md; default: "
                        "print it only)")
    parser.add_argument("--presets", nargs="+", help="only these presets (default: every applicable one)")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="SOURCE:TARGET texts "
                        f"(default: {' '.join(DEFAULT_TASKS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS), help="run seeds (default: 0)")
    parser.add_argument("--n-eval", type=int, default=DEFAULT_N_EVAL,
                        help="judged sample pairs per run (default: %(default)s)")
    parser.add_argument("--steps", type=int,
                        help="override every preset's step count (quick checks only; default: the preset's own)")
    parser.add_argument("--noise", nargs="+", choices=["preset", "fresh", "shared"], default=["preset"],
                        help="run everything once per setting: the preset's own optim.noise, or fresh or shared noise "
                             "for every preset (default: preset)")
    parser.add_argument("--note", default="", help="a paragraph for the document, under the command (e.g. the "
                        "machine and thread count; default: none)")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d", time.gmtime())
    try:
        records, skipped = compare(args.out, presets=args.presets, tasks=args.tasks, seeds=args.seeds,
                                   n_eval=args.n_eval, steps=args.steps,
                                   noises=[None if n == "preset" else n for n in args.noise],
                                   progress=lambda line: print(line, flush=True))
    except (ValueError, KeyError) as exc:  # a bad preset, task or option: one line, not a traceback
        parser.exit(2, f"zsgm.toy.compare: {exc}\n")
    for name, reason in skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    command = shown_command(sys.argv[1:] if argv is None else argv)
    text = document(records, skipped, command=command, date=started, n_eval=args.n_eval,
                    note=args.note)
    write_results(records, text, out=Path(args.out), table_path=args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
