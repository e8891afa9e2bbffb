"""``adversarial``: One-shot CLIP's GAN loss against the source's discriminator (METHODS.md 6.2).

Each step, in the released order:

1. **D step** (``zsgm_before_step``, before any generator forward of the step): fakes from G_t without gradients —
   on a reference step ``G_t(w_ref)`` against the reference itself (batch 1, global mode); otherwise
   ``batch_size`` fresh latents (the recipe's style mixing; *not* the latents of the generator step, as released)
   against ``batch_size`` copies of the reference, each flipped horizontally with probability 1/2, in ``mode``
   (patch by default). Logistic loss, one Adam step. Every ``d_reg_every`` steps (``step % d_reg_every == 0``) a
   lazy R1 step follows on the same real images: ``r1 / 2 * penalty * d_reg_every`` (rosinality's convention),
   the patch logits averaged per image first.
2. **G term** (``zsgm_loss``): ``mean softplus(-D(fake))`` on the step's target images (normal steps) or on
   ``G_t(w_ref)`` (reference steps, global mode), the same image the reconstruction term reads.

Patch mode is the released ``Extra`` head: a 3x3 conv to one channel (+ bias, lrelu x sqrt(2)) on an intermediate
map of the discriminator, chosen at random among the first ``patch_levels`` maps of
:func:`zsgm.generator.discriminator.patch_taps` (released ``highp = 1``: always the first; at 1024 px that is
``convs.5.conv2``, 512 x 32 x 32). The discriminator and heads train with their own Adam (lr ``lr * 16/17``, betas
``(0, 0.99 ** (16/17))``), kept by the core in ``run.technique_optimizers["<entry>/discriminator"]`` and saved with
the run; every random draw comes from ``run.rng(step, ...)``, so a resumed run is bit-identical on CPU.

The discriminator comes from ``discriminator`` (default: the recipe's generator source). When that source holds
none, a seeded random one is used with a :class:`RandomDiscriminatorWarning`: a faithful run needs the pretrained D.
"""

from __future__ import annotations

import warnings

import attrs
import torch
from torch import nn

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.run import RunError
from zsgm.step import random_noise, sample_ws
from zsgm.technique import Technique

from zsgm_oneshot.common import SEARCH, is_reference_step, load_reference, reference_image_problems, technique_by_use
from zsgm_oneshot.formulas import d_logistic_loss, g_nonsaturating_loss, r1_penalty, reg_ratio
from zsgm_oneshot.reference import reference_latent

OPTIMIZER_KEY = "discriminator"


class RandomDiscriminatorWarning(UserWarning):
    """The source holds no discriminator, so a randomly initialised one is trained instead."""


@attrs.define(kw_only=True)
class AdversarialConfig:
    """Options of the adversarial loss (its weight is the recipe entry's ``weight``; 1 as released).

    Attributes:
        discriminator: where the pretrained discriminator comes from: a registered generator name, a checkpoint
            file or a run directory; default: the recipe's ``generator.checkpoint``.
        mode: discriminator mode on normal steps, "patch" (released) or "global"; reference steps use "global".
        patch_levels: how many of the patch maps the head draws from at random (released ``highp`` = 1).
        patch_sides: feature-map sides eligible as patch maps (released: 32 and 16 px; any channel count here).
        lr: base learning rate of D and heads (times ``d_reg_every / (d_reg_every + 1)``); default the recipe's
            ``optim.lr``.
        beta1 / beta2: Adam betas before the lazy-regularisation exponent (released 0 and 0.99).
        d_reg_every: steps between lazy R1 steps.
        r1: R1 weight (0: no R1).
        flip: flip the real copies of normal steps horizontally at random (released).
        frozen_adam: "zero-grad": a discriminator or head parameter this D step does not reach but Adam has
            stepped before gets a zero gradient, so Adam steps it (its step count and second moment move), as
            under the released code's torch < 2 ``zero_grad()``; "skip": Adam leaves it alone.
    """

    discriminator: str | None = attrs.field(default=None, validator=v.optional_non_empty)
    mode: str = attrs.field(default="patch", validator=v.one_of(["patch", "global"]))
    patch_levels: int = attrs.field(default=1, validator=v.in_closed_range(1, 4))
    patch_sides: list[int] = attrs.field(factory=lambda: [32, 16])
    lr: float | None = attrs.field(default=None, validator=v.optional_positive)
    beta1: float = attrs.field(default=0.0, validator=v.in_half_open_range(0.0, 1.0))
    beta2: float = attrs.field(default=0.99, validator=v.in_half_open_range(0.0, 1.0))
    d_reg_every: int = attrs.field(default=16, validator=v.positive)
    r1: float = attrs.field(default=10.0, validator=v.non_negative)
    flip: bool = True
    frozen_adam: str = attrs.field(default="zero-grad", validator=v.one_of(["zero-grad", "skip"]))

    @patch_sides.validator
    def _sides(self, _attr, value):
        if not value or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in value):
            raise ValueError(f"must list feature-map sides >= 1, got {value!r}")


