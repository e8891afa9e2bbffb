"""What the one-shot techniques share: the reference image, the reference-step schedule, the LPIPS choice.

**Reference steps.** The released loop alternates: step ``i`` with ``i % ref_freq == 0`` is a *reference step*
(G_t(w_ref) against the reference: LPIPS + MSE and the global discriminator), every other step a normal one
(sampled latents: L_con, L_patch and the patch discriminator). zsgm keeps that schedule in one place, the
``ref_freq`` option of ``reference-reconstruction``: with that technique in the recipe, its steps are the reference
steps; ``clip-consistency`` and ``patch-contrastive`` skip them (``reference_steps = "skip"``, as released, or
``"run"``) and ``adversarial`` switches to its global mode on them. Without it there are no reference steps.
"""

from __future__ import annotations

import functools
import weakref
from pathlib import Path

import torch

from zsgm.io_utils import load_image

RECONSTRUCTION = "reference-reconstruction"
SEARCH = "reference-search"
REFERENCE_STEP_CHOICES = ("skip", "run")


def technique_by_use(run, name: str):
    """The run's technique instance of the technique called ``name`` (``use = name``), or None."""
    for technique, use in zip(run.techniques, run.uses):
        if use.use == name:
            return technique
    return None


def recipe_entries(recipe, name: str) -> list:
    """The recipe's ``[[techniques]]`` entries (``TechniqueUse``) with ``use = name``."""
    return [u for u in recipe.techniques if u.use == name]


def reference_freq(run) -> int:
    """``ref_freq`` of the recipe's ``reference-reconstruction``, 0 when it has none (no reference steps)."""
    technique = technique_by_use(run, RECONSTRUCTION)
    return 0 if technique is None else technique.config.ref_freq


def is_reference_step(run, step: int) -> bool:
    """Whether ``step`` is a reference step (module docstring)."""
    freq = reference_freq(run)
    return freq > 0 and step % freq == 0


def reference_file(recipe) -> str:
    """The reference image: the recipe's ``target_images[0]`` (``--reference`` / ``--target-image``)."""
    if not recipe.target_images:
        raise ValueError("the one-shot techniques need a reference image: set target_images (--reference FILE)")
    return recipe.target_images[0]


#: Per run: what several one-shot techniques read, built once (the reference pixels, each LPIPS network).
_SHARED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _shared(run, key, build):
    """``build()`` once per (run, key); the techniques of a run share the (read-only) result."""
    memo = _SHARED.setdefault(run, {})
    if key not in memo:
        memo[key] = build()
    return memo[key]


def load_reference(run) -> torch.Tensor:
    """``[1, 3, S, S]`` in [-1, 1] on the run's device: the reference squashed to the generator's size ``S`` (as the
    released ``Resize([size, size])``; bicubic here, bilinear there). Decoded once per run; do not modify it."""
    size = run.g_source.arch.size
    return _shared(run, "reference",
                   lambda: load_image(reference_file(run.recipe), size=size, fit="squash").to(run.device))


#: The one-shot techniques that read the reference image; the first of them in a recipe reports its problems.
REFERENCE_READERS = (SEARCH, RECONSTRUCTION, "adversarial")


def reference_image_problems(recipe, config, option: str = "target_images") -> list[str]:
    """Recipe-time problems of the reference: none given, more than one, or a file that is not a usable image
    (a missing file is reported by the recipe loader itself). Only the recipe's first one-shot entry that reads
    the reference (``config`` is its options) reports them, so a problem is said once."""
    readers = [u for u in recipe.techniques if u.use in REFERENCE_READERS]
    if readers and readers[0].config is not config:
        return []
    files = recipe.target_images
    if not files:
        return [f"{option}: needs a reference image: set the recipe's target_images (--reference FILE)"]
    if len(files) > 1:
        return [f"{option}: one-shot adaptation uses exactly one reference image (target_images[0]); got {len(files)}"]
    path = Path(files[0])
    if not path.is_file():
        return []  # the loader names the missing file
    stat = path.stat()
    problem = _image_problem(str(path), stat.st_mtime_ns, stat.st_size)
    return [f"{option}: {problem}"] if problem else []


@functools.lru_cache(maxsize=8)
def _image_problem(path: str, _mtime_ns: int, _size: int) -> str | None:
    """Why ``path`` is not a usable image, or None; decoded once per file version (three techniques ask)."""
    try:
        load_image(path, size=8)  # decoded and checked; resized in PIL first, so an 8192^2 image costs no float copy
    except ValueError as exc:
        return str(exc)
    return None


def resolve_lpips_net(run, net: str) -> str:
    """``"auto"``: the registered generator's own choice (``GeneratorSpec.lpips``, e.g. the shapes world's stand-in),
    else ``"alex"`` (the released code's LPIPS is StarGAN v2's AlexNet copy with the LPIPS linear layers)."""
    if net != "auto":
        return net
    name = run.recipe.generator.checkpoint
    generators = run.registry.generators
    if name in generators:
        chosen = getattr(generators.get(name), "lpips", None)
        if chosen:
            return chosen
    return "alex"


def load_run_lpips(run, net: str, backbone: str | None):
    """The LPIPS distance (``zsgm.perceptual``) for ``net`` (after :func:`resolve_lpips_net`) on the run's device;
    built once per run and network (it is frozen, so the search and the reconstruction share it)."""
    from zsgm.perceptual import load_lpips

    resolved = resolve_lpips_net(run, net)
    return _shared(run, ("lpips", resolved, backbone),
                   lambda: load_lpips(resolved, backbone=backbone, device=run.device))
