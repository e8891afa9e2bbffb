"""Colour edits of the shapes DeltaEdit mapper along other paths than the preset's (docs/DELTAEDIT_SHAPES.md,
"Why red -> blue stays near 0.8 photo"): per-layer weights of the gate, a stricter relevance threshold on the coarse
layers, only those coarse channels that keep the layout, and edits applied in several re-encoded steps. None of
these is a ``zsgm edit`` option: this script measures them, with the world's ground-truth judges (as
``python -m zsgm_deltaedit.shapes_eval``).

    python benchmarks/deltaedit_colour_paths.py --seeds 1000-1255 --layers 4,5,6 --strengths 1.5 2
    python benchmarks/deltaedit_colour_paths.py --seeds 1000-1255 --layers 3:0.3,4,5,6 --strengths 1.5 2
    python benchmarks/deltaedit_colour_paths.py --seeds 1000-1255 --coarse-layers 0,1,2,3 --coarse-theta 0.3
    python benchmarks/deltaedit_colour_paths.py --seeds 1000-1255 --iterations 2 --strengths 2 2.5
    python benchmarks/deltaedit_colour_paths.py --seeds 1000-1255 --coarse-layers 0,1,2,3 --coarse-theta 0.1 \
        --keep-layout 0.9 --strengths 1.75 2
    python benchmarks/deltaedit_colour_paths.py --seeds 1000-1255 --strengths 2 --grid-colour yellow --grid out.png

Each line printed is one strength: the target rate (sources not already of the target colour that become it),
content IoU and the fraction still "photo". The mapper is the ``deltaedit-shapes`` preset's (or ``--recipe``'s),
found in the cache or trained on first use. The edits here leave out the preset's ToRGB colour step
(``edit.torgb``): they are the released edit along other paths.

``--keep-layout TAU`` lets a coarse channel move only if it keeps the layout: a layout score per channel, measured
like the relevance (the channel set to its mean -/+ ``--layout-alpha`` standard deviations on the images of
``--layout-seeds``), is the mean correlation over images of the two renders' colour-gradient magnitudes (1: the
edges stay where they were, only colours change; low: shapes move). It needs no judge and no CLIP; over all 448
channels its ranking agrees with the judges' content IoU of the same pairs (correlation 0.98 at 5 sigma).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def edge_magnitude(img: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, (H-1)(W-1)]``: the colour-gradient magnitude of each image."""
    gx = img[..., :, 1:] - img[..., :, :-1]  # [N, 3, H, W-1]
    gy = img[..., 1:, :] - img[..., :-1, :]  # [N, 3, H-1, W]
    return (gx[..., :-1, :].pow(2).sum(1) + gy[..., :, :-1].pow(2).sum(1)).sqrt().flatten(1)


def layout_scores(generator, s, ws, noise, mean, std, *, alpha: float) -> torch.Tensor:
    """``[C]``: per channel, the mean over images of the correlation of the edge magnitudes of the renders at
    ``mean -/+ alpha std`` (``s`` ``[M, C]``, ``ws`` ``[M, n_latent, D]``)."""
    from zsgm.generator.stylespace import synthesis_from_styles

    out = torch.zeros(s.shape[1])
    for c in range(s.shape[1]):
        pair = []
        for sign in (-1.0, 1.0):
            moved = s.clone()
            moved[:, c] = mean[c] + sign * alpha * std[c]
            edges = edge_magnitude(synthesis_from_styles(generator, moved, ws, noise=noise))
            pair.append(edges - edges.mean(1, keepdim=True))
        a, b = pair
        out[c] = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)).mean()
    return out


def gate(generator, trained, delta_t, *, theta: float, layers: str, coarse_layers: str | None,
         coarse_theta: float | None, layout: torch.Tensor | None = None,
         keep_layout: float | None = None) -> torch.Tensor:
    """float ``[C]``: relevance gate times per-layer weights (``"3:0.3,4,5,6"``), plus the channels of
    ``coarse_layers`` that pass the stricter ``coarse_theta`` (and, with ``keep_layout``, have a ``layout`` score of
    at least that)."""
    from zsgm_deltaedit.edit import layer_mask, relevance_mask

    mask = torch.zeros(trained.relevance.shape[0])
    for part in layers.split(","):
        index, _, weight = part.partition(":")
        mask = mask + layer_mask(generator, [int(index)]).float() * (float(weight) if weight else 1.0)
    mask = mask * relevance_mask(trained.relevance, delta_t, theta).float()
    if coarse_layers:
        coarse = layer_mask(generator, [int(k) for k in coarse_layers.split(",")]).float()
        coarse = coarse * relevance_mask(trained.relevance, delta_t, coarse_theta).float()
        if keep_layout is not None:
            coarse = coarse * (layout >= keep_layout).float()
        mask = torch.maximum(mask, coarse)
    return mask


