"""The small ``zsgm`` commands: ``plugins`` (what is installed) and ``convert`` (write a generator in another
format). ``zsgm eval`` lives in :mod:`zsgm.cli_eval`."""

from __future__ import annotations


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
