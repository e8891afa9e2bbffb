"""The ``ipl`` technique: image-specific prompt learning (Guo et al., CVPR 2023; METHODS.md section 3).

Stage 1 (``zsgm_setup``, generator frozen): train one latent mapper per CLIP model so that the prompt
``P_src(w)`` describes the source image ``G_s(w)`` (symmetric contrastive loss) while ``P_tgt(w)`` stays in the
target domain (domain regulariser). The trained mappers are kept in the technique's state: a resumed run
reuses them and does not train again.

Stage 2 (``zsgm_directions``, every step): ``dT_i = normalize(t_tgt(w_i) - t_src(w_i))`` from the W code of
each sample of the step (``batch.ws[:, 0]``), without gradients. They replace the global text direction for
every loss that reads directions (e.g. ``directional``); IPL itself adds no loss term.

Departures from the released code (METHODS.md 3.7): the stage-2 fixed prompt keeps the class by default
(``stage2_hard_prompt = "classless"`` reproduces the code); the template class means are computed once;
the code's ``threshold`` TypeError lives in its global-loss call, which this technique does not make (use
the ``global`` technique of zsgm-nada for a global term).
"""

from __future__ import annotations

import math
import warnings

import attrs
import torch
from tqdm.auto import tqdm

from zsgm import validators as v
from zsgm.clip import class_embedding, logit_scale
from zsgm.hookspecs import hookimpl
from zsgm.io_utils import append_jsonl
from zsgm.run import RunError
from zsgm.step import random_noise, sample_ws
from zsgm.technique import Technique
from zsgm_ipl.formulas import contrastive_loss, domain_terms, image_specific_directions
from zsgm_ipl.mapper import LatentMapper
from zsgm_ipl.prompts import HARD_PROMPTS, DomainPrompts

STAGE1_LOG = "ipl-stage1.jsonl"


@attrs.define(kw_only=True)
class IPLConfig:
    """Options of IPL (defaults: the public README command, METHODS.md 3.5).

    Attributes:
        n_ctx: learned context vectors per prompt.
        ctx_init: the fixed prompt text; it must tokenise to ``n_ctx`` tokens (checked at setup, with the CLIP
            tokenizer). It fixes the token count, the learned prompt's frame ``"<ctx_init> <class>"`` (no full
            stop, as IPL) and the stage-1 hard prompt ``"<ctx_init> <class>."``; the learned vectors are not
            initialised from its words (as IPL). Empty: ``n_ctx`` placeholder "X" words.
        batch_mapper: latents per stage-1 iteration.
        lr_mapper: Adam learning rate of the mapper (default betas).
        iter_mapper: stage-1 iterations.
        lambda_l: weight of the domain regulariser.
        lambda_src: weight of its source part (``1 - cos(t_src, e_src)``).
        stage2_hard_prompt: fixed prompt added in stage 2: "class" (``"<ctx_init> <class>."``, as stage 1, the
            paper's intent) or "classless" (``"<ctx_init>"`` for both domains, as IPL's released code).
        auto_layer_k: IPL's ``--auto_compute``: set the ``k`` of the recipe's ``layer-freeze`` technique to
            ``int(2 * n_latent / 3)`` (12 at 1024 px, 10 at 512 px). The recipe is refused when it would have no
            effect: no ``layer-freeze`` entry, or one that sets ``k`` itself or trains fixed ``slots``.
    """

    n_ctx: int = attrs.field(default=4, validator=v.positive)
    ctx_init: str = "a photo of a"
    batch_mapper: int = attrs.field(default=32, validator=v.positive)
    lr_mapper: float = attrs.field(default=0.05, validator=v.positive)
    iter_mapper: int = attrs.field(default=300, validator=v.positive)
    lambda_l: float = attrs.field(default=1.0, validator=v.non_negative)
    lambda_src: float = attrs.field(default=0.0, validator=v.non_negative)
    stage2_hard_prompt: str = attrs.field(default="class", validator=v.one_of(HARD_PROMPTS))
    auto_layer_k: bool = False

    def fixed_prompt(self) -> str:
        """``ctx_init``, or ``n_ctx`` placeholder "X" words when it is empty (IPL's code without --ctx_init)."""
        return self.ctx_init.strip() or " ".join(["X"] * self.n_ctx)


