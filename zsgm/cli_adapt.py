"""``zsgm adapt``: merge preset, recipe file and options into a recipe, check it, run it, print the summary.

Everything the command line can check (``--out``, ``--target-image`` files, the ``--reference`` image, a recipe
that would ignore its target images, a missing target) is refused before the generator or CLIP loads.
``--reference FILE`` (one-shot recipes) sets the recipe's ``target_images = [FILE]``.

Under ``torchrun --nproc_per_node=N -m zsgm adapt ...`` every process runs this command and
:func:`zsgm.loop.adapt` makes them one data-parallel run (:mod:`zsgm.distributed`); rank 0 prints the summary.
"""

from __future__ import annotations

import os
from pathlib import Path

from zsgm.cli_errors import CommandLineError
from zsgm.cli_options import FROM_RECIPE, clip_override, finite_float, int_at_least, non_blank, refuse_file_in_the_way
from zsgm.cli_summary import run_summary


def build_recipe_dict(args, registry) -> dict:
    """Merge preset / recipe file / command-line overrides into one recipe dict.

    Raises:
        CommandLineError: no recipe file and no preset; ``--resume`` of a folder without ``recipe.toml``;
            ``--reference`` together with ``--target-image``.
        RecipeError: an unreadable recipe file (naming it), or no target text and no target images (telling
            the user to pass ``--target``).
    """
    from zsgm.recipe import RecipeError, merge_dicts, read_recipe_file

    data: dict = {}
    if args.resume and not args.recipe and not args.preset:
        saved = Path(args.out) / "recipe.toml"
        if not saved.is_file():
            raise CommandLineError(f"--resume: {saved} does not exist (is {args.out} a zsgm run directory?)")
        args.recipe = str(saved)
    from_file = read_recipe_file(args.recipe) if args.recipe else {}
    if args.preset:
        data = build_preset(registry.presets.get(args.preset), args.generator
                            or (from_file.get("generator") or {}).get("checkpoint"), registry, resume=args.resume)
    if args.recipe:
        data = merge_dicts(data, from_file)
    if not data:
        raise CommandLineError("give a recipe file or --preset NAME (see `zsgm plugins` for presets)")
    overrides: dict = {}
    if args.source is not None:
        overrides["source"] = args.source
    if args.target is not None:
        overrides["target"] = args.target
    if args.target_image:
        overrides["target_images"] = list(args.target_image)
    if reference_option(args) is not None:
        overrides["target_images"] = [args.reference]
    if args.generator is not None:
        overrides.setdefault("generator", {})["checkpoint"] = args.generator
    if args.clip is not None:
        overrides.setdefault("clip", {})["models"] = args.clip
    for key, attr in (("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr")):
        if getattr(args, attr) is not None:
            overrides.setdefault("optim", {})[key] = getattr(args, attr)
    for key in ("seed", "device", "sample_every", "checkpoint_every"):
        if getattr(args, key) is not None:
            overrides.setdefault("run", {})[key] = getattr(args, key)
    if args.no_progress:
        overrides.setdefault("run", {})["progress"] = False
    merged = merge_dicts(data, overrides)
    if merged.get("target") is None and not merged.get("target_images"):
        raise RecipeError(["target: the recipe has no target text and no target images; pass --target TEXT "
                           "(e.g. --target \"a sketch\"), --target-image FILE or --reference FILE"],
                          source=_recipe_label(args))
    return merged


def build_preset(spec, generator: str | None, registry, *, resume: bool = False) -> dict:
    """The preset's recipe dict; a sized preset (``PresetSpec.sized``) is told the size of ``generator`` (None when
    no generator is named or it cannot be loaded: the run then reports that generator in its own words)."""
    if not spec.sized:
        return spec.build()
    if resume:  # the run's saved recipe.toml wins anyway: do not load the generator for nothing
        return spec.build(generator_size=None)
    size = None
    if isinstance(generator, str):
        from zsgm.generator.errors import CheckpointError
        from zsgm.generator.sources import generator_size

        try:
            size = generator_size(generator, registry=registry)
        except (CheckpointError, OSError, ValueError):
            size = None
    return spec.build(generator_size=size)


def _recipe_label(args) -> str:
    """How errors name the recipe: its file, else the preset."""
    return args.recipe or f"preset {args.preset!r}"


