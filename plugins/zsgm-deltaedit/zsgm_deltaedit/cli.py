"""``zsgm edit``: text-driven edits of a generator's images with a DeltaEdit mapper.

``zsgm edit GENERATOR --seeds 0-255 --neutral TEXT --target TEXT --outdir DIR`` writes ``DIR/seedNNNN.png`` (the
edit at ``--strength``, by default the mapper's: 1 as released, 1.5 for the shapes world) per seed and
``DIR/grid.png`` (columns: seeds; rows: the source, then each strength). A seed's W+ code, truncation and noise
are ``zsgm sample``'s (its own function draws them), so the top row of the grid is what ``zsgm sample`` shows for
the same seeds. ``--latents FILE`` edits W+ codes of real images instead
(``latentNNNN.png``). The mapper is the generator's cached one, trained on first use with the matching preset, or
``--mapper DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zsgm.cli_errors import CommandLineError
from zsgm.cli_options import clip_override, finite_float, int_at_least, non_blank, refuse_file_in_the_way
from zsgm.cli_seeds import parse_seeds

from zsgm_deltaedit.recipe import MAPPER_PRESETS

DEFAULT_SEEDS = "0-15"
DEFAULT_TRUNCATION = 0.7  # zsgm sample's default
DEFAULT_GRID_SEEDS = 16
SHAPES_PRESET = "deltaedit-shapes"
DEFAULT_PRESET = "deltaedit"
FIRST_USE_COST = {
    "deltaedit": "200,000 generator forwards and CLIP encodes, 201,562 mapper steps and 1.2 M forwards for the "
                 "relevance: about half a day on one GPU at 1024 px, far longer on a CPU",
    "deltaedit-shapes": "about 2-6 minutes on 2 CPU cores, up to 10 on a busy machine",
}


def strength_list(text: str) -> list[float]:
    """``--strengths 0.5,1,1.5``: finite numbers."""
    parse = finite_float(low=-1e6)
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas, e.g. 0.5,1,1.5")
    return [parse(p) for p in parts]


def layer_list(text: str) -> list[int]:
    """``--layers 3-6`` or ``3,4,5,6``: style-layer indices (inclusive ranges)."""
    out: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise argparse.ArgumentTypeError(f"{part.strip()!r} in {text!r} is not a layer index or a range "
                                             f"(e.g. 3-6 or 0,2,5)")
        lo, hi = int(first), int(last) if dash else int(first)
        if hi < lo:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} in {text!r} is an empty range")
        out += [k for k in range(lo, hi + 1) if k not in out]
    return out


def layers_option(text: str):
    """``--layers``: ``all`` or a :func:`layer_list`."""
    return "all" if text.strip() == "all" else layer_list(text)


def seed_code(generator, seed: int, *, truncation: float, mean, noise_mode: str, device):
    """``(image, ws, noise)`` of ``seed`` exactly as ``zsgm sample`` renders it (:func:`zsgm.cli_seeds.seed_code`)."""
    from zsgm.cli_seeds import seed_code as sample_code

    ws, noise = sample_code(generator, seed, truncation=truncation, mean=mean, noise_mode=noise_mode, device=device)
    return generator.synthesis(ws, noise=noise), ws, noise


def _check_options(args) -> None:
    if args.latents is not None and args.seeds is not None:
        raise CommandLineError("--latents FILE edits the codes in the file; it cannot be combined with --seeds")
    if args.latents is not None and not Path(args.latents).is_file():
        raise CommandLineError(f"--latents {args.latents}: no such file")
    if args.mapper is not None and (args.preset is not None or args.recipe is not None or args.clip is not None):
        raise CommandLineError("--mapper DIR uses a trained mapper (with its own CLIP); --preset, --recipe and --clip "
                               "choose how to train one")
    if args.preset is not None and args.recipe is not None:
        raise CommandLineError("give --preset NAME or --recipe FILE, not both")
    if args.mapper is not None and not Path(args.mapper).exists():
        raise CommandLineError(f"--mapper {args.mapper}: no such mapper folder")
    out = Path(args.outdir)
    if out.exists() and not out.is_dir():
        raise CommandLineError(f"--outdir {out}: is a file, not a directory")
    refuse_file_in_the_way(out, f"--outdir {out}")


def is_shapes_world(generator) -> bool:
    """The generator has the shipped shapes generator's architecture (the shapes generator, or one adapted from
    it by ``zsgm adapt``)."""
    from zsgm.toy.assets import load_shapes_generator

    try:
        shapes, _ = load_shapes_generator(device="cpu")
    except (OSError, ValueError):
        return False
    return generator.arch == shapes.arch


def choose_recipe(args, generator):
    """The mapper recipe: ``--recipe``, else ``--preset``, else by generator; ``--clip`` replaces its CLIP."""
    from zsgm_deltaedit.recipe import load_mapper_recipe, mapper_preset, mapper_recipe_from_dict, \
        mapper_recipe_to_dict, merge_recipe

    if args.recipe is not None:
        recipe = load_mapper_recipe(args.recipe)
    else:
        name = args.preset or (SHAPES_PRESET if is_shapes_world(generator) else DEFAULT_PRESET)
        recipe = mapper_preset(name)
    if args.clip is not None:
        if len(args.clip) != 1:
            raise CommandLineError(f"--clip: the mapper is conditioned on one CLIP; got {len(args.clip)} models")
        recipe = mapper_recipe_from_dict(merge_recipe(mapper_recipe_to_dict(recipe), {"clip": args.clip[0]}),
                                         source="--clip")
    return recipe


def get_mapper(args, generator, device):
    """The trained mapper: ``--mapper``, else the cached one for this generator (trained now if missing)."""
    from zsgm_deltaedit.mappers import MAPPER_FILE, ensure_mapper, load_mapper, mapper_folder
    from zsgm_deltaedit.store import weights_fingerprint

    if args.mapper is not None:
        trained = load_mapper(args.mapper, generator=generator, device=device)
        if trained.generator_fingerprint != weights_fingerprint(generator):
            print(f"deltaedit: note: {args.mapper} was trained on another generator; its relevance was measured there")
        return trained
    recipe = choose_recipe(args, generator)
    folder = mapper_folder(weights_fingerprint(generator), recipe)
    if not (folder / MAPPER_FILE).is_file():
        cost = FIRST_USE_COST.get(recipe.preset, "see the recipe")
        print(f"deltaedit: no {recipe.preset} mapper for this generator yet; training it on first use into {folder} "
              f"({recipe.codes.samples:,} samples, {recipe.train.steps:,} steps, relevance over "
              f"{recipe.relevance.images} images; {cost}). Interrupted, it resumes where it stopped.")
    return ensure_mapper(generator, recipe, folder=folder, device=device, progress=not args.quiet)


def _codes(args, generator, device):
    """Yield ``(name, source image, ws, noise)`` per seed or per latent-file row."""
    import torch

    from zsgm_deltaedit.latent_files import read_latent_file

    if args.latents is not None:
        ws_all = read_latent_file(args.latents, n_latent=generator.n_latent, style_dim=generator.arch.style_dim)
        for i in range(ws_all.shape[0]):
            ws = ws_all[i:i + 1].to(device)
            rng = torch.Generator().manual_seed(i)
            noise = generator.make_noise(1, mode=args.noise_mode, rng=rng)
            yield f"latent{i:04d}", generator.synthesis(ws, noise=noise), ws, noise
        return
    mean = generator.default_mean_latent() if args.truncation != 1 else None
    for seed in args.seeds or parse_seeds(DEFAULT_SEEDS):
        image, ws, noise = seed_code(generator, seed, truncation=args.truncation, mean=mean,
                                     noise_mode=args.noise_mode, device=device)
        yield f"seed{seed:04d}", image, ws, noise


def cmd_edit(args) -> int:
    """Run ``zsgm edit``."""
    import torch
    from PIL import Image

    from zsgm.cli_options import option_device
    from zsgm.io_utils import image_grid, save_png, to_uint8
    from zsgm.plugins import get_registry
    from zsgm.run import load_generator_asset

    from zsgm_deltaedit.edit import edit_images, text_delta

    _check_options(args)
    device = option_device(args.device)
    generator, _ = load_generator_asset(args.generator, get_registry(), device)
    generator = generator.to(device).eval()
    if isinstance(args.layers, list):
        from zsgm_deltaedit.edit import layer_mask

        try:
            layer_mask(generator, args.layers)
        except ValueError as exc:
            raise CommandLineError(f"--layers: {exc}") from None
    trained = get_mapper(args, generator, device)
    defaults = trained.recipe.edit
    neutral = args.neutral if args.neutral is not None else defaults.neutral
    theta = args.theta if args.theta is not None else defaults.theta
    strength = args.strength if args.strength is not None else defaults.strength
    strengths = args.strengths if args.strengths is not None else list(defaults.strengths)
    layers = args.layers if args.layers is not None else defaults.layers
    torgb = args.torgb if args.torgb is not None else defaults.torgb
    if layers == "all":
        layers = None
    every = list(dict.fromkeys([strength, *strengths]))  # the single images' strength first
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    columns, count = [], 0
    with torch.no_grad():
        delta_t = text_delta(trained.clip_model, neutral, args.target, templates=trained.recipe.clip.templates)
        for name, source, ws, noise in _codes(args, generator, device):
            edits = edit_images(generator, ws, mapper=trained.mapper, relevance=trained.relevance,
                                clip_model=trained.clip_model, neutral=neutral, target=args.target, theta=theta,
                                strengths=every, noise=noise, templates=trained.recipe.clip.templates,
                                layers=layers, torgb_weight=torgb, torgb=trained.torgb_direction, delta_t=delta_t)
            save_png(Image.fromarray(to_uint8(edits[0])[0]), out / f"{name}.png")
            if len(columns) < args.cols:
                columns.append([source.cpu()] + [edits[every.index(k)].cpu() for k in strengths])
            count += 1
    rows = [torch.cat([col[r] for col in columns]) for r in range(len(columns[0]))]
    save_png(image_grid(rows), out / "grid.png")
    print(f"edited {count} images: {neutral!r} -> {args.target!r}, theta {theta}, ToRGB step {torgb:g}, "
          f"mapper {trained.folder}")
    print(f"wrote {count} images (strength {strength:g}) and grid.png (rows: source, strengths {strengths}) to {out}")
    return 0


def add_edit_arguments(p) -> None:
    """The options of ``zsgm edit``."""
    p.add_argument("generator", help="generator file (.pt, .pkl, .safetensors), zsgm run directory or registered "
                                     "name such as 'shapes' (required)")
    p.add_argument("--target", required=True, type=non_blank, help="the target text, e.g. 'blue' (required)")
    p.add_argument("--neutral", type=non_blank,
                   help="the neutral text the edit starts from (default: the mapper's: 'face' for the deltaedit "
                        "preset, as DeltaEdit hard-codes; 'photo' for deltaedit-shapes)")
    p.add_argument("--outdir", required=True, metavar="DIR",
                   help="folder for one PNG per seed (the edit at --strength) and grid.png (required)")
    p.add_argument("--seeds", type=parse_seeds, metavar="LIST",
                   help=f"seeds as in zsgm sample, e.g. 0-255 (default: {DEFAULT_SEEDS})")
    p.add_argument("--latents", metavar="FILE",
                   help="edit the W+ codes of a .pt or .npy file [N, n_latent, D] (e4e / ReStyle inversions of "
                        "real images) instead of seeds (default: none)")
    p.add_argument("--mapper", metavar="DIR",
                   help="a trained mapper folder (default: this generator's cached mapper, trained on first use)")
    p.add_argument("--preset", choices=sorted(MAPPER_PRESETS),
                   help="mapper recipe for training on first use (default: deltaedit-shapes for the shapes "
                        "generator and generators adapted from it, else deltaedit)")
    p.add_argument("--recipe", metavar="FILE", help="mapper recipe TOML instead of a preset (default: none)")
    p.add_argument("--theta", type=finite_float(low=0.0), metavar="T",
                   help="relevance threshold: a channel moves only if |R_c . dt| >= T (default: the mapper's, "
                        "0.03 as released)")
    p.add_argument("--strength", type=finite_float(low=-1e6), metavar="K",
                   help="edit strength of the single images (default: the mapper's: 1 for deltaedit, as released; "
                        "1.5 for deltaedit-shapes)")
    p.add_argument("--strengths", type=strength_list, metavar="LIST",
                   help="edit strengths of the grid rows, e.g. 0.5,1,1.5 (default: the mapper's: 0.5,1,1.5 for "
                        "deltaedit, 1,1.5,2 for deltaedit-shapes)")
    p.add_argument("--layers", type=layers_option, metavar="LIST",
                   help="style layers (0 = conv1, in synthesis order) the edit may move, e.g. 3-6, or 'all' (default: "
                        "the mapper's: all for deltaedit, as released; 4-6 for deltaedit-shapes)")
    p.add_argument("--torgb", type=finite_float(low=0.0), metavar="W",
                   help="ToRGB colour step per unit strength, in standard deviations along the text's W direction; 0: "
                        "off (default: the mapper's: 0 for deltaedit, as released; 2 for deltaedit-shapes)")
    p.add_argument("--trunc", "--truncation", dest="truncation", metavar="PSI", type=finite_float(low=0.0),
                   default=DEFAULT_TRUNCATION,
                   help="truncation psi of the seeds' latents, as zsgm sample (default: %(default)s)")
    p.add_argument("--noise-mode", dest="noise_mode", default="const", choices=["const", "random", "none"],
                   help="per-layer noise, as zsgm sample (default: %(default)s)")
    p.add_argument("--clip", type=clip_override, metavar="NAME[:PRETRAINED_OR_FILE]",
                   help="the CLIP of a mapper trained on first use (default: the preset's: ViT-B-32-quickgelu:openai, "
                        "or shapes)")
    p.add_argument("--cols", type=int_at_least(1), default=DEFAULT_GRID_SEEDS,
                   help="seeds shown in grid.png (default: %(default)s)")
    p.add_argument("--device", default="auto", type=non_blank,
                   help="'auto' (CUDA when available), 'cpu', 'cuda:1', ... (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")