def check_ipl(config: IPLConfig, recipe) -> list[str]:
    """Problems of an ``ipl`` entry within the whole recipe (``TechniqueSpec.check``): ``"option: message"``.

    Refuses a recipe without a target text (the prompts name the target class) and an ``auto_layer_k`` that could
    not act: no ``layer-freeze`` entry, or one whose ``k`` is set or unused (fixed ``slots``).
    """
    problems = []
    if recipe.target is None:
        problems.append("use: 'ipl' needs a target text (recipe.target): its prompts name the target class")
    if config.auto_layer_k:
        freezes = [(i, u) for i, u in enumerate(recipe.techniques) if u.use == "layer-freeze"]
        if not freezes:
            problems.append("auto_layer_k: true, but the recipe has no 'layer-freeze' technique whose k it could "
                            "set; add one or drop auto_layer_k")
        for i, use in freezes:
            if getattr(use.config, "slots", None) is not None:
                problems.append(f"auto_layer_k: true, but techniques[{i}] ('layer-freeze') trains fixed slots, so "
                                f"k is not used; drop one of them")
            elif getattr(use.config, "k", None) is not None:
                problems.append(f"auto_layer_k: true, but techniques[{i}] ('layer-freeze') sets k = "
                                f"{use.config.k} itself; drop one of them")
    return problems


def auto_layer_k(n_latent: int) -> int:
    """IPL's ``--auto_compute`` rule ``int(2 * (2 log2 S - 2) / 3)`` = ``int(2 * n_latent / 3)``, at least 1."""
    return max(1, int(2 * n_latent / 3))


