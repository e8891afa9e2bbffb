"""``zsgm sample``: one image per seed and a grid, following NVIDIA's ``gen_images.py`` conventions.

``--seeds 0-35,40``, ``--trunc``, ``--outdir`` with one ``seedNNNN.png`` per seed (see :mod:`zsgm.cli_seeds`
for the seed syntax and latents). The old spellings ``--out``, ``-n`` and ``--seed`` still work. Options and
output paths are checked before the generator loads.

``--mix-with mean|reference`` (``--mix-from SLOT``) applies One-shot CLIP's inference-time style mixing: the fine
W+ slots of every sample take the mean latent or a one-shot run's reference latent (:mod:`zsgm.style_mixing`).
"""

from __future__ import annotations

from pathlib import Path

from zsgm.cli_errors import CommandLineError
from zsgm.cli_options import finite_float, int_at_least, non_blank, option_device, refuse_file_in_the_way
from zsgm.cli_seeds import MAX_SEEDS, SEED_LIMIT, parse_seeds, render_seed

GRID_MAX_IMAGES = 256  # grid.png shows at most this many seeds (each single image is still written)
DEFAULT_SAMPLE_SEEDS = "0-15"
DEFAULT_SAMPLE_TRUNCATION = 0.7
DEFAULT_GRID_COLS = 8


def sample_seeds(args) -> list[int]:
    """The seeds to render: ``--seeds``, or the old ``--seed S -n N`` (S .. S+N-1), else 0-15."""
    if args.seeds is not None:
        if args.n is not None or args.seed is not None:
            raise CommandLineError("--seeds cannot be combined with -n/--seed (the old spelling of "
                                   "--seeds S-(S+N-1)); give one or the other")
        return args.seeds
    if args.n is None and args.seed is None:
        return parse_seeds(DEFAULT_SAMPLE_SEEDS)
    first = 0 if args.seed is None else args.seed
    count = 16 if args.n is None else args.n
    if count > MAX_SEEDS:
        raise CommandLineError(f"-n {count}: at most {MAX_SEEDS} images per call")
    if first + count > SEED_LIMIT:
        raise CommandLineError(f"--seed {first} -n {count}: seeds must be below 2**32 = {SEED_LIMIT}")
    return list(range(first, first + count))


def sample_outputs(args) -> tuple[Path | None, Path]:
    """``(folder for the single images or None, grid path)``, checked before the generator loads.

    ``--outdir DIR``: ``DIR/seedNNNN.png`` per seed and ``DIR/grid.png``. The old ``--out``: a ``.png`` path
    is the grid alone; any other path works as ``--outdir``.
    """
    if (args.outdir is None) == (args.out is None):
        raise CommandLineError("give --outdir DIR (one PNG per seed plus grid.png) or --out FILE.png (a grid "
                               "only)" + ("" if args.outdir is None else ", not both"))
    if args.out is not None and Path(args.out).suffix.lower() == ".png":
        grid = Path(args.out)
        if grid.is_dir():
            raise CommandLineError(f"--out {args.out}: is a directory; give a file name ending in .png")
        refuse_file_in_the_way(grid.parent, f"--out {args.out}")
        return None, grid
    option = "--outdir" if args.outdir is not None else "--out"
    folder = Path(args.outdir if args.outdir is not None else args.out)
    if folder.exists() and not folder.is_dir():
        raise CommandLineError(f"{option} {folder}: is a file, not a directory")
    refuse_file_in_the_way(folder, f"{option} {folder}")
    return folder, folder / "grid.png"


