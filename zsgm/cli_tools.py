"""The small ``zsgm`` commands: ``plugins`` (what is installed), ``convert`` (write a generator in another
format) and ``eval`` (judge finished shapes-world runs)."""

from __future__ import annotations

from pathlib import Path

from zsgm.cli_errors import CommandLineError
from zsgm.cli_options import finite_float, int_at_least, non_blank


def cmd_plugins(args) -> int:
    """List each plugin with what it registers (``-v``: and its hooks), then the plugins that failed to load."""
    from zsgm.plugins import get_registry

    registry = get_registry()
    for info in sorted(registry.infos.values(), key=lambda i: i.name):
        print(f"{info.name}  ({info.distribution} {info.version})")
        for label, names in (("techniques", info.techniques), ("presets", info.presets),
                             ("generators", info.generators), ("clip models", info.clip_models),
                             ("metrics", info.metrics), ("commands", info.commands)):
            if names:
                print(f"  {label}: {', '.join(names)}")
        if args.verbose:
            print(f"  hooks: {', '.join(info.hooks)}")
    for dist, error in registry.broken:
        print(f"BROKEN  {dist}: {error}")
    return 0


def cmd_convert(args) -> int:
    """Write the generator ``src`` as ``dst`` (.pt or .safetensors, by suffix)."""
    from zsgm.generator.convert import convert_checkpoint

    convert_checkpoint(args.src, args.dst)
    print(f"wrote {args.dst}")
    return 0


def cmd_eval(args) -> int:
    """Judge each run directory, print the markdown table and, with ``--out``, write it."""
    from zsgm.io_utils import atomic_write_text
    from zsgm.toy.evaluate import evaluate_run, format_table

    if args.out is not None and Path(args.out).is_dir():
        raise CommandLineError(f"--out {args.out}: is a directory; give a file name for the table")
    for run in args.runs:
        if not Path(run).is_dir():
            raise CommandLineError(f"{run}: {'is a file, not a' if Path(run).exists() else 'no such'} run directory")
    records = [evaluate_run(d, n=args.n, seed=args.seed, truncation=args.truncation, target=args.target)
               for d in args.runs]
    table = format_table(records)
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)
        print(f"wrote {args.out}")
    return 0


def add_plugins_parser(sub):
    """The ``plugins`` subcommand's parser (its handler is set by :func:`zsgm.cli.make_parser`)."""
    p = sub.add_parser("plugins", help="list installed plugins, techniques and presets")
    p.add_argument("-v", "--verbose", action="store_true", help="also list each plugin's hooks (default: off)")
    return p


def add_convert_parser(sub):
    """The ``convert`` subcommand's parser (its handler is set by :func:`zsgm.cli.make_parser`)."""
    p = sub.add_parser("convert", help="write a generator (file, run directory, name) as .pt or .safetensors")
    p.add_argument("src", help="the generator to read: rosinality .pt, NVIDIA .pkl, zsgm .safetensors, a zsgm run "
                               "directory or its checkpoints/last.pt, or a registered name (required)")
    p.add_argument("dst", help="the file to write: .pt (rosinality) or .safetensors (zsgm), by suffix (required)")
    return p


def add_eval_parser(sub):
    """The ``eval`` subcommand's parser and options (its handler is set by :func:`zsgm.cli.make_parser`)."""
    p = sub.add_parser("eval", help="judge finished shapes-world runs with the ground-truth judges")
    p.add_argument("runs", nargs="+", help="run directories, each with recipe.toml and generator.safetensors "
                                           "(required)")
    p.add_argument("-n", type=int_at_least(1), default=256, help="samples per run (default: %(default)s)")
    p.add_argument("--seed", type=int_at_least(0), default=12345,
                   help="seed of the judged latents and noise (default: %(default)s)")
    p.add_argument("--truncation", type=finite_float(low=0.0, high=1.0), default=1.0,
                   help="truncation psi in [0, 1] of the judged samples (default: %(default)s)")
    p.add_argument("--target", type=non_blank,
                   help="judge for this target ('sketch', 'blue') (default: the run's target text, else the style "
                        "the judge reads in its reference image)")
    p.add_argument("--out", help="also write the markdown table to this file (default: print only)")
    return p

