"""NADA's adaptive layer freezing (paper Sec. 4.2).

Every step: optimise a W+ copy of a few latents against the global CLIP loss for a few SGD steps, score
each W+ slot by how far it moved, and train only the layers driven by the top-k slots this step.
``slots`` replaces the probe by a fixed choice, e.g. only the fine styles, so that the coarse layers that
hold each sample's layout (position, size, kind) stay the source generator's.

Adam and frozen layers (``frozen_adam``): the released NADA, IPL and AIR code ran under torch < 2, whose
``zero_grad()`` fills existing gradients with zeros instead of dropping them, and its probe backpropagates into
every synthesis layer (it unfreezes the whole generator first). So from the first step on every synthesis
parameter reaches Adam with a gradient, zero for the frozen ones: Adam counts their steps and decays their
second moment, and with ``beta1 = 0`` moves them by exactly zero. ``"zero-grad"`` (default) reproduces that;
``"skip"`` leaves frozen layers without a gradient, so Adam skips them (their state stays as last trained).
"""

from __future__ import annotations

import attrs
import torch

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.step import random_noise
from zsgm.technique import Technique, global_clip_loss


@attrs.define(kw_only=True)
class LayerFreezeConfig:
    """Options of adaptive layer freezing.

    Attributes:
        k: number of W+ slots whose layers train each step; None or >= n_latent means every slot.
        auto_layer_iters: SGD steps of the W+ probe; 0 disables the probe and trains NADA's fixed set
            (const input, conv1 and all convs; no ToRGB).
        auto_layer_batch: latents in the probe.
        probe_lr: SGD learning rate of the probe.
        slot_map: "exact" unfreezes the layers that actually read each slot (conv1 <- 0, to_rgb1 and convs.0
            <- 1, convs.{j-1} <- j, odd j also to_rgbs); "nada" reproduces NADA's offset list
            [conv1, to_rgb1] + convs (slot j >= 2 -> convs.{j-2}), as the NADA, IPL and AIR code does.
        text: target text of the probe's global loss; default the bare recipe target (as NADA, IPL and AIR:
            ``global_clip_loss(img, target_class)``, no article, no template).
        slots: W+ slots whose layers train at every step, in place of the probe (``k`` is then not used);
            e.g. ``[3, 4, 5, 6, 7]`` on a 32 px generator (8 slots) trains only the 16 and 32 px layers
            and their ToRGBs under ``slot_map = "exact"``. Each must be below the generator's slot count.
        frozen_adam: what Adam sees of the layers frozen this step. "zero-grad" (the released code's behaviour):
            whenever NADA's code would run its probe (``auto_layer_iters > 0`` and no fixed ``slots``, whatever
            ``k``), every synthesis parameter without a gradient gets a zero one, so Adam steps it (counts the
            step, decays the second moment; moves it only through first-moment momentum, which is none at the
            presets' ``beta1 = 0``). Without the probe the trained set is fixed and both choices are the same.
            "skip": frozen layers keep no gradient and Adam leaves their state alone.
    """

    k: int | None = attrs.field(default=None)
    auto_layer_iters: int = attrs.field(default=1, validator=v.non_negative)
    auto_layer_batch: int = attrs.field(default=8, validator=v.positive)
    probe_lr: float = attrs.field(default=0.01, validator=v.positive)
    slot_map: str = attrs.field(default="exact", validator=v.one_of(["exact", "nada"]))
    text: str | None = None
    slots: list[int] | None = attrs.field(default=None)
    frozen_adam: str = attrs.field(default="zero-grad", validator=v.one_of(["zero-grad", "skip"]))

    @slots.validator
    def _check_slots(self, attribute, value):
        if value is None:
            return
        if not value:
            raise ValueError("must list at least one W+ slot (or be left out to use the probe)")
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in value):
            raise ValueError(f"must be W+ slot indices >= 0, got {value!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"lists a slot twice: {value!r}")

    @k.validator
    def _check_k(self, attribute, value):
        if value is not None:
            v.positive(self, attribute, value)


def slot_layers(n_latent: int, num_convs: int, *, slot_map: str) -> list[list[str]]:
    """Module names (of the rosinality layout) trained when each W+ slot is selected.

    Args:
        n_latent: number of W+ slots.
        num_convs: length of ``convs``.
        slot_map: "exact" or "nada" (see :class:`LayerFreezeConfig`).

    Returns:
        ``layers[slot]`` = list of module names.
    """
    layers: list[list[str]] = []
    for j in range(n_latent):
        if slot_map == "nada":
            names = ["conv1"] if j == 0 else ["to_rgb1"] if j == 1 else [f"convs.{j - 2}"]
            names = [n for n in names if not n.startswith("convs.") or int(n.split(".")[1]) < num_convs]
        else:
            if j == 0:
                names = ["conv1"]
            elif j == 1:
                names = ["to_rgb1", "convs.0"]
            else:
                names = [f"convs.{j - 1}"] if j - 1 < num_convs else []
                if j >= 3 and j % 2 == 1:
                    names.append(f"to_rgbs.{(j - 3) // 2}")
        layers.append(names)
    return layers


class LayerFreeze(Technique):
    """Chooses this step's trainable synthesis layers; produces no loss term."""

    def __init__(self, config: LayerFreezeConfig):
        super().__init__(config)
        self.last_slots: list[int] = []

    def _text(self, run) -> str:
        if self.config.text is not None:
            return self.config.text
        if run.recipe.target is None:
            raise ValueError("layer-freeze needs a target text for its probe (recipe.target or 'text')")
        return run.recipe.target

    def select_slots(self, run, step: int) -> list[int]:
        """Top-k W+ slots by movement under the probe's global CLIP loss."""
        g_t = run.g_target
        n_latent = g_t.n_latent
        k = n_latent if self.config.k is None else min(self.config.k, n_latent)
        rng = run.rng(step, "layer-freeze")
        z = torch.randn((self.config.auto_layer_batch, g_t.arch.style_dim), generator=rng).to(run.device)
        noise = random_noise(g_t, z.shape[0], rng, run.device)
        with torch.no_grad():
            w = run.g_source.mapping(z)  # [B, D]
        ws_init = w[:, None, :].repeat(1, n_latent, 1)  # [B, L, D]
        ws = ws_init.clone().requires_grad_(True)
        text = self._text(run)
        for _ in range(self.config.auto_layer_iters):
            img = g_t.synthesis(ws, noise=noise)  # [B, 3, S, S]
            loss = 0.0
            for model, weight in zip(run.clip_models, run.clip_weights):
                if weight:
                    loss = loss + weight * global_clip_loss(model.encode_image(img), model.encode_text([text])[0])
            (grad,) = torch.autograd.grad(loss, ws)
            with torch.no_grad():
                ws -= self.config.probe_lr * grad
        score = (ws.detach() - ws_init).abs().mean(dim=(0, 2))  # [L]
        # Under torchrun every rank probes the same seeded latents; a GPU's non-deterministic kernels could still
        # flip a near-tie, so the ranks agree on one score (bit-identical after the all-reduce) and freeze alike.
        score = run.dist.mean(score.contiguous())
        return torch.topk(score, k).indices.sort().values.tolist()

    def _slots_this_step(self, run, step: int, n_latent: int) -> list[int]:
        """The fixed ``slots``, else every slot (k >= n_latent, NADA's shortcut), else the probe's top-k."""
        if self.config.slots is not None:
            slots = sorted(self.config.slots)
            if slots[-1] >= n_latent:
                raise ValueError(f"layer-freeze slots: slot {slots[-1]} is out of range for a generator with "
                                 f"{n_latent} W+ slots (0-{n_latent - 1})")
            return slots
        k = n_latent if self.config.k is None else min(self.config.k, n_latent)
        if k == n_latent:
            return list(range(n_latent))
        return self.select_slots(run, step)

    def probes_like_nada(self) -> bool:
        """Whether the released code would run its W+ probe every step: ``auto_layer_iters > 0`` (whatever ``k``;
        NADA probes even when top-k keeps every slot) and no fixed ``slots`` (a zsgm option NADA lacks)."""
        return self.config.slots is None and self.config.auto_layer_iters > 0

    @hookimpl
    def zsgm_setup(self, run):
        if self.config.slots is not None:  # a slot out of range fails here, before any training
            self._slots_this_step(run, 0, run.g_target.n_latent)
        k = self.config.k
        if self.probes_like_nada() and k is not None and k < run.g_target.n_latent:
            self._text(run)  # the probe will run: a missing text fails here, before any training

    @hookimpl
    def zsgm_after_backward(self, run, step):
        """``frozen_adam = "zero-grad"``: every synthesis parameter the released code's probe reached this step
        and this step's loss did not gets a zero gradient, so Adam steps it as under torch < 2's ``zero_grad()``.
        """
        if self.config.frozen_adam != "zero-grad" or not self.probes_like_nada():
            return
        for p in run.synthesis_parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    @hookimpl
    def zsgm_before_step(self, run, step):
        g_t = run.g_target
        n_latent, num_convs = g_t.n_latent, len(g_t.convs)
        if self.config.slots is None and self.config.auto_layer_iters == 0:
            trainable = ["input", "conv1"] + [f"convs.{i}" for i in range(num_convs)]
            self.last_slots = []
        else:
            slots = self._slots_this_step(run, step, n_latent)
            self.last_slots = slots
            table = slot_layers(n_latent, num_convs, slot_map=self.config.slot_map)
            trainable = sorted({name for s in slots for name in table[s]})
        modules = run.named_synthesis_modules()
        for p in run.synthesis_parameters():
            p.requires_grad_(False)
        for name in trainable:
            for p in modules[name].parameters():
                p.requires_grad_(True)
