"""The ``ewc`` technique: elastic weight consolidation towards the source generator (SVL Sec. 3.5, METHODS.md 4.3).

``L_EWC = sum_l sum F^l (theta_t^l - theta_s^l)^2`` over every synthesis parameter of the target generator (the
mapping is frozen and shared; ``theta_s`` is the frozen source generator's copy).

``F`` is the curvature of ``sim(E_I(G_s(w)), E_T(t_src))`` -- source images against the *source* text -- at
``theta_s``. The paper states neither the estimator nor its granularity. Choice (an option-free default, after
the EWC few-shot GAN work of Li et al., NeurIPS 2020, that SVL cites): the **diagonal empirical Fisher**, per
parameter element, ``F = (1/B) sum_b (d sim_b / d theta)^2`` over ``B = samples / batch_size`` backward passes,
where ``sim_b`` is the similarity of one sample (``batch_size = 1``, default: the exact per-sample estimate) or the
mean over ``batch_size`` samples (cheaper; squaring a batch mean shrinks the estimate by up to 1/batch_size).
Latents are fresh W (psi = 1, no style mixing) with per-layer noise from ``run.rng(b, "ewc-fisher")``. The
similarity is the cosine (``similarity = "cosine"``, default) or CLIP's logit ``exp(logit_scale) * cos``
(``"logit"``, F x ~1e4); with several CLIP models it is their weighted sum. ``lambda_EWC = 1e7`` (the paper's,
set as the recipe weight) was tuned under the paper's unknown choice.

F is computed once, in ``zsgm_setup``, and saved in the technique's state (``get_extra_state``): a resumed run reuses
it. EWC is meant to *replace* layer freezing (SVL trains every synthesis layer); combined with ``layer-freeze``
it still works (frozen layers simply get no gradient that step) but a warning says so.
"""

from __future__ import annotations

import warnings

import attrs
import torch
import torch.nn.functional as F

from zsgm import validators as v
from zsgm.clip import logit_scale
from zsgm.hookspecs import hookimpl
from zsgm.run import RunError
from zsgm.step import random_noise, sample_ws
from zsgm.technique import Technique
from zsgm_svl.formulas import diagonal_fisher, ewc_penalty
from zsgm_svl.text import TextOptions, recipe_text_feature

SIMILARITIES = ("cosine", "logit")
FISHER_PREFIX = "fisher/"


@attrs.define(kw_only=True)
class EWCConfig(TextOptions):
    """Options of the EWC penalty (its weight, the paper's lambda_EWC = 1e7, is the recipe entry's ``weight``).

    Attributes:
        samples: M, source samples in the Fisher estimate.
        batch_size: samples per backward pass of the estimate; must divide ``samples``.
        similarity: "cosine" or "logit" (see the module docstring).
        text / text_norm / single_template: how E_T(t_src) is computed (:mod:`zsgm_svl.text`; the cosine ignores
            the norm).
    """

    samples: int = attrs.field(default=16, validator=v.positive)
    batch_size: int = attrs.field(default=1, validator=v.positive)
    similarity: str = attrs.field(default="cosine", validator=v.one_of(SIMILARITIES))

    @batch_size.validator
    def _divides(self, _attr, value):
        if value > 0 and self.samples % value != 0:
            raise ValueError(f"must divide samples = {self.samples}, got {value}")


class EWC(Technique):
    """Penalty ``sum F (theta_t - theta_s)^2`` with a Fisher estimated once at setup.

    Attributes:
        fisher: parameter name (``g_target.named_parameters()``) -> ``F`` tensor, once computed or restored.
    """

    def __init__(self, config: EWCConfig):
        super().__init__(config)
        self.fisher: dict[str, torch.Tensor] = {}
        self._pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # ------------------------------------------------------------------ state

    def get_extra_state(self):
        state: dict = {"computed": int(bool(self.fisher)), "samples": self.config.samples}
        for name, f in self.fisher.items():
            state[FISHER_PREFIX + name] = f
        return state

    def set_extra_state(self, state):
        if state.get("computed"):
            self.fisher = {k[len(FISHER_PREFIX):]: t for k, t in state.items() if k.startswith(FISHER_PREFIX)}

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def zsgm_setup(self, run):
        if any(use.use == "layer-freeze" for use in run.uses):
            warnings.warn("ewc: the recipe also uses 'layer-freeze'; SVL's EWC is meant to replace layer freezing "
                          "(every synthesis layer trains, held back by the Fisher-weighted penalty)", UserWarning,
                          stacklevel=2)
        names = [n for n, _ in run.g_target.named_parameters() if not n.startswith("style.")]
        if self.fisher:  # restored from a checkpoint: reuse it
            if set(self.fisher) != set(names):
                raise RunError("ewc: the checkpoint's Fisher does not match this generator's synthesis parameters")
            self.fisher = {n: self.fisher[n].to(run.device) for n in names}
        else:
            self.fisher = self.compute_fisher(run)
        target = dict(run.g_target.named_parameters())
        source = dict(run.g_source.named_parameters())
        self._pairs = [(target[n], source[n].detach(), self.fisher[n]) for n in names]

    @hookimpl
    def zsgm_loss(self, run, step):
        params, anchors, fisher = zip(*self._pairs)
        return [self.term("ewc", ewc_penalty(params, anchors, fisher))]

    # ------------------------------------------------------------------ Fisher

    def compute_fisher(self, run) -> dict[str, torch.Tensor]:
        """Diagonal empirical Fisher of the source similarity at ``theta_s`` (see the module docstring).

        The source generator's synthesis parameters are made to require grad only for the estimate.
        """
        if not run.recipe.source:
            raise RunError("technique 'ewc' needs the recipe's source text")
        cfg = self.config
        g_s = run.g_source
        named = [(n, p) for n, p in g_s.named_parameters() if not n.startswith("style.")]
        texts = [F.normalize(recipe_text_feature(run, i, run.recipe.source, cfg), dim=-1)
                 for i in range(len(run.clip_models))]
        scales = [logit_scale(m) if cfg.similarity == "logit" else 1.0 for m in run.clip_models]

        def objective(b: int) -> torch.Tensor:
            rng = run.rng(b, "ewc-fisher")
            ws = sample_ws(run, cfg.batch_size, rng)  # [B, L, D]
            images = g_s.synthesis(ws, noise=random_noise(g_s, cfg.batch_size, rng, run.device))
            sim = torch.zeros((), device=run.device)
            for model, weight, text, scale in zip(run.clip_models, run.clip_weights, texts, scales):
                if weight:
                    sim = sim + weight * scale * (model.encode_image(images) @ text).mean()
            return sim

        for _, p in named:
            p.requires_grad_(True)
        try:
            fisher = diagonal_fisher([p for _, p in named], objective, cfg.samples // cfg.batch_size)
        finally:
            for _, p in named:
                p.requires_grad_(False)
        return {n: f for (n, _), f in zip(named, fisher)}
