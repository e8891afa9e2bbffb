"""The ``air`` technique: adaptation with iterative refinement of the anchor (METHODS.md 5).

Schedule. ``t_thresh`` and ``t_int`` are steps; by default they follow the run's length,
``t_thresh = round(t_thresh_frac * (steps - 1))`` and ``t_int = round(t_int_frac * (steps - 1))`` with 0.5 and 0.1,
which gives the released 150/30 at 301 steps and 100/20 at 201 (:meth:`AirConfig.schedule`). After the optimiser
step of every step ``i`` with ``i > 0``, ``i >= t_thresh`` and ``i % t_int == 0`` (the released train.py's
condition; the refresh after the last step is skipped because nothing would use it), the technique *refreshes the
anchor*:

1. embed the fixed latent set with the current ``G_t`` (``ê_I(G_t(w_n))``, no grad, ``refresh_batch`` at a time);
2. image offset ``ΔI_A = normalize(mean_n normalize(ê_I(G_t(w_n)) - ê_I(G_anchor(w_n))))`` (``G_anchor`` is
   ``G_s`` before the first refresh);
3. learn the anchor prompt ``t_prompt`` (:mod:`zsgm_air.prompt`) so that ``offset(t_last, t_prompt)`` matches
   ``ΔI_A``; ``t_last`` is the previous anchor prompt, at first the source template features;
4. ``ΔT_{A->T} = normalize(mean_k normalize(ê_T(tpl_k(tgt)) - t_prompt))``;
5. snapshot ``G_anchor <- G_t`` and ``t_last <- t_prompt``.

Once an anchor exists, every step adds ``L_adapt = mean_n [1 - cos(normalize(ê_I(G_t(w_n)) -
ê_I(G_anchor(w_n))), ΔT_{A->T})]`` on the step's batch (``G_anchor`` forward without grad on the same W+ codes,
noise ``batch.noise_for("anchor")``: its own draw under ``optim.noise = "fresh"``, as the released code), summed over the CLIP ensemble with the model weights. The base directional loss is a separate
technique of the recipe (``directional``): total = w1·L_dir + w2·L_adapt with the recipe weights. Before the
first refresh the technique returns no term.

Step 0 (``update_at_step_0 = False``, the released loop): the loss is computed and logged but nothing is
updated: AIR answers the core's ``zsgm_skip_update`` for step 0, so the loop runs no backward, no optimiser
step and no EMA update, and every weight and every optimiser state stay as they were (released train.py: no backward, no ``g_optim.step``, no EMA, no layer selection at
``i = 0``). A ``steps``-step run then makes ``steps - 1`` updates and the refresh after step ``i`` sees ``i`` of them.

Fixed latent set: ``n_latents`` codes drawn once from ``run.rng(0, "air-latents")``, mapped by the frozen
mapping and truncated with ``latent_truncation`` (ψ 0.7 as the released code) towards the source's mean latent.
Noise is fixed too (``latent_noise = "fixed"``: one seed per latent from ``run.rng(0, "air-noise")``, maps drawn
on the run's device, so values depend on the device type but not on ``refresh_batch``; ``"const"``: the
generator's stored noise buffers). The released code redraws noise at every forward; fixing it is what makes
the embedding cache exact (METHODS.md 5.3).

Embedding cache (``reuse_anchor_embeddings``, default on): the G_t embeddings of one refresh *are* the
G_anchor embeddings of the next (same latents, same noise, same weights), and the source embeddings never
change; both are kept (in the checkpoint too), so a refresh costs ``n_latents`` generator forwards and image
encodes instead of twice that. Off recomputes the anchor side at every refresh (the released code's cost).

State for resume (``get_extra_state``): the anchor synthesis weights, ``t_last``, ``ΔT_{A->T}``, the cached
embeddings, counters and timings. The latent set and the noise seeds are re-derived from the run's seed.

Logging: one JSON line per refresh (and per monitor step, and at setup / end) in ``run.out_dir / log_file``
with the refresh cost (seconds, running total, share of the run's wall time) and the offset misalignments
``1 - cos(ΔI_{S->G_t}, ΔT_{S->T})`` and ``1 - cos(ΔI_{A->G_t}, ΔT_{A->T})`` (see :mod:`zsgm_air.misalignment`).
"""

