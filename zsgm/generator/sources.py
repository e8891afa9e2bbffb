"""Where a generator comes from: one resolver for every command that takes a generator.

A *generator source* is, in this order of precedence:

1. a registered generator name (``"shapes"``, ``"tiny-random"``, or a plugin's);
2. a zsgm run directory: its ``generator.safetensors`` (a finished run), else its ``checkpoints/last.pt``;
3. a checkpoint file: rosinality ``.pt``, NVIDIA ``.pkl``, zsgm ``.safetensors`` or a zsgm run checkpoint.

A run checkpoint (:mod:`zsgm.checkpoint`: keys ``format``, ``target``, ``ema``, ...) holds the target generator's
weights but no architecture and no ``latent_avg``; both come from the run's source generator, the one named by
``generator.checkpoint`` in the run's ``recipe.toml``. The EMA weights are used when the run kept them, else the
target weights. ``zsgm.run.load_generator_asset`` (``zsgm adapt`` and ``zsgm sample``) and
``zsgm.generator.convert.convert_checkpoint`` (``zsgm convert``) both resolve through :func:`load_generator_source`.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from zsgm.generator.checkpoints import build_generator, load_generator
from zsgm.generator.errors import CheckpointError
from zsgm.io_utils import read_toml_file

RUN_GENERATOR = "generator.safetensors"
RUN_CHECKPOINT = Path("checkpoints") / "last.pt"
RUN_RECIPE = "recipe.toml"
DEFAULT_SOURCE = "shapes"  # zsgm.recipe.GeneratorConfig.checkpoint's default, when a recipe names none

# Run directories whose checkpoint is being resolved right now: a run whose recipe names itself (directly or
# through other runs) is refused instead of recursing forever.
_RESOLVING: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("zsgm_resolving_runs",
                                                                           default=frozenset())


class GeneratorNotFoundError(CheckpointError):
    """The source is neither a registered generator name nor an existing file or directory."""


def _registry(registry):
    if registry is not None:
        return registry
    from zsgm.plugins import get_registry

    return get_registry()


def load_generator_source(spec: str | os.PathLike, *, registry=None,
                          device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load a generator from a registered name, a run directory or a checkpoint file.

    Args:
        spec: the name or path the user gave.
        registry: the plugin registry for names (the process-wide one when None).
        device: where registered generators are built; files load on the CPU (the caller moves them).

    Returns:
        ``(Generator in eval mode, info)``; for a run directory ``info["run"]`` names the directory.

    Raises:
        GeneratorNotFoundError: ``spec`` is not a name and not an existing path.
        CheckpointError: a directory without a generator, a file of an unknown kind, bad weights...: one line
            naming the path.
    """
    text = os.fspath(spec)
    table = _registry(registry).generators
    if text in table:
        return table.get(text).load(device=device)
    path = Path(text)
    if path.is_dir():
        return load_run_directory(path)
    if path.exists():
        return load_generator(path, map_location="cpu")
    raise GeneratorNotFoundError(f"{text}: not a registered generator name (installed: "
                                 f"{', '.join(sorted(table.names())) or 'none'}) and not an existing file or run "
                                 f"directory")


def generator_size(spec: str | os.PathLike, *, registry=None) -> int:
    """The output side in pixels of the generator ``spec`` names (loaded on the CPU, as
    :func:`load_generator_source` does; its errors likewise)."""
    generator, _ = load_generator_source(spec, registry=registry, device="cpu")
    return int(generator.arch.size)


def load_run_directory(run_dir: Path) -> tuple[torch.nn.Module, dict]:
    """A run directory's generator: ``generator.safetensors`` if the run finished, else ``checkpoints/last.pt``.

    Raises:
        CheckpointError: the directory holds neither.
    """
    for candidate in (run_dir / RUN_GENERATOR, run_dir / RUN_CHECKPOINT):
        if candidate.is_file():
            generator, info = load_generator(candidate, map_location="cpu")
            return generator, {**info, "run": str(run_dir)}
    raise CheckpointError(f"{run_dir}: a directory without a generator (expected {RUN_GENERATOR} of a finished "
                          f"zsgm run, or {RUN_CHECKPOINT.as_posix()} of a run in progress)")


