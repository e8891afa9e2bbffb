"""TensorBoard logging as a technique: ``[[techniques]] use = "tensorboard"`` (no loss term).

    [[techniques]]
    use = "tensorboard"
    # log_dir = "tb/my-run"    # default: RUN/tensorboard
    # images_every = 100       # default: run.sample_every; 0 = no images

    tensorboard --logdir runs/sketch/tensorboard

Scalars: every value the loop logs for a step (``"<technique>/<term>"`` unweighted, and ``"total"``), the same
numbers as ``losses.jsonl``, at that step; steps whose values the loop did not fetch (``log`` is None, see
``run.log_every``) are skipped, so the logger never forces a device synchronisation. With ``run.log_every = N > 1``
TensorBoard thus gets every N-th step (and checkpoint and last steps) while ``losses.jsonl`` gets every step.
Under torchrun only rank 0 writes. Images: ``samples``, the
source (top) and adapted (bottom) rows of the run's fixed grid latents (as ``samples/step-*.png``), after every
``images_every`` steps and after the last step. The writer is flushed and closed when the run ends.

The ``tensorboard`` package is an optional extra (``pip install 'zsgm[tensorboard]'``), imported only when a run
uses this technique. A resumed run appends to the same folder; the steps it runs again after its last checkpoint
then have two events (TensorBoard draws the newer).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import attrs
import numpy as np

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.technique import Technique

INSTALL_HINT = "pip install 'zsgm[tensorboard]'"
DEFAULT_SUBDIR = "tensorboard"
IMAGE_TAG = "samples"


class TensorBoardMissing(ValueError):
    """The ``tensorboard`` package is not installed (one line naming the install command)."""


def require_tensorboard() -> None:
    """Raise :class:`TensorBoardMissing` unless ``tensorboard`` can be imported."""
    if importlib.util.find_spec("tensorboard") is None:
        raise TensorBoardMissing(f"the tensorboard technique needs the tensorboard package, which is not installed: "
                                 f"{INSTALL_HINT}")


@attrs.define(kw_only=True)
class TensorBoardConfig:
    """Options of the ``tensorboard`` technique.

    Attributes:
        log_dir: the event folder; default ``RUN/tensorboard``. A relative path is relative to the working
            directory, as every recipe path.
        images_every: add the source/adapted sample grid after every this many steps (and after the last step);
            None: the run's ``sample_every``; 0: no images.
    """

    log_dir: str | None = None
    images_every: int | None = attrs.field(default=None)

    @images_every.validator
    def _check_images_every(self, attribute, value):
        if value is not None:
            v.non_negative(self, attribute, value)


class TensorBoardLogger(Technique):
    """Writes the run's logged values and sample grids to TensorBoard event files (no loss, no state)."""

    def __init__(self, config: TensorBoardConfig):
        super().__init__(config)
        require_tensorboard()  # at build time: a missing extra stops the run before step 0, in one line
        self.writer = None
        self._grid_inputs = None
        self._images_every = 0
        self._steps = 0

    def log_dir(self, run) -> Path:
        return Path(self.config.log_dir) if self.config.log_dir is not None else Path(run.out_dir) / DEFAULT_SUBDIR

    @hookimpl
    def zsgm_setup(self, run):
        from torch.utils.tensorboard import SummaryWriter

        every = self.config.images_every
        self._images_every = run.recipe.run.sample_every if every is None else every
        self._steps = run.recipe.optim.steps
        dist = getattr(run, "dist", None)
        if self.writer is None and (dist is None or dist.is_main):  # one writer under torchrun: rank 0's
            self.writer = SummaryWriter(log_dir=str(self.log_dir(run)))

    @hookimpl
    def zsgm_after_step(self, run, step, log):
        if self.writer is None:
            return
        if log is not None:
            for key, value in log.items():
                self.writer.add_scalar(key, value, step)
        done = step + 1
        if self._images_every and (done % self._images_every == 0 or done == self._steps):
            self.writer.add_image(IMAGE_TAG, self.grid(run), done, dataformats="HWC")

    def grid(self, run) -> np.ndarray:
        """The sample grid now (:func:`zsgm.loop.grid_image`): ``[H, W, 3]`` uint8. Its latents and noise are the
        loop's grid inputs (seeded from the run's own streams), made on the first grid, by the writing rank only."""
        from zsgm.loop import fixed_sample_inputs, grid_image

        if self._grid_inputs is None:
            self._grid_inputs = fixed_sample_inputs(run)
        return np.asarray(grid_image(run, self._grid_inputs))

    @hookimpl
    def zsgm_teardown(self, run, error):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def tensorboard_technique():
    """The :class:`zsgm.registry.TechniqueSpec` of ``tensorboard``."""
    from zsgm.registry import TechniqueSpec

    return TechniqueSpec(name="tensorboard", config=TensorBoardConfig, build=TensorBoardLogger, produces_loss=False,
                         unique=True, description="TensorBoard: the logged loss terms and total per step, and the "
                                                  "source/adapted sample grid (needs zsgm[tensorboard])")
