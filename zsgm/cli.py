"""The ``zsgm`` command line: adapt, sample, eval, plugins, convert.

User mistakes (bad options, bad recipe fields, unknown names, foreign checkpoints, unreadable images, any
operating-system error such as a missing file, a directory given as a file, a refused permission or a full
disk) print one clear message and exit with status 2, without a traceback; ``ZSGM_DEBUG=1`` shows the
traceback. Ctrl-C exits with 130 and says how to resume.

``zsgm sample`` follows the conventions of NVIDIA's ``gen_images.py``: ``--seeds 0-35,40``, ``--trunc``,
``--outdir`` with one ``seedNNNN.png`` per seed, and the latent of seed ``s`` is
``np.random.RandomState(s).randn(1, z_dim)`` (see :func:`seed_latent`).
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from pathlib import Path

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130

SEED_LIMIT = 2 ** 32  # numpy's RandomState takes seeds in [0, 2**32)
MAX_SEEDS = 100_000  # one call of `zsgm sample`; a typo such as 0-4000000000 should not start a day's work
GRID_MAX_IMAGES = 256  # grid.png shows at most this many seeds (each single image is still written)
DEFAULT_SAMPLE_SEEDS = "0-15"
DEFAULT_SAMPLE_TRUNCATION = 0.7
DEFAULT_GRID_COLS = 8


class CommandLineError(Exception):
    """A command-line option is wrong; the message names the option."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that are the user's mistake or the environment's, not a bug of zsgm."""
    import torch

    from zsgm.checkpoint import CheckpointMismatchError
    from zsgm.clip import ClipLoadError
    from zsgm.generator.errors import CheckpointError
    from zsgm.recipe import RecipeError
    from zsgm.registry import RegistryError
    from zsgm.run import RunError

    out_of_memory = (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else ()
    return (CommandLineError, RecipeError, RegistryError, RunError, CheckpointError, CheckpointMismatchError,
            ClipLoadError, OSError, ValueError, MemoryError, *out_of_memory)


def describe_error(exc: BaseException) -> str:
    """The message printed after ``zsgm: error:``.

    OS errors read ``PATH: reason`` (``[Errno 21]`` prefixes dropped; a full disk says so); a recipe error with
    one problem reads ``SOURCE: field: message`` (several problems keep one line each); out-of-memory errors
    keep torch's first sentence and say what to lower.
    """
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.errno == errno.ENOSPC and "disk" not in reason.lower():
            reason += " (the disk is full)"
        if exc.filename is not None:
            names = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
            return f"{names}: {reason}"
        return reason
    problems = getattr(exc, "problems", None)
    if isinstance(problems, list) and len(problems) == 1:  # a RecipeError with one problem: one line
        return f"{getattr(exc, 'source', 'recipe')}: {problems[0]}"
    if type(exc).__name__ == "OutOfMemoryError":
        first = str(exc).split(". ")[0].strip()
        return f"{first}; lower --batch-size or the CLIP ensemble, or use --device cpu"
    if isinstance(exc, MemoryError):
        return f"out of memory{': ' + str(exc) if str(exc) else ''}; lower --batch-size or the CLIP ensemble"
    return str(exc)


# ---------------------------------------------------------------------------------------------- argument types


def _int_at_least(low: int):
    """An argparse type: a whole number >= ``low`` (``2.7`` and ``1e3`` are refused, not rounded)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return convert


def _finite_float(*, low: float, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    left = "(" if low_open else "["
    span = f"{left}{low:g}, {high:g}]" if math.isfinite(high) else f"{'>' if low_open else '>='} {low:g}"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < low or (low_open and value == low) or value > high:
            wanted = f"in {span}" if math.isfinite(high) else span
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value:g}")
        return value

    return convert


def _non_blank(text: str) -> str:
    """An argparse type: text that is not empty or only spaces."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def parse_seeds(spec: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``: NVIDIA ``gen_images.py``'s ``--seeds`` syntax (inclusive ranges).

    Raises:
        argparse.ArgumentTypeError: naming the bad part (empty, not a number, ``"0-"``, ``"5-2"``, a seed
            outside ``[0, 2**32)``, a seed given twice, more than :data:`MAX_SEEDS` seeds).
    """
    if not spec.strip():
        raise argparse.ArgumentTypeError("empty; give seeds such as 0-15 or 0,3,7 or 0-35,40")
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        if not part or not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise argparse.ArgumentTypeError(
                f"{part!r} in {spec!r} is not a seed or a range (give seeds such as 0-15 or 0,3,7 or 0-35,40)")
        lo = int(first)
        hi = int(last) if dash else lo
        if hi < lo:
            raise argparse.ArgumentTypeError(f"{part!r} in {spec!r} is an empty range (write {hi}-{lo})")
        if hi >= SEED_LIMIT:
            raise argparse.ArgumentTypeError(f"{part!r} in {spec!r}: seeds must be below 2**32 = {SEED_LIMIT}")
        ranges.append((lo, hi))
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{spec!r} names {count} seeds; at most {MAX_SEEDS} per call")
    seeds = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        seen: set[int] = set()
        twice = next(s for s in seeds if s in seen or seen.add(s))
        raise argparse.ArgumentTypeError(f"{spec!r} names seed {twice} twice")
    return seeds


def _clip_override(value: str) -> list[dict]:
    """``--clip shapes`` or ``--clip ViT-B-32:openai,ViT-B-16:openai`` or ``--clip ViT-B-32:/path/w.pt``."""
    models = []
    for part in value.split(","):
        name, _, pretrained = part.strip().partition(":")
        if not name.strip():
            raise argparse.ArgumentTypeError(f"{part.strip()!r} in {value!r} has no model name "
                                             f"(give NAME[:PRETRAINED_OR_FILE][,...])")
        entry = {"name": name.strip()}
        if pretrained.strip():
            entry["pretrained"] = pretrained.strip()
        models.append(entry)
    return models


# ---------------------------------------------------------------------------------------------- adapt


def build_recipe_dict(args, registry) -> dict:
    """Merge preset / recipe file / command-line overrides into one recipe dict.

    Raises:
        CommandLineError: no recipe file and no preset; ``--resume`` of a folder without ``recipe.toml``.
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
    if args.preset:
        data = registry.presets.get(args.preset).build()
    if args.recipe:
        data = merge_dicts(data, read_recipe_file(args.recipe))
    if not data:
        raise CommandLineError("give a recipe file or --preset NAME (see `zsgm plugins` for presets)")
    overrides: dict = {}
    if args.source is not None:
        overrides["source"] = args.source
    if args.target is not None:
        overrides["target"] = args.target
    if args.target_image:
        overrides["target_images"] = list(args.target_image)
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
                           "(e.g. --target \"a sketch\") or --target-image FILE"], source=_recipe_label(args))
    return merged


