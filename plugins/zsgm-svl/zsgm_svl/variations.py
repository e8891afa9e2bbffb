"""The ``semantic-variations`` technique: SVL stage 1 (paper Sec. 3.3, METHODS.md 4.1).

Stage 1 (``zsgm_setup``, nothing else trains): per CLIP model, learn ``K`` perturbations ``z^i`` of the target
text feature so that the variations ``v^i = E_T(t_trg) + eps z^i/||z^i||`` (``eps = ||E_T(t_trg)||``) stay close
to it (``L_cons``) while the ``z^i`` become mutually orthogonal (``L_div``). The learned ``z`` are kept in the
technique's state: a resumed run reuses them and stage 1 does not run again.

Stage 2: the technique is a *direction provider*, and it also exposes the whole set.

- :meth:`SemanticVariations.text_direction_set` gives ``dT_set = [dT_0; v^1 - E_T(t_src); ...]`` ``[(K+1), D]``
  (not normalised) for one CLIP model. The ``moment`` technique finds this instance in ``run.techniques`` and reads
  the set from here, because the core's directions contract (``[D]`` or ``[N, D]`` per model, N = batch) cannot
  carry a set of K+1 rows.
- ``zsgm_directions`` answers the core's contract for losses that read ``batch.directions()`` (e.g. NADA's
  ``directional``): ``directions = "mean"`` (default) gives ``normalize(mean_i normalize(dT_i))``, one shared unit
  direction; ``"sample"`` gives each sample a unit member of the set drawn uniformly (``run.rng(step,
  "semantic-variations")``, the same draw for every CLIP model).

Choices where the paper is silent: ``z^i ~ N(0, I)`` at initialisation (from ``run.rng(0,
"semantic-variations-init-<model>")``), so ``cos(E_T, v^i)`` starts near ``sqrt(1/2)``; one Adam over the ``z`` of
all CLIP models (their losses are independent, so this equals one Adam per model); E_T as in :mod:`zsgm_svl.text`.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.io_utils import append_jsonl
from zsgm.run import RunError
from zsgm.technique import Technique
from zsgm_svl.formulas import semantic_variations, stage1_loss, text_direction_set
from zsgm_svl.text import TextOptions, recipe_text_feature

STAGE1_LOG = "semantic-variations-stage1.jsonl"
DIRECTION_MODES = ("mean", "sample")


@attrs.define(kw_only=True)
class SemanticVariationsConfig(TextOptions):
    """Options of SVL stage 1 (defaults: paper Sec. 4.1, METHODS.md 4.4).

    Attributes:
        k: number of variations K.
        iterations: stage-1 Adam iterations (paper 2,000; each is a few vector operations, no encoder pass).
        lambda_div: weight of the diversity loss.
        lr / beta1 / beta2: Adam of the ``z`` (paper: lr 0.002, betas (0, 0.99); used as given, no reg_ratio).
        directions: what ``zsgm_directions`` returns: "mean" or "sample" (see the module docstring).
        log_every: write a stage-1 loss record to ``semantic-variations-stage1.jsonl`` every this many iterations
            (and at the last one).
        text / text_norm / single_template: how E_T(t) is computed (:mod:`zsgm_svl.text`).
    """

    k: int = attrs.field(default=6, validator=v.positive)
    iterations: int = attrs.field(default=2000, validator=v.non_negative)
    lambda_div: float = attrs.field(default=1.0, validator=v.non_negative)
    lr: float = attrs.field(default=0.002, validator=v.positive)
    beta1: float = attrs.field(default=0.0, validator=v.in_half_open_range(0.0, 1.0))
    beta2: float = attrs.field(default=0.99, validator=v.in_half_open_range(0.0, 1.0))
    directions: str = attrs.field(default="mean", validator=v.one_of(DIRECTION_MODES))
    log_every: int = attrs.field(default=100, validator=v.positive)


class SemanticVariations(Technique):
    """Direction provider holding SVL's learned semantic variations.

    Attributes:
        z: one ``[K, D_m]`` tensor per CLIP model once trained (or restored); saved through ``get_extra_state``.
        e_src / e_trg: ``[D_m]`` text features per CLIP model (recomputed in setup; the text cache makes it free).
        trained: whether stage 1 has run or was restored.
        stage1_losses: ``{"total", "cons", "div"}`` of the last stage-1 iteration (sums over CLIP models).
    """

    def __init__(self, config: SemanticVariationsConfig):
        super().__init__(config)
        self.z: list[torch.Tensor] = []
        self.e_src: list[torch.Tensor] = []
        self.e_trg: list[torch.Tensor] = []
        self.trained = False
        self.stage1_losses: dict[str, float] = {}
        self._sets: list[torch.Tensor] = []

    # ------------------------------------------------------------------ state

    def get_extra_state(self):
        state: dict = {"trained": int(self.trained), "n_models": len(self.z)}
        for i, z in enumerate(self.z):
            state[f"z{i}"] = z.detach().clone()
        for key, value in self.stage1_losses.items():
            state[f"stage1_{key}"] = float(value)
        return state

    def set_extra_state(self, state):
        if not state.get("trained"):
            return
        self.z = [state[f"z{i}"] for i in range(int(state["n_models"]))]
        self.stage1_losses = {k[len("stage1_"):]: float(val) for k, val in state.items() if k.startswith("stage1_")}
        self.trained = True

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def zsgm_setup(self, run):
        if run.recipe.target is None:
            raise RunError("technique 'semantic-variations' needs a target text (recipe.target): it perturbs "
                           "E_T(target)")
        self.e_src = [recipe_text_feature(run, i, run.recipe.source, self.config) for i in range(len(run.clip_models))]
        self.e_trg = [recipe_text_feature(run, i, run.recipe.target, self.config) for i in range(len(run.clip_models))]
        if self.trained:  # restored from a checkpoint: stage 1 already ran
            if len(self.z) != len(run.clip_models):
                raise RunError(f"semantic-variations: the checkpoint holds variations for {len(self.z)} CLIP "
                               f"model(s) but the recipe has {len(run.clip_models)}")
            self.z = [z.to(run.device) for z in self.z]
        else:
            self.train_variations(run)
        for z, e in zip(self.z, self.e_trg):
            if z.shape != (self.config.k, e.shape[0]):
                raise RunError(f"semantic-variations: variations of shape {tuple(z.shape)} do not fit k = "
                               f"{self.config.k} and a {e.shape[0]}-d CLIP model")
        self._sets = [text_direction_set(s, t, semantic_variations(t, z))
                      for s, t, z in zip(self.e_src, self.e_trg, self.z)]

    @hookimpl
    def zsgm_directions(self, run, step):
        if self.config.directions == "mean":
            return [F.normalize(F.normalize(s, dim=-1).mean(0), dim=-1) for s in self._sets]
        n = run.batch.global_size if run.batch is not None else run.recipe.optim.batch_size
        pick = torch.randint(0, self.config.k + 1, (n,), generator=run.rng(step, "semantic-variations"))
        pick = run.dist.shard(pick)  # under torchrun: this rank's rows of the global batch's picks
        return [F.normalize(s[pick.to(s.device)], dim=-1) for s in self._sets]

    # ------------------------------------------------------------------ API for other techniques

    def text_direction_set(self, run, model_index: int) -> torch.Tensor:
        """``dT_set`` ``[(K+1), D]`` for CLIP model ``model_index`` (row 0 = ``E_T(t_trg) - E_T(t_src)``; not unit).

        Raises:
            RunError: stage 1 has not run yet (call after ``zsgm_setup``).
        """
        if not self._sets:
            raise RunError("semantic-variations: the direction set is not ready; it is built in zsgm_setup")
        return self._sets[model_index]

    def variations(self, model_index: int) -> torch.Tensor:
        """``v`` ``[K, D]`` for CLIP model ``model_index``."""
        return semantic_variations(self.e_trg[model_index], self.z[model_index])

    # ------------------------------------------------------------------ stage 1

    def train_variations(self, run) -> None:
        """Stage 1: minimise ``L_cons + lambda_div L_div`` over the ``z`` of every CLIP model with Adam.

        Loss records (sums over CLIP models, plus per-model parts) go to ``<out_dir>/semantic-variations-stage1.jsonl``.
        """
        cfg = self.config
        zs = []
        for i, e in enumerate(self.e_trg):
            rng = run.rng(0, f"semantic-variations-init-{i}")
            zs.append(torch.randn((cfg.k, e.shape[0]), generator=rng).to(run.device).requires_grad_(True))
        optimizer = torch.optim.Adam(zs, lr=cfg.lr, betas=(float(cfg.beta1), float(cfg.beta2)))
        log_path = run.out_dir / STAGE1_LOG
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
        bar = tqdm(range(cfg.iterations), desc="svl stage 1", unit="it", disable=not run.recipe.run.progress,
                   dynamic_ncols=True)

        def losses():
            parts = [stage1_loss(e, z, cfg.lambda_div) for e, z in zip(self.e_trg, zs)]
            return parts, sum(p[0] for p in parts)

        for it in bar:
            parts, total = losses()
            if it % cfg.log_every == 0 or it == cfg.iterations - 1:
                record: dict = {"iter": it, "total": float(total.detach())}
                for i, (_, cons, div) in enumerate(parts):
                    record[f"clip{i}/cons"] = float(cons.detach())
                    record[f"clip{i}/div"] = float(div.detach())
                append_jsonl(log_path, record)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
        with torch.no_grad():
            parts, total = losses()  # the losses of the final z
        self.stage1_losses = {"total": float(total), "cons": float(sum(p[1] for p in parts)),
                              "div": float(sum(p[2] for p in parts))}
        self.z = [z.detach() for z in zs]
        self.trained = True


def check_semantic_variations(config: SemanticVariationsConfig, recipe) -> list[str]:
    """Problems of a ``semantic-variations`` entry within the whole recipe (``TechniqueSpec.check``), found when
    the recipe is built: it perturbs ``E_T(target)``, so a recipe without a target text cannot run it."""
    if recipe.target is None:
        return ["use: 'semantic-variations' needs a target text (recipe.target; --target on the command line): "
                "its variations perturb E_T(target)"]
    return []


def find_variations(run) -> SemanticVariations | None:
    """The run's ``semantic-variations`` instance, or None."""
    for technique in run.techniques:
        if isinstance(technique, SemanticVariations):
            return technique
    return None