def main(argv=None) -> int:
    from zsgm.cli_seeds import parse_seeds
    from zsgm.generator.stylespace import synthesis_from_styles, ws_to_styles
    from zsgm.io_utils import image_grid, save_png
    from zsgm.toy.judges import classify_colour

    from safetensors.torch import load_file

    from zsgm_deltaedit.edit import edit_styles, text_delta
    from zsgm_deltaedit.recipe import load_mapper_recipe
    from zsgm_deltaedit.relevance import RELEVANCE_FILE
    from zsgm_deltaedit.shapes_eval import judge_edit, seed_batch, shapes_mapper

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", type=Path, help="mapper recipe TOML (default: the deltaedit-shapes preset)")
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1000-1255"))
    p.add_argument("--neutral", default="red")
    p.add_argument("--target", default="blue")
    p.add_argument("--theta", type=float, help="relevance threshold (default: the recipe's)")
    p.add_argument("--layers", default="4,5,6", help="style layers and optional weights, e.g. 3:0.3,4,5,6")
    p.add_argument("--coarse-layers", help="layers whose channels pass with --coarse-theta, e.g. 0,1,2,3")
    p.add_argument("--coarse-theta", type=float, default=0.3)
    p.add_argument("--keep-layout", type=float, metavar="TAU",
                   help="coarse channels must also have a layout score of at least TAU (see above)")
    p.add_argument("--layout-alpha", type=float, default=5.0, help="perturbation of the layout score, in sigmas")
    p.add_argument("--layout-seeds", type=parse_seeds, default=parse_seeds("3000-3015"),
                   help="images of the layout score (not the judged ones)")
    p.add_argument("--iterations", type=int, default=1, help="steps of strength/iterations, re-encoded each time")
    p.add_argument("--strengths", type=float, nargs="+", default=[1.5, 2.0])
    p.add_argument("--grid", type=Path, help="PNG: sources of --grid-colour (first 12) over their edits")
    p.add_argument("--grid-colour", default="yellow")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.keep_layout is not None and not args.coarse_layers:
        p.error("--keep-layout TAU filters the channels of --coarse-layers; give those too")
    torch.set_num_threads(args.threads)

    generator, trained = shapes_mapper(load_mapper_recipe(args.recipe) if args.recipe else None, progress=False)
    source, ws, noise = seed_batch(generator, args.seeds)  # [N, 3, H, W], [N, n_latent, D]
    theta = trained.recipe.edit.theta if args.theta is None else args.theta
    with torch.no_grad():
        delta_t = text_delta(trained.clip_model, args.neutral, args.target)
        layout = None
        if args.keep_layout is not None:
            stats = load_file(str(trained.folder / RELEVANCE_FILE))  # the S mean and std beside the relevance
            _, ws_l, noise_l = seed_batch(generator, args.layout_seeds)
            layout = layout_scores(generator, ws_to_styles(generator, ws_l), ws_l, noise_l, stats["mean"],
                                   stats["std"], alpha=args.layout_alpha)
        mask = gate(generator, trained, delta_t, theta=theta, layers=args.layers, coarse_layers=args.coarse_layers,
                    coarse_theta=args.coarse_theta, layout=layout, keep_layout=args.keep_layout)
        s0 = ws_to_styles(generator, ws)  # [N, C]
        grid_rows = []
        for strength in args.strengths:
            s, image = s0, source
            for _ in range(args.iterations):
                s = s + (strength / args.iterations) * edit_styles(
                    trained.mapper, s, trained.clip_model.encode_image(image), delta_t, mask)
                image = synthesis_from_styles(generator, s, ws, noise=noise)
            r = judge_edit(source, image, args.target)
            print(json.dumps({"strength": strength, "iterations": args.iterations, "layers": args.layers,
                              "coarse": args.coarse_layers and f"{args.coarse_layers}@{args.coarse_theta}",
                              "keep_layout": args.keep_layout,
                              "channels": int((mask > 0).sum()), "target_rate": round(r["success"], 3),
                              "content_iou": round(r["content_iou"], 3), "photo": round(r["photo"], 3)}), flush=True)
            grid_rows.append(image)
    if args.grid is not None:
        picked = [i for i, c in enumerate(classify_colour(source)) if c == args.grid_colour][:12]
        save_png(image_grid([source[picked]] + [row[picked] for row in grid_rows]), args.grid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