from __future__ import annotations

import copy
import math
import time

import attrs
import torch

from zsgm import validators as v
from zsgm.clip import template_features
from zsgm.hookspecs import hookimpl
from zsgm.io_utils import append_jsonl, truncate_jsonl
from zsgm.run import RunError
from zsgm.technique import Technique
from zsgm_air.formulas import adaptive_loss, anchor_direction, image_offset, offset_misalignment, text_offset
from zsgm_air.prompt import AnchorPrompt

STATE_VERSION = 1


@attrs.define(kw_only=True)
class AirConfig:
    """Options of the ``air`` technique (defaults: the released adaptation.sh photo->sketch run).

    Attributes:
        t_thresh: first step at which the anchor may be refreshed (``start_adaptive_iteration``), in steps; None
            (default): ``t_thresh_frac`` of the run.
        t_int: refresh interval in steps (``adaptative_interval``); None (default): ``t_int_frac`` of the run.
        t_thresh_frac: ``t_thresh`` as a fraction of ``optim.steps - 1`` (the released loop's update count),
            rounded half up; None means 0.5 (150 of 301 steps, 100 of 201). Not together with ``t_thresh``.
        t_int_frac: ``t_int`` as a fraction of ``optim.steps - 1``, rounded half up, at least 1; None means 0.1
            (30 of 301, 20 of 201). Not together with ``t_int``.
        update_at_step_0: False (the released loop): step 0 computes and logs the loss but updates nothing (no
            backward, no optimiser step, no EMA update: ``zsgm_skip_update``).
            True: step 0 trains like every other step (one update more than the released code).
        n_latents: size of the fixed latent set used to measure the image offset (1000 in the paper).
        latent_truncation: truncation ψ of the fixed latent set (0.7 as the released code).
        latent_noise: "fixed" (per-latent seeded noise maps) or "const" (the generator's noise buffers).
        refresh_batch: generator batch of the refresh and monitor passes (memory only; results do not depend on it).
        n_ctx: number of learned context tokens of the anchor prompt.
        ctx_init: the fixed prompt text, exactly ``n_ctx`` tokens.
        prompt_align_iter: Adam steps of the prompt learning at each refresh.
        prompt_lr: Adam learning rate of the prompt learning (betas 0.9 / 0.999).
        batch_prompt: identical prompt copies (5 in the released code; 1 is equivalent, see zsgm_air.prompt).
        use_last_anchor: measure the image offset from the previous anchor and align the prompt against the
            previous anchor prompt (the released ``--use_last_anchor``, on in its runs); False measures from
            the source generator and the source template features at every refresh.
        reuse_anchor_embeddings: reuse cached fixed-set embeddings of the anchor/source side (halves a refresh;
            exact because latents and noise are fixed). False recomputes them (the released code's cost).
        monitor_every: also log both misalignments every N steps (0: only at refreshes). Each costs one pass
            of ``n_latents`` G_t forwards and image encodes.
        log_file: the JSONL log inside the run directory.
    """

    t_thresh: int | None = attrs.field(default=None, validator=attrs.validators.optional(v.non_negative))
    t_int: int | None = attrs.field(default=None, validator=v.optional_positive)
    t_thresh_frac: float | None = attrs.field(default=None,
                                              validator=attrs.validators.optional(v.in_closed_range(0.0, 1.0)))
    t_int_frac: float | None = attrs.field(default=None)
    update_at_step_0: bool = False
    n_latents: int = attrs.field(default=1000, validator=v.positive)
    latent_truncation: float = attrs.field(default=0.7, validator=v.in_closed_range(0.0, 1.0))
    latent_noise: str = attrs.field(default="fixed", validator=v.one_of(["fixed", "const"]))
    refresh_batch: int = attrs.field(default=50, validator=v.positive)
    n_ctx: int = attrs.field(default=4, validator=v.positive)
    ctx_init: str = attrs.field(default="a photo of a", validator=v.non_empty)
    prompt_align_iter: int = attrs.field(default=200, validator=v.non_negative)
    prompt_lr: float = attrs.field(default=1e-3, validator=v.positive)
    batch_prompt: int = attrs.field(default=1, validator=v.positive)
    use_last_anchor: bool = True
    reuse_anchor_embeddings: bool = True
    monitor_every: int = attrs.field(default=0, validator=v.non_negative)
    log_file: str = attrs.field(default="air.jsonl", validator=v.non_empty)

    @t_int_frac.validator
    def _check_t_int_frac(self, _attr, value):
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError(f"must be in (0, 1], got {value!r}")

    @ctx_init.validator
    def _check_ctx_words(self, _attr, value):
        words = len(value.split())
        if words != self.n_ctx:
            raise ValueError(f"{value!r} has {words} words but n_ctx = {self.n_ctx}")

    def schedule(self, steps: int) -> tuple[int, int]:
        """``(t_thresh, t_int)`` in steps for a ``steps``-step run (see the class docstring)."""
        last = max(steps - 1, 0)
        t_thresh = self.t_thresh if self.t_thresh is not None else \
            round_half_up(DEFAULT_T_THRESH_FRAC if self.t_thresh_frac is None else self.t_thresh_frac, last)
        t_int = self.t_int if self.t_int is not None else \
            max(1, round_half_up(DEFAULT_T_INT_FRAC if self.t_int_frac is None else self.t_int_frac, last))
        return t_thresh, t_int

    def refresh_steps(self, steps: int) -> list[int]:
        """Every step of a ``steps``-step run after which the anchor is refreshed (the released condition, less the
        refresh after the last step, which nothing would use)."""
        t_thresh, t_int = self.schedule(steps)
        return [i for i in range(max(1, t_thresh), steps - 1) if i % t_int == 0]


