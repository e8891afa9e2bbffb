"""The ``oneclip`` preset on one shapes reference with parts of the method taken out or changed, judged with the
world's ground-truth judges (docs/SHAPES_BENCHMARK.md, "Diagnosis"). Not a product command: it measures why the
preset does not reach the reference's style on the shapes world.

    python benchmarks/oneshot_ablation.py --reference pastel-square-red-48 --out /tmp/abl/preset
    python benchmarks/oneshot_ablation.py --reference pastel-square-red-48 --out /tmp/abl/rec-only \\
        --set reference-search.init='"best-of"' --set reference-reconstruction.ref_freq=1 \\
        --drop adversarial clip-consistency patch-contrastive
    python benchmarks/oneshot_ablation.py --reference pastel-square-red-48 --out /tmp/abl/coarse-random-d \\
        --set reference-search.init='"best-of"' \\
        --set frozen-layers.modules='["to_rgb1", "to_rgbs", "input", "conv1", "convs.0", "convs.1"]' \\
        --random-discriminator

    python benchmarks/oneshot_ablation.py --score-styles   # the shipped discriminator's mean logit per style
    python benchmarks/oneshot_ablation.py --rejudge /tmp/abl/coarse-random-d   # with inference-time style mixing

The recipe is exactly what ``zsgm adapt --preset oneclip --reference REF.png --generator shapes --clip shapes`` builds
(seed 0, no progress bar, no intermediate grids or checkpoints), then ``--drop`` removes techniques by ``use`` and
``--set USE.OPTION=JSON`` changes a technique's option. ``--random-discriminator`` makes the adversarial technique find
no discriminator in the source, so it trains its own seeded random one (with its warning), as for a generator file
without ``d``. Prints one JSON line: target rate, content IoU, background artefact, seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def recipe_dict(reference: Path, out: Path, *, drop: list[str], sets: list[str], seed: int) -> dict:
    """The recipe ``zsgm adapt --preset oneclip --reference REF --generator shapes --clip shapes`` builds (its own
    :func:`zsgm.cli_adapt.build_recipe_dict`), with the changes applied."""
    from zsgm.cli import make_parser
    from zsgm.cli_adapt import build_recipe_dict
    from zsgm.plugins import get_registry

    args = make_parser().parse_args(
        ["adapt", "--preset", "oneclip", "--reference", str(reference), "--generator", "shapes", "--clip", "shapes",
         "--out", str(out), "--seed", str(seed), "--no-progress", "--sample-every", "0", "--checkpoint-every", "0"])
    data = build_recipe_dict(args, get_registry())
    unknown = set(drop) - {t["use"] for t in data["techniques"]}
    if unknown:
        raise SystemExit(f"--drop: no technique {sorted(unknown)} in the preset")
    data["techniques"] = [t for t in data["techniques"] if t["use"] not in drop]
    by_use = {t["use"]: t for t in data["techniques"]}
    for item in sets:
        target, _, value = item.partition("=")
        use, _, option = target.partition(".")
        if use not in by_use or not option or not value:
            raise SystemExit(f"--set {item!r}: expected USE.OPTION=JSON with USE one of {sorted(by_use)}")
        by_use[use][option] = json.loads(value)
    return data


def score_styles(n: int = 128, seed: int = 0) -> dict:
    """Mean logit of the shipped shapes discriminator on ``n`` renders of each style and on ``n`` generator samples."""
    import numpy as np

    from zsgm.generator.discriminator_files import load_discriminator_source
    from zsgm.toy.assets import load_shapes_generator
    from zsgm.toy.render import STYLES, render_batch, sample_params

    d, _ = load_discriminator_source("shapes")
    g, _ = load_shapes_generator(device="cpu")
    rng = np.random.default_rng(seed)
    out = {}
    with torch.no_grad():
        for style in STYLES:
            out[f"{style} renders"] = float(d(render_batch(sample_params(n, rng=rng, styles=[style]))).mean())
        z = torch.randn(n, g.arch.style_dim, generator=torch.Generator().manual_seed(seed))
        w = g.mapping(z)[:, None].repeat(1, g.n_latent, 1)  # [n, n_latent, D]
        out["generator samples"] = float(d(g.synthesis(w, noise=g.make_noise(n, mode="const"))).mean())
    return {k: round(v, 2) for k, v in out.items()}


class _FineSlotsMixed(torch.nn.Module):
    """A generator whose synthesis mixes the fine slots first (:func:`zsgm.style_mixing.mix_fine_slots`)."""

    def __init__(self, generator, with_: torch.Tensor, from_slot: int):
        super().__init__()
        self.generator, self.with_, self.from_slot, self.arch = generator, with_, from_slot, generator.arch

    def synthesis(self, ws, noise=None):
        from zsgm.style_mixing import mix_fine_slots

        return self.generator.synthesis(mix_fine_slots(ws, with_=self.with_, from_slot=self.from_slot), noise=noise)


def rejudge(run_dir: Path) -> dict:
    """A finished run judged as ``evaluate_run`` does (same codes and noise), plainly and with One-shot CLIP's
    inference-time mixing of the fine slots (mean latent or reference latent, from the default slot and from 3)."""
    from zsgm.metrics.samples import draw_samples
    from zsgm.plugins import get_registry
    from zsgm.style_mixing import default_mix_slot, mixing_latent
    from zsgm.toy.evaluate import eval_settings, judge_task, load_finished_run, reference_target

    recipe, g_src, g_tgt = load_finished_run(run_dir, get_registry())
    g_src, g_tgt = g_src.eval(), g_tgt.eval()
    target = reference_target(recipe.target_images[0], size=g_src.arch.size)
    variants = {"plain": g_tgt}
    for mode in ("mean", "reference"):
        latent = mixing_latent(g_tgt, mode, run_dir=run_dir)
        for slot in sorted({default_mix_slot(g_tgt.n_latent), 3}):
            variants[f"{mode} from slot {slot}"] = _FineSlotsMixed(g_tgt, latent, slot)
    out = {"run": str(run_dir), "target": target}
    with torch.no_grad():  # the source once, then every variant, on evaluate_run's codes and noise
        images = draw_samples([g_src, *variants.values()], mapper=g_src, settings=eval_settings())
    for name, tgt in zip(variants, images[1:]):
        r = judge_task(images[0], tgt, target=target)
        out[name] = {k: round(r[k], 3) for k in ("target_rate", "content_iou", "background_artefact")}
    return out


def main(argv=None) -> int:
    from zsgm.loop import adapt
    from zsgm.recipe import recipe_from_dict
    from zsgm.toy.evaluate import evaluate_run
    from zsgm.toy.references import REFERENCES, write_references

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", choices=[r.name for r in REFERENCES])
    p.add_argument("--out", type=Path, help="run directory (a new one)")
    p.add_argument("--score-styles", action="store_true", help="only print the shipped D's mean logit per style")
    p.add_argument("--rejudge", type=Path, nargs="+", metavar="RUN",
                   help="only judge finished runs again, plainly and with inference-time style mixing")
    p.add_argument("--drop", nargs="+", default=[], metavar="USE")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="USE.OPTION=JSON")
    p.add_argument("--random-discriminator", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.score_styles:
        print(json.dumps(score_styles()))
        return 0
    if args.rejudge:
        for run_dir in args.rejudge:
            print(json.dumps(rejudge(run_dir)))
        return 0
    if args.reference is None or args.out is None:
        p.error("--reference and --out are required (unless --score-styles)")

    files = {path.stem: path for path in write_references(args.out.parent / "references")}
    data = recipe_dict(files[args.reference], args.out, drop=args.drop, sets=args.sets, seed=args.seed)
    if args.random_discriminator:
        import zsgm.generator.discriminator_files as discriminator_files

        discriminator_files.load_discriminator_source = \
            lambda *_a, **_k: (None, {"reason": "--random-discriminator: no discriminator taken from the source"})
    started = time.time()
    adapt(recipe_from_dict(data, source=f"oneshot ablation on {args.reference}"), out_dir=args.out, resume=False)
    record = evaluate_run(args.out)
    print(json.dumps({"reference": args.reference, "drop": args.drop, "set": args.sets,
                      "random_discriminator": args.random_discriminator, "seconds": round(time.time() - started),
                      **{k: round(record[k], 3) for k in ("target_rate", "content_iou", "background_artefact")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
