"""One-shot benchmark on the shapes world: each reference of :mod:`zsgm.toy.references`, adapted with the
``oneclip`` preset through the command line and with NADA's ``image-target`` on the same reference, judged by
the ground-truth judges for the reference's style.

    python -m zsgm.toy.oneshot_benchmark --out runs/oneshot --table docs/oneshot-rows.md

The one-shot run is exactly ``zsgm adapt --preset oneclip --reference REF.png --generator shapes --clip shapes
--out RUN`` (the issue's command; the wall time in the table is that command's, reference search included).
The NADA row is the README's shapes recipe (directional loss, fine slots 3-7 trained, shared noise) with the
reference as its image target instead of a target text.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from zsgm.io_utils import atomic_write_text
from zsgm.toy.benchmark import write_results
from zsgm.toy.evaluate import COLUMNS, evaluate_run
from zsgm.toy.references import REFERENCES, write_references


def run_oneclip(ref: Path, out: Path, *, seed: int, extra: list[str] | None = None) -> float:
    """``zsgm adapt --preset oneclip --reference ref ...``; returns the command's wall time."""
    from zsgm.cli import main as cli_main

    argv = ["adapt", "--preset", "oneclip", "--reference", str(ref), "--generator", "shapes", "--clip", "shapes",
            "--out", str(out), "--seed", str(seed), "--no-progress", *(extra or [])]
    if (out / "checkpoints" / "last.pt").exists():
        argv.append("--resume")
    started = time.time()
    status = cli_main(argv)
    if status != 0:
        raise RuntimeError(f"zsgm {' '.join(argv)} exited with {status}")
    return time.time() - started


def nada_image_target_recipe(ref: Path, *, seed: int) -> dict:
    """The README's shapes recipe with ``ref`` as NADA's image target instead of a target text."""
    from zsgm.recipe import read_recipe_file

    data = read_recipe_file(Path(__file__).resolve().parents[2] / "examples" / "recipes" / "shapes-sketch.toml")
    data.pop("target", None)
    data["target_images"] = [str(ref)]
    data["techniques"] = [{"use": "directional"}, {"use": "image-target"},
                          {"use": "layer-freeze", "slots": [3, 4, 5, 6, 7], "slot_map": "exact"}]
    data["run"] = {**data.get("run", {}), "seed": seed, "progress": False, "sample_every": 0, "checkpoint_every": 0}
    return data


def run_nada(ref: Path, out: Path, *, seed: int) -> float:
    from zsgm.loop import adapt
    from zsgm.recipe import recipe_from_dict

    recipe = recipe_from_dict(nada_image_target_recipe(ref, seed=seed), source=f"nada image-target on {ref.name}")
    started = time.time()
    adapt(recipe, out_dir=out, resume=(out / "checkpoints" / "last.pt").exists())
    return time.time() - started


def table(records: list[dict]) -> str:
    head = "| reference | method | " + " | ".join(label for _, label in COLUMNS) + " | seconds |"
    rows = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for r in records:
        cells = [r["reference"], r["method"]] + [f"{r[k]:.3f}" for k, _ in COLUMNS] + [f"{r['seconds']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/oneshot-benchmark")
    parser.add_argument("--references", nargs="+", help="names from zsgm.toy.references (default: all)")
    parser.add_argument("--methods", nargs="+", default=["oneclip", "nada-image-target"],
                        choices=["oneclip", "nada-image-target"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-eval", type=int, default=256)
    parser.add_argument("--table", help="write the markdown table here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    refs = [r for r in REFERENCES if not args.references or r.name in args.references]
    paths = write_references(out / "references", refs)
    records = []
    for ref, path in zip(refs, paths):
        for method in args.methods:
            run_dir = out / f"{method}--{ref.name}"
            seconds = (run_oneclip if method == "oneclip" else run_nada)(path.resolve(), run_dir, seed=args.seed)
            record = evaluate_run(run_dir, n=args.n_eval)
            record.update({"reference": ref.name, "method": method, "seconds": seconds})
            atomic_write_text(run_dir / "eval.json", json.dumps(record, indent=2) + "\n")
            records.append(record)
            print(table([record]).splitlines()[-1], flush=True)
    write_results(records, table(records), out=out, table_path=args.table)


if __name__ == "__main__":
    main()
