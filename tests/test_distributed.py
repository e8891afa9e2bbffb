"""Data-parallel runs on the CPU with the gloo backend: 2 processes (torch.multiprocessing spawn) against 1.

The workers set the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and call
:func:`zsgm.loop.adapt`, which opens the process group itself, as ``torchrun -m zsgm adapt`` does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import attrs

from zsgm.checkpoint import checkpoint_path
from zsgm.distributed import Distributed, from_environment
from zsgm.hookspecs import hookimpl
from zsgm.loop import adapt
from zsgm.plugins import build_registry
from zsgm.recipe import recipe_from_dict
from zsgm.registry import TechniqueSpec
from zsgm.run import RunError, build_run
from zsgm.step import StepBatch
from zsgm.technique import Technique


@attrs.define(kw_only=True)
class SetupOnceConfig:
    folder: str = ""


class SetupOnce(Technique):
    """Stands for Fisher / prompt training / reference search: setup work whose result is in the state_dict.
    Leaves ``work-rank<R>`` when it does the work, ``restored-rank<R>`` when its restored state holds it."""

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("result", torch.zeros(3))

    @hookimpl
    def zsgm_setup(self, run):
        folder = Path(self.config.folder)
        if bool(self.result.any()):
            (folder / f"restored-rank{run.dist.rank}").touch()
            return
        (folder / f"work-rank{run.dist.rank}").touch()
        self.result.copy_(torch.tensor([1.0, 2.0, 3.0]))


@attrs.define(kw_only=True)
class OwnHeadConfig:
    pass


class OwnHead(Technique):
    """A head with its own optimiser, trained after each step on this rank's rows of the batch (as a
    discriminator could be): its gradients must be averaged over the ranks too."""

    @hookimpl
    def zsgm_attach(self, run):
        d = run.g_source.arch.style_dim
        self.head = torch.nn.Linear(d, 1).to(run.device)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(1, d, generator=run.rng(0, "head")) / d ** 0.5)
            self.head.bias.zero_()

    @hookimpl
    def zsgm_optimizers(self, run):
        return {"head": torch.optim.SGD(self.head.parameters(), lr=0.1)}

    @hookimpl
    def zsgm_after_step(self, run, step):
        optimizer = run.technique_optimizers[f"{self.use.name}/head"]
        optimizer.zero_grad(set_to_none=True)
        (self.head(run.batch.ws[:, 0]) - 1).square().mean().backward()  # a mean over this rank's rows
        optimizer.step()


class SetupOncePlugin:
    __name__ = "setup_once_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_techniques(register):
        register(TechniqueSpec(name="setup-once", config=SetupOnceConfig, build=SetupOnce))
        register(TechniqueSpec(name="own-head", config=OwnHeadConfig, build=OwnHead))


def registry():
    return build_registry(extra_modules=[SetupOncePlugin()])[1]


def recipe_data(steps=4, batch_size=4, **run):
    """Directional loss with NADA's adaptive layer freezing (top-3 W+ slots from the probe each step)."""
    return {
        "source": "photo",
        "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": steps, "batch_size": batch_size, "lr": 0.01, "ema_decay": 0.9},
        "run": {"seed": 5, "sample_every": 0, "checkpoint_every": 2, "n_samples": 2, "progress": False, **run},
        "techniques": [{"use": "directional"}, {"use": "layer-freeze", "k": 3, "auto_layer_batch": 2}],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: dict, out_dir: str, kill_at: int | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import zsgm.loop as loop

    if kill_at is not None and rank == world - 1:
        original = loop.optimisation_step

        def killed(run, optimizer, step, *args, **kwargs):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # as a crashed node or `kill -9`
            return original(run, optimizer, step, *args, **kwargs)

        loop.optimisation_step = killed
    plugins = registry()
    loop.adapt(recipe_from_dict(data, registry=plugins), out_dir=out_dir, registry=plugins)


def run_processes(world: int, data: dict, out_dir, *, kill_at: int | None = None, meanwhile=None,
                  start_method: str = "spawn") -> None:
    """``world`` ranks of ``adapt(data)`` in ``out_dir``; ``meanwhile()`` runs here while they start.

    ``start_method="fork"`` starts them from this process as it is (torch, open_clip and zsgm already imported:
    ~10 s less per rank on a 2-core machine); the ranks use one thread each, which keeps fork safe."""
    context = mp.start_processes(_worker, args=(world, _free_port(), data, str(out_dir), kill_at), nprocs=world,
                                 join=False, start_method=start_method)
    if meanwhile is not None:
        meanwhile()
    while not context.join():
        pass


def losses(out):
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


