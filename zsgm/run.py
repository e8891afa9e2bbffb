"""The run object: everything one adaptation needs, built from a recipe.

A :class:`Run` owns the frozen source generator, the trainable target generator (which shares the
frozen mapping), an optional EMA copy, the CLIP ensemble, the technique instances and a private plugin
manager holding them. The step loop itself is in :mod:`zsgm.loop`.

Placement: ``clip.device`` puts the CLIP ensemble on another device than the generators (``"cuda:1"``); each
model is then a :class:`PlacedClip`, which moves images and token embeddings to the CLIP device and the
embeddings it computes back to the run's device, so techniques see every tensor on ``run.device``.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
import torch

from zsgm import hookspecs
from zsgm.fast_step import apply_fast_step, saved_tf32
from zsgm.recipe import Recipe, RecipeError
from zsgm.registry import RegistryError, unknown_name_message


if TYPE_CHECKING:  # pragma: no cover
    from zsgm.distributed import Distributed


class RunError(RuntimeError):
    """A run cannot start or continue (bad asset, conflicting techniques, non-finite loss...)."""


def resolve_device(name: str, *, field: str = "run.device") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; a bad name is a one-line recipe error naming ``field``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise RecipeError([f"{field}: {exc}"]) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError([f"{field}: {name!r} requested but CUDA is not available (use 'auto' or 'cpu')"])
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RecipeError([f"{field}: {name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                           f"device(s)"])
    return device


class PlacedClip(torch.nn.Module):
    """A CLIP model on its own device (``clip.device``) whose outputs come back to the run's device.

    ``encode_image`` moves the images to the CLIP device and the embeddings back (gradients flow through both
    moves); ``encode_text`` and ``token_embeddings`` return on the run's device; ``encode_token_embeddings``
    moves its inputs over and its features back. Everything else is the wrapped :class:`zsgm.clip.ClipModel`'s.

    Attributes:
        inner: the wrapped model, on the CLIP device.
        device: the run's device, where this wrapper's outputs are.
    """

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = inner
        self.out_device = torch.device(device)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    @property
    def device(self) -> torch.device:
        return self.out_device

    @property
    def clip_device(self) -> torch.device:
        return self.inner.device

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.encode_image(x.to(self.clip_device)).to(self.out_device)  # [N, D]

    def prepare_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.prepare_images(x.to(self.clip_device)).to(self.out_device)

    def encode_text(self, texts, **kwargs) -> torch.Tensor:
        return self.inner.encode_text(texts, **kwargs).to(self.out_device)  # [T, D]

    def token_embeddings(self, texts):
        return tuple(t.to(self.out_device) for t in self.inner.token_embeddings(texts))

    def encode_token_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        out = self.inner.encode_token_embeddings(embeds.to(self.clip_device), tokens.to(self.clip_device))
        return out.to(self.out_device)


def load_generator_asset(checkpoint: str, registry, device: torch.device):
    """A registered generator name, a zsgm run directory, a run's ``checkpoints/last.pt`` or a checkpoint file
    (resolved by :func:`zsgm.generator.sources.load_generator_source`). Returns ``(Generator, info)``.

    Raises:
        RecipeError: ``generator.checkpoint`` is neither a registered name nor an existing path.
        CheckpointError: the path exists but holds no loadable generator (one line naming it).
    """
    from zsgm.generator.sources import GeneratorNotFoundError, load_generator_source

    try:
        return load_generator_source(checkpoint, registry=registry, device=device)
    except GeneratorNotFoundError:
        raise RecipeError([
            "generator.checkpoint: "
            + unknown_name_message("generator", checkpoint, registry.generators.names())
            + " It is not an existing file or run directory either."
        ]) from None


def load_clip_asset(spec, registry, device: torch.device, *, preprocess: str):
    """A registered CLIP name (plugins) or an open_clip name / local file through :mod:`zsgm.clip`."""
    from zsgm import clip as zclip

    model_spec = zclip.ClipModelSpec(name=spec.name, pretrained=spec.pretrained, weight=spec.weight,
                                     preprocess=preprocess, trust_torchscript=spec.trust_torchscript)
    if spec.name in registry.clip_models:
        model = registry.clip_models.get(spec.name).load(model_spec, device=device)
    else:
        model = zclip.load_clip_model(model_spec, device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_clip_entry(index: int, spec, registry, device: torch.device, *, preprocess: str,
                    run_device: torch.device | None = None):
    """:func:`load_clip_asset` for ``clip.models[index]`` on ``device``; a load failure names that recipe entry.
    When ``run_device`` differs from ``device`` the model comes wrapped in a :class:`PlacedClip`."""
    from zsgm.clip import ClipLoadError

    try:
        model = load_clip_asset(spec, registry, device, preprocess=preprocess)
    except ClipLoadError as exc:
        raise ClipLoadError(f"clip.models[{index}]: {exc}") from None
    if run_device is not None and torch.device(run_device) != torch.device(device):
        return PlacedClip(model, run_device)
    return model


def step_rng(seed: int, step: int, stream: str) -> torch.Generator:
    """A CPU generator seeded from a hash of (seed, step, stream): a resumed run (:meth:`Run.rng`,
    :func:`zsgm.fit.fit`) redraws at each step exactly the numbers it drew before, and streams are independent."""
    digest = hashlib.sha256(f"{seed}/{step}/{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class Run:
    """One adaptation run.

    Attributes:
        recipe: the resolved recipe.
        out_dir: where grids, logs, checkpoints and the final generator go.
        device: torch device of every model.
        g_source: frozen source generator (eval).
        g_target: trainable target generator; its mapping parameters are frozen and equal to the source's.
        g_ema: EMA copy of ``g_target`` or None.
        clip_models / clip_weights: the CLIP ensemble (on ``clip_device``; their outputs on ``device``).
        clip_device: where the CLIP ensemble runs (``clip.device``, default ``device``).
        dist: this process's place in a data-parallel run (:mod:`zsgm.distributed`; one process by default).
        techniques: technique instances in recipe order; ``uses`` their recipe entries.
        pm: the run's private plugin manager (technique instances only).
        technique_optimizers: the techniques' own optimisers, ``"<entry name>/<key>"`` -> optimiser
            (``zsgm_optimizers``); checkpointed with the run.
        batch: the current step's :class:`zsgm.step.StepBatch`.
    """

    def __init__(self, recipe: Recipe, *, out_dir: str | Path, registry=None, dist: Distributed | None = None):
        from zsgm.distributed import SINGLE
        from zsgm.plugins import get_registry

        self.recipe = recipe
        self.registry = registry or get_registry()
        self.out_dir = Path(out_dir)
        self.dist = dist = dist or SINGLE
        self.device = dist.local_device(resolve_device(recipe.run.device))
        if dist.active and self.device.type == "cuda" and dist.local_rank > 0 and \
                self.device.index != dist.local_rank:
            raise RecipeError([f"run.device: {recipe.run.device!r} puts every process of this node on one GPU under "
                               f"torchrun (this is LOCAL_RANK {dist.local_rank}); use 'auto' or 'cuda', and each "
                               f"process gets cuda:LOCAL_RANK"])
        self.clip_device = self.device if recipe.clip.device is None else \
            dist.local_device(resolve_device(recipe.clip.device, field="clip.device"))
        self.step = 0
        self.batch = None
        self._global_directions: list[torch.Tensor] | None = None

        self.g_source, self.generator_info = load_generator_asset(recipe.generator.checkpoint, self.registry,
                                                                  self.device)
        self.g_source = self.g_source.to(self.device).eval()
        for p in self.g_source.parameters():
            p.requires_grad_(False)
        if self.g_source.latent_avg is not None:
            self.g_source.latent_avg = self.g_source.latent_avg.to(self.device)
        self.g_target = copy.deepcopy(self.g_source).train()
        for name, p in self.g_target.named_parameters():
            p.requires_grad_(not name.startswith("style."))
        self.g_target.grad_checkpointing = recipe.optim.grad_checkpointing
        self.g_ema = None
        if recipe.optim.ema_decay is not None:
            self.g_ema = copy.deepcopy(self.g_target).eval()
            self.g_ema.grad_checkpointing = False
            for p in self.g_ema.parameters():
                p.requires_grad_(False)

        self.clip_models = [load_clip_entry(i, spec, self.registry, self.clip_device,
                                            preprocess=recipe.clip.preprocess, run_device=self.device)
                            for i, spec in enumerate(recipe.clip.models)]
        self.clip_weights = [spec.weight for spec in recipe.clip.models]
        # run.tf32 / autocast / channels_last / compile (zsgm.fast_step): once, before techniques see the models
        self._restore_tf32 = saved_tf32()
        try:  # a run that fails to build leaves the process-wide flags as it found them
            self.fast_step = apply_fast_step(self)
            self.uses = list(recipe.techniques)
            self.techniques: list[torch.nn.Module] = []
            self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            self.pm.add_hookspecs(hookspecs)
            for use in self.uses:
                spec = self.registry.techniques.get(use.use)
                try:
                    instance = spec.build(use.config)
                except (ValueError, TypeError) as exc:
                    raise RecipeError([f"techniques[{self.uses.index(use)}]: {exc}"]) from None
                instance.use = use  # weight, every, label live on the recipe entry
                self.techniques.append(instance.to(self.device))
                self.pm.register(instance, name=use.name)
            self._check_direction_providers()
            self.technique_optimizers: dict[str, torch.optim.Optimizer] = {}  # filled after setup (zsgm.loop)
            self.pm.hook.zsgm_attach(run=self)
        except BaseException:
            self._restore_tf32()
            raise

    # ------------------------------------------------------------------ structure checks

    def _check_direction_providers(self) -> None:
        providers = [impl.plugin_name for impl in self.pm.hook.zsgm_directions.get_hookimpls()]
        if len(providers) > 1:
            raise RecipeError([
                f"techniques: {', '.join(sorted(providers))} all provide text directions; a recipe may use "
                f"only one direction provider"
            ])

    # ------------------------------------------------------------------ helpers for techniques

    def rng(self, step: int, stream: str) -> torch.Generator:
        """A CPU generator seeded from (seed, step, stream): resumed runs redraw identical numbers."""
        return step_rng(self.recipe.run.seed, step, stream)

    def global_directions(self) -> list[torch.Tensor]:
        """Template-ensemble text direction source -> target for each CLIP model, ``[D]`` unit, cached."""
        if self._global_directions is None:
            from zsgm.clip import text_direction

            if self.recipe.target is None:
                raise RunError("no text target and no technique providing directions (add a target text, or "
                               "a direction provider such as 'image-target')")
            self._global_directions = [
                text_direction(m, self.recipe.source, self.recipe.target, aggregate=self.recipe.clip.text_aggregate,
                               templates=self.recipe.clip.template_list(m)).to(self.device)
                for m in self.clip_models
            ]
        return self._global_directions

    def collect_technique_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Ask every technique for its own optimisers (``zsgm_optimizers``) and keep them by
        ``"<entry name>/<key>"`` in :attr:`technique_optimizers`."""
        found: dict[str, torch.optim.Optimizer] = {}
        synthesis = {id(p) for p in self.synthesis_parameters()}
        for impl in self.pm.hook.zsgm_optimizers.get_hookimpls():
            for key, optimizer in (impl.function(run=self) or {}).items():
                if not isinstance(optimizer, torch.optim.Optimizer):
                    raise RunError(f"technique {impl.plugin_name!r}: zsgm_optimizers returned {type(optimizer).__name__} "
                                   f"for {key!r}, not a torch.optim.Optimizer")
                if any(id(p) in synthesis for group in optimizer.param_groups for p in group["params"]):
                    raise RunError(f"technique {impl.plugin_name!r}: its optimiser {key!r} holds synthesis parameters "
                                   f"of the target generator, which belong to the core's optimiser")
                found[f"{impl.plugin_name}/{key}"] = optimizer
        self.technique_optimizers = found
        return found

    def release(self) -> None:
        """Undo what the run changed process-wide (``run.tf32``'s flags), so that the next run of this process
        (a sweep, a comparison) starts from the same flags; called when the run ends."""
        self._restore_tf32()

    def synthesis_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters of the target generator the optimiser owns (everything but the mapping)."""
        return [p for name, p in self.g_target.named_parameters() if not name.startswith("style.")]

    def named_synthesis_modules(self) -> dict[str, torch.nn.Module]:
        """Top-level synthesis children of the target generator by name (``conv1``, ``convs.3``, ...)."""
        out: dict[str, torch.nn.Module] = {}
        for name, module in self.g_target.named_modules():
            if name in ("", "style") or name.startswith("style."):
                continue
            if name in ("input", "conv1", "to_rgb1") or (name.count(".") == 1 and name.split(".")[0] in
                                                          ("convs", "to_rgbs")):
                out[name] = module
        return out

    def sample_generator(self) -> torch.nn.Module:
        """The generator to sample from: the EMA copy if kept, else the target generator."""
        return self.g_ema if self.g_ema is not None else self.g_target

    def state_fingerprint(self) -> dict[str, Any]:
        """What the run record stores for repeatability."""
        from zsgm.plugins import plugin_versions

        return {
            "seed": self.recipe.run.seed,
            "device": str(self.device),
            "clip_device": str(self.clip_device),
            "processes": self.dist.world_size,
            "torch": torch.__version__,
            "plugins": plugin_versions(self.registry),
            "generator": {k: v for k, v in self.generator_info.items() if isinstance(v, (str, int, float))},
        }


def build_run(recipe: Recipe, *, out_dir: str | Path, registry=None, dist: Distributed | None = None) -> Run:
    """Build a :class:`Run`, turning registry lookup failures into recipe errors."""
    try:
        return Run(recipe, out_dir=out_dir, registry=registry, dist=dist)
    except RegistryError as exc:
        raise RecipeError([str(exc)]) from None
