"""The recipe's data model: attrs classes for each section, with the validators of their fields.

A :class:`Recipe` holds the source/target domains, the generator, the CLIP ensemble, the optimiser, the run
settings and a list of :class:`TechniqueUse`. The classes only declare fields; the recipe loader
(:func:`zsgm.recipe.recipe_from_dict`) structures them strictly and runs their validators with field paths.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

from zsgm import validators as v

@attrs.define(kw_only=True)
class GeneratorConfig:
    """Which generator to adapt.

    Attributes:
        checkpoint: a file (rosinality ``.pt``, NVIDIA ``.pkl``, zsgm ``.safetensors``) or a registered
            name such as ``"shapes"`` or ``"tiny-random"``.
        sample_truncation: truncation psi for image grids and sampling (training uses psi = 1).
    """

    checkpoint: str = attrs.field(default="shapes", validator=v.non_empty)
    sample_truncation: float = attrs.field(default=0.7, validator=v.in_closed_range(0.0, 1.0))


@attrs.define(kw_only=True)
class ClipModelConfig:
    """One CLIP model of the ensemble: an open_clip name plus a pretrained tag or local file.

    Attributes:
        trust_torchscript: allow ``pretrained`` to be a TorchScript archive (OpenAI's original ``.pt``
            files). Loading one runs code stored in the file, so it is refused unless this says the file is
            trusted.
    """

    name: str = attrs.field(validator=v.non_empty)
    pretrained: Optional[str] = attrs.field(default=None, validator=v.optional_non_empty)
    weight: float = attrs.field(default=1.0, validator=v.non_negative)
    trust_torchscript: bool = False


@attrs.define(kw_only=True)
class ClipConfig:
    """The CLIP ensemble and how generator images and texts reach it.

    Attributes:
        templates: prompt templates for text ensembles ("a {} shape"); default: the CLIP model's own templates
            if its file names some (the shapes CLIP does), else the 79 ImageNet ones.
        device: where the CLIP ensemble runs ("cuda:1"); None: the run's device. Images move to it and
            embeddings come back, so a 1024-px generator and two ViT CLIPs can share two smaller GPUs.
    """

    models: list[ClipModelConfig] = attrs.field(
        factory=lambda: [ClipModelConfig(name="ViT-B-32", pretrained="openai")]
    )
    preprocess: str = attrs.field(default="nada", validator=v.one_of(["nada", "oneshot", "deltaedit"]))
    device: Optional[str] = attrs.field(default=None, validator=v.optional_non_empty)
    text_aggregate: str = attrs.field(default="nada", validator=v.one_of(["nada", "air"]))
    templates: Optional[list[str]] = attrs.field(default=None)

    @models.validator
    def _check_models(self, _attr, value):
        v.non_empty(self, _attr, value)
        if all(isinstance(m, ClipModelConfig) and m.weight == 0 for m in value):
            raise ValueError("every model has weight 0, so the ensemble would give no signal; "
                             "give at least one model a weight > 0")

    @templates.validator
    def _check_templates(self, _attr, value):
        if value is not None:
            if not value:
                raise ValueError("must not be empty (omit it for the 79 ImageNet templates)")
            bad = [t for t in value if t.count("{}") != 1]
            if bad:
                raise ValueError(f"each template needs exactly one '{{}}' placeholder; found {bad[:3]}")

    def template_list(self, model=None) -> list[str]:
        """Prompt templates of text ensembles: the recipe's; else the CLIP model's own (a domain CLIP such as the
        shapes world's ships the phrasings it was trained on); else the 79 ImageNet templates."""
        from zsgm.clip_templates import IMAGENET_TEMPLATES

        if self.templates is not None:
            return list(self.templates)
        own = getattr(model, "templates", None)
        return list(own) if own else list(IMAGENET_TEMPLATES)


@attrs.define(kw_only=True)
class OptimConfig:
    """Optimiser and schedule (rosinality convention: lr * reg_ratio, betas (beta1, beta2 ** reg_ratio)).

    Attributes:
        ema_decay: decay of the EMA copy of the target generator; None keeps no EMA (as NADA).
        mixing: style-mixing probability for training latents.
        noise: per-layer noise of the training forwards. "fresh" (the released code of NADA, IPL, AIR and
            One-shot CLIP: rosinality's ``randomize_noise``) gives every generator forward its own draw, so
            the source, target and anchor images of one latent differ by their noise; "shared" feeds one
            draw per step to all of them, so the image direction measures the weights' change alone.
        grad_checkpointing: recompute the target generator's synthesis blocks in the backward pass instead
            of keeping their activations (less memory, more time; the same gradients).
    """

    steps: int = attrs.field(default=300, validator=v.positive)
    batch_size: int = attrs.field(default=2, validator=v.positive)
    lr: float = attrs.field(default=0.002, validator=v.positive)
    reg_ratio: float = attrs.field(default=0.8, validator=v.in_closed_range(1e-6, 1.0))
    beta1: float = attrs.field(default=0.0, validator=v.in_half_open_range(0.0, 1.0))
    beta2: float = attrs.field(default=0.99, validator=v.in_half_open_range(0.0, 1.0))
    ema_decay: Optional[float] = attrs.field(default=None)
    mixing: float = attrs.field(default=0.0, validator=v.in_closed_range(0.0, 1.0))
    noise: str = attrs.field(default="fresh", validator=v.one_of(["fresh", "shared"]))
    grad_checkpointing: bool = False

    @ema_decay.validator
    def _check_ema(self, _attr, value):
        if value is not None:
            v.in_half_open_range(0.0, 1.0)(self, _attr, value)


@attrs.define(kw_only=True)
class RunConfig:
    """Where and how the run executes and what it writes.

    Attributes:
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
        sample_every: write a source/target image grid every N steps (0: only at the end).
        checkpoint_every: write a resumable checkpoint every N steps (0: only at the end).
        n_samples: images per grid row (fixed latents, the same for the whole run).
        snapshot_every: also keep the sampling generator every N steps as ``snapshots/step-XXXXXX.safetensors``
            (0: none), for ``zsgm eval --at-checkpoints`` (a metric-vs-step curve).
        log_every: fetch the step's loss values from the device every N steps (they are written to
            ``losses.jsonl`` for every step either way); N > 1 saves a host synchronisation per step on a GPU.
        tf32: allow TF32 matmuls and convolutions on Ampere and newer GPUs (process-wide); false leaves torch's
            defaults (TF32 in cuDNN convolutions only).
        autocast: forwards run under bf16 autocast: any of "generator", "clip".
        channels_last: keep the generators' convolution inputs in channels-last memory format.
        compile: ``torch.compile`` the generators' synthesis and the CLIP image encoders.
    """

    seed: int = 0
    device: str = attrs.field(default="auto", validator=v.non_empty)
    sample_every: int = attrs.field(default=50, validator=v.non_negative)
    checkpoint_every: int = attrs.field(default=50, validator=v.non_negative)
    n_samples: int = attrs.field(default=8, validator=v.positive)
    progress: bool = True
    snapshot_every: int = attrs.field(default=0, validator=v.non_negative)
    log_every: int = attrs.field(default=1, validator=v.positive)
    tf32: bool = False
    autocast: list[str] = attrs.field(factory=list)
    channels_last: bool = False
    compile: bool = False

    @autocast.validator
    def _check_autocast(self, _attr, value):
        bad = [x for x in value if x not in ("generator", "clip")]
        if bad or len(set(value)) != len(value):
            raise ValueError(f"must list each of 'generator', 'clip' at most once (bf16 autocast of those "
                             f"forwards); got {value!r}")


@attrs.define(kw_only=True)
class TechniqueUse:
    """One entry of ``[[techniques]]``: the technique name, its weight and interval, its options.

    ``weight`` must be >= 0: a negative weight would turn a loss into a reward and ascend it (a sign slip,
    never a documented technique). Weight 0 keeps a term computed and logged without training on it.
    ``weight`` and ``every`` apply to techniques that produce loss terms; others refuse values other than 1.
    """

    use: str
    weight: float = attrs.field(default=1.0, validator=v.non_negative)
    every: int = attrs.field(default=1, validator=v.positive)
    label: Optional[str] = attrs.field(default=None, validator=v.optional_non_empty)
    config: Any = None

    @property
    def name(self) -> str:
        """The label used in logs: ``label`` if given, else ``use``."""
        return self.label or self.use


@attrs.define(kw_only=True)
class Recipe:
    """A complete adaptation recipe.

    Attributes:
        source: text describing the generator's domain ("photo").
        target: text describing the target domain ("sketch"); optional when ``target_images`` is given.
        target_images: reference images for image-guided techniques (one-shot, NADA's image target).
    """

    source: str = attrs.field(validator=v.non_empty)
    target: Optional[str] = attrs.field(default=None, validator=v.optional_non_empty)
    target_images: list[str] = attrs.field(factory=list)
    generator: GeneratorConfig = attrs.field(factory=GeneratorConfig)
    clip: ClipConfig = attrs.field(factory=ClipConfig)
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    run: RunConfig = attrs.field(factory=RunConfig)
    techniques: list[TechniqueUse] = attrs.field(factory=list)