def _run_recipe(path: Path) -> Path:
    """The ``recipe.toml`` of the run that wrote ``path`` (``RUN/checkpoints/last.pt``, or a copy beside it)."""
    candidates = [path.parent.parent / RUN_RECIPE, path.parent / RUN_RECIPE]
    for recipe in candidates:
        if recipe.is_file():
            return recipe
    raise CheckpointError(f"{path}: a zsgm run checkpoint holds no architecture and no latent_avg; they come from "
                          f"the run's source generator, named in the run's {RUN_RECIPE}, which is not there "
                          f"(looked for {candidates[0]}). Keep the checkpoint inside its run directory, "
                          f"RUN/{RUN_CHECKPOINT.as_posix()}")


def _source_spec(recipe: Path) -> str:
    """``generator.checkpoint`` of a run's recipe, read as plain TOML (no plugins needed)."""
    data = read_toml_file(recipe, error=lambda exc: CheckpointError(f"{recipe}: cannot read the run's recipe ({exc})"))
    section = data.get("generator", {})
    spec = section.get("checkpoint", DEFAULT_SOURCE) if isinstance(section, Mapping) else None
    if not isinstance(spec, str) or not spec.strip():
        raise CheckpointError(f"{recipe}: generator.checkpoint should name the run's source generator, found "
                              f"{spec!r}")
    return spec


def locate_source(spec: str, run_dir: Path, registry) -> str:
    """A run's ``generator.checkpoint``: a name stays a name; a relative path is tried from the working directory,
    then from the run directory (``run_dir``)."""
    if spec in _registry(registry).generators or Path(spec).is_absolute() or Path(spec).exists():
        return spec
    beside = run_dir / spec
    return str(beside) if beside.exists() else spec


def generator_from_run_checkpoint(path: Path, ckpt: Mapping[str, Any], *, registry=None) \
        -> tuple[torch.nn.Module, dict]:
    """The generator saved in a zsgm run checkpoint, with the source generator's architecture and latent_avg.

    Args:
        path: the run checkpoint (``RUN/checkpoints/last.pt``).
        ckpt: its contents (already read with ``weights_only=True``).
        registry: for a source named by a registered name.

    Returns:
        ``(Generator, info)``; ``info["weights"]`` says ``"ema"`` or ``"target"``, ``info["source"]`` names the
        source generator.

    Raises:
        CheckpointError: no weights in the checkpoint, no recipe, an unloadable source, weights that do not fit
            the source's architecture, or non-finite weights.
    """
    which = "ema" if isinstance(ckpt.get("ema"), Mapping) else "target"
    state = ckpt.get(which)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: a zsgm run checkpoint without generator weights (neither 'ema' nor "
                              f"'target' holds a state dict)")
    recipe = _run_recipe(path)
    run_dir = recipe.parent
    key = str(run_dir.resolve())
    if key in _RESOLVING.get():
        raise CheckpointError(f"{path}: the run's source generator (generator.checkpoint in {recipe}) leads back "
                              f"to this run")
    spec = _source_spec(recipe)
    token = _RESOLVING.set(_RESOLVING.get() | {key})
    try:
        source, source_info = load_generator_source(locate_source(spec, run_dir, registry), registry=registry)
    except (CheckpointError, FileNotFoundError) as exc:
        where = (" (a relative path is looked up from the working directory, then from the run directory)"
                 if isinstance(exc, GeneratorNotFoundError) else "")
        raise CheckpointError(f"{path}: needs the run's source generator {spec!r} (generator.checkpoint in "
                              f"{recipe}) for its architecture and latent_avg{where}, which failed: {exc}") from None
    finally:
        _RESOLVING.reset(token)
    generator, report = build_generator(source.arch, dict(state), source=f"{path} [{which}]",
                                        latent_avg=source.latent_avg,
                                        origin=f"the run's source generator {spec!r}")
    info = {"format": "zsgm-run-checkpoint", "path": str(path), "weights": which,
            "next_step": ckpt.get("next_step"), "arch": source.arch.to_dict(), **report,
            "source": {"spec": spec, "format": source_info.get("format"), "path": source_info.get("path")}}
    return generator, info


__all__ = ["GeneratorNotFoundError", "RUN_CHECKPOINT", "RUN_GENERATOR", "RUN_RECIPE", "generator_from_run_checkpoint",
           "load_generator_source", "load_run_directory"]
