"""zsgm.fit on a toy task (linear regression on seeded random data): it trains; a run stopped or killed and
resumed is bit-identical to an uninterrupted one; resumes with other settings, a second start, a non-finite loss
and unusable task answers are refused in one line; a finished run resumed does nothing."""

from __future__ import annotations

import json

import attrs
import pytest
import torch

from zsgm.checkpoint import NonFiniteLossError
from zsgm.fit import FitPaths, fit, read_module_file
from zsgm.run import RunError, step_rng
from zsgm.run_dir import ResumeMismatchError, RunDirBusyError, RunDirLock

pytestmark = pytest.mark.filterwarnings("ignore::tqdm.TqdmExperimentalWarning")


@attrs.define(slots=False)
class Regression:
    """y = x @ w_true + noise on 64 seeded points; each step fits a random batch of 8 (drawn from ``rng``)."""

    name: str = "toy-regression"
    lr: float = 0.3
    nan_at: int | None = None  # the loss is NaN from this step on
    interrupt_at: int | None = None  # KeyboardInterrupt at this step (a kill after some logged steps)
    drawn: list = attrs.Factory(list)  # (step, first batch index) seen by loss()
    setups: int = 0

    def setup(self, out_dir, device):
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(64, 4, generator=g)  # [64, 4]
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.01 * torch.randn(64, 1, generator=g)
        self.setups += 1

    def build(self, device):
        return torch.nn.Linear(4, 1).to(device)

    def make_optimizer(self, module):
        return torch.optim.Adam(module.parameters(), lr=self.lr)

    def loss(self, module, step, rng):
        if self.interrupt_at is not None and step == self.interrupt_at:
            raise KeyboardInterrupt
        idx = torch.randint(0, 64, (8,), generator=rng)  # [8]
        self.drawn.append((step, int(idx[0])))
        mse = (module(self.x[idx]) - self.y[idx]).pow(2).mean()
        if self.nan_at is not None and step >= self.nan_at:
            mse = mse * float("nan")
        return {"mse": mse, "decay": 1e-4 * module.weight.pow(2).sum()}

    def config_record(self):
        return {"lr": self.lr, "batch": 8, "data_seed": 1234}


def run(out, task=None, **kw):
    kw = {"steps": 12, "seed": 7, "checkpoint_every": 4, "progress": False, **kw}
    return fit(task or Regression(), out_dir=out, **kw)