DEFAULT_T_THRESH_FRAC = 0.5
DEFAULT_T_INT_FRAC = 0.1


def round_half_up(fraction: float, length: int) -> int:
    """``floor(fraction * length + 1/2)``, with a small tolerance so that 0.1 * 300 is 30, not 30.000000000000004."""
    return int(math.floor(fraction * length + 0.5 + 1e-9))


def check_air(config: AirConfig, recipe) -> list[str]:
    """Problems of an ``air`` entry within the whole recipe (``TechniqueSpec.check``): ``"option: message"``.

    Refuses an option given both in steps and as a fraction, a schedule under which no refresh happens within
    ``optim.steps`` (AIR would add nothing), and a recipe without a target text (the anchor prompt and the
    directions name the target class).
    """
    problems = []
    for absolute, fraction in (("t_thresh", "t_thresh_frac"), ("t_int", "t_int_frac")):
        if getattr(config, absolute) is not None and getattr(config, fraction) is not None:
            problems.append(f"{absolute}: give {absolute} (steps) or {fraction} (fraction of the run), not both")
    if problems:
        return problems
    steps = recipe.optim.steps
    if not config.refresh_steps(steps):
        t_thresh, t_int = config.schedule(steps)
        last = steps - 2  # the last step whose refresh some later step still uses
        if max(1, t_thresh) > last:
            field = "t_thresh" if config.t_thresh is not None else "t_thresh_frac"
            problems.append(f"{field}: the first refresh would follow step {t_thresh}, but in a run of optim.steps = "
                            f"{steps} a refresh can only matter after steps 1..{last}, so AIR would add nothing; "
                            f"lower it (t_thresh_frac = 0.5, the default, is the released ~50%) or raise optim.steps")
        else:
            field = "t_int" if config.t_int is not None else "t_int_frac"
            problems.append(f"{field}: no multiple of t_int = {t_int} lies between t_thresh = {t_thresh} and step "
                            f"{last} (optim.steps = {steps}), so no refresh happens and AIR would add nothing; lower it "
                            f"(t_int_frac = 0.1, the default, is the released ~10%)")
    if recipe.target is None:
        problems.append("use: 'air' needs a target text (recipe.target): its anchor prompt and directions name "
                        "the target class")
    return problems