def _recipe_label(args) -> str:
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
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise CommandLineError(f"--out {out}: {existing} is a file, so no directory can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the run directory" if existing == path else f"{existing}, where it would be made,"
        raise CommandLineError(f"--out {out}: {what} is not writable")


def check_target_image_files(paths: list[str] | None) -> None:
    """Each ``--target-image`` is an existing file (not a directory), checked before anything loads."""
    for path in paths or []:
        if Path(path).is_dir():
            raise CommandLineError(f"--target-image {path}: is a directory, not an image file")
        if not Path(path).is_file():
            raise CommandLineError(f"--target-image {path}: no such file")


def check_target_images_are_read(data: dict, registry, paths: list[str] | None) -> None:
    """Refuse ``--target-image`` when no technique of the recipe reads target images (it would be ignored).

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
    raise CommandLineError(f"--target-image: no technique of this recipe reads target images (techniques: "
                           f"{listed}), so the image would be ignored{add} or drop --target-image")


def cmd_adapt(args) -> int:
    from zsgm.loop import adapt
    from zsgm.plugins import get_registry
    from zsgm.recipe import recipe_from_dict

    check_run_dir(args.out)
    check_target_image_files(args.target_image)
    registry = get_registry()
    data = build_recipe_dict(args, registry)
    check_target_images_are_read(data, registry, args.target_image)
    recipe = recipe_from_dict(data, registry=registry, source=_recipe_label(args))
    result = adapt(recipe, out_dir=args.out, resume=args.resume, registry=registry)
    print("\n".join(run_summary(result, Path(args.out), recipe=recipe, resumed=args.resume)))
    return 0


def _last_logged_loss(log_path: Path):
    """The ``total`` of the last record in ``losses.jsonl`` (None if there is none)."""
    import json

    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            return json.loads(line).get("total")
        except (json.JSONDecodeError, AttributeError):
            continue
    return None


def _format_loss(value) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def run_summary(result, out: Path, *, recipe, resumed: bool) -> list[str]:
    """What ``zsgm adapt`` prints at the end: what happened, where each output is, the next commands.

    A resumed run that had already finished says so, with the loss logged last. Reads ``result.paths``,
    ``result.already_finished`` and ``result.resume_changes`` where :class:`zsgm.loop.RunResult` has them.
    """
    finished_before = getattr(result, "already_finished", None)
    if finished_before is None:  # a RunResult without the flag: a resumed run that took no step
        finished_before = resumed and not result.last_losses
    loss = result.last_losses.get("total")
    if loss is None:
        loss = _last_logged_loss(out / "losses.jsonl")
    if finished_before:
        lines = [f"{out} already holds the finished run ({result.steps_done} steps); nothing to do. "
                 f"Final loss {_format_loss(loss)}"]
    else:
        lines = [f"done: {result.steps_done} steps in {result.seconds:.1f} s; final loss {_format_loss(loss)}"]
    changes = getattr(result, "resume_changes", None) or []
    if changes:
        lines.append("resumed with these changes to the run's recipe:")
        lines.extend(f"  {change}" for change in changes)
    paths = getattr(result, "paths", None)
    generator = result.generator_path or getattr(paths, "generator", out / "generator.safetensors")
    places = (("grids", getattr(paths, "samples", out / "samples")), ("generator", generator),
              ("losses", getattr(paths, "losses", out / "losses.jsonl")),
              ("checkpoint", getattr(paths, "checkpoint", out / "checkpoints" / "last.pt")),
              ("recipe", getattr(paths, "recipe", out / "recipe.toml")),
              ("run record", getattr(paths, "record", out / "run.json")))
    width = max(len(label) for label, _ in places) + 1
    lines.append("outputs:")
    lines.extend(f"  {label + ':':<{width}} {path}" for label, path in places if Path(path).exists())
    lines.append("next:")
    lines.append(f"  zsgm sample {out} --seeds 0-15 --outdir {out / 'seeds'}    # one PNG per seed + grid.png")
    if recipe.generator.checkpoint == "shapes":
        lines.append(f"  zsgm eval {out}    # judge the shapes-world run with the ground-truth judges")
    return lines


# ---------------------------------------------------------------------------------------------- sample


def seed_latent(seed: int, z_dim: int):
    """The latent ``z`` ``[1, z_dim]`` float32 of ``seed``, as NVIDIA's ``gen_images.py`` draws it.

    NVIDIA draws ``np.random.RandomState(seed).randn(1, z_dim)`` (float64) and its mapping network casts it
    to float32 first; the cast is done here, so the same seed gives the same latent.
    """
    import numpy as np
    import torch

    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def render_seed(generator, seed: int, *, truncation: float, mean, noise_mode: str, device):
    """One image ``[1, 3, H, W]`` (roughly [-1, 1]) for ``seed``.

    ``w = mean + psi * (w - mean)`` over every layer, computed as NVIDIA's ``w_avg.lerp(w, psi)``: ``psi < 1`` pulls
    towards the mean latent, ``psi > 1`` extrapolates away from it, ``psi = 1`` leaves ``w`` as it is.
    Random noise (``noise_mode="random"``) is drawn from a generator seeded with ``seed``.
    """
    import torch

    z = seed_latent(seed, generator.arch.style_dim).to(device)
    w = generator.mapping(z)  # [1, D]
    if truncation != 1:
        w = torch.lerp(mean.reshape(1, -1).to(w), w, truncation)  # NVIDIA's very arithmetic, bit for bit
    ws = w[:, None, :].repeat(1, generator.n_latent, 1)  # [1, n_latent, D]
    return generator.synthesis(ws, noise_mode=noise_mode, rng=torch.Generator().manual_seed(seed))


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
        _check_parent_can_hold(grid.parent, f"--out {args.out}")
        return None, grid
    option = "--outdir" if args.outdir is not None else "--out"
    folder = Path(args.outdir if args.outdir is not None else args.out)
    if folder.exists() and not folder.is_dir():
        raise CommandLineError(f"{option} {folder}: is a file, not a directory")
    _check_parent_can_hold(folder, f"{option} {folder}")
    return folder, folder / "grid.png"


def _check_parent_can_hold(folder: Path, what: str) -> None:
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise CommandLineError(f"{what}: {existing} is a file, so no directory can be made under it")


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
    import torch

    return [name for name, t in [*generator.named_parameters(), *generator.named_buffers()]
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def cmd_sample(args) -> int:
    import torch
    from PIL import Image

    from zsgm.generator.errors import CheckpointError
    from zsgm.io_utils import image_grid, save_png, to_uint8
    from zsgm.plugins import get_registry
    from zsgm.run import load_generator_asset, resolve_device

    seeds = sample_seeds(args)
    folder, grid_path = sample_outputs(args)
    device = _option_device(args.device, resolve_device)
    generator, _ = load_generator_asset(args.checkpoint, get_registry(), device)
    generator = generator.to(device).eval()
    bad = _non_finite_parameters(generator)
    if bad:
        raise CheckpointError(f"{args.checkpoint}: {len(bad)} tensors hold NaN or infinite values "
                              f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); nothing was sampled")
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    grid_images = []
    with torch.no_grad():
        mean = generator.default_mean_latent() if args.truncation != 1 else None
        for seed in seeds:
            image = render_seed(generator, seed, truncation=args.truncation, mean=mean,
                                noise_mode=args.noise_mode, device=device)
            if not bool(torch.isfinite(image).all()):
                raise CheckpointError(f"{args.checkpoint}: seed {seed} gives non-finite pixels")
            if folder is not None:
                save_png(Image.fromarray(to_uint8(image)[0]), folder / f"seed{seed:04d}.png")
            if len(grid_images) < GRID_MAX_IMAGES:
                grid_images.append(image.cpu())
    cols = args.cols or min(DEFAULT_GRID_COLS, len(grid_images))
    save_png(image_grid(_grid_rows(grid_images, cols)), grid_path)
    if folder is not None:
        print(f"wrote {len(seeds)} images to {folder} (seedNNNN.png)")
    shown = "" if len(grid_images) == len(seeds) else f" (the first {len(grid_images)} of {len(seeds)} seeds)"
    print(f"wrote {grid_path}{shown}")
    return 0


def _option_device(name: str, resolve_device):
    """``--device NAME`` as a torch device; a bad name is an error about ``--device`` (not ``run.device``)."""
    from zsgm.recipe import RecipeError

    try:
        return resolve_device(name)
    except RecipeError as exc:
        reasons = [p.split(": ", 1)[1] if p.startswith("run.device: ") else p for p in exc.problems]
        raise CommandLineError(f"--device {name}: {'; '.join(reasons)}") from None


# ---------------------------------------------------------------------------------------------- plugins


def cmd_plugins(args) -> int:
    from zsgm.plugins import get_registry

    registry = get_registry()
    for info in sorted(registry.infos.values(), key=lambda i: i.name):
        print(f"{info.name}  ({info.distribution} {info.version})")
        for label, names in (("techniques", info.techniques), ("presets", info.presets),
                             ("generators", info.generators), ("clip models", info.clip_models),
                             ("metrics", info.metrics)):
            if names:
                print(f"  {label}: {', '.join(names)}")
        if args.verbose:
            print(f"  hooks: {', '.join(info.hooks)}")
    for dist, error in registry.broken:
        print(f"BROKEN  {dist}: {error}")
    return 0


# ---------------------------------------------------------------------------------------------- convert


def cmd_convert(args) -> int:
    from zsgm.generator.convert import convert_checkpoint

    convert_checkpoint(args.src, args.dst)
    print(f"wrote {args.dst}")
    return 0


# ---------------------------------------------------------------------------------------------- eval


def cmd_eval(args) -> int:
    from zsgm.io_utils import atomic_write_text
    from zsgm.toy.evaluate import evaluate_run, format_table

    if args.out is not None and Path(args.out).is_dir():
        raise CommandLineError(f"--out {args.out}: is a directory; give a file name for the table")
    for run in args.runs:
        if not Path(run).is_dir():
            raise CommandLineError(f"{run}: {'is a file, not a' if Path(run).exists() else 'no such'} run directory")
    records = [evaluate_run(d, n=args.n, seed=args.seed, truncation=args.truncation) for d in args.runs]
    table = format_table(records)
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)
        print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors reach :func:`main` as one line instead of usage text and SystemExit."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise CommandLineError(f"{message} (see `{self.prog} --help`)")


def zsgm_version() -> str:
    """The installed distribution's version (the package's ``__version__`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zsgm")
    except PackageNotFoundError:
        from zsgm import __version__

        return __version__


FROM_RECIPE = "(default: the recipe's or preset's value)"


def _add_adapt(sub) -> None:
    p = sub.add_parser("adapt", help="adapt a generator to a target domain",
                       description="Adapt a generator to a target domain. Options without a stated default "
                                   "override the recipe file or preset; the recipe's defaults apply otherwise.")
    p.add_argument("recipe", nargs="?", help="TOML recipe file (default: none; give it, --preset, or both: "
                                             "the file's fields override the preset's)")
    p.add_argument("--preset", help="a named recipe, see `zsgm plugins` (default: none)")
    p.add_argument("--source", type=_non_blank, help=f"text of the generator's domain, e.g. 'photo' {FROM_RECIPE}")
    p.add_argument("--target", type=_non_blank, help=f"text of the target domain, e.g. 'a sketch' {FROM_RECIPE}")
    p.add_argument("--target-image", action="append", metavar="FILE",
                   help="style image for techniques that read target images, e.g. image-target; repeatable "
                        "(default: none)")
    p.add_argument("--generator", type=_non_blank,
                   help=f"checkpoint file (.pt, .pkl, .safetensors) or registered generator name {FROM_RECIPE}")
    p.add_argument("--clip", type=_clip_override, metavar="NAME[:PRETRAINED_OR_FILE][,...]",
                   help=f"the CLIP ensemble, e.g. ViT-B-32:openai,ViT-B-16:openai {FROM_RECIPE}")
    p.add_argument("--steps", type=_int_at_least(1), help=f"optimisation steps {FROM_RECIPE}")
    p.add_argument("--batch-size", dest="batch_size", type=_int_at_least(1), help=f"latents per step {FROM_RECIPE}")
    p.add_argument("--lr", type=_finite_float(low=0.0, low_open=True), help=f"Adam learning rate {FROM_RECIPE}")
    p.add_argument("--seed", type=_int_at_least(0), help=f"run seed (latents, noise) {FROM_RECIPE}")
    p.add_argument("--device", type=_non_blank,
                   help=f"'auto' (CUDA when available), 'cpu', 'cuda:1', ... {FROM_RECIPE}")
    p.add_argument("--sample-every", dest="sample_every", type=_int_at_least(0),
                   help=f"write a source/target grid every N steps, 0: only at the end {FROM_RECIPE}")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=_int_at_least(0),
                   help=f"write a resumable checkpoint every N steps, 0: only at the end {FROM_RECIPE}")
    p.add_argument("--out", required=True, help="run directory: grids, losses, checkpoint, final generator "
                                                "(required; no default)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, reading its recipe.toml when no "
                        "recipe or preset is given (default: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: the bar is shown)")
    p.set_defaults(func=cmd_adapt)


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="sample images from a generator (NVIDIA gen_images.py conventions)",
                       description="Render one image per seed. A seed's latent is NVIDIA gen_images.py's: "
                                   "np.random.RandomState(seed).randn(1, z_dim).")
    p.add_argument("checkpoint", help="generator file (.pt, .pkl, .safetensors), zsgm run directory or its "
                                      "checkpoints/last.pt, or registered generator name such as 'shapes' (required)")
    p.add_argument("--seeds", type=parse_seeds, metavar="LIST",
                   help=f"seeds as ranges and lists, e.g. 0-35,40 (default: {DEFAULT_SAMPLE_SEEDS})")
    p.add_argument("--trunc", "--truncation", dest="truncation", metavar="PSI",
                   type=_finite_float(low=0.0), default=DEFAULT_SAMPLE_TRUNCATION,
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
    p.add_argument("-n", type=_int_at_least(1), metavar="N",
                   help="old spelling of --seeds: N images from seeds SEED..SEED+N-1 (default: 16)")
    p.add_argument("--seed", type=_int_at_least(0), help="old spelling of --seeds: the first seed (default: 0)")
    p.add_argument("--cols", type=_int_at_least(1),
                   help=f"images per grid row (default: {DEFAULT_GRID_COLS}, or the number of seeds when fewer); "
                        f"the grid shows at most {GRID_MAX_IMAGES} seeds")
    p.add_argument("--grid", action="store_true", help="kept for old scripts; grid.png is always written "
                                                       "(default: off)")
    p.add_argument("--device", default="auto", type=_non_blank,
                   help="'auto' (CUDA when available), 'cpu', 'cuda:1', ... (default: %(default)s)")
    p.set_defaults(func=cmd_sample)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="judge finished shapes-world runs with the ground-truth judges")
    p.add_argument("runs", nargs="+", help="run directories, each with recipe.toml and generator.safetensors "
                                           "(required)")
    p.add_argument("-n", type=_int_at_least(1), default=256, help="samples per run (default: %(default)s)")
    p.add_argument("--seed", type=_int_at_least(0), default=12345,
                   help="seed of the judged latents and noise (default: %(default)s)")
    p.add_argument("--truncation", type=_finite_float(low=0.0, high=1.0), default=1.0,
                   help="truncation psi in [0, 1] of the judged samples (default: %(default)s)")
    p.add_argument("--out", help="also write the markdown table to this file (default: print only)")
    p.set_defaults(func=cmd_eval)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zsgm", description="CLIP-guided adaptation of StyleGAN2 generators")
    parser.add_argument("--version", action="version", version=f"zsgm {zsgm_version()}",
                        help="print the zsgm version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_adapt(sub)
    _add_sample(sub)

    p = sub.add_parser("plugins", help="list installed plugins, techniques and presets")
    p.add_argument("-v", "--verbose", action="store_true", help="also list each plugin's hooks (default: off)")
    p.set_defaults(func=cmd_plugins)

    _add_eval(sub)

    p = sub.add_parser("convert", help="write a generator (file, run directory, name) as .pt or .safetensors")
    p.add_argument("src", help="the generator to read: rosinality .pt, NVIDIA .pkl, zsgm .safetensors, a zsgm run "
                               "directory or its checkpoints/last.pt, or a registered name (required)")
    p.add_argument("dst", help="the file to write: .pt (rosinality) or .safetensors (zsgm), by suffix (required)")
    p.set_defaults(func=cmd_convert)
    return parser


# ---------------------------------------------------------------------------------------------- main


def _debug() -> bool:
    return os.environ.get("ZSGM_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 2 for a user error, 130 when interrupted)."""
    args = None
    try:
        args = make_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        if getattr(args, "command", None) == "adapt":
            print(f"zsgm: interrupted; resume with `zsgm adapt --resume --out {args.out}`", file=sys.stderr)
        else:
            print("zsgm: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as exc:  # noqa: BLE001 - only the user-error classes are caught below; others re-raise
        if _debug() or not isinstance(exc, _user_errors()):
            raise
        print(f"zsgm: error: {describe_error(exc)}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