def check_run_dir(out: str) -> None:
    """Refuse, before anything loads, an ``--out`` that cannot become a run directory.

    Raises:
        CommandLineError: ``out`` or one of its parents is a file, or the folder it would go in is not
            writable.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CommandLineError(f"--out {out}: is a file, not a directory (give a new or existing run directory)")
    existing = refuse_file_in_the_way(path, f"--out {out}")
    if existing is None:
        return
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the run directory" if existing == path else f"{existing}, where it would be made,"
        raise CommandLineError(f"--out {out}: {what} is not writable")


def reference_option(args) -> str | None:
    """``--reference FILE`` (None when not given); refused together with ``--target-image``."""
    reference = getattr(args, "reference", None)
    if reference is not None and args.target_image:
        raise CommandLineError("--reference and --target-image both set the recipe's target images; give one "
                               "(--reference FILE is the one-shot spelling of --target-image FILE)")
    return reference


def check_target_image_files(paths: list[str] | None, *, option: str = "--target-image") -> None:
    """Each ``--target-image`` (or ``option``) is an existing file (not a directory), checked before anything
    loads."""
    for path in paths or []:
        if Path(path).is_dir():
            raise CommandLineError(f"{option} {path}: is a directory, not an image file")
        if not Path(path).is_file():
            raise CommandLineError(f"{option} {path}: no such file")


def check_reference_image(path: str) -> None:
    """``--reference FILE``: an existing file that :func:`zsgm.io_utils.load_image` reads (any size and mode it
    handles), decoded once before anything loads, so a bad reference costs nothing.

    Raises:
        CommandLineError: missing, a directory, or an image ``load_image`` refuses (its one-line reason).
    """
    from zsgm.io_utils import load_image

    check_target_image_files([path], option="--reference")
    try:
        load_image(path, size=8)  # decoded and checked; resized in PIL first, so a large image costs no float copy
    except ValueError as exc:
        raise CommandLineError(f"--reference: {exc}") from None


def check_target_images_are_read(data: dict, registry, paths: list[str] | None, *,
                                 option: str = "--target-image") -> None:
    """Refuse ``--target-image`` (or ``option``) when no technique of the recipe reads target images (it would
    be ignored).

    Technique names the registry does not know are left to the recipe loader, which names them.
    """
    if not paths:
        return
    techniques = data.get("techniques")
    if not isinstance(techniques, list):
        return
    names = [t.get("use") for t in techniques if isinstance(t, dict) and isinstance(t.get("use"), str)]
    if len(names) != len(techniques) or any(n not in registry.techniques for n in names):
        return
    if any(getattr(registry.techniques.get(n), "reads_target_images", False) for n in names):
        return
    readers = sorted(n for n in registry.techniques.names()
                     if getattr(registry.techniques.get(n), "reads_target_images", False))
    listed = ", ".join(names) or "none"
    add = f"; add a technique that does ({', '.join(readers)})" if readers else ""
    raise CommandLineError(f"{option}: no technique of this recipe reads target images (techniques: "
                           f"{listed}), so the image would be ignored{add} or drop {option}")


def cmd_adapt(args) -> int:
    """Check the options, build the recipe, run (or resume) it in ``--out`` and print :func:`run_summary`."""
    from zsgm.distributed import from_environment
    from zsgm.loop import adapt
    from zsgm.plugins import get_registry
    from zsgm.recipe import recipe_from_dict

    check_run_dir(args.out)
    reference = reference_option(args)
    check_target_image_files(args.target_image)
    if reference is not None:
        check_reference_image(reference)
    registry = get_registry()
    data = build_recipe_dict(args, registry)
    if reference is not None:
        check_target_images_are_read(data, registry, [reference], option="--reference")
    else:
        check_target_images_are_read(data, registry, args.target_image)
    recipe = recipe_from_dict(data, registry=registry, source=_recipe_label(args))
    result = adapt(recipe, out_dir=args.out, resume=args.resume, registry=registry)
    if from_environment().is_main:  # under torchrun the other ranks have nothing to add
        print("\n".join(run_summary(result, Path(args.out), recipe=recipe)))
    return 0


def add_adapt_parser(sub):
    """The ``adapt`` subcommand's parser and options (its handler is set by :func:`zsgm.cli.make_parser`)."""
    p = sub.add_parser("adapt", help="adapt a generator to a target domain",
                       description="Adapt a generator to a target domain. Options without a stated default "
                                   "override the recipe file or preset; the recipe's defaults apply otherwise.")
    p.add_argument("recipe", nargs="?", help="TOML recipe file (default: none; give it, --preset, or both: "
                                             "the file's fields override the preset's)")
    p.add_argument("--preset", help="a named recipe, see `zsgm plugins` (default: none)")
    p.add_argument("--source", type=non_blank, help=f"text of the generator's domain, e.g. 'photo' {FROM_RECIPE}")
    p.add_argument("--target", type=non_blank, help=f"text of the target domain, e.g. 'a sketch' {FROM_RECIPE}")
    p.add_argument("--target-image", action="append", metavar="FILE",
                   help="style image for techniques that read target images, e.g. image-target; repeatable "
                        "(default: none)")
    p.add_argument("--reference", metavar="FILE",
                   help="the reference image of a one-shot recipe (e.g. --preset oneclip): sets target_images to "
                        "[FILE]; any size from 2x2 to 8192x8192 and any PIL mode (alpha dropped, 16-bit scaled); "
                        "not with --target-image (default: none)")
    p.add_argument("--generator", type=non_blank,
                   help=f"checkpoint file (.pt, .pkl, .safetensors) or registered generator name {FROM_RECIPE}")
    p.add_argument("--clip", type=clip_override, metavar="NAME[:PRETRAINED_OR_FILE][,...]",
                   help=f"the CLIP ensemble, e.g. ViT-B-32:openai,ViT-B-16:openai {FROM_RECIPE}")
    p.add_argument("--steps", type=int_at_least(1), help=f"optimisation steps {FROM_RECIPE}")
    p.add_argument("--batch-size", dest="batch_size", type=int_at_least(1), help=f"latents per step {FROM_RECIPE}")
    p.add_argument("--lr", type=finite_float(low=0.0, low_open=True), help=f"Adam learning rate {FROM_RECIPE}")
    p.add_argument("--seed", type=int_at_least(0), help=f"run seed (latents, noise) {FROM_RECIPE}")
    p.add_argument("--device", type=non_blank,
                   help=f"'auto' (CUDA when available), 'cpu', 'cuda:1', ... {FROM_RECIPE}")
    p.add_argument("--sample-every", dest="sample_every", type=int_at_least(0),
                   help=f"write a source/target grid every N steps, 0: only at the end {FROM_RECIPE}")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int_at_least(0),
                   help=f"write a resumable checkpoint every N steps, 0: only at the end {FROM_RECIPE}")
    p.add_argument("--out", required=True, help="run directory: grids, losses, checkpoint, final generator "
                                                "(required; no default)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, reading its recipe.toml when no "
                        "recipe or preset is given (default: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: the bar is shown)")
    return p