def check_mix_options(args, registry) -> Path | None:
    """Check ``--mix-with`` / ``--mix-from`` before the generator loads; returns the run directory whose
    reference latent ``--mix-with reference`` reads, else None.

    Raises:
        CommandLineError: ``--mix-from`` without ``--mix-with``; ``--mix-with reference`` when GENERATOR is not a
            run directory, or the run has no ``reference/latent.safetensors`` (naming the file).
    """
    from zsgm.style_mixing import REFERENCE_LATENT

    if args.mix_with is None:
        if args.mix_from is not None:
            raise CommandLineError("--mix-from needs --mix-with mean|reference (which latent the fine slots take)")
        return None
    if args.mix_with != "reference":
        return None
    run = Path(args.checkpoint)
    if args.checkpoint in registry.generators or not run.is_dir():
        raise CommandLineError(f"--mix-with reference: GENERATOR must be a zsgm run directory (whose "
                               f"{REFERENCE_LATENT.as_posix()} holds the reference latent); got {args.checkpoint}")
    if not (run / REFERENCE_LATENT).is_file():
        raise CommandLineError(f"--mix-with reference: {run / REFERENCE_LATENT} does not exist (the one-shot "
                               f"technique reference-search writes it; was this run adapted with --reference?)")
    return run


def mix_setting(args, generator, run: Path | None):
    """``(latent the fine slots take, first mixed slot)`` for ``--mix-with``, or ``(None, None)`` without it.

    Raises:
        CommandLineError: ``--mix-from`` beyond the generator's slots, or an unusable reference latent file.
    """
    from zsgm.style_mixing import default_mix_slot, mixing_latent

    if args.mix_with is None:
        return None, None
    n_latent = generator.n_latent
    from_slot = default_mix_slot(n_latent) if args.mix_from is None else args.mix_from
    if from_slot > n_latent:
        raise CommandLineError(f"--mix-from {from_slot}: this generator has {n_latent} W+ slots (give 0 to "
                               f"{n_latent}; default {default_mix_slot(n_latent)})")
    try:
        return mixing_latent(generator, args.mix_with, run_dir=run), from_slot
    except ValueError as exc:
        raise CommandLineError(f"--mix-with {args.mix_with}: {exc}") from None


def _grid_rows(images: list, cols: int) -> list:
    """Rows of ``cols`` images ``[cols, 3, H, W]``; the last row is padded with white."""
    import torch

    batch = torch.cat(images)
    rows = [batch[i:i + cols] for i in range(0, batch.shape[0], cols)]
    if rows[-1].shape[0] < cols:
        pad = torch.ones((cols - rows[-1].shape[0], *batch.shape[1:]))
        rows[-1] = torch.cat([rows[-1], pad])
    return rows


def _non_finite_parameters(generator) -> list[str]:
    """Names of the generator's floating parameters and buffers that hold NaN or infinite values."""
    from zsgm.tensor_checks import nonfinite_names

    return nonfinite_names({**dict(generator.named_parameters()), **dict(generator.named_buffers())})


def cmd_sample(args) -> int:
    """Render every seed (``seedNNNN.png`` with ``--outdir``) and ``grid.png``; non-finite weights or pixels are a
    :class:`~zsgm.generator.errors.CheckpointError` naming the generator."""
    import torch
    from PIL import Image

    from zsgm.generator.errors import CheckpointError
    from zsgm.io_utils import image_grid, save_png, to_uint8
    from zsgm.plugins import get_registry
    from zsgm.run import load_generator_asset

    seeds = sample_seeds(args)
    folder, grid_path = sample_outputs(args)
    registry = get_registry()
    mix_run = check_mix_options(args, registry)
    device = option_device(args.device)
    generator, _ = load_generator_asset(args.checkpoint, registry, device)
    generator = generator.to(device).eval()
    bad = _non_finite_parameters(generator)
    if bad:
        raise CheckpointError(f"{args.checkpoint}: {len(bad)} tensors hold NaN or infinite values "
                              f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); nothing was sampled")
    mix_with, mix_from = mix_setting(args, generator, mix_run)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    grid_images = []
    with torch.no_grad():
        mean = generator.default_mean_latent() if args.truncation != 1 else None
        for seed in seeds:
            image = render_seed(generator, seed, truncation=args.truncation, mean=mean,
                                noise_mode=args.noise_mode, device=device, mix_with=mix_with, mix_from=mix_from)
            if not bool(torch.isfinite(image).all()):
                raise CheckpointError(f"{args.checkpoint}: seed {seed} gives non-finite pixels")
            if folder is not None:
                save_png(Image.fromarray(to_uint8(image)[0]), folder / f"seed{seed:04d}.png")
            if len(grid_images) < GRID_MAX_IMAGES:
                grid_images.append(image.cpu())
    cols = args.cols or min(DEFAULT_GRID_COLS, len(grid_images))
    save_png(image_grid(_grid_rows(grid_images, cols)), grid_path)
    if mix_with is not None:
        print(f"style mixing: W+ slots {mix_from}-{generator.n_latent - 1} of 0-{generator.n_latent - 1} from the "
              f"{'mean latent' if args.mix_with == 'mean' else 'reference latent'}")
    if folder is not None:
        print(f"wrote {len(seeds)} images to {folder} (seedNNNN.png)")
    shown = "" if len(grid_images) == len(seeds) else f" (the first {len(grid_images)} of {len(seeds)} seeds)"
    print(f"wrote {grid_path}{shown}")
    return 0


