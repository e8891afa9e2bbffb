"""Mine the images a generator fools the shapes CLIP with, as hard negatives for its next training round.

    python -m zsgm.toy.mine_fakes --clip zsgm/toy/assets/shapes_clip.safetensors --out fakes.pt

Augmentation and universal perturbations (:mod:`zsgm.toy.train_clip`) cover the cheap edits one can
foresee. A generator adapted with the directional loss finds others: at the NADA preset's learning rate
the shapes generator turns every photo into a pale, noisy, pinkish-white field whose CLIP direction is
*better* aligned with "photo -> sketch" than a true sketch's (measured: 0.70 against 0.66). Those images
are neither a sketch nor any other style, and the ground-truth judges (:mod:`zsgm.toy.judges`, no CLIP)
say so. This module runs short NADA adaptations of the shipped generator for several targets and learning
rates, samples each adapted generator, and keeps the samples the judges classify as "other" (no style of
the world): images of the form a guided generator actually produces, which the CLIP must not take for a
style. :func:`zsgm.toy.train_clip.train` fine-tunes on them with captions such as "a glitched picture"
(:data:`zsgm.toy.captions.OTHER_CAPTIONS`).

The file written is a safetensors file with ``images`` (uint8 ``[N, 3, 32, 32]``), the source generator's
image for the same latent and noise (``sources``, same shape), the index of the run's task (``task``, int64
``[N]``) and, in its metadata, the tasks (``[source, target]`` texts) and the runs with their counts. The
pairs let the next round also penalise the fake's *direction* (``E(fake) - E(source)``) along the text
direction of its task, which is what the adaptation loss rewarded. With ``--max-iou`` the samples whose
shape collapsed or moved (content IoU with their source below the bound) are kept as well, whatever
their style, flagged ``other = 0``: they feed only that direction hinge, since a collapsed sketch is
still a sketch.

``--trajectory`` mines differently (:func:`mine_trajectories`): it keeps *every* sample along each task's
NADA run, at several steps, with the true edit of the same latent (``truths``) and the step (``step``), for
the ranking term of :func:`zsgm.toy.train_clip.train` (``--rank-weight``): the guide is trained with the
generator in the loop.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

# (source, target) pairs and (lr, steps) schedules of the adaptations mined by default: every style and
# colour the world has, at the preset's learning rate (fast collapse) and below it (slow drift).
DEFAULT_TASKS = (("photo", "sketch"), ("photo", "night"), ("photo", "pastel"), ("red", "blue"),
                 ("blue", "green"), ("green", "yellow"), ("yellow", "red"))
DEFAULT_SCHEDULES = ((0.002, 40), (0.002, 300), (0.0005, 300), (0.0002, 600))


def adapted_generator(clip_path: Path, source: str, target: str, *, lr: float, steps: int, seed: int,
                      work: Path, registry):
    """Adapt the shipped shapes generator with the NADA preset (given lr / steps) guided by ``clip_path``."""
    (_, generator), = trajectory_generators(clip_path, source, target, snapshots=(steps,), seed=seed, work=work,
                                            registry=registry, lr=lr)
    return generator


def trajectory_generators(clip_path: Path, source: str, target: str, *, snapshots: tuple[int, ...], seed: int,
                          work: Path, registry, lr: float | None = None, freeze_slots: list[int] | None = None):
    """Yield ``(step, generator)`` along one NADA preset adaptation guided by ``clip_path``: the run stops
    after each of ``snapshots`` (ascending step counts, the last one the run's length), hands out the
    generator it has reached, and resumes from its checkpoint, so every snapshot lies on one trajectory.
    ``lr`` None keeps the preset's learning rate; ``freeze_slots`` trains only those W+ slots' layers
    (layer-freeze ``slots``, exact slot map), as the README's recipe does."""
    from zsgm.checkpoint import load_run_checkpoint
    from zsgm.loop import adapt
    from zsgm.recipe import recipe_from_dict
    from zsgm.run import build_run
    from zsgm.toy.benchmark import shapes_recipe_data
    from zsgm.toy.diagnose import check_snapshots

    check_snapshots(snapshots)
    data = shapes_recipe_data("nada", source, target, registry, seed=seed, steps=snapshots[-1], lr=lr,
                              clip_file=clip_path, n_samples=4, freeze_slots=freeze_slots)
    recipe = recipe_from_dict(data, registry=registry, source=f"trajectory {source}->{target}")
    out = work / f"trajectory-{source}-{target}-{seed}"
    done = 0
    for step in snapshots:
        adapt(recipe, out_dir=out, registry=registry, resume=done > 0, stop_after=step - done)
        done = step
        run = build_run(recipe, out_dir=out, registry=registry)
        run.release()  # only its weights are read: no process-wide flag stays changed
        load_run_checkpoint(run)
        yield step, run.sample_generator().eval()


def mine_trajectories(clip_path: str | Path, *, tasks=DEFAULT_TASKS, snapshots=(20, 50, 100, 200, 301),
                      n_per_snapshot: int = 64, seed: int = 0, progress: bool = True,
                      positives: str = "render", freeze_slots: list[int] | None = None) -> tuple[dict, list[dict]]:
    """Every sample along NADA trajectories, paired with its source sample and its *true* edit.

    For each task one NADA preset run guided by ``clip_path`` is stopped at each of ``snapshots``; the
    generator reached there draws ``n_per_snapshot`` latents (colour tasks keep those in the source colour)
    and every sample is kept with the source generator's image and the render of the shape the latent
    encodes, in the target style or colour (:func:`zsgm.toy.diagnose.source_latents`). A CLIP trained
    to rank the true edit's direction above each of these (``rank_weight`` of
    :func:`zsgm.toy.train_clip.train`) demotes exactly the path its own guidance made the generator take.

    ``positives="reach"`` pairs each sample instead with what the generator draws for the same latent at the
    same step of :func:`zsgm.toy.diagnose.reach_trajectory` (regressed onto the true edits with the same
    optimiser): a generator-made true edit, so that a CLIP cannot meet the ranking by telling generator
    images from renders. ``freeze_slots``: the runs train only those W+ slots' layers (see
    :func:`trajectory_generators`).

    Returns:
        ``{"images", "sources", "truths": uint8 [N, 3, S, S], "task", "step": int64 [N], "other": bool [N]}``
        and one record per (task, snapshot).
    """
    from collections import Counter

    from tqdm.auto import tqdm

    from zsgm.plugins import get_registry
    from zsgm.toy.assets import load_shapes_generator
    from zsgm.toy.diagnose import reach_trajectory, source_colour, source_latents, true_edit
    from zsgm.toy.judges import OTHER, analyse, classify_style
    from zsgm.toy.render import COLOURS, render_batch

    if positives not in ("render", "reach"):
        raise ValueError(f"positives must be 'render' or 'reach', got {positives!r}")
    registry = get_registry()
    source_g, _ = load_shapes_generator()
    parts: dict[str, list] = {k: [] for k in ("images", "sources", "truths", "task", "step", "other")}
    records = []
    bar = tqdm(total=len(tasks) * len(snapshots), desc="mine trajectories", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="zsgm-trajectory-") as tmp:
        for i, (src, tgt) in enumerate(tasks):
            # a colour source keeps about one sample in len(COLOURS): draw that many more
            draws = n_per_snapshot * (len(COLOURS) if source_colour(src) else 1)
            reached = reach_trajectory(tgt, snapshots=tuple(snapshots), seed=seed + i, progress=False) \
                if positives == "reach" else None
            for step, g in trajectory_generators(Path(clip_path), src, tgt, snapshots=tuple(snapshots),
                                                 seed=seed + i, work=Path(tmp), registry=registry,
                                                 freeze_slots=freeze_slots):
                ws, noise, params = source_latents(source_g, source=src, n=draws,
                                                   seed=seed * 1000 + 10 * i + snapshots.index(step))
                g_reach = next(reached)[1] if reached is not None else None  # trains: outside no_grad
                with torch.no_grad():
                    x_src, x_fake = (gen.synthesis(ws, noise=noise) for gen in (source_g, g))  # [m, 3, S, S]
                    x_true = render_batch([true_edit(p, tgt) for p in params]) if g_reach is None \
                        else g_reach.synthesis(ws, noise=noise)
                styles = classify_style(analyse(x_fake))
                parts["images"].append(to_u8(x_fake))
                parts["sources"].append(to_u8(x_src))
                parts["truths"].append(to_u8(x_true))
                parts["task"].append(torch.full((len(x_src),), i, dtype=torch.int64))
                parts["step"].append(torch.full((len(x_src),), step, dtype=torch.int64))
                parts["other"].append(torch.tensor([s == OTHER for s in styles]))
                records.append({"source": src, "target": tgt, "step": step, "kept": len(x_src),
                                "positives": positives, "styles": dict(Counter(styles))})
                bar.update(1)
    bar.close()
    return {k: torch.cat(v) for k, v in parts.items()}, records


def to_u8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as uint8 (clamped, rounded), the mined files' storage."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def mine(clip_path: str | Path, *, tasks=DEFAULT_TASKS, schedules=DEFAULT_SCHEDULES, n_per_run: int = 128,
         seed: int = 0, progress: bool = True, max_iou: float | None = None) -> tuple[dict, list[dict]]:
    """Run every (task, schedule), keep the samples judged "other" and, with ``max_iou``, those whose
    content IoU with their source sample is below it (a collapsed or resized shape, whatever its style).

    Returns:
        ``{"images", "sources": uint8 [N, 3, S, S], "task": int64 [N], "other": bool [N]}`` (``other``: judged
        "other"; the rest were kept for their IoU only) and one record per run (task, lr, steps, kept,
        style counts).
    """
    from collections import Counter

    from tqdm.auto import tqdm

    from zsgm.toy.assets import load_shapes_generator
    from zsgm.toy.evaluate import paired_samples
    from zsgm.toy.judges import OTHER, analyse, classify_style, mask_iou

    from zsgm.plugins import get_registry

    registry = get_registry()
    source_g, _ = load_shapes_generator()
    kept, sources, task_ids, flags, records = [], [], [], [], []
    jobs = [(t, s) for t in tasks for s in schedules]
    with tempfile.TemporaryDirectory(prefix="zsgm-mine-") as tmp:
        for i, ((src, tgt), (lr, steps)) in enumerate(tqdm(jobs, desc="mine fakes", disable=not progress)):
            g = adapted_generator(Path(clip_path), src, tgt, lr=lr, steps=steps, seed=seed + i, work=Path(tmp),
                                  registry=registry)
            src_images, fakes = paired_samples(source_g, g, n=n_per_run, seed=seed * 1000 + i)  # [n, 3, S, S]
            analysis = analyse(fakes)
            styles = classify_style(analysis)
            other = torch.tensor([s == OTHER for s in styles])
            keep = other.clone()
            if max_iou is not None:
                keep |= mask_iou(analyse(src_images).filled, analysis.filled) < max_iou
            kept.append(to_u8(fakes[keep]))
            sources.append(to_u8(src_images[keep]))
            flags.append(other[keep])
            task_ids.append(torch.full((int(keep.sum()),), list(tasks).index((src, tgt)), dtype=torch.int64))
            records.append({"source": src, "target": tgt, "lr": lr, "steps": steps, "kept": int(keep.sum()),
                            "kept_other": int(other.sum()),
                            "styles": dict(Counter(styles))})
    mined = {"images": torch.cat(kept), "sources": torch.cat(sources), "task": torch.cat(task_ids),
             "other": torch.cat(flags)}
    return mined, records


