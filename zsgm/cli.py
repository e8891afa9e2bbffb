"""The ``zsgm`` command line: adapt, sample, eval, plugins, convert.

User mistakes (bad recipe fields, unknown names, foreign checkpoints, unreadable images) print one clear
message and exit with status 2, without a traceback; ``ZSGM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

USER_ERROR_EXIT = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    from zsgm.checkpoint import CheckpointMismatchError
    from zsgm.clip import ClipLoadError
    from zsgm.generator.errors import CheckpointError
    from zsgm.recipe import RecipeError
    from zsgm.registry import RegistryError
    from zsgm.run import RunError

    return (RecipeError, RegistryError, RunError, CheckpointError, CheckpointMismatchError, ClipLoadError,
            FileNotFoundError, ValueError)


# ---------------------------------------------------------------------------------------------- adapt


def _clip_override(value: str) -> list[dict]:
    """``--clip shapes`` or ``--clip ViT-B-32:openai,ViT-B-16:openai`` or ``--clip ViT-B-32:/path/w.pt``."""
    models = []
    for part in value.split(","):
        name, _, pretrained = part.strip().partition(":")
        entry = {"name": name}
        if pretrained:
            entry["pretrained"] = pretrained
        models.append(entry)
    return models


def build_recipe_dict(args, registry) -> dict:
    """Merge preset / recipe file / command-line overrides into one recipe dict."""
    import tomllib

    from zsgm.recipe import RecipeError, merge_dicts

    data: dict = {}
    if args.resume and not args.recipe and not args.preset:
        saved = Path(args.out) / "recipe.toml"
        if not saved.exists():
            raise RecipeError([f"--resume: {saved} does not exist"])
        args.recipe = str(saved)
    if args.preset:
        data = registry.presets.get(args.preset).build()
    if args.recipe:
        try:
            file_data = tomllib.loads(Path(args.recipe).read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecipeError([f"cannot read the recipe: {exc}"], source=args.recipe) from None
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError([f"not valid TOML: {exc}"], source=args.recipe) from None
        data = merge_dicts(data, file_data)
    if not data:
        raise RecipeError(["give a recipe file or --preset NAME (see `zsgm plugins` for presets)"])
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
        overrides.setdefault("clip", {})["models"] = _clip_override(args.clip)
    for key, attr in (("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr")):
        if getattr(args, attr) is not None:
            overrides.setdefault("optim", {})[key] = getattr(args, attr)
    for key in ("seed", "device", "sample_every", "checkpoint_every"):
        if getattr(args, key) is not None:
            overrides.setdefault("run", {})[key] = getattr(args, key)
    if args.no_progress:
        overrides.setdefault("run", {})["progress"] = False
    return merge_dicts(data, overrides)


def cmd_adapt(args) -> int:
    from zsgm.loop import adapt
    from zsgm.plugins import get_registry
    from zsgm.recipe import recipe_from_dict

    registry = get_registry()
    data = build_recipe_dict(args, registry)
    recipe = recipe_from_dict(data, registry=registry, source=args.recipe or f"preset {args.preset!r}")
    result = adapt(recipe, out_dir=args.out, resume=args.resume, registry=registry)
    print(f"done: {result.steps_done} steps in {result.seconds:.1f} s; final loss {result.last_losses.get('total')}")
    print(f"  grids:     {Path(args.out) / 'samples'}")
    print(f"  generator: {result.generator_path}")
    print(f"  losses:    {Path(args.out) / 'losses.jsonl'}")
    return 0


# ---------------------------------------------------------------------------------------------- sample


def cmd_sample(args) -> int:
    import torch

    from zsgm.io_utils import image_grid, save_png, to_uint8
    from zsgm.plugins import get_registry
    from zsgm.run import load_generator_asset, resolve_device

    device = resolve_device(args.device)
    generator, _ = load_generator_asset(args.checkpoint, get_registry(), device)
    generator = generator.to(device).eval()
    seeds = list(range(args.seed, args.seed + args.n))
    images = []
    with torch.no_grad():
        mean = None
        if args.truncation < 1:
            mean = generator.latent_avg if generator.latent_avg is not None else generator.mean_latent(
                4096, generator=torch.Generator().manual_seed(0))
        for seed in seeds:
            rng = torch.Generator().manual_seed(seed)
            z = torch.randn((1, generator.arch.style_dim), generator=rng).to(device)
            img = generator(z, truncation=args.truncation, truncation_latent=mean, noise_mode=args.noise_mode,
                            rng=rng)
            images.append(img)
    batch = torch.cat(images)
    out = Path(args.out)
    if args.grid or out.suffix.lower() == ".png":
        path = out if out.suffix.lower() == ".png" else out / "grid.png"
        cols = args.cols or min(8, len(seeds))
        rows = [batch[i:i + cols] for i in range(0, len(seeds), cols)]
        if rows[-1].shape[0] < cols:  # pad the last row with white
            pad = torch.ones((cols - rows[-1].shape[0], *batch.shape[1:]), device=batch.device)
            rows[-1] = torch.cat([rows[-1], pad])
        save_png(image_grid(rows), path)
        print(f"wrote {path}")
    else:
        from PIL import Image

        out.mkdir(parents=True, exist_ok=True)
        for seed, arr in zip(seeds, to_uint8(batch)):
            save_png(Image.fromarray(arr), out / f"seed{seed:06d}.png")
        print(f"wrote {len(seeds)} images to {out}")
    return 0


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

    records = [evaluate_run(d, n=args.n, seed=args.seed, truncation=args.truncation) for d in args.runs]
    table = format_table(records)
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)
        print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------- main


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zsgm", description="CLIP-guided adaptation of StyleGAN2 generators")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("adapt", help="adapt a generator to a target domain")
    p.add_argument("recipe", nargs="?", help="TOML recipe file")
    p.add_argument("--preset", help="a named recipe (see `zsgm plugins`)")
    p.add_argument("--source", help="source domain text")
    p.add_argument("--target", help="target domain text")
    p.add_argument("--target-image", action="append", help="style image (repeatable)")
    p.add_argument("--generator", help="checkpoint file or registered generator name")
    p.add_argument("--clip", help="CLIP models: NAME[:PRETRAINED_OR_FILE][,...]")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--sample-every", dest="sample_every", type=int)
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("sample", help="sample images from a generator")
    p.add_argument("checkpoint", help="checkpoint file or registered generator name")
    p.add_argument("--out", required=True, help="a .png grid path or a folder for single images")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=0.7)
    p.add_argument("--noise-mode", dest="noise_mode", default="const", choices=["random", "const", "none"])
    p.add_argument("--grid", action="store_true", help="write a grid (default when --out ends in .png)")
    p.add_argument("--cols", type=int)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("plugins", help="list installed plugins, techniques and presets")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("eval", help="judge finished shapes-world runs with the ground-truth judges")
    p.add_argument("runs", nargs="+", help="run directories (each with recipe.toml and generator.safetensors)")
    p.add_argument("-n", type=int, default=256, help="samples per run")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--out", help="also write the markdown table here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("convert", help="convert a generator checkpoint (.pt, .pkl, .safetensors)")
    p.add_argument("src")
    p.add_argument("dst", help=".pt (rosinality) or .safetensors (zsgm)")
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("zsgm: interrupted; resume with `zsgm adapt --resume --out DIR`", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if os.environ.get("ZSGM_DEBUG"):
            raise
        print(f"zsgm: error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