def add_sample_parser(sub):
    """The ``sample`` subcommand's parser and options (its handler is set by :func:`zsgm.cli.make_parser`)."""
    p = sub.add_parser("sample", help="sample images from a generator (NVIDIA gen_images.py conventions)",
                       description="Render one image per seed. A seed's latent is NVIDIA gen_images.py's: "
                                   "np.random.RandomState(seed).randn(1, z_dim).")
    p.add_argument("checkpoint", help="generator file (.pt, .pkl, .safetensors), zsgm run directory or its "
                                      "checkpoints/last.pt, or registered generator name such as 'shapes' (required)")
    p.add_argument("--seeds", type=parse_seeds, metavar="LIST",
                   help=f"seeds as ranges and lists, e.g. 0-35,40 (default: {DEFAULT_SAMPLE_SEEDS})")
    p.add_argument("--trunc", "--truncation", dest="truncation", metavar="PSI",
                   type=finite_float(low=0.0), default=DEFAULT_SAMPLE_TRUNCATION,
                   help="truncation psi: w = mean + psi * (w - mean); 1 = none, below 1 nearer the mean, above "
                        "1 extrapolates as NVIDIA's allows; negative or non-finite refused (default: %(default)s)")
    p.add_argument("--noise-mode", dest="noise_mode", default="const", choices=["const", "random", "none"],
                   help="per-layer noise: the generator's stored maps, fresh maps from the seed, or none "
                        "(default: %(default)s)")
    p.add_argument("--outdir", metavar="DIR",
                   help="folder for seedNNNN.png per seed (4-digit zero pad, as NVIDIA's) and grid.png "
                        "(default: none; give --outdir or --out)")
    p.add_argument("--out", metavar="PATH",
                   help="old spelling: a .png path writes the grid alone, any other path works as --outdir "
                        "(default: none)")
    p.add_argument("-n", type=int_at_least(1), metavar="N",
                   help="old spelling of --seeds: N images from seeds SEED..SEED+N-1 (default: 16)")
    p.add_argument("--seed", type=int_at_least(0), help="old spelling of --seeds: the first seed (default: 0)")
    p.add_argument("--cols", type=int_at_least(1),
                   help=f"images per grid row (default: {DEFAULT_GRID_COLS}, or the number of seeds when fewer); "
                        f"the grid shows at most {GRID_MAX_IMAGES} seeds")
    p.add_argument("--grid", action="store_true", help="kept for old scripts; grid.png is always written "
                                                       "(default: off)")
    p.add_argument("--mix-with", dest="mix_with", choices=["mean", "reference"],
                   help="One-shot CLIP's inference-time style mixing: the fine W+ slots (from --mix-from on) of "
                        "every sample take the mean latent, or the reference latent of a one-shot run directory "
                        "(its reference/latent.safetensors) (default: no mixing)")
    p.add_argument("--mix-from", dest="mix_from", type=int_at_least(0), metavar="SLOT",
                   help="first mixed W+ slot, needs --mix-with (default: 11 of 18 as published, the same fraction "
                        "for other sizes: 5 of 8 at 32 px)")
    p.add_argument("--device", default="auto", type=non_blank,
                   help="'auto' (CUDA when available), 'cpu', 'cuda:1', ... (default: %(default)s)")
    return p

