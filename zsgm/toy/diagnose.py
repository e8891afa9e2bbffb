"""Why did a shapes adaptation miss its target: the guide, or the optimiser?

The shapes world knows the true edit of every sample (the generator's latent says which shape it draws,
:mod:`zsgm.toy.latents`), so two questions a real world cannot answer have numbers here:

- **reach**: can the generator make the edit at all with the recipe's optimiser? :func:`reach` trains a copy
  of the shapes generator towards the true edits by pixel regression, with NADA's optimiser settings
  (Adam, betas (0, 0.99) and lr 0.002, both under the rosinality ``reg_ratio`` 0.8, batch 2, 301 steps,
  the layers NADA's preset trains), then judges it like any run. If this passes, the generator has the
  capacity and the optimiser the budget.
- **gap**: does the guide prefer the true edit? :func:`direction_gap` measures, under the run's own CLIP,
  the directional cosine of the adapted generator's samples and the one the true edits of the same
  samples would reach. ``true > adapted`` means the CLIP ranks the true edit higher and the optimisation
  stopped somewhere else; ``adapted >= true`` means the CLIP itself prefers what the run made.

    python -m zsgm.toy.diagnose reach --target sketch
    python -m zsgm.toy.diagnose gap runs/sketch
    python -m zsgm.toy.diagnose position runs/sketch [--clip other_clip.safetensors]

- **position**: :func:`position_gap` moves each adapted sample back onto its source's position (whole-pixel
  translation of the mask centroid) and asks whether the guide's directional cosine rises with the IoU.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F

from zsgm.toy.evaluate import EVAL_SEED, evaluate_generators, parse_target

NADA_TRAINED = ("conv1", "to_rgb1", "convs")  # what the nada preset trains (k = all slots, slot_map "nada")


def true_edit(params, target: str):
    """The shape ``params`` as the target text asks for it: another style, or another colour."""
    kind, name = parse_target(target)
    return params.with_style(name) if kind == "style" else attrs.evolve(params, colour=name)


def _trainable(generator, modules) -> list[torch.nn.Parameter]:
    """Unfreeze the parameters of ``modules``: top-level names ("convs", every conv) or indexed ones
    ("convs.2", one conv), as the layer-freeze technique names them."""
    for p in generator.parameters():
        p.requires_grad_(False)

    def owns(name: str, module: str) -> bool:
        return name == module or name.startswith(module + ".")

    names = [n for n, _ in generator.named_parameters()]
    unknown = [m for m in modules if not any(owns(n, m) for n in names)]
    if unknown:
        raise ValueError(f"reach: no synthesis module named {', '.join(unknown)} "
                         f"(e.g. conv1, to_rgb1, convs, convs.2, to_rgbs.0)")
    chosen = [p for n, p in generator.named_parameters() if any(owns(n, m) for m in modules)]
    for p in chosen:
        p.requires_grad_(True)
    return chosen


def check_snapshots(snapshots) -> None:
    """Refuse snapshot step counts that are not ascending, distinct and positive."""
    if not snapshots or list(snapshots) != sorted(set(snapshots)) or snapshots[0] < 1:
        raise ValueError(f"snapshots must be ascending positive step counts, got {list(snapshots)}")


def reach_trajectory(target: str, *, snapshots: tuple[int, ...] = (301,), batch: int = 2, lr: float = 0.002,
                     reg_ratio: float = 0.8, betas: tuple[float, float] = (0.0, 0.99),
                     trained: tuple[str, ...] = NADA_TRAINED, seed: int = 0, progress: bool = True):
    """Regress a copy of the shapes generator onto the true edits of its own samples.

    Yields ``(step, generator, losses)`` after each of ``snapshots`` (ascending step counts): the generator
    being trained (in eval mode; do not keep it across yields without copying) and the MSE of every step so
    far. See :func:`reach` for the settings.
    """
    from tqdm.auto import tqdm

    from zsgm.toy.assets import load_shapes_generator
    from zsgm.toy.latents import params_from_z
    from zsgm.toy.render import render_batch

    parse_target(target)  # a clear error before any work
    check_snapshots(snapshots)
    g_src, _ = load_shapes_generator()
    g_tgt = copy.deepcopy(g_src).train()
    params = _trainable(g_tgt, trained)
    opt = torch.optim.Adam(params, lr=lr * reg_ratio, betas=(betas[0] ** reg_ratio, betas[1] ** reg_ratio))
    rng = torch.Generator().manual_seed(seed)
    losses = []
    for step in tqdm(range(1, snapshots[-1] + 1), desc=f"reach {target}", unit="step", disable=not progress):
        z = torch.randn((batch, g_src.arch.style_dim), generator=rng)  # [B, D]
        with torch.no_grad():
            ws = g_src.mapping(z)[:, None].repeat(1, g_src.n_latent, 1)  # [B, L, D]
        noise = g_src.make_noise(batch, mode="random", rng=rng)
        goal = render_batch([true_edit(p, target) for p in params_from_z(z)])  # [B, 3, S, S]
        with torch.enable_grad():  # a generator runs in its caller's grad mode, which may be no_grad
            loss = F.mse_loss(g_tgt.synthesis(ws, noise=noise), goal)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step in snapshots:
            yield step, g_tgt.eval(), losses
            g_tgt.train()


def reach(target: str, *, steps: int = 301, batch: int = 2, lr: float = 0.002, reg_ratio: float = 0.8,
          betas: tuple[float, float] = (0.0, 0.99), trained: tuple[str, ...] = NADA_TRAINED, seed: int = 0,
          n_eval: int = 256, progress: bool = True) -> dict:
    """Regress a copy of the shapes generator onto the true edits of its own samples; judge the result.

    Args:
        target: target text the judges understand ("sketch", "a blue shape", ...).
        steps, batch, lr, reg_ratio, betas: the optimiser (rosinality convention, as the loop's).
        trained: synthesis modules that train, top-level ("convs") or indexed ("convs.2"); default: what
            NADA's preset trains.
        seed: seeds latents and noise.
        n_eval: samples judged.

    Returns:
        the judges' record (as ``zsgm eval``) plus ``mse_first_20`` and ``mse_last_20``.
    """
    from zsgm.toy.assets import load_shapes_generator

    _, g_tgt, losses = next(reach_trajectory(target, snapshots=(steps,), batch=batch, lr=lr, reg_ratio=reg_ratio,
                                             betas=betas, trained=trained, seed=seed, progress=progress))
    g_src, _ = load_shapes_generator()
    record = evaluate_generators(g_src, g_tgt, target=target, n=n_eval)
    record.update({"mode": "reach", "steps": steps, "batch": batch, "lr": lr, "trained": list(trained),
                   "mse_first_20": sum(losses[:20]) / max(1, len(losses[:20])),
                   "mse_last_20": sum(losses[-20:]) / max(1, len(losses[-20:]))})
    return record


def source_colour(source: str) -> str | None:
    """The palette colour a source text names ("red", "a red shape"), or None (a style or free text)."""
    try:
        kind, name = parse_target(source)
    except ValueError:
        return None
    return name if kind == "colour" else None


@torch.no_grad()
def source_latents(g_src, *, source: str, n: int, seed: int):
    """``n`` latents of the shapes generator with their noise and the shapes they encode.

    When ``source`` names a colour, only the latents drawn in that colour are kept (a red -> blue edit says
    nothing about a green shape), so fewer than ``n`` may come back.

    Returns:
        ``(ws [m, L, D], noise, params)`` with ``m <= n`` (``params``: one :class:`ShapeParams` per latent).
    """
    from zsgm.toy.latents import params_from_z

    rng = torch.Generator().manual_seed(seed)
    z = torch.randn((n, g_src.arch.style_dim), generator=rng)  # [n, D]
    ws = g_src.mapping(z)[:, None].repeat(1, g_src.n_latent, 1)
    noise = g_src.make_noise(n, mode="random", rng=rng)
    params = params_from_z(z)
    colour = source_colour(source)
    keep = torch.tensor([colour is None or p.colour == colour for p in params])  # [n]
    if not keep.any():
        raise ValueError(f"none of {n} samples is drawn in the source colour {colour!r}")
    ws, noise = ws[keep], [m[keep] if m is not None else None for m in noise]
    return ws, noise, [p for p, k in zip(params, keep.tolist()) if k]


@torch.no_grad()
def true_edit_triples(g_src, g_tgt, *, source: str, target: str, n: int = 128, seed: int = EVAL_SEED):
    """Source samples, adapted samples and true edits of the same latents and noise
    (:func:`source_latents`: colour sources keep only their colour).

    Returns:
        ``(x_src, x_tgt, x_true)``, each ``[m, 3, S, S]`` in [-1, 1], ``m <= n``.
    """
    from zsgm.toy.render import render_batch

    ws, noise, params = source_latents(g_src, source=source, n=n, seed=seed)
    x_true = render_batch([true_edit(p, target) for p in params])
    return g_src.synthesis(ws, noise=noise), g_tgt.synthesis(ws, noise=noise), x_true


@torch.no_grad()
def generator_gap(g_src, g_tgt, clip, *, source: str, target: str, n: int = 128, seed: int = EVAL_SEED) -> dict:
    """Directional cosines under ``clip`` from the source samples to: the adapted samples, their true edits,
    and the true edits of *other* samples (what a content-blind edit would reach).

    Colour sources keep only the samples in that colour (:func:`true_edit_triples`), so ``n`` may be
    smaller than asked.

    Returns:
        ``{"adapted": ..., "true_edit": ..., "true_edit_other_shape": ..., "n": ...}`` (means over samples).
    """
    from zsgm.clip import text_direction

    x_src, x_tgt, x_true = true_edit_triples(g_src, g_tgt, source=source, target=target, n=n, seed=seed)
    d = text_direction(clip, source, target)  # [D]
    e_src, e_tgt, e_true = (clip.encode_image(x) for x in (x_src, x_tgt, x_true))

    def cos(e_to: torch.Tensor) -> float:
        return float(F.cosine_similarity(e_to - e_src, d[None], dim=1).mean())

    return {"adapted": cos(e_tgt), "true_edit": cos(e_true), "true_edit_other_shape": cos(e_true.roll(1, 0)),
            "n": len(x_src)}


def _centroids(masks: torch.Tensor) -> torch.Tensor:
    """Mask centroids ``[N, 2]`` (row, column) of bool masks ``[N, H, W]``; an empty mask gives the centre."""
    m = masks.float()
    n = m.flatten(1).sum(1)  # [N]
    rows, cols = torch.arange(m.shape[1]).float(), torch.arange(m.shape[2]).float()
    cy = (m.sum(2) * rows).sum(1) / n.clamp(min=1)
    cx = (m.sum(1) * cols).sum(1) / n.clamp(min=1)
    centre = torch.tensor([(m.shape[1] - 1) / 2, (m.shape[2] - 1) / 2])
    return torch.where((n > 0)[:, None], torch.stack([cy, cx], 1), centre)


def translate(x: torch.Tensor, shift: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Translate images by whole pixels; what is uncovered takes the background colour.

    Args:
        x: images ``[N, C, S, S]``.
        shift: ``[N, 2]`` integer (rows, columns) offsets.
        bg: ``[N, C, 1, 1]`` background colour in ``x``'s units (zeros for masks).

    Returns:
        ``[N, C, S, S]``; an image whose shift is zero comes back exactly, so that an unmoved sample's
        direction is not rounding noise.
    """
    size = x.shape[-1]
    out = x.clone()
    for i in range(len(x)):
        dy, dx = (int(v) for v in shift[i])
        if dy == 0 and dx == 0:
            continue
        canvas = F.pad(x[i] - bg[i], (size, size, size, size))  # [C, 3S, 3S], zero = background
        canvas = torch.roll(canvas, (dy, dx), dims=(1, 2))
        out[i] = canvas[:, size:2 * size, size:2 * size] + bg[i]
    return out


def shift_to_source(x_src: torch.Tensor, x_tgt: torch.Tensor, *, a_src=None, a_tgt=None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Translate every adapted image by whole pixels so that its shape's mask centroid lands on its source's.

    Args:
        x_src, x_tgt: source and adapted images ``[N, 3, S, S]`` in [-1, 1], pairwise.
        a_src, a_tgt: their :func:`zsgm.toy.judges.analyse` results, when the caller has them already.

    Returns:
        ``(moved [N, 3, S, S], shift [N, 2], bg [N, 3, 1, 1], moved_mask bool [N, S, S])``: the translated
        images (uncovered pixels take the adapted image's estimated background colour ``bg``, in [-1, 1]),
        the (rows, columns) shift applied and the adapted shape's mask after the same shift.
    """
    from zsgm.toy.judges import analyse

    a_src = analyse(x_src) if a_src is None else a_src
    a_tgt = analyse(x_tgt) if a_tgt is None else a_tgt
    shift = (_centroids(a_src.filled) - _centroids(a_tgt.filled)).round().long()  # [N, 2]
    bg = (a_tgt.bg * 2.0 - 1.0)[:, :, None, None]  # [N, 3, 1, 1] in [-1, 1]
    moved = translate(x_tgt, shift, bg)
    mask = translate(a_tgt.filled[:, None].float(), shift, torch.zeros(len(x_tgt), 1, 1, 1))[:, 0] > 0.5
    return moved, shift, bg, mask


@torch.no_grad()
def position_gap(g_src, g_tgt, clip, *, source: str, target: str, n: int = 128, seed: int = EVAL_SEED) -> dict:
    """Would the guide pay for putting the adapted shapes back where their sources were?

    Translates each adapted sample onto its source's position (:func:`shift_to_source`) and compares, before
    and after, the content IoU with the source and the directional cosine under ``clip``. A guide that sees
    position scores the moved-back samples higher whenever the IoU rises.

    Returns:
        ``{"shift_px", "iou", "iou_moved", "cos", "cos_moved", "gain_rate", "n"}`` (means over samples;
        ``gain_rate``: share of samples whose cosine rises).
    """
    from zsgm.clip import text_direction
    from zsgm.toy.judges import analyse, content_iou

    x_src, x_tgt, _ = true_edit_triples(g_src, g_tgt, source=source, target=target, n=n, seed=seed)
    a_src, a_tgt = analyse(x_src), analyse(x_tgt)  # measured once, for the shift and both IoUs
    moved, shift, _, _ = shift_to_source(x_src, x_tgt, a_src=a_src, a_tgt=a_tgt)
    d = text_direction(clip, source, target)  # [D]
    e_src, e_tgt, e_moved = (clip.encode_image(x) for x in (x_src, x_tgt, moved))
    cos = F.cosine_similarity(e_tgt - e_src, d[None], dim=1)  # [m]
    cos_moved = F.cosine_similarity(e_moved - e_src, d[None], dim=1)
    return {"shift_px": float(shift.float().norm(dim=1).mean()),
            "iou": float(content_iou(a_src, a_tgt).mean()), "iou_moved": float(content_iou(a_src, moved).mean()),
            "cos": float(cos.mean()), "cos_moved": float(cos_moved.mean()),
            "gain_rate": float((cos_moved > cos).float().mean()), "n": len(x_src)}


def _run_and_guide(run_dir: str | Path, registry, clip_file: str | Path | None):
    """A finished run's recipe, both generators and a guide: the run's first CLIP, or the CLIP file given."""
    from zsgm.run import load_clip_asset
    from zsgm.toy.evaluate import load_finished_run

    recipe, g_src, g_tgt = load_finished_run(run_dir, registry)
    if recipe.source is None or recipe.target is None:
        raise ValueError(f"{run_dir}: the recipe needs source and target texts for a direction")
    spec = recipe.clip.models[0]
    if clip_file is not None:
        spec = attrs.evolve(spec, name="shapes", pretrained=str(clip_file))
    clip = load_clip_asset(spec, registry, torch.device("cpu"), preprocess=recipe.clip.preprocess)
    return recipe, g_src.eval(), g_tgt.eval(), clip


def position_of_run(run_dir: str | Path, *, n: int = 128, clip_file: str | Path | None = None,
                    registry=None) -> dict:
    """:func:`position_gap` for a finished shapes run, under its first CLIP model or ``clip_file``."""
    from zsgm.plugins import get_registry

    recipe, g_src, g_tgt, clip = _run_and_guide(run_dir, registry or get_registry(), clip_file)
    record = position_gap(g_src, g_tgt, clip, source=recipe.source, target=recipe.target, n=n)
    return {"mode": "position", "run": str(run_dir), "clip": str(clip_file) if clip_file else "run's",
            "source": recipe.source, "target": recipe.target, **record}


def direction_gap(run_dir: str | Path, *, n: int = 128, registry=None) -> dict:
    """:func:`generator_gap` for a finished shapes run, under the run's first CLIP model."""
    from zsgm.plugins import get_registry

    recipe, g_src, g_tgt, clip = _run_and_guide(run_dir, registry or get_registry(), None)
    record = generator_gap(g_src, g_tgt, clip, source=recipe.source, target=recipe.target, n=n)
    return {"mode": "gap", "run": str(run_dir), "source": recipe.source, "target": recipe.target, **record}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p_reach = sub.add_parser("reach", help="regress the generator onto the true edits with NADA's optimiser")
    p_reach.add_argument("--target", required=True, help='target text, e.g. "sketch" or "a blue shape"')
    p_reach.add_argument("--steps", type=int, default=301)
    p_reach.add_argument("--batch", type=int, default=2)
    p_reach.add_argument("--lr", type=float, default=0.002)
    p_reach.add_argument("--seed", type=int, default=0)
    p_reach.add_argument("--n-eval", type=int, default=256)
    p_reach.add_argument("--trained", nargs="+", metavar="MODULE", default=list(NADA_TRAINED),
                         help="synthesis modules that train, e.g. convs.2 convs.3 to_rgbs.0 (default: the nada "
                              "preset's conv1 to_rgb1 convs)")
    p_gap = sub.add_parser("gap", help="directional cosine of a run's samples against their true edits")
    p_gap.add_argument("run", help="a finished shapes run directory")
    p_gap.add_argument("--n", type=int, default=128)
    p_pos = sub.add_parser("position", help="would the guide pay for moving a run's shapes back into place")
    p_pos.add_argument("run", help="a finished shapes run directory")
    p_pos.add_argument("--clip", help="judge with this zsgm CLIP file instead of the run's guide")
    p_pos.add_argument("--n", type=int, default=128)
    args = parser.parse_args(argv)
    from zsgm.clip_loading import ClipLoadError

    try:
        if args.mode == "reach":
            record = reach(args.target, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                           n_eval=args.n_eval, trained=tuple(args.trained))
        elif args.mode == "gap":
            record = direction_gap(args.run, n=args.n)
        else:
            record = position_of_run(args.run, n=args.n, clip_file=args.clip)
    except (ValueError, FileNotFoundError, ClipLoadError) as exc:
        parser.exit(2, f"zsgm.toy.diagnose: {exc}\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