def assert_same_run(a, b):
    """Two run directories hold the same losses (float tolerance) and the same weights.

    The gradients of 2 ranks averaged equal the 1-process gradients to ~1e-8 relative (sums in another order).
    Adam with the presets' ``beta1 = 0`` moves each weight by about ``lr * sign(grad)`` when ``|grad| >> eps``,
    so an element whose gradient is near ``eps`` can move a little differently: nearly every element agrees to
    1e-5, none is off by more than a twentieth of one step (``lr * reg_ratio``).
    """
    ca = torch.load(checkpoint_path(a), weights_only=True)
    cb = torch.load(checkpoint_path(b), weights_only=True)
    assert ca["next_step"] == cb["next_step"]
    step_size = 0.01 * 0.8
    for key in ("target", "ema"):
        diffs = torch.cat([(ca[key][n].float() - cb[key][n].float()).abs().flatten() for n in ca[key]])
        assert diffs.max() < step_size / 20, key
        assert (diffs > 1e-5).float().mean() < 1e-3, key
    for technique, tensors in ca["techniques"].items():
        for name, value in tensors.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                torch.testing.assert_close(value, cb["techniques"][technique][name], rtol=1e-5, atol=1e-6)
    la, lb = losses(a), losses(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for ra, rb in zip(la, lb):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (ra["step"], k)


@pytest.fixture
def one_thread():
    """Forked ranks and this process on one torch thread each (no oversubscription; fork-safe OpenMP)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_processes_equal_one_process_with_the_same_global_batch_and_layer_freezing(tmp_path, one_thread):
    """... and the setup work is done once, by rank 0, whose state the other rank restores; a technique's own
    optimiser training on each rank's rows ends as in one process (its gradients are averaged too)."""
    plugins = registry()
    for name in ("one", "two", "marks-one", "marks-two"):
        (tmp_path / name).mkdir()
    data = recipe_data()

    def with_marks(folder):
        return {**data, "techniques": data["techniques"] + [{"use": "setup-once", "folder": str(folder)},
                                                            {"use": "own-head"}]}

    def one_process():
        adapt(recipe_from_dict(with_marks(tmp_path / "marks-one"), registry=plugins), out_dir=tmp_path / "one",
              registry=plugins)

    one_process()  # first: the ranks are forked from this process with everything imported
    run_processes(2, with_marks(tmp_path / "marks-two"), tmp_path / "two", start_method="fork")
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "marks-one").iterdir()) == ["work-rank0"]
    assert sorted(p.name for p in (tmp_path / "marks-two").iterdir()) == ["restored-rank1", "work-rank0"]
    # the weights moved (the comparison is not of two untouched generators) and rank 0 alone wrote files
    start = torch.load(checkpoint_path(tmp_path / "one"), weights_only=True)["target"]
    source = build_run(recipe_from_dict(data), out_dir=tmp_path / "x").g_source.state_dict()
    techniques = torch.load(checkpoint_path(tmp_path / "two"), weights_only=True)["techniques"]
    assert torch.equal(techniques["setup-once"]["result"], torch.tensor([1.0, 2.0, 3.0]))
    initial = build_run(recipe_from_dict(with_marks(tmp_path), registry=plugins), out_dir=tmp_path / "x",
                        registry=plugins).techniques[-1].head.weight
    assert not torch.allclose(techniques["own-head"]["head.weight"], initial)  # the head trained
    assert any(not torch.equal(start[k], source[k]) for k in source if not k.startswith("style."))
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "run.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_with_one_process(tmp_path):
    """Rank 1 dies (SIGKILL) at step 3; the run resumes from its step-2 checkpoint in one process and ends as a
    one-process run does."""
    data = recipe_data(steps=6)
    with pytest.raises(mp.ProcessExitedException, match="signal SIGKILL"):  # spawn then stops the other rank
        run_processes(2, data, tmp_path / "two", kill_at=3,
                      meanwhile=lambda: adapt(recipe_from_dict(data), out_dir=tmp_path / "one"))
    assert torch.load(checkpoint_path(tmp_path / "two"), weights_only=True)["next_step"] == 2
    assert not (tmp_path / "two" / "generator.safetensors").exists()
    result = adapt(recipe_from_dict(data), out_dir=tmp_path / "two", resume=True)
    assert result.steps_done == 6 and result.generator_path.exists()
    assert_same_run(tmp_path / "one", tmp_path / "two")


# ------------------------------------------------------------------------------------------ without processes


def test_each_rank_takes_its_rows_of_the_global_batch(tmp_path):
    data = recipe_data()
    data["optim"]["noise"] = "fresh"
    whole = build_run(recipe_from_dict(data), out_dir=tmp_path)
    full = StepBatch(whole, 3)
    for rank in (0, 1):
        run = build_run(recipe_from_dict(data), out_dir=tmp_path, dist=Distributed(rank=rank, world_size=2))
        part = StepBatch(run, 3)
        rows = slice(2 * rank, 2 * rank + 2)
        assert part.global_size == 4 and part.ws.shape[0] == 2
        assert torch.equal(part.ws, full.ws[rows])
        for role in ("source", "target"):
            for a, b in zip(part.noise_for(role), full.noise_for(role)):
                assert torch.equal(a, b[rows])


def test_batch_size_must_split_over_the_processes():
    Distributed(rank=0, world_size=2).check_batch_size(4)
    with pytest.raises(RunError, match=r"optim.batch_size = 3 cannot be split over 2 processes"):
        Distributed(rank=1, world_size=2).check_batch_size(3)


def test_environment_of_torchrun_is_read():
    assert from_environment({}) == Distributed()
    assert from_environment({"WORLD_SIZE": "1", "RANK": "0"}).world_size == 1
    d = from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (d.rank, d.world_size, d.local_rank, d.is_main, d.active) == (3, 4, 1, False, True)
    assert d.local_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert d.local_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="do not fit WORLD_SIZE = 2"):
        from_environment({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        from_environment({"WORLD_SIZE": "two"})


def test_an_explicit_gpu_for_every_process_of_a_node_is_refused(tmp_path, monkeypatch):
    """run.device = "cuda:0" under torchrun would put LOCAL_RANK 1 on rank 0's GPU (NCCL fails later, unclearly)."""
    import zsgm.run
    from zsgm.recipe import RecipeError

    monkeypatch.setattr(zsgm.run, "resolve_device", lambda name, field="run.device": torch.device("cuda", 0))
    with pytest.raises(RecipeError, match=r"run.device: 'cuda:0' puts every process of this node on one GPU"):
        build_run(recipe_from_dict(recipe_data(device="cuda:0")), out_dir=tmp_path,
                  dist=Distributed(rank=1, world_size=2, local_rank=1))
