"""Judge DeltaEdit edits in the shapes world with its ground-truth judges (no CLIP in the judging).

``python -m zsgm_deltaedit.shapes_eval --edits red:blue green:yellow photo:sketch --seeds 0-255`` trains (or finds)
the ``deltaedit-shapes`` mapper of the shipped generator, edits each seed as ``zsgm edit`` does (truncation 0.7,
constant noise) and prints per edit and strength, for a colour target: the fraction of sources not already of the
target colour that become it; for a style target: the fraction of edited images of that style; and always the
mean content IoU between source and edited images (:func:`zsgm.toy.judges.content_iou`) and the fraction still
"photo". ``--json`` saves the numbers, ``--grid`` a grid image per edit (rows: source, then each strength),
``--recipe FILE`` judges the mapper of another recipe (``preset = "deltaedit-shapes"`` plus the changed fields).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from zsgm.cli_options import finite_float
from zsgm.cli_seeds import parse_seeds
from zsgm.toy.judges import classify_colour, classify_style, content_iou
from zsgm.toy.render import COLOURS, STYLES

from zsgm_deltaedit.cli import DEFAULT_TRUNCATION, seed_code
from zsgm_deltaedit.edit import edit_images
from zsgm_deltaedit.recipe import load_mapper_recipe


def judge_edit(source: torch.Tensor, edited: torch.Tensor, target: str) -> dict:
    """Ground-truth numbers for one edit of ``source`` ``[N, 3, H, W]`` into ``edited``."""
    iou = content_iou(source, edited)
    styles = classify_style(edited)
    out = {"n": int(source.shape[0]), "content_iou": float(iou.mean()),
           "photo": sum(s == "photo" for s in styles) / len(styles)}
    if target in COLOURS:
        before, after = classify_colour(source), classify_colour(edited)
        eligible = [i for i, c in enumerate(before) if c != target]
        out["eligible"] = len(eligible)
        out["success"] = sum(after[i] == target for i in eligible) / max(1, len(eligible))
    elif target in STYLES:
        out["success"] = sum(s == target for s in styles) / len(styles)
        before, after = classify_colour(source), classify_colour(edited)
        out["colour_kept"] = sum(a == b for a, b in zip(before, after)) / len(before)
    else:
        out["success"] = None  # no judge for this target
    return out


def source_numbers(source: torch.Tensor) -> dict:
    """What the judges say of the unedited images: style fractions and colour counts."""
    styles, colours = classify_style(source), classify_colour(source)
    return {"styles": {s: styles.count(s) / len(styles) for s in sorted(set(styles))},
            "colours": {str(c): colours.count(c) for c in sorted(set(colours), key=str)}}


def shapes_mapper(recipe=None, *, device: str = "cpu", progress: bool = True):
    """``(generator, trained mapper)``: the shipped shapes generator (eval mode) and its mapper for ``recipe``
    (default: the ``deltaedit-shapes`` preset), found in the cache or trained on first use."""
    from zsgm.toy.assets import load_shapes_generator

    from zsgm_deltaedit.mappers import ensure_mapper
    from zsgm_deltaedit.recipe import mapper_preset

    generator, _ = load_shapes_generator(device=device)
    generator = generator.eval()
    recipe = recipe if recipe is not None else mapper_preset("deltaedit-shapes")
    return generator, ensure_mapper(generator, recipe, device=device, progress=progress)


def seed_batch(generator, seeds: list[int], *, device: str = "cpu"):
    """``(source [N, 3, H, W], ws [N, n_latent, D], noise)`` of ``seeds`` as ``zsgm edit`` draws them (truncation
    0.7, constant noise)."""
    mean = generator.default_mean_latent()
    codes = [seed_code(generator, s, truncation=DEFAULT_TRUNCATION, mean=mean, noise_mode="const", device=device)
             for s in seeds]
    source = torch.cat([c[0] for c in codes])
    ws = torch.cat([c[1] for c in codes])
    return source, ws, generator.make_noise(len(seeds), mode="const")


def run(edits: list[tuple[str, str]], *, seeds: list[int], strengths: list[float] | None, thetas: list[float] | None,
        grid_dir: Path | None, layer_sets: list | None = None, device: str = "cpu", progress: bool = True,
        recipe=None, torgb: float | None = None) -> dict:
    from zsgm.io_utils import image_grid, save_png

    started = time.time()
    generator, trained = shapes_mapper(recipe, device=device, progress=progress)
    setup_seconds = time.time() - started
    source, ws, noise = seed_batch(generator, seeds, device=device)
    results = {"mapper": str(trained.folder), "setup_seconds": setup_seconds, "seeds": len(seeds),
               "source": source_numbers(source), "rows": []}
    print(json.dumps({"source": results["source"]}))
    layer_sets = layer_sets or [trained.recipe.edit.layers]
    strengths = strengths or [trained.recipe.edit.strength]
    torgb = trained.recipe.edit.torgb if torgb is None else torgb
    thetas = thetas or [trained.recipe.edit.theta]
    for (neutral, target), theta, layers in itertools.product(edits, thetas, layer_sets):
        with torch.no_grad():
            images = edit_images(generator, ws, mapper=trained.mapper, relevance=trained.relevance,
                                 clip_model=trained.clip_model, neutral=neutral, target=target, theta=theta,
                                 strengths=strengths, noise=noise, templates=trained.recipe.clip.templates,
                                 layers=layers, torgb_weight=torgb, torgb=trained.torgb_direction)
        for k, strength in enumerate(strengths):
            row = {"neutral": neutral, "target": target, "theta": theta, "strength": strength, "layers": layers,
                   "torgb": torgb,
                   **judge_edit(source, images[k], target)}
            results["rows"].append(row)
            print(json.dumps(row))
        if grid_dir is not None:
            cols = min(12, len(seeds))
            rows = [source[:cols]] + [images[k][:cols] for k in range(len(strengths))]
            tag = "all" if layers is None else "-".join(map(str, layers))
            save_png(image_grid(rows), grid_dir / f"{neutral}-{target}-theta{theta:g}-layers{tag}.png")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edits", nargs="+", required=True, metavar="NEUTRAL:TARGET")
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-255"))
    p.add_argument("--strengths", type=float, nargs="+", default=None,
                   help="(default: the mapper recipe's single-image strength, 1.5 for deltaedit-shapes)")
    p.add_argument("--thetas", type=float, nargs="+", default=None, help="(default: the mapper recipe's)")
    p.add_argument("--layers", nargs="+", default=None, metavar="LIST",
                   help="style-layer sets to try, e.g. all 3,4,5,6 (default: the mapper recipe's)")
    p.add_argument("--torgb", type=finite_float(low=0.0), default=None, metavar="W",
                   help="ToRGB colour step per unit strength (default: the mapper recipe's; 0: off, as released)")
    p.add_argument("--json", type=Path)
    p.add_argument("--grid", type=Path, help="folder for one grid per edit")
    p.add_argument("--recipe", type=Path, metavar="FILE",
                   help="mapper recipe TOML (e.g. preset = \"deltaedit-shapes\" plus changed fields); default: the "
                        "deltaedit-shapes preset")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    edits = [tuple(e.split(":", 1)) for e in args.edits]
    layer_sets = None if args.layers is None else [None if x == "all" else [int(k) for k in x.split(",")]
                                                     for x in args.layers]
    results = run(edits, seeds=args.seeds, strengths=args.strengths, thetas=args.thetas, grid_dir=args.grid,
                  layer_sets=layer_sets, recipe=None if args.recipe is None else load_mapper_recipe(args.recipe),
                  torgb=args.torgb)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