def check_adversarial(config: AdversarialConfig, recipe) -> list[str]:
    """The reference image is the discriminator's real image."""
    return reference_image_problems(recipe, config)


def _seed(run, stream: str) -> int:
    return int(torch.randint(0, 2 ** 62, (1,), generator=run.rng(0, stream)))


class Adversarial(Technique):
    """Discriminator step in ``zsgm_before_step``, non-saturating generator term in ``zsgm_loss``.

    Attributes:
        discriminator: the :class:`zsgm.generator.discriminator.Discriminator` (attached, checkpointed).
        heads: one patch head per patch map (the released ``Extra``).
        taps: the discriminator maps the heads read.
        last: ``{"d": ..., "r1": ..., "real": ..., "fake": ...}`` of the latest D step (for inspection).
    """

    def __init__(self, config: AdversarialConfig):
        super().__init__(config)
        self.discriminator = None
        self.heads = nn.ModuleList()
        self.taps: list[str] = []
        self.last: dict[str, float] = {}
        self._reference: torch.Tensor | None = None

    # ------------------------------------------------------------------ building

    @hookimpl
    def zsgm_attach(self, run):
        from zsgm.generator.discriminator import ConvLayer, discriminator_arch_for, patch_taps, random_discriminator
        from zsgm.generator.discriminator_files import load_discriminator_source

        c, name = self.config, self.use.name
        spec = c.discriminator or run.recipe.generator.checkpoint
        d, info = load_discriminator_source(spec, registry=run.registry, device=run.device)
        if d is None:
            warnings.warn(
                f"{name}: {info.get('reason', f'{spec} holds no discriminator')}; training against a randomly "
                f"initialised discriminator instead. This changes results: the released code starts from the "
                f"source's pretrained D, so a faithful run needs one (set the technique's 'discriminator')",
                RandomDiscriminatorWarning, stacklevel=2)
            d = random_discriminator(discriminator_arch_for(run.g_source), seed=_seed(run, f"{name}/init"))
        size = run.g_source.arch.size
        if d.arch.size != size:
            raise RunError(f"{name}: the discriminator from {spec} takes {d.arch.size} px images, the generator makes "
                           f"{size} px")
        n, group = run.recipe.optim.batch_size, d.arch.stddev_group
        if n % min(n, group):
            raise RunError(f"{name}: optim.batch_size = {n} is not a multiple of the discriminator's minibatch-stddev "
                           f"group ({min(n, group)}); use a batch size that is")
        self.discriminator = d.to(run.device)
        self.taps = patch_taps(d.arch, channels=None, sides=c.patch_sides, limit=4)[:c.patch_levels]
        if c.mode == "patch" and len(self.taps) < c.patch_levels:
            raise RunError(f"{name}: patch_levels = {c.patch_levels} but the {size} px discriminator has only "
                           f"{len(self.taps)} inner maps with a side in patch_sides = {c.patch_sides}")
        shapes = d.arch.tap_shapes()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(_seed(run, f"{name}/heads"))
            self.heads = nn.ModuleList(ConvLayer(shapes[t][0], 1, 3) for t in self.taps).to(run.device)
        self._set_trainable(False)

    @hookimpl
    def zsgm_setup(self, run):
        self._reference = load_reference(run)  # [1, 3, S, S]

    @hookimpl
    def zsgm_optimizers(self, run):
        c = self.config
        ratio = reg_ratio(c.d_reg_every)
        lr = (c.lr if c.lr is not None else run.recipe.optim.lr) * ratio
        params = [{"params": list(self.discriminator.parameters())}, {"params": list(self.heads.parameters())}]
        return {OPTIMIZER_KEY: torch.optim.Adam(params, lr=lr, betas=(c.beta1 ** ratio, c.beta2 ** ratio))}

    def _set_trainable(self, flag: bool) -> None:
        for p in self._d_parameters():
            p.requires_grad_(flag)

    def _d_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters()) + list(self.heads.parameters())

    # ------------------------------------------------------------------ scoring

    def score(self, x: torch.Tensor, mode: str, rng: torch.Generator) -> torch.Tensor:
        """Logits of images ``[N, 3, S, S]``: ``[N, 1]`` (global) or ``[N, 1, h, w]`` (patch; the map drawn from
        ``rng`` among the heads, as the released ``p_ind``)."""
        if mode == "global":
            return self.discriminator(x)
        level = int(torch.randint(0, len(self.taps), (1,), generator=rng))
        feature = self.discriminator.features(x, [self.taps[level]])[0]
        return self.heads[level](feature)

    def _mode(self, run, step: int) -> str:
        return "global" if is_reference_step(run, step) else self.config.mode

    # ------------------------------------------------------------------ the discriminator step

    def _d_inputs(self, run, step: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fake, real)`` images of the D step, without gradients."""
        g = run.g_target
        with torch.no_grad():
            if is_reference_step(run, step):
                fake = g.synthesis(reference_latent(run), noise=random_noise(g, 1, rng, run.device))
                return fake, self._reference
            n = run.recipe.optim.batch_size
            ws = sample_ws(run, n, rng, mixing=run.recipe.optim.mixing)
            fake = g.synthesis(ws, noise=random_noise(g, n, rng, run.device))
            real = self._reference.expand(n, -1, -1, -1)
            if self.config.flip:
                flip = (torch.rand(n, generator=rng) < 0.5).to(run.device)[:, None, None, None]
                real = torch.where(flip, real.flip(-1), real)
        return fake, real.contiguous()

    def _step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.config.frozen_adam == "zero-grad":
            for p in self._d_parameters():
                if p.grad is None and optimizer.state.get(p):
                    p.grad = torch.zeros_like(p)
        optimizer.step()

    @hookimpl
    def zsgm_before_step(self, run, step):
        c, name = self.config, self.use.name
        if step % self.use.every != 0:
            return  # the entry's `every` spaces the D steps like the generator term
        optimizer = run.technique_optimizers[f"{name}/{OPTIMIZER_KEY}"]
        rng = run.rng(step, f"{name}/d")
        mode = self._mode(run, step)
        fake, real = self._d_inputs(run, step, rng)
        self._set_trainable(True)
        try:
            fake_pred = self.score(fake, mode, rng)
            real_pred = self.score(real, mode, rng)
            d_loss = d_logistic_loss(real_pred, fake_pred)
            optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self._step(optimizer)
            self.last = {"d": float(d_loss.detach()), "real": float(real_pred.detach().mean()),
                         "fake": float(fake_pred.detach().mean())}
            if c.r1 > 0 and step % c.d_reg_every == 0:
                real = real.detach().clone().requires_grad_(True)
                pred = self.score(real, mode, rng)
                pred = pred.reshape(real.shape[0], -1).mean(dim=1, keepdim=True)  # [N, 1]
                penalty = r1_penalty(pred, real)
                optimizer.zero_grad(set_to_none=True)
                (c.r1 / 2 * penalty * c.d_reg_every + 0 * pred[0]).sum().backward()
                self._step(optimizer)
                self.last["r1"] = float(penalty.detach())
        finally:
            self._set_trainable(False)

    # ------------------------------------------------------------------ the generator term

    @hookimpl
    def zsgm_loss(self, run, step):
        if is_reference_step(run, step):
            fake = technique_by_use(run, SEARCH).render_target(run, step)  # [1, 3, S, S]
        else:
            fake = run.batch.tgt_images
        pred = self.score(fake, self._mode(run, step), run.rng(step, f"{self.use.name}/g"))
        return [self.term("adversarial", g_nonsaturating_loss(pred))]
