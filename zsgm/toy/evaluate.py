"""Evaluate adapted shapes-world generators with the ground-truth judges (no CLIP).

A run's target text decides what is measured: a style word ("sketch", "night", "pastel") gives a style
task, a colour word ("blue") a colour task. A run adapted to a reference image instead (one-shot, NADA's
image-target) is judged for the reference's style as the style judge sees it (:func:`reference_target`). Source and adapted generators see the same latents and the
same noise, so every sample is judged against its own source image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from zsgm.io_utils import atomic_write_text
from zsgm.toy.judges import analyse, background_change, classify_colour, classify_style, diversity_ratio, \
    judge_batch, mask_iou
from zsgm.toy.render import COLOURS, STYLES

EVAL_SEED = 12345


def parse_target(text: str) -> tuple[str, str]:
    """``("style", "sketch")`` or ``("colour", "blue")`` from a target text such as "a sketch"."""
    words = text.lower().replace(",", " ").split()
    for style in STYLES:
        if style in words and style != "photo":
            return "style", style
    for colour in COLOURS:
        if colour in words:
            return "colour", colour
    raise ValueError(f"cannot tell which shapes-world style or colour the target {text!r} asks for "
                     f"(styles: {', '.join(STYLES)}; colours: {', '.join(COLOURS)})")


def reference_target(path: str | Path, *, size: int = 32) -> str:
    """The target text a reference image stands for: the style the ground-truth judge gives it ("sketch").

    The image is read as the one-shot techniques read it (short side resized to ``size``, centre crop).

    Raises:
        ValueError: the image reads as the source style (photo) or as no style of the shapes world.
    """
    from zsgm.io_utils import load_image

    style = classify_style(load_image(path, size=size, fit="crop"))[0]
    if style not in STYLES or style == "photo":
        raise ValueError(f"{path}: the style judge reads this reference as {style!r}, not one of the target styles "
                         f"{', '.join(s for s in STYLES if s != 'photo')}; give the run's target with --target")
    return style


def eval_settings(*, n: int = 256, seed: int = EVAL_SEED, truncation: float = 1.0, batch: int = 64):
    """The :class:`zsgm.metrics.samples.SampleSettings` the shapes judges draw with (random noise)."""
    from zsgm.metrics.samples import SampleSettings

    return SampleSettings(n=n, seed=seed, truncation=truncation, noise_mode="random", batch=batch)


def paired_samples(g_src, g_tgt, *, n: int = 256, seed: int = EVAL_SEED, truncation: float = 1.0,
                   batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` image pairs ``[n, 3, S, S]`` from the same latents and noise (source mapping for both), drawn as
    ``zsgm eval`` draws them (:func:`zsgm.metrics.samples.draw_samples`, :func:`eval_settings`)."""
    from zsgm.metrics.samples import draw_samples

    settings = eval_settings(n=n, seed=seed, truncation=truncation, batch=batch)
    src, tgt = draw_samples([g_src, g_tgt], mapper=g_src, settings=settings)
    return src, tgt


def judge_colour_batch(src: torch.Tensor, tgt: torch.Tensor, *, target_colour: str) -> dict[str, float]:
    """Colour tasks: the shape should take ``target_colour`` and stay a photo of the same shape."""
    a_src, a_tgt = analyse(src), analyse(tgt)
    styles = classify_style(a_tgt)
    colours = classify_colour(tgt, a_tgt.filled)
    return {
        "target_rate": float(np.mean([c == target_colour for c in colours])),
        "style_kept_rate": float(np.mean([s == "photo" for s in styles])),
        "content_iou": float(mask_iou(a_src.filled, a_tgt.filled).mean()),
        "background_artefact": float(background_change(a_src, tgt, target_style="photo", tgt_analysis=a_tgt).mean()),
        "diversity_ratio": diversity_ratio(a_tgt, a_src, mode="mask"),
        "source_target_colour_rate": float(np.mean([c == target_colour for c in classify_colour(src, a_src.filled)])),
        "n": float(src.shape[0]),
    }


def judge_task(src: torch.Tensor, tgt: torch.Tensor, *, target: str) -> dict[str, float | str]:
    """The ground-truth judgements of paired batches for the task the target text names: ``task``
    ("style:sketch"), ``target_rate``, ``content_iou``, ``background_artefact``, ``diversity_ratio`` and the
    task's extra rates (:func:`zsgm.toy.judges.judge_batch`, :func:`judge_colour_batch`)."""
    kind, name = parse_target(target)
    if kind == "style":
        scores = judge_batch(src, tgt, target_style=name)
        scores["target_rate"] = scores.pop("target_style_rate")
    else:
        scores = judge_colour_batch(src, tgt, target_colour=name)
    return {"task": f"{kind}:{name}", **scores}


def evaluate_generators(g_src, g_tgt, *, target: str, n: int = 256, seed: int = EVAL_SEED,
                        truncation: float = 1.0) -> dict[str, float | str]:
    """Judge ``g_tgt`` against ``g_src`` for the task named by the target text."""
    parse_target(target)  # a target the judges cannot read fails before sampling
    src, tgt = paired_samples(g_src.eval(), g_tgt.eval(), n=n, seed=seed, truncation=truncation)
    scores = judge_task(src, tgt, target=target)
    task = scores.pop("task")
    return {"task": task, "truncation": truncation, "seed": seed, **scores}


def load_finished_run(run_dir: str | Path, registry):
    """``(recipe, source generator, adapted generator)`` of a finished run directory, on the CPU.

    Raises:
        FileNotFoundError: the run has no ``generator.safetensors`` yet.
    """
    from zsgm.generator import load_generator
    from zsgm.recipe import load_recipe
    from zsgm.run import load_generator_asset

    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / "recipe.toml", registry=registry)
    adapted = run_dir / "generator.safetensors"
    if not adapted.exists():
        raise FileNotFoundError(f"{adapted} does not exist: the run has not finished (resume it first)")
    g_src, _ = load_generator_asset(recipe.generator.checkpoint, registry, torch.device("cpu"))
    g_tgt, _ = load_generator(adapted)
    return recipe, g_src, g_tgt


def evaluate_run(run_dir: str | Path, *, n: int = 256, seed: int = EVAL_SEED, truncation: float = 1.0,
                 registry=None, target: str | None = None) -> dict:
    """Evaluate a finished run directory (reads ``recipe.toml`` and ``generator.safetensors``); writes ``eval.json``.

    The task is ``target`` if given, else the recipe's target text, else the style of the recipe's first target
    image (:func:`reference_target`)."""
    from zsgm.plugins import get_registry

    run_dir = Path(run_dir)
    registry = registry or get_registry()
    recipe, g_src, g_tgt = load_finished_run(run_dir, registry)
    if target is None:
        target = recipe.target
    if target is None and recipe.target_images:
        target = reference_target(recipe.target_images[0], size=g_src.arch.size)
    if target is None:
        raise ValueError(f"{run_dir}: the recipe has no target text or image to judge against; give --target")
    scores = evaluate_generators(g_src, g_tgt, target=target, n=n, seed=seed, truncation=truncation)
    techniques = "+".join(t.name for t in recipe.techniques)
    record = {"run": str(run_dir), "source": recipe.source, "target": target, "techniques": techniques,
              "steps": recipe.optim.steps, **scores}
    atomic_write_text(run_dir / "eval.json", json.dumps(record, indent=2) + "\n")
    return record


COLUMNS = (("target_rate", "target rate"), ("content_iou", "content IoU"),
           ("background_artefact", "background artefact"), ("diversity_ratio", "diversity ratio"))