class Air(Technique):
    """AIR: anchor refresh with prompt learning, and the adaptive directional loss from the anchor."""

    def __init__(self, config: AirConfig):
        super().__init__(config)
        # state carried by checkpoints (see get_extra_state)
        self.last_step = -1
        self.refreshes = 0
        self.anchor_step = -1  # step of the last snapshot; -1: the anchor is the source generator
        self.t_last: list[torch.Tensor] | None = None  # per model [1, D]; None: source template features
        self.direction: list[torch.Tensor] | None = None  # per model ΔT_{A->T} [D]
        self.anchor_embeds: list[torch.Tensor] | None = None  # per model [n_latents, D] of G_anchor
        self.source_embeds: list[torch.Tensor] | None = None  # per model [n_latents, D] of G_s
        self.prompt_ctx: list[torch.Tensor] | None = None  # per model [n_ctx, W], the last learned context
        self.refresh_seconds = 0.0
        self.run_seconds_before = 0.0
        # process-local
        self._pending_anchor: dict | None = None
        self._held: dict = {}  # non-module holders (the anchor generator must not become a submodule)
        self._restored = False
        self._t0: float | None = None
        self._w: torch.Tensor | None = None
        self._noise_seeds: list[int] = []
        self._prompts: list[AnchorPrompt] = []
        self._src_feats: list[torch.Tensor] = []
        self._tgt_feats: list[torch.Tensor] = []

    # ------------------------------------------------------------------ state

    def get_extra_state(self):
        anchor_weights = None
        if self.anchor_step >= 0:
            anchor = self._held.get("anchor")
            if anchor is None:
                anchor_weights = self._pending_anchor
            else:
                anchor_weights = {k: t for k, t in anchor.state_dict().items() if not k.startswith("style.")}
        return {
            "version": STATE_VERSION,
            "last_step": self.last_step,
            "refreshes": self.refreshes,
            "anchor_step": self.anchor_step,
            "anchor": anchor_weights,
            "t_last": self.t_last,
            "direction": self.direction,
            "anchor_embeds": self.anchor_embeds,
            "source_embeds": self.source_embeds,
            "prompt_ctx": self.prompt_ctx,
            "refresh_seconds": float(self.refresh_seconds),
            "run_seconds": float(self.run_seconds()),
        }

    def set_extra_state(self, state):
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"air: checkpoint state version {state.get('version')!r}, expected {STATE_VERSION}")
        self.last_step = int(state["last_step"])
        self.refreshes = int(state["refreshes"])
        self.anchor_step = int(state["anchor_step"])
        self.t_last = state["t_last"]
        self.direction = state["direction"]
        self.anchor_embeds = state["anchor_embeds"]
        self.source_embeds = state["source_embeds"]
        self.prompt_ctx = state["prompt_ctx"]
        self.refresh_seconds = float(state["refresh_seconds"])
        self.run_seconds_before = float(state["run_seconds"])
        self._pending_anchor = state["anchor"]
        self._restored = True
        if "anchor" in self._held:
            self._load_pending_anchor()

    def _load_pending_anchor(self) -> None:
        if self._pending_anchor is None:
            return
        missing, unexpected = self._held["anchor"].load_state_dict(self._pending_anchor, strict=False)
        if unexpected or any(not k.startswith("style.") for k in missing):
            raise ValueError(f"air: saved anchor generator does not fit this generator (missing "
                             f"{[k for k in missing if not k.startswith('style.')][:3]}, unexpected {unexpected[:3]})")
        self._pending_anchor = None

    def run_seconds(self) -> float:
        """Wall time of the run so far, across resumes (from setup to now)."""
        return self.run_seconds_before + (time.time() - self._t0 if self._t0 is not None else 0.0)

    @property
    def anchor_generator(self):
        """The current ``G_anchor`` (a frozen copy of ``G_t`` at the last refresh), or None before setup."""
        return self._held.get("anchor")

    # ------------------------------------------------------------------ setup

    @hookimpl
    def zsgm_setup(self, run):
        cfg = self.config
        if run.recipe.target is None:
            raise ValueError("technique 'air' needs a target text (recipe.target)")
        self._t0 = time.time()
        g = run.g_source
        with torch.no_grad():
            z = torch.randn((cfg.n_latents, g.arch.style_dim), generator=run.rng(0, "air-latents")).to(run.device)
            w = g.mapping(z)  # [n, D]
            if cfg.latent_truncation < 1:
                mean = g.latent_avg if g.latent_avg is not None else \
                    g.mean_latent(4096, generator=run.rng(0, "mean"))
                w = g.truncate(w, cfg.latent_truncation, mean)
        self._w = w
        self._noise_seeds = torch.randint(0, 2 ** 62, (cfg.n_latents,), generator=run.rng(0, "air-noise")).tolist()

        anchor = copy.deepcopy(run.g_source).eval()
        for p in anchor.parameters():
            p.requires_grad_(False)
        self._held["anchor"] = anchor
        self._load_pending_anchor()  # before the first refresh the anchor is the source generator

        tpl = run.recipe.clip.template_list
        self._src_feats = [template_features(m, run.recipe.source, templates=tpl(m)) for m in run.clip_models]
        self._tgt_feats = [template_features(m, run.recipe.target, templates=tpl(m)) for m in run.clip_models]
        self._prompts = [AnchorPrompt(m, run.recipe.source, run.recipe.target, n_ctx=cfg.n_ctx,
                                      ctx_init=cfg.ctx_init) for m in run.clip_models]
        dev = run.device
        for name in ("t_last", "direction", "anchor_embeds", "source_embeds", "prompt_ctx"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, [t.to(dev) for t in value])

        steps = run.recipe.optim.steps
        problems = check_air(cfg, run.recipe)  # refused at recipe build already; a Recipe made by hand lands here
        if problems:
            raise RunError(f"technique 'air': {'; '.join(problems)}")
        t_thresh, t_int = cfg.schedule(steps)
        path = run.out_dir / cfg.log_file
        if self._restored:
            truncate_jsonl(path, keep=lambda rec: rec.get("step", -1) <= self.last_step)
        elif path.exists():
            path.unlink()
        append_jsonl(path, {
            "step": self.last_step + 1, "event": "resume" if self._restored else "setup",
            "n_latents": cfg.n_latents, "t_thresh": t_thresh, "t_int": t_int,
            "refresh_steps": self.refresh_steps(steps),
            "models": [m.name for m in run.clip_models],
            "prompt_token_lengths": [list(p.token_lengths) for p in self._prompts],
        })

    # ------------------------------------------------------------------ schedule

    def is_refresh_step(self, step: int, steps: int) -> bool:
        """Whether the anchor is refreshed after ``step`` of a ``steps``-step run (:meth:`AirConfig.refresh_steps`
        holds the released condition, written once)."""
        return step in self.config.refresh_steps(steps)

    def refresh_steps(self, steps: int) -> list[int]:
        """Every step after which the anchor is refreshed."""
        return self.config.refresh_steps(steps)

    # ------------------------------------------------------------------ fixed latent set

    def fixed_inputs(self, run, start: int, stop: int):
        """``(ws [n, L, D], noise)`` of fixed latents ``start:stop``."""
        g = run.g_source
        ws = self._w[start:stop, None, :].expand(-1, g.n_latent, -1)
        buffers = list(g.noises.buffers())
        n = stop - start
        if self.config.latent_noise == "const":
            return ws, [b.expand(n, -1, -1, -1) for b in buffers]
        per_sample = []
        for j in range(start, stop):
            gen = torch.Generator(device=run.device).manual_seed(self._noise_seeds[j])
            per_sample.append([torch.randn((1, 1, *b.shape[2:]), generator=gen, device=run.device)
                               for b in buffers])
        return ws, [torch.cat([maps[k] for maps in per_sample]) for k in range(len(buffers))]

    @torch.no_grad()
    def embed_fixed_set(self, run, generator) -> list[torch.Tensor]:
        """Unit CLIP embeddings ``[n_latents, D]`` per model of ``generator`` on the fixed latent set."""
        out: list[list[torch.Tensor]] = [[] for _ in run.clip_models]
        n, bs = self.config.n_latents, self.config.refresh_batch
        for start in range(0, n, bs):
            ws, noise = self.fixed_inputs(run, start, min(n, start + bs))
            images = generator.synthesis(ws, noise=noise)
            for i, model in enumerate(run.clip_models):
                out[i].append(model.encode_image(images))
        return [torch.cat(chunks) for chunks in out]

    def _source_embeddings(self, run, counter: dict) -> list[torch.Tensor]:
        if self.source_embeds is None:
            self.source_embeds = self.embed_fixed_set(run, run.g_source)
            counter["forwards"] += self.config.n_latents
        return self.source_embeds

    # ------------------------------------------------------------------ measurements

    def _misalignments(self, run, e_cur: list[torch.Tensor], e_src: list[torch.Tensor]) -> dict:
        """Both offset misalignments per model for current embeddings ``e_cur``."""
        global_dirs = run.global_directions()
        mis_src, mis_anchor = [], []
        for i in range(len(run.clip_models)):
            mis_src.append(offset_misalignment(image_offset(e_src[i], e_cur[i]), global_dirs[i]))
            e_anchor = self.anchor_embeds[i] if self.anchor_step >= 0 else e_src[i]
            d_anchor = self.direction[i] if self.direction is not None else \
                text_offset(self._src_feats[i], self._tgt_feats[i])
            mis_anchor.append(offset_misalignment(image_offset(e_anchor, e_cur[i]), d_anchor))
        return {"mis_source": mis_src, "mis_anchor": mis_anchor}

    def measure(self, run, generator=None) -> list[dict]:
        """Offset misalignments of ``generator`` (default ``G_t``) on the fixed latent set, one dict per model:
        ``{"model", "source": 1 - cos(ΔI_{S->G}, ΔT_{S->T}), "anchor": 1 - cos(ΔI_{A->G}, ΔT_{A->T})}``."""
        counter = {"forwards": 0}
        e_src = self._source_embeddings(run, counter)
        e_cur = self.embed_fixed_set(run, generator if generator is not None else run.g_target)
        mis = self._misalignments(run, e_cur, e_src)
        return [{"model": m.name, "source": s, "anchor": a}
                for m, s, a in zip(run.clip_models, mis["mis_source"], mis["mis_anchor"])]

    # ------------------------------------------------------------------ refresh

    def refresh(self, run, step: int) -> dict:
        """Refresh the anchor after ``step`` (steps 1-5 of the module docstring). Returns the log record."""
        started = time.time()
        cfg = self.config
        n = cfg.n_latents
        counter = {"forwards": 0}
        e_src = self._source_embeddings(run, counter)
        e_cur = self.embed_fixed_set(run, run.g_target)
        counter["forwards"] += n
        record = {"step": step, "event": "refresh", "refresh": self.refreshes + 1, "anchor_from": self.anchor_step}
        record.update(self._misalignments(run, e_cur, e_src))

        from_anchor = cfg.use_last_anchor and self.anchor_step >= 0
        if cfg.reuse_anchor_embeddings:
            e_ref = self.anchor_embeds if from_anchor else e_src
        else:
            e_ref = self.embed_fixed_set(run, self.anchor_generator if from_anchor else run.g_source)
            counter["forwards"] += n
        t_ref = self.t_last if from_anchor else list(self._src_feats)

        alpha = step / run.recipe.optim.steps
        directions, t_prompts, ctxs, loss_start, loss_end, cos_global = [], [], [], [], [], []
        global_dirs = run.global_directions()
        for i, prompt in enumerate(self._prompts):
            delta_i = image_offset(e_ref[i], e_cur[i])
            learned = prompt.learn(delta_i, t_ref[i], alpha=alpha, iters=cfg.prompt_align_iter, lr=cfg.prompt_lr,
                                   batch_prompt=cfg.batch_prompt)
            direction = anchor_direction(learned["t_prompt"], self._tgt_feats[i])
            directions.append(direction)
            t_prompts.append(learned["t_prompt"])
            ctxs.append(learned["ctx"])
            loss_start.append(learned["loss_start"])
            loss_end.append(learned["loss_end"])
            cos_global.append(float(direction @ global_dirs[i].to(direction)))

        with torch.no_grad():
            self.anchor_generator.load_state_dict(run.g_target.state_dict())
        self.anchor_step = step
        self.anchor_embeds = e_cur
        self.t_last = t_prompts
        self.direction = directions
        self.prompt_ctx = ctxs
        self.refreshes += 1

        seconds = time.time() - started
        self.refresh_seconds += seconds
        run_seconds = self.run_seconds()
        record.update({
            "alpha": alpha, "prompt_loss_start": loss_start, "prompt_loss_end": loss_end,
            "cos_new_direction_vs_source_target": cos_global, "generator_forwards": counter["forwards"],
            "image_encodes": counter["forwards"] * len(run.clip_models), "seconds": seconds,
            "refresh_seconds_total": self.refresh_seconds, "run_seconds": run_seconds,
            "refresh_share": self.refresh_seconds / run_seconds if run_seconds > 0 else None,
        })
        append_jsonl(run.out_dir / cfg.log_file, record)
        return record

    def monitor(self, run, step: int) -> dict:
        """Log both misalignments of ``G_t`` after ``step`` (no refresh)."""
        started = time.time()
        counter = {"forwards": 0}
        e_src = self._source_embeddings(run, counter)
        e_cur = self.embed_fixed_set(run, run.g_target)
        record = {"step": step, "event": "monitor", "anchor_from": self.anchor_step}
        record.update(self._misalignments(run, e_cur, e_src))
        record["seconds"] = time.time() - started
        append_jsonl(run.out_dir / self.config.log_file, record)
        return record

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def zsgm_loss(self, run, step):
        if self.direction is None:
            return []
        batch = run.batch
        with torch.no_grad():
            anchor_images = self.anchor_generator.synthesis(batch.ws, noise=batch.noise_for("anchor"))
        total = 0.0
        for i, weight in enumerate(run.clip_weights):
            if weight == 0:
                continue
            with torch.no_grad():
                e_anchor = run.clip_models[i].encode_image(anchor_images)
            total = total + weight * adaptive_loss(e_anchor, batch.tgt_embeds(i), self.direction[i])
        return [self.term("adaptive", torch.as_tensor(total, device=run.device))]

    @hookimpl
    def zsgm_skip_update(self, run, step):
        """Step 0 of the released loop updates nothing: the loss is computed and logged, then no backward, no
        optimiser step (Adam counts no step) and no EMA update."""
        return step == 0 and not self.config.update_at_step_0

    @hookimpl
    def zsgm_after_step(self, run, step):
        self.last_step = step
        if self.is_refresh_step(step, run.recipe.optim.steps):
            self.refresh(run, step)
        elif self.config.monitor_every and step % self.config.monitor_every == 0:
            self.monitor(run, step)

    @hookimpl
    def zsgm_teardown(self, run, error):
        if self._t0 is None or not run.out_dir.exists():
            return
        run_seconds = self.run_seconds()
        append_jsonl(run.out_dir / self.config.log_file, {
            "step": self.last_step, "event": "end", "error": None if error is None else type(error).__name__,
            "refreshes": self.refreshes, "refresh_seconds_total": self.refresh_seconds, "run_seconds": run_seconds,
            "refresh_share": self.refresh_seconds / run_seconds if run_seconds > 0 else None,
        })
