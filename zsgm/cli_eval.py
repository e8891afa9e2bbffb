"""``zsgm eval TARGET...``: evaluate run directories, generator files or registered generators with the metrics the
plugins register (:mod:`zsgm.metrics.runner` does the work; the metric interface is :mod:`zsgm.metrics.api`).

Each run directory gets ``eval.json`` and ``eval.md`` (or ``--out DIR`` gets them, ``{"results": [...]}`` for
several targets); ``--at-checkpoints`` writes ``eval-steps.json`` and ``eval-steps.png`` (metric vs step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs

from zsgm.cli_errors import CommandLineError
from zsgm.cli_options import clip_override, finite_float, int_at_least, non_blank, option_device

DEFAULT_N = 256
DEFAULT_SEED = 12345
DEFAULT_BATCH = 64


def metric_list(text: str) -> list[str]:
    """``--metrics fid,shapes``: metric or family names, comma-separated."""
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty name (give names such as fid,kid or shapes)")
    return names


def key_value(text: str) -> tuple[str, str]:
    """``--weights KEY=PATH``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=PATH (e.g. inception=/weights/pt_inception.pth), got {text!r}")
    return key.strip(), value.strip()


def metric_option(text: str) -> tuple[str, str, object]:
    """``--option METRIC.KEY=VALUE`` (a number when it reads as one)."""
    left, sep, value = text.partition("=")
    metric, dot, key = left.partition(".")
    if not sep or not dot or not metric.strip() or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected METRIC.KEY=VALUE (e.g. intra-lpips.centres=/data/centres), "
                                         f"got {text!r}")
    value = value.strip()
    for cast in (int, float):
        try:
            return metric.strip(), key.strip(), cast(value)
        except ValueError:
            pass
    return metric.strip(), key.strip(), value


def single_clip(text: str) -> dict:
    """``--clip NAME[:PRETRAINED_OR_FILE]``: one CLIP model."""
    models = clip_override(text)
    if len(models) != 1:
        raise argparse.ArgumentTypeError(f"give one judge CLIP, found {len(models)} in {text!r}")
    return models[0]


def _options(args):
    from zsgm.metrics.runner import EvalOptions
    from zsgm.metrics.samples import SampleSettings

    if args.real is not None and not Path(args.real).is_dir():
        raise CommandLineError(f"--real {args.real}: {'is a file, not a' if Path(args.real).exists() else 'no such'} "
                               f"folder of real images")
    options: dict[str, dict] = {}
    for metric, key, value in args.option:
        options.setdefault(metric, {})[key] = value
    device = option_device(args.device)
    settings = SampleSettings(n=args.n, seed=args.seed, truncation=args.truncation, noise_mode=args.noise_mode,
                              batch=args.batch)
    return EvalOptions(metrics=args.metrics, settings=settings, real_dir=None if args.real is None else Path(args.real),
                       weights=dict(args.weights), clip=args.clip, target_text=args.target, options=options,
                       device=device, progress=not args.no_progress)


def _check_targets(args) -> None:
    from zsgm.plugins import get_registry

    names = get_registry().generators
    for target in args.targets:
        if target not in names and not Path(target).exists():
            raise CommandLineError(f"{target}: no such run directory or generator file, and not a registered "
                                   f"generator name (installed: {', '.join(names.names()) or 'none'})")
        if args.at_checkpoints and not Path(target).is_dir():
            raise CommandLineError(f"{target}: --at-checkpoints needs a run directory (its snapshots/ and recipe)")
    if args.at_checkpoints and args.out is not None and len(args.targets) > 1:
        raise CommandLineError("--at-checkpoints with --out takes one run directory (each run's files would "
                               "overwrite the last's); leave --out out to write into each run")
    if args.save_samples and args.at_checkpoints:
        raise CommandLineError("--save-samples writes one generator's samples; leave it out with --at-checkpoints")
    if args.save_samples and args.out is None:
        for target in args.targets:
            if not Path(target).is_dir():
                raise CommandLineError(f"--save-samples: {target} is not a run directory; give --out DIR for its "
                                       f"samples")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise CommandLineError(f"--out {args.out}: is a file; give a directory for eval.json and eval.md")


def _sample_folder_names(targets: list[str]) -> list[str]:
    """One folder name per target: its base name, prefixed with its 1-based position where two targets share one
    (``a/run`` and ``b/run`` -> ``1-run``, ``2-run``), so that no target's samples overwrite another's."""
    names = [Path(t).resolve().name if Path(t).exists() else t for t in targets]
    return [f"{i}-{name}" if names.count(name) > 1 else name for i, name in enumerate(names, start=1)]


def _with_samples_dir(options, args, index: int):
    """``options`` with ``samples_dir`` for ``--save-samples`` of ``args.targets[index]``: OUT/eval-samples
    (OUT/eval-samples/NAME for several targets, see :func:`_sample_folder_names`) or RUN/eval-samples."""
    if not args.save_samples:
        return options
    target = args.targets[index]
    if args.out is not None:
        folder = Path(args.out) / "eval-samples"
        if len(args.targets) > 1:
            folder = folder / _sample_folder_names(args.targets)[index]
    else:
        folder = Path(target) / "eval-samples"
    return attrs.evolve(options, samples_dir=folder)


