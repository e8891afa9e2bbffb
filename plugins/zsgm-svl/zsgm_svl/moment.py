"""The ``moment`` technique: SVL's directional moment loss (paper Sec. 3.4, METHODS.md 4.2).

``L_dm = [1 - cos(mu_I, mu_T)] + lambda_cov * ||Sigma_I - Sigma_T||`` between the image directions of the step,
``dI_n = E_I(G_t(w_n)) - E_I(G_s(w_n))`` (``[N, D]``, from the step's memoised unit embeddings), and the text
direction set ``dT_set`` (``[(K+1), D]``). Summed over the CLIP ensemble with the model weights.

Where the text set comes from (``text_set``):

- ``"variations"`` (default): from the recipe's ``semantic-variations`` technique, found in ``run.techniques``
  (:meth:`zsgm_svl.variations.SemanticVariations.text_direction_set`). The core's directions contract carries one
  direction per sample, not a set, so the set is read from that instance directly. Missing -> a RunError naming
  what to add.
- ``"plain"``: ``dT_0 = E_T(t_trg) - E_T(t_src)`` alone (K = 0), from the recipe texts with this technique's own
  text options; no stage 1 needed (an ablation: the second moment of the text side is then rank one).

Choices where the paper is silent (all options; issue 14, ``plugins/zsgm-svl/README.md``): directions
unit-normalised before the moments (``normalize_directions``, default True); ``Sigma = d^T d / n``
(``moment_scale = "mean"``, default) so that the N = 4 image rows and K + 1 = 7 text rows give comparable matrices
(``"sum"`` is the paper's formula as written); the Frobenius norm, not squared (``squared``, default False).
Under these three choices both parts are bounded distances of the same order, whatever the CLIP model and
its dimension: ``1 - cos`` lies in [0, 2], and each Sigma is positive semi-definite with trace at most 1 (1 unless
a direction is zero), so ``||Sigma_I - Sigma_T||`` lies in [0, sqrt(2)]. ``lambda_cov = 1`` (default) therefore
weighs them equally; the paper's ``lambda_cov = 1e3`` was tuned under its unstated convention and, under this one,
makes the second moment 240-920x the first in gradient norm, so the mean direction is ignored (measured on shapes:
``python -m zsgm_svl.balance``). ``lambda_cov = 1e3`` remains an option.

Terms (unweighted by the recipe; ``lambda_cov`` is applied here): ``mean`` = ``1 - cos(mu_I, mu_T)`` and
``cov`` = ``lambda_cov * ||Sigma_I - Sigma_T||``, each summed over CLIP models with their weights.
"""

from __future__ import annotations

import warnings

import attrs
import torch

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.run import RunError
from zsgm.technique import Technique
from zsgm_svl.formulas import MOMENT_SCALES, directional_moment_terms, text_direction_set
from zsgm_svl.text import TextOptions, recipe_text_feature
from zsgm_svl.variations import find_variations

TEXT_SETS = ("variations", "plain")


@attrs.define(kw_only=True)
class MomentConfig(TextOptions):
    """Options of the directional moment loss.

    Attributes:
        lambda_cov: weight of the second-moment distance inside ``L_dm`` (default 1: both parts have ranges of the
            same order under the default convention; the paper's value, 1e3, belongs to its unstated convention).
        normalize_directions: unit-normalise every image and text direction before the moments.
        moment_scale: "mean" (``Sigma = d^T d / n``) or "sum" (``Sigma = d^T d``).
        squared: squared Frobenius distance instead of the Frobenius norm.
        text_set: "variations" (from ``semantic-variations``) or "plain" (``dT_0`` only, K = 0).
        text / text_norm / single_template: E_T options, used only with ``text_set = "plain"``.
    """

    lambda_cov: float = attrs.field(default=1.0, validator=v.non_negative)
    normalize_directions: bool = True
    moment_scale: str = attrs.field(default="mean", validator=v.one_of(MOMENT_SCALES))
    squared: bool = False
    text_set: str = attrs.field(default="variations", validator=v.one_of(TEXT_SETS))


def check_moment(config: MomentConfig, recipe) -> list[str]:
    """Problems of a ``moment`` entry within the whole recipe (``TechniqueSpec.check``), found when the recipe is
    built: ``text_set = "variations"`` reads the set of a ``semantic-variations`` entry, ``"plain"`` the texts."""
    if config.text_set == "variations" and not any(use.use == "semantic-variations" for use in recipe.techniques):
        return ['text_set: "variations" reads the text direction set of SVL\'s semantic variations, and the recipe '
                'has none: add [[techniques]] use = "semantic-variations", or set text_set = "plain" to match the '
                'single direction E_T(target) - E_T(source) (K = 0)']
    if config.text_set == "plain" and recipe.target is None:
        return ['text_set: "plain" needs a target text (recipe.target; --target on the command line)']
    return []


class Moment(Technique):
    """Directional moment loss between the batch's image directions and a text direction set."""

    def __init__(self, config: MomentConfig):
        super().__init__(config)
        self._plain: list[torch.Tensor] | None = None

    def _source(self, run):
        variations = find_variations(run)
        if variations is None:
            raise RunError(
                "technique 'moment' (text_set = \"variations\") needs the text direction set of SVL's semantic "
                "variations: add [[techniques]] use = \"semantic-variations\" to the recipe, or set moment's "
                "text_set = \"plain\" to match the single direction E_T(target) - E_T(source) (K = 0)")
        return variations

    @hookimpl
    def zsgm_setup(self, run):
        cfg = self.config
        if cfg.text_set == "variations":
            variations = self._source(run)
            text_norm = variations.config.text_norm
        else:
            if run.recipe.target is None:
                raise RunError("technique 'moment' with text_set = \"plain\" needs a target text (recipe.target)")
            self._plain = [
                text_direction_set(recipe_text_feature(run, i, run.recipe.source, cfg),
                                   recipe_text_feature(run, i, run.recipe.target, cfg), None)
                for i in range(len(run.clip_models))
            ]
            text_norm = cfg.text_norm
        if not cfg.normalize_directions and text_norm == "raw":
            warnings.warn("moment: normalize_directions = false with raw (unnormalised) text features compares "
                          "image directions of unit embeddings with text directions ~10x longer; consider "
                          "text_norm = \"unit\"", UserWarning, stacklevel=2)

    def text_set(self, run, model_index: int) -> torch.Tensor:
        """``dT_set`` ``[(K+1), D]`` for CLIP model ``model_index``."""
        if self.config.text_set == "plain":
            return self._plain[model_index]
        return self._source(run).text_direction_set(run, model_index)

    @hookimpl
    def zsgm_loss(self, run, step):
        cfg = self.config
        batch = run.batch
        mean_total = torch.zeros((), device=run.device)
        cov_total = torch.zeros((), device=run.device)
        for i, weight in enumerate(run.clip_weights):
            if weight == 0:
                continue
            d_img = batch.tgt_embeds(i) - batch.src_embeds(i)  # [N, D]
            mean_term, dist = directional_moment_terms(d_img, self.text_set(run, i),
                                                       normalize=cfg.normalize_directions,
                                                       scale=cfg.moment_scale, squared=cfg.squared)
            mean_total = mean_total + weight * mean_term
            cov_total = cov_total + weight * cfg.lambda_cov * dist
        return [self.term("mean", mean_total), self.term("cov", cov_total)]