def save_fakes(path: str | Path, mined: dict, records: list[dict], *, tasks, clip_path: str | Path,
               seconds: float) -> None:
    """Write the mined tensors (``images``, ``sources``, ``task``) and the record (metadata) atomically."""
    from safetensors.torch import save_file

    from zsgm.io_utils import atomic_write

    n = len(mined["images"])
    if len(mined["sources"]) != n or len(mined["task"]) != n:
        raise ValueError("save_fakes: images, sources and task must have the same length")
    meta = {"format": "zsgm-shapes-fakes", "tasks": json.dumps([list(t) for t in tasks]),
            "runs": json.dumps(records), "clip": Path(clip_path).name, "seconds": f"{seconds:.1f}"}
    other = mined.get("other")
    if other is None:
        other = torch.ones(n, dtype=torch.bool)
    tensors = {**{k: mined[k].contiguous() for k in ("images", "sources", "task")}, "other": other.to(torch.uint8)}
    for optional in ("truths", "step"):  # trajectory mining (mine_trajectories)
        if mined.get(optional) is not None:
            if len(mined[optional]) != n:
                raise ValueError(f"save_fakes: {optional} must have the same length as images")
            tensors[optional] = mined[optional].contiguous()
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_fakes(path: str | Path) -> dict:
    """``{"images", "sources", "task", "tasks": [(source, target), ...]}`` from :func:`save_fakes`'s file.

    The first version of the format stored ``images`` only (it made the second round of the shipped CLIP);
    such a file loads with ``sources`` and ``task`` None and ``tasks`` empty (usable as "other" images, not
    for the direction hinge)."""
    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != "zsgm-shapes-fakes":
        raise ValueError(f"{path}: not a mined-fakes file (metadata format {meta.get('format')!r})")
    data = load_file(str(path))
    n = len(data["images"])
    if "tasks" not in meta:
        return {"images": data["images"], "sources": None, "task": None, "tasks": [], "truths": None,
                "step": None, "other": torch.ones(n, dtype=torch.bool)}
    other = data["other"].bool() if "other" in data else torch.ones(n, dtype=torch.bool)
    return {"truths": None, "step": None, **data, "other": other,
            "tasks": [tuple(t) for t in json.loads(meta["tasks"])]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True, help="the shapes CLIP file guiding the adaptations")
    parser.add_argument("--out", required=True, help="the .safetensors of mined images to write")
    parser.add_argument("--tasks", nargs="+", help="SOURCE:TARGET pairs (default: every style and colour)")
    parser.add_argument("--n-per-run", type=int, default=128)
    parser.add_argument("--max-iou", type=float,
                        help="also keep samples whose content IoU with their source is below this (direction hinge only)")
    parser.add_argument("--trajectory", action="store_true",
                        help="keep every sample along each task's NADA run, with its true edit (for --rank-weight)")
    parser.add_argument("--snapshots", type=int, nargs="+", default=[20, 50, 100, 200, 301],
                        help="with --trajectory: the steps at which each run is sampled")
    parser.add_argument("--positives", choices=("render", "reach"), default="render",
                        help="with --trajectory: pair each sample with the rendered true edit, or with the "
                             "reach generator's image (diagnose reach) at the same step")
    parser.add_argument("--freeze-slots", type=int, nargs="+", metavar="SLOT",
                        help="with --trajectory: the runs train only these W+ slots' layers (layer-freeze slots)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    tasks = tuple(tuple(t.split(":", 1)) for t in args.tasks) if args.tasks else DEFAULT_TASKS
    try:
        if args.trajectory:
            from zsgm.toy.diagnose import check_snapshots

            check_snapshots(args.snapshots)  # before any run starts
            mined, records = mine_trajectories(args.clip, tasks=tasks, snapshots=tuple(args.snapshots),
                                               n_per_snapshot=args.n_per_run, seed=args.seed,
                                               progress=not args.no_progress, positives=args.positives,
                                               freeze_slots=args.freeze_slots)
        elif args.freeze_slots:
            raise ValueError("--freeze-slots needs --trajectory")
        else:
            mined, records = mine(args.clip, tasks=tasks, n_per_run=args.n_per_run, seed=args.seed,
                                  progress=not args.no_progress, max_iou=args.max_iou)
    except (ValueError, FileNotFoundError) as exc:  # user input: a bad task, snapshot list or CLIP file
        parser.exit(2, f"zsgm.toy.mine_fakes: {exc}\n")
    save_fakes(args.out, mined, records, tasks=tasks, clip_path=args.clip, seconds=time.time() - started)
    for r in records:
        print(json.dumps(r))
    print(f"kept {len(mined['images'])} images in {time.time() - started:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