def cmd_eval(args) -> int:
    """Evaluate each target; print the Markdown table; write eval.json + eval.md (or the steps' files)."""
    from zsgm.metrics.runner import (
        evaluate,
        evaluate_steps,
        format_markdown,
        format_steps_markdown,
        write_results,
        write_steps,
    )

    _check_targets(args)
    options = _options(args)
    if args.at_checkpoints:
        for target in args.targets:
            record = evaluate_steps(target, options=options)
            print(format_steps_markdown(record), end="")
            json_path, png = write_steps(record, args.out or target)
            print(f"wrote {json_path} and {png}")
        return 0
    records = [evaluate(target, options=_with_samples_dir(options, args, i)) for i, target in enumerate(args.targets)]
    print(format_markdown(records), end="")
    if args.out is not None:
        for path in write_results(records, args.out):
            print(f"wrote {path}")
        return 0
    for record in records:
        if record["evaluated"]["kind"] == "run":
            json_path, _ = write_results(record, record["run"])
            print(f"wrote {json_path} and eval.md beside it")
        else:
            print(f"{record['run']}: not a run directory, nothing written (give --out DIR for eval.json and eval.md)")
    return 0


def add_eval_parser(sub):
    """The ``eval`` subcommand's parser and options (its handler is set by :func:`zsgm.cli.make_parser`)."""
    p = sub.add_parser("eval", help="evaluate runs, generator files or registered generators with the installed "
                                    "metrics",
                       description="Evaluate generators with the metrics plugins register (zsgm plugins lists them). "
                                   "Samples are drawn once, batched and seeded, through the source mapping network; "
                                   "the source generator's samples use the same latents and noise.")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="run directory (its generator.safetensors, else checkpoints/last.pt; source generator and "
                        "texts from its recipe.toml), generator file (.pt, .pkl, .safetensors) or registered "
                        "generator name (required)")
    p.add_argument("--metrics", type=metric_list, metavar="LIST",
                   help="metric or family names, comma-separated, e.g. fid,kid or shapes; one that does not apply "
                        "is refused (default: every default metric that applies; the others are listed as skipped)")
    p.add_argument("--real", metavar="DIR", help="folder of real target-domain images for FID/KID (default: none)")
    p.add_argument("--weights", type=key_value, action="append", default=[], metavar="KEY=PATH",
                   help="a local weight file for a metric (inception, lpips, lpips-net, arcface); repeatable "
                        "(default: none)")
    p.add_argument("--option", type=metric_option, action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric's own option, e.g. intra-lpips.centres=DIR; repeatable (default: none)")
    p.add_argument("--clip", type=single_clip, metavar="NAME[:WEIGHTS]",
                   help="the judge CLIP of CLIP scores: a registered name or an open_clip name with local weights "
                        "(default: the run's first guide CLIP, recorded as judge == guide)")
    p.add_argument("--target", type=non_blank,
                   help="the target text to judge for ('sketch', 'blue'); for the shapes judges (default: the run's "
                        "target text, else the style the judge reads in its reference image)")
    p.add_argument("-n", type=int_at_least(1), default=DEFAULT_N, help="samples per generator (default: %(default)s)")
    p.add_argument("--seed", type=int_at_least(0), default=DEFAULT_SEED,
                   help="seed of the latents and noise (default: %(default)s)")
    p.add_argument("--truncation", type=finite_float(low=0.0, high=1.0), default=1.0,
                   help="truncation psi in [0, 1] towards the source's mean latent (default: %(default)s)")
    p.add_argument("--noise-mode", dest="noise_mode", choices=["random", "const", "none"], default="random",
                   help="noise maps: drawn from the seed, the generator's stored ones, or none (default: %(default)s)")
    p.add_argument("--batch", type=int_at_least(1), default=DEFAULT_BATCH,
                   help="samples synthesised at once; the images do not depend on it (default: %(default)s)")
    p.add_argument("--save-samples", dest="save_samples", action="store_true",
                   help="also write the samples as PNG at full resolution: eval-samples/generated/NNNNNN.png and "
                        "eval-samples/source/NNNNNN.png (same index, same latent and noise) beside eval.json; "
                        "with several targets and --out, in eval-samples/NAME (N-NAME where names repeat) "
                        "(default: off)")
    p.add_argument("--at-checkpoints", dest="at_checkpoints", action="store_true",
                   help="evaluate a run at step 0 (its source), each snapshots/step-*.safetensors "
                        "(run.snapshot_every) and the end: eval-steps.json and a metric-vs-step eval-steps.png "
                        "(default: off)")
    p.add_argument("--out", metavar="DIR",
                   help="write eval.json and eval.md (or the steps' files) here (default: each run directory; "
                        "nothing for a file or name)")
    p.add_argument("--device", default="auto", type=non_blank,
                   help="'auto' (CUDA when available), 'cpu', 'cuda:1', ... (default: %(default)s)")
    p.add_argument("--no-progress", dest="no_progress", action="store_true",
                   help="no progress bars (default: shown)")
    return p


__all__ = ["add_eval_parser", "cmd_eval", "key_value", "metric_list", "metric_option", "single_clip"]