def checkpoint(out) -> dict:
    return torch.load(FitPaths(out).checkpoint, weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert a["next_step"] == b["next_step"]
    assert a["module"].keys() == b["module"].keys()
    for k in a["module"]:
        assert torch.equal(a["module"][k], b["module"][k]), k
    opt_a, opt_b = a["optimizer"], b["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for i, slot in opt_a["state"].items():
        for k, v in slot.items():
            assert torch.equal(v, opt_b["state"][i][k]), (i, k)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 12-step run."""
    out = tmp_path_factory.mktemp("straight") / "run"
    return out, run(out)


def test_it_trains_logs_every_step_and_writes_the_module(straight):
    out, result = straight
    lines = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(12))
    assert all(abs(r["total"] - (r["mse"] + r["decay"])) < 1e-5 for r in lines)
    first, last = (sum(r["mse"] for r in part) / 3 for part in (lines[:3], lines[-3:]))
    assert last < 0.3 * first
    assert result.steps_done == 12 and result.module_path == out / "module.safetensors"
    assert result.last_losses == {k: v for k, v in lines[-1].items() if k != "step"}
    tensors, meta = read_module_file(result.module_path)
    assert meta == {"format": "zsgm-fit-module", "task": "toy-regression", "steps": "12"}
    assert all(torch.equal(tensors[k], checkpoint(out)["module"][k]) for k in ("weight", "bias"))
    assert tomllib_load(out / "fit.toml") == {"task": "toy-regression", "seed": 7, "steps": 12,
                                              "config": {"lr": 0.3, "batch": 8, "data_seed": 1234}}
    assert json.loads((out / "fit.json").read_text())["resumed_from"] is None


def tomllib_load(path):
    import tomllib

    return tomllib.loads(path.read_text())


def test_loss_draws_from_the_run_rng_of_seed_step_and_stream(tmp_path):
    task = Regression()
    run(tmp_path / "run", task, steps=3)
    expected = [(s, int(torch.randint(0, 64, (8,), generator=step_rng(7, s, "loss"))[0])) for s in range(3)]
    assert task.drawn == expected


def test_stopped_and_resumed_run_is_bit_identical_to_the_uninterrupted_one(tmp_path, straight):
    out0, _ = straight
    out = tmp_path / "run"
    first = run(out, stop_after=5)  # checkpoints at 4 and 5 (the end of this call)
    assert first.steps_done == 5 and first.module_path is None and not (out / "module.safetensors").exists()
    task = Regression()
    result = run(out, task, resume=True)
    assert task.drawn[0][0] == 5 and result.steps_done == 12
    assert json.loads((out / "fit.json").read_text())["resumed_from"] == 5
    assert_same_state(checkpoint(out), checkpoint(out0))
    assert (out / "losses.jsonl").read_bytes() == (out0 / "losses.jsonl").read_bytes()
    tensors, meta = read_module_file(out / "module.safetensors")  # the bytes differ: safetensors orders the
    tensors0, meta0 = read_module_file(out0 / "module.safetensors")  # metadata by a per-process hash
    assert meta == meta0 and all(torch.equal(tensors[k], tensors0[k]) for k in tensors0)


def test_killed_run_resumes_from_its_checkpoint_dropping_the_steps_logged_after_it(tmp_path, straight):
    out0, _ = straight
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(out, Regression(interrupt_at=10))  # checkpoint at 8; steps 8 and 9 logged, then killed
    assert checkpoint(out)["next_step"] == 8 and "\"step\": 9" in (out / "losses.jsonl").read_text()
    run(out, resume=True)
    assert_same_state(checkpoint(out), checkpoint(out0))
    assert (out / "losses.jsonl").read_bytes() == (out0 / "losses.jsonl").read_bytes()


def test_resume_with_another_config_field_is_refused_naming_it(tmp_path):
    out = tmp_path / "run"
    run(out, stop_after=4)
    with pytest.raises(ResumeMismatchError, match=r"config\.lr: 0\.3 in the run, 0\.1 now") as info:
        run(out, Regression(lr=0.1), resume=True)
    assert "\n" not in str(info.value) and info.value.differences == [("config.lr", 0.3, 0.1)]
    with pytest.raises(ResumeMismatchError, match="seed: 7 in the run, 8 now"):
        run(out, resume=True, seed=8)
    with pytest.raises(ResumeMismatchError, match="steps: the run has already done 4, this resume asks for 3"):
        run(out, resume=True, steps=3)
    assert checkpoint(out)["next_step"] == 4  # nothing was run


def test_finished_run_resumed_says_so_and_touches_nothing_until_extended(tmp_path):
    out = tmp_path / "run"
    run(out, steps=4)
    def files():  # the lock file records the pid of each process that takes the lock
        return {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".zsgm.lock"}

    before = files()
    task = Regression()
    again = run(out, task, steps=4, resume=True)
    assert again.already_finished and again.steps_done == 4 and task.setups == 0
    assert files() == before and len(before) == 5  # fit.toml, fit.json, losses, last.pt, module
    longer = run(out, steps=6, resume=True)  # a finished run may be extended; its old module is kept aside
    assert not longer.already_finished and longer.resume_changes == ["steps: 4 -> 6"]
    assert (out / "module-step000004.safetensors").exists() and longer.module_path.exists()


def test_a_second_start_in_a_used_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    run(out, steps=2)
    with pytest.raises(RunError, match=r"already holds a run \(checkpoints/last\.pt\)"):
        run(out, steps=2)
    busy = tmp_path / "busy"
    busy.mkdir()
    with RunDirLock(busy), pytest.raises(RunDirBusyError, match=f"run directory {busy} is in use"):
        run(busy, steps=2)


def test_non_finite_loss_names_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as info:
        run(out, Regression(nan_at=10), checkpoint_every=3)  # checkpoints at 3, 6, 9; step 9 ran finite
    text = str(info.value)
    assert text.startswith("non-finite loss at step 10: {'mse': nan, 'total': nan}; the weights were finite; ")
    assert text.endswith(f"the last good checkpoint is {out / 'checkpoints' / 'last.pt'} (next step 9) "
                         f"(try a lower learning rate in the task's settings, in a new run)")
    out = tmp_path / "early"
    with pytest.raises(NonFiniteLossError) as info:
        run(out, Regression(nan_at=9), checkpoint_every=3)  # last.pt (next step 9) leads straight into it
    assert (f"the last good checkpoint is {out / 'checkpoints' / 'previous.pt'} (next step 6); "
            f"{out / 'checkpoints' / 'last.pt'} (next step 9) leads straight into this step") in str(info.value)


@pytest.mark.parametrize("answer, words", [
    ({}, "loss() must return a non-empty dict"),
    ({"mse": torch.ones(2, requires_grad=True)}, "loss term 'mse' at step 0 is not a scalar tensor ((2,))"),
    ({"mse": torch.tensor(1.0)}, "the total loss at step 0 does not depend on the module's trainable parameters"),
])
def test_unusable_loss_answers_are_refused_in_one_line(tmp_path, answer, words):
    task = Regression()
    task.loss = lambda module, step, rng: answer
    with pytest.raises(RunError) as info:
        run(tmp_path / "run", task)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_bad_arguments_and_incomplete_tasks_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="fit steps must be an integer >= 1; got 0"):
        run(tmp_path / "a", steps=0)
    with pytest.raises(TypeError, match="fit task 'half': missing method loss, config_record"):
        fit(type("Half", (), {"name": "half", "build": len, "make_optimizer": len, "setup": len})(),
            out_dir=tmp_path / "b", steps=1)
    task = Regression()
    task.config_record = lambda: {"where": object()}
    with pytest.raises(RunError, match="config_record\\(\\) holds a value fit.toml cannot store"):
        run(tmp_path / "c", task)
    assert not any(tmp_path.iterdir())