class IPL(Technique):
    """Direction provider: per-sample text directions from a learned, latent-conditioned prompt.

    Attributes:
        mappers: one :class:`LatentMapper` per CLIP model (built in setup: their widths depend on the generator
            and the CLIP models). Saved through ``get_extra_state``, not as submodules.
        prompts: one :class:`DomainPrompts` per CLIP model (constants, rebuilt in setup).
        trained: whether stage 1 has run (or was restored).
        stage1_loss: the last stage-1 total loss.
        layer_k: the ``k`` given to ``layer-freeze`` by ``auto_layer_k`` (None otherwise).
    """

    def __init__(self, config: IPLConfig):
        super().__init__(config)
        self.mappers: list[LatentMapper] = []
        self.prompts: list[DomainPrompts] = []
        self.trained = False
        self.stage1_loss: float | None = None
        self.layer_k: int | None = None
        self._restored: dict | None = None

    # ------------------------------------------------------------------ state

    def get_extra_state(self):
        state = {"trained": int(self.trained)}
        if self.trained:
            state["stage1_loss"] = float(self.stage1_loss)
            state["n_mappers"] = len(self.mappers)
            for i, mapper in enumerate(self.mappers):
                for key, value in mapper.state_dict().items():
                    state[f"mapper{i}.{key}"] = value.detach().clone()
        return state

    def set_extra_state(self, state):
        self._restored = dict(state) if state.get("trained") else None

    def _load_mappers(self, state: dict) -> None:
        if int(state["n_mappers"]) != len(self.mappers):
            raise RunError(f"ipl: the checkpoint holds {int(state['n_mappers'])} mapper(s) but the recipe has "
                           f"{len(self.mappers)} CLIP model(s)")
        for i, mapper in enumerate(self.mappers):
            prefix = f"mapper{i}."
            mapper.load_state_dict({k[len(prefix):]: val for k, val in state.items() if k.startswith(prefix)})
        self.stage1_loss = float(state["stage1_loss"])
        self.trained = True

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def zsgm_setup(self, run):
        if run.recipe.target is None:
            raise RunError("technique 'ipl' needs a target text (recipe.target): its prompts name the target class")
        cfg = self.config
        if not self.prompts:
            try:
                self.prompts = [DomainPrompts(m, run.recipe.source, run.recipe.target, n_ctx=cfg.n_ctx,
                                              ctx_init=cfg.fixed_prompt()) for m in run.clip_models]
            except ValueError as exc:
                raise RunError(f"technique 'ipl': {exc}") from None
        if not self.mappers:
            style_dim = run.g_source.arch.style_dim
            for i, model in enumerate(run.clip_models):
                mapper = LatentMapper(style_dim, cfg.n_ctx, model.text_width)
                mapper.reset_parameters(run.rng(0, f"ipl-mapper-{i}"))
                self.mappers.append(mapper.to(run.device))
        if self._restored is not None:
            self._load_mappers(self._restored)  # resume: stage 1 already ran
            self._restored = None
        elif not self.trained:
            self.train_mappers(run)
        for mapper in self.mappers:
            mapper.eval().requires_grad_(False)
        if cfg.auto_layer_k:
            self._apply_auto_layer_k(run)

    @hookimpl
    def zsgm_directions(self, run, step):
        w = run.batch.ws[:, 0]  # [N, D]: the W code of each sample (slot 0; W+ slots are equal without mixing)
        directions = []
        with torch.no_grad():
            for prompts, mapper in zip(self.prompts, self.mappers):
                t_src, t_tgt = prompts.residual_features(mapper(w), hard=self.config.stage2_hard_prompt)
                directions.append(image_specific_directions(t_src, t_tgt))  # [N, D_m]
        return directions

    # ------------------------------------------------------------------ stage 1

    def train_mappers(self, run) -> None:
        """Stage 1: train every mapper with ``L_con + lambda_l * L_dom``; the generator and CLIP stay frozen.

        Each iteration draws ``batch_mapper`` latents from ``run.rng(iteration, "ipl-stage1")`` and renders them
        once with the source generator; every CLIP model trains its own mapper on them (the losses are
        independent, so one Adam over all mappers equals one Adam per mapper). Per-iteration losses go to
        ``<out_dir>/ipl-stage1.jsonl``.
        """
        cfg = self.config
        tpl = run.recipe.clip.template_list
        with torch.no_grad():  # IPL's e_c: means of unit template features, not renormalised; computed once
            means = [(class_embedding(m, run.recipe.source, renormalize=False, templates=tpl(m)),
                      class_embedding(m, run.recipe.target, renormalize=False, templates=tpl(m)))
                     for m in run.clip_models]
        scales = [logit_scale(m) for m in run.clip_models]
        for mapper in self.mappers:
            mapper.train().requires_grad_(True)
        optimizer = torch.optim.Adam([p for m in self.mappers for p in m.parameters()], lr=cfg.lr_mapper)
        log_path = run.out_dir / STAGE1_LOG
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
        bar = tqdm(range(cfg.iter_mapper), desc="ipl stage 1", unit="it", disable=not run.recipe.run.progress,
                   dynamic_ncols=True)
        total = None
        for it in bar:
            rng = run.rng(it, "ipl-stage1")
            ws = sample_ws(run, cfg.batch_mapper, rng, mixing=run.recipe.optim.mixing)  # [B, L, D]
            noise = random_noise(run.g_source, ws.shape[0], rng, run.device)
            with torch.no_grad():
                images = run.g_source.synthesis(ws, noise=noise)  # [B, 3, S, S], psi = 1
            total = 0.0
            record: dict[str, float | int] = {"iter": it}
            for i, (model, prompts, mapper) in enumerate(zip(run.clip_models, self.prompts, self.mappers)):
                with torch.no_grad():
                    image_features = model.encode_image(images)  # [B, D_m] unit, detached
                t_src, t_tgt = prompts.residual_features(mapper(ws[:, 0]), hard="class")
                l_con = contrastive_loss(image_features, t_src, scales[i])
                l_tgt = domain_terms(t_tgt, means[i][1])
                l_src = domain_terms(t_src, means[i][0])
                loss = l_con + cfg.lambda_l * (l_tgt + cfg.lambda_src * l_src)
                total = total + loss
                tag = f"clip{i}/"
                record.update({tag + "contrastive": float(l_con.detach()), tag + "domain_tgt": float(l_tgt.detach()),
                               tag + "domain_src": float(l_src.detach())})
            record["total"] = float(total.detach())
            if not math.isfinite(record["total"]):
                raise RunError(f"ipl stage 1: non-finite mapper loss at iteration {it}: {record} "
                               f"(try a lower lr_mapper)")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            append_jsonl(log_path, record)
            bar.set_postfix(loss=f"{record['total']:.4f}")
        bar.close()
        self.stage1_loss = float(total.detach())
        self.trained = True

    # ------------------------------------------------------------------ layer freezing

    def _apply_auto_layer_k(self, run) -> None:
        """Give ``layer-freeze`` entries without ``k`` IPL's size-dependent ``k`` (on this instance only)."""
        k = auto_layer_k(run.g_target.n_latent)
        for use, tech in zip(run.uses, run.techniques):
            if use.use != "layer-freeze" or not hasattr(tech.config, "k"):
                continue
            if tech.config.k is None:
                tech.config = attrs.evolve(tech.config, k=k)  # a copy: the recipe's entry is left as written
                self.layer_k = k
            elif tech.config.k != k:
                warnings.warn(f"ipl: auto_layer_k would set k = {k} but {use.name!r} sets k = {tech.config.k}; "
                              f"keeping {tech.config.k}", stacklevel=2)
