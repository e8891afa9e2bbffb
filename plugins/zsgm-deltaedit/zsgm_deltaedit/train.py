"""Training the delta mapper on random pairs of cached codes (METHODS.md 7.2-7.3), as a :class:`zsgm.fit.FitTask`.

Each step draws ``batch`` pairs ``(i, j)`` uniformly from the codes (from the step's ``rng``, so a resumed run is
bit-identical), and minimises ``l2_weight * MSE(dŝ, ds) + cos_weight * (1 - mean cos(dŝ, ds))`` with
``ds = s_j - s_i`` and ``dŝ = mapper(s_i, [c^_i ; normalize(c^_j - c^_i)])``, with Adam at ``lr`` (0.5, which the
mapper's lr_mul 0.01 turns into 0.005, as released).
"""

from __future__ import annotations

from pathlib import Path

import torch

from zsgm_deltaedit.codes import CodeReader
from zsgm_deltaedit.mapper import DeltaMapper, delta_loss_terms, make_condition
from zsgm_deltaedit.recipe import MapperRecipe

__all__ = ["MapperTask"]

TASK_NAME = "deltaedit-mapper"


class MapperTask:
    """The fit task of one mapper.

    Args:
        recipe: the mapper recipe (``train`` section; ``train.levels`` sets the mapper's split).
        codes_dir: the codes folder (codes.py), complete.
        widths: the generator's per-layer S widths (``[layer.channels for layer in style_layout(generator)]``).
        clip_dim: the CLIP embedding width.
        codes_id: what identifies the codes (recorded in fit.toml, so a resume on other codes is refused).
    """

    name = TASK_NAME

    def __init__(self, recipe: MapperRecipe, codes_dir: str | Path, *, widths: list[int], clip_dim: int,
                 codes_id: dict | None = None):
        self.recipe = recipe
        self.codes_dir = Path(codes_dir)
        self.widths = [int(w) for w in widths]
        self.clip_dim = int(clip_dim)
        self.codes_id = codes_id or {}
        self.reader: CodeReader | None = None
        self.device = torch.device("cpu")

    def mapper(self) -> DeltaMapper:
        """A fresh, untrained mapper of this task's structure (CPU)."""
        levels = tuple(self.recipe.train.levels) if self.recipe.train.levels is not None else None
        return DeltaMapper.for_layout(self.widths, levels=levels, clip_dim=self.clip_dim)

    def setup(self, out_dir: Path, device: torch.device) -> None:
        self.reader = CodeReader(self.codes_dir)
        self.device = device

    def build(self, device: torch.device) -> torch.nn.Module:
        return self.mapper().to(device)

    def make_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(module.parameters(), lr=self.recipe.train.lr)

    def pairs(self, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(i, j)`` ``[batch]`` each, uniform over the codes' rows."""
        n, b = self.reader.rows, self.recipe.train.batch
        i = torch.randint(0, n, (b,), generator=rng)
        j = torch.randint(0, n, (b,), generator=rng)
        return i, j

    def loss(self, module: torch.nn.Module, step: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        i, j = self.pairs(rng)
        rows = self.reader.take(torch.cat([i, j]), names=("s", "c"))
        b = i.shape[0]
        s = rows["s"].to(self.device)
        c = rows["c"].to(self.device)
        s_i, s_j, c_i, c_j = s[:b], s[b:], c[:b], c[b:]
        pred = module(s_i, make_condition(c_i, c_j))  # [B, C]
        terms = delta_loss_terms(pred, s_j - s_i)
        cfg = self.recipe.train
        return {"l2": terms["l2"], "cos": terms["cos"], "total": cfg.l2_weight * terms["l2"] + cfg.cos_weight * terms["cos"]}

    def config_record(self) -> dict:
        cfg = self.recipe.train
        record = {"batch": cfg.batch, "lr": cfg.lr, "l2_weight": cfg.l2_weight, "cos_weight": cfg.cos_weight,
                  "widths": self.widths, "clip_dim": self.clip_dim, "codes": self.codes_id}
        if cfg.levels is not None:
            record["levels"] = list(cfg.levels)
        return record
