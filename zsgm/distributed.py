"""Data-parallel runs on PyTorch's own distributed engine: one run, several processes started by ``torchrun``.

``torchrun --nproc_per_node=N -m zsgm adapt ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`session` reads them and opens the process
group (gloo on the CPU, NCCL on CUDA; ``run.device = "auto"`` or ``"cuda"`` becomes ``cuda:LOCAL_RANK``).
Without those variables (a plain ``zsgm adapt``) it is a single process and nothing here communicates.

What the ranks share (see docs/SCALING.md):

- **the batch**: every rank draws a step's whole batch (``optim.batch_size`` latents, their noise) from the
  run's seeded streams and keeps its own rows (:meth:`Distributed.shard`), so the global batch is the same
  whatever N (``optim.batch_size`` must be a multiple of N);
- **the gradients**: after backward the gradients of the optimiser's parameters are averaged over the ranks,
  one all-reduce per step (:meth:`Distributed.average_gradients`); the techniques' own optimisers average
  theirs the same way just before they step. Every rank then takes the same optimiser step, so the weights
  stay equal without being sent. This is the reduction ``DistributedDataParallel`` does, without its
  wrapper: layer freezing changes which parameters need a gradient at every step, which DDP's reducer fixes
  once when the model is wrapped, and techniques call the generator's ``synthesis`` several times per step;
- **the setup**: rank 0 alone reads the run directory (a resume's checkpoint), runs the techniques' setup
  (Fisher estimates, prompt learners, anchors, reference search) and sends the run's state (an in-memory
  run checkpoint) to the others, which then set up as a resume from it does (:meth:`Distributed.share_from_main`);
- **the logged values**: averaged over the ranks when they are fetched; rank 0 alone writes checkpoints,
  grids, snapshots, logs and the final generator.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Callable, Iterable, Iterator

import attrs
import torch

from zsgm.run import RunError

__all__ = ["Distributed", "RankFailedError", "SINGLE", "from_environment", "session"]

#: Minutes a rank waits in a collective (rank 0's setup can take a while) before it gives up.
TIMEOUT_MINUTES = 60


class RankFailedError(RunError):
    """Rank 0 failed while the other ranks waited for it; the message is rank 0's error."""


@attrs.frozen
class Distributed:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: this process's rank (0 .. world_size - 1); rank 0 writes the run's files.
        world_size: number of processes of the run (1: a plain run, nothing is communicated).
        local_rank: rank on this node; picks ``cuda:LOCAL_RANK``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (the one that reads and writes the run directory)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world_size > 1

    # ------------------------------------------------------------------------------------ the batch

    def check_batch_size(self, batch_size: int) -> None:
        """The global batch is split in equal parts: ``optim.batch_size`` must be a multiple of the ranks."""
        if batch_size % self.world_size:
            raise RunError(f"optim.batch_size = {batch_size} cannot be split over {self.world_size} processes "
                           f"(WORLD_SIZE); use a multiple of {self.world_size}")

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` (``n`` a multiple of ``world_size``)."""
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``x`` ``[n, ...]`` -> ``[n / world_size, ...]`` (``x`` itself for one process)."""
        return x if not self.active else x[self.rows(x.shape[0])]

    # ------------------------------------------------------------------------------------ gradients, values

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Average ``p.grad`` over the ranks for every parameter that has one: one all-reduce per device and
        dtype. Every rank must hold gradients for the same parameters (freezing decided from the run's seeded
        streams, as layer freezing does)."""
        if not self.active:
            return
        groups: dict[tuple, list[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:
                groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for grads in groups.values():
            flat = self.mean(torch.cat([g.reshape(-1) for g in grads]))  # [total elements]
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def average_before_step(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Make each optimiser average its parameters' gradients over the ranks just before it steps (the
        techniques' own optimisers, stepped inside their hooks)."""
        if not self.active:
            return
        for optimizer in optimizers:
            def hook(opt, args, kwargs):
                self.average_gradients(p for group in opt.param_groups for p in group["params"])
            optimizer.register_step_pre_hook(hook)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` averaged over the ranks (in place; returned). No host synchronisation of its own."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.world_size
        return values

    # ------------------------------------------------------------------------------------ rank 0's work

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; put tensors on the CPU first)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def share_from_main(self, produce: Callable[[], Any], *, public: Callable[[Any], Any] = lambda v: v) -> Any:
        """Rank 0 runs ``produce()``; every rank returns its result (rank 0 the result itself, the others
        ``public(result)``, what is sent). An error on rank 0 is raised there and, as
        :class:`RankFailedError` naming it, on the others, so no rank waits for a partner that has stopped."""
        if not self.active:
            return produce()
        if self.is_main:
            try:
                value = produce()
            except BaseException as exc:
                self.broadcast(_Failed(f"{type(exc).__name__}: {exc}"))
                raise
            self.broadcast(public(value))
            return value
        value = self.broadcast()
        if isinstance(value, _Failed):
            raise RankFailedError(f"rank 0 stopped: {value.message}")
        return value

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def local_device(self, device: torch.device) -> torch.device:
        """``cuda`` without an index becomes ``cuda:LOCAL_RANK`` in a multi-process run; anything else stays."""
        if self.active and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device


@attrs.frozen
class _Failed:
    message: str


#: A plain single-process run.
SINGLE = Distributed()


def from_environment(environ: dict | None = None) -> Distributed:
    """The rank, world size and local rank ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
    :data:`SINGLE` when ``WORLD_SIZE`` is absent or 1.

    Raises:
        ValueError: the variables are not integers or do not fit (one line naming them).
    """
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError(f"WORLD_SIZE, RANK, LOCAL_RANK must be integers (torchrun sets them); found "
                         f"{env.get('WORLD_SIZE')!r}, {env.get('RANK')!r}, {env.get('LOCAL_RANK')!r}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK = {rank}, LOCAL_RANK = {local} do not fit WORLD_SIZE = {world}")
    return Distributed(rank=rank, world_size=world, local_rank=local) if world > 1 else SINGLE


def backend_for(device_name: str) -> str:
    """``"nccl"`` when the run's device (``run.device``) is CUDA, else ``"gloo"``."""
    if device_name == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return "nccl" if device_name.startswith("cuda") else "gloo"


@contextlib.contextmanager
def session(device_name: str, environ: dict | None = None) -> Iterator[Distributed]:
    """This process's :class:`Distributed`, with the process group open while the block runs.

    A process group opened by the caller is used as it is (and left open); otherwise one is opened from the
    ``torchrun`` variables (``init_method="env://"``, backend :func:`backend_for` the run's ``device_name``)
    and closed at the end.
    """
    import torch.distributed as dist

    here = from_environment(environ)
    if dist.is_available() and dist.is_initialized():
        yield Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=here.local_rank)
        return
    if not here.active:
        yield here
        return
    backend = backend_for(device_name)
    if backend == "nccl":
        torch.cuda.set_device(here.local_rank)
    dist.init_process_group(backend=backend, rank=here.rank, world_size=here.world_size,
                            timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES))
    try:
        yield here
    finally:
        dist.destroy_process_group()
