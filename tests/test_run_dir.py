"""The run directory: refused outputs, the lock held for a whole run, and what a resume may change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import tomllib

import pytest

from zsgm import loop
from zsgm.io_utils import WriteError, atomic_write_text
from zsgm.recipe import dumps_recipe, recipe_from_dict
from zsgm.run import RunError
from zsgm.run_dir import (
    ResumeMismatchError,
    RunDirBusyError,
    RunDirLock,
    RunPaths,
    check_resume_recipe,
    prepare_run_dir,
)


def tiny(steps=2, **optim):
    return {
        "source": "photo",
        "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "optim": {"steps": steps, "batch_size": 1, **optim},
        "run": {"seed": 3, "sample_every": 0, "checkpoint_every": 1, "n_samples": 1, "progress": False},
        "techniques": [{"use": "directional"}],
    }


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if adapt gets as far as loading models."""

    def refuse(*_a, **_k):
        raise AssertionError("models were loaded")

    monkeypatch.setattr(loop, "build_run", refuse)


# ---------------------------------------------------------------------------------------------- --out


def test_out_naming_a_file_is_one_clear_error_before_anything_loads(tmp_path, no_loading):
    out = tmp_path / "result.png"
    out.write_bytes(b"not a directory")
    with pytest.raises(RunError, match=r"result\.png is an existing file, not a directory"):
        loop.adapt(recipe_from_dict(tiny()), out_dir=out)
    assert out.read_bytes() == b"not a directory"
    with pytest.raises(RunError, match="part of the path is a file"):
        prepare_run_dir(out / "run")


def test_resume_of_a_missing_directory_creates_nothing(tmp_path, no_loading):
    with pytest.raises(RunError, match=f"there is no run to resume in {tmp_path / 'nope'}: the directory does not"):
        loop.adapt(recipe_from_dict(tiny()), out_dir=tmp_path / "nope", resume=True)
    assert not (tmp_path / "nope").exists()


def test_uncreatable_out_dir_is_a_write_error_naming_it(no_loading):
    out = "/proc/self/zsgm-run"  # no one may create a directory here, root included
    with pytest.raises(WriteError, match="cannot create the run directory /proc/self/zsgm-run"):
        loop.adapt(recipe_from_dict(tiny()), out_dir=out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_dir_is_a_write_error_naming_it(tmp_path, no_loading):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(WriteError, match=f"cannot write to the run directory {out}"):
            loop.adapt(recipe_from_dict(tiny()), out_dir=out)
    finally:
        out.chmod(0o755)


# ---------------------------------------------------------------------------------------------- lock

HOLDER = textwrap.dedent("""
    import sys, time
    from zsgm.run_dir import RunDirLock
    lock = RunDirLock(sys.argv[1])
    lock.acquire()
    print("held", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of ``tmp_path / 'run'``; yields its Popen."""
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_second_run_on_a_locked_directory_fails_at_once_naming_dir_and_pid(tmp_path, holder, no_loading):
    out = tmp_path / "run"
    for resume in (False, True):
        with pytest.raises(RunDirBusyError, match=rf"run directory {out} is in use by another zsgm run "
                                                  rf"\(pid {holder.pid}\)"):
            loop.adapt(recipe_from_dict(tiny()), out_dir=out, resume=resume)
    assert not (out / "losses.jsonl").exists() and not (out / "recipe.toml").exists()


def test_the_lock_dies_with_its_process(tmp_path, holder):
    out = tmp_path / "run"
    with pytest.raises(RunDirBusyError):
        RunDirLock(out).acquire()
    holder.send_signal(signal.SIGKILL)  # a crash: no clean-up runs
    holder.wait()
    with RunDirLock(out) as lock:
        assert (out / ".zsgm.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunDirBusyError):  # flock is per open file: a second adapt in this process waits too
            RunDirLock(out).acquire()
    lock.release()
    RunDirLock(out).acquire()  # released on exit


# ---------------------------------------------------------------------------------------------- resume contract


def saved_run(tmp_path, data) -> RunPaths:
    paths = RunPaths(tmp_path)
    atomic_write_text(paths.recipe, dumps_recipe(recipe_from_dict(data)))
    return paths


def test_resume_lists_every_changed_field_with_both_values(tmp_path):
    paths = saved_run(tmp_path, tiny(steps=4))
    other = tiny(steps=4, lr=0.01)
    other["target"] = "cartoon"
    other["techniques"] = [{"use": "directional", "weight": 2.0}, {"use": "global"}]
    with pytest.raises(ResumeMismatchError) as info:
        check_resume_recipe(paths, recipe_from_dict(other), steps_done=2)
    message = str(info.value)
    assert message.startswith(f"cannot resume {tmp_path}: the recipe differs from the run's recipe.toml")
    for line in ("target: 'sketch' in the run, 'cartoon' in this recipe",
                 "optim.lr: 0.002 in the run, 0.01 in this recipe",
                 "techniques[0].weight: 1.0 in the run, 2.0 in this recipe",
                 "techniques[1].use: (not set) in the run, 'global' in this recipe"):
        assert "\n  " + line in message
    assert {d[0] for d in info.value.differences} >= {"target", "optim.lr", "techniques[0].weight"}
    assert "optim.steps (not below the steps already done)" in message  # says what may change


def test_resume_allows_more_steps_and_run_settings_and_reports_them(tmp_path):
    paths = saved_run(tmp_path, tiny(steps=4))
    data = tiny(steps=9)
    data["run"].update(progress=True, device="cpu", sample_every=3, checkpoint_every=5)
    data["clip"]["models"][0]["trust_torchscript"] = True
    changes = check_resume_recipe(paths, recipe_from_dict(data), steps_done=4)
    assert changes == ["clip.models[0].trust_torchscript: false -> true", "optim.steps: 4 -> 9",
                       "run.device: 'auto' -> 'cpu'", "run.sample_every: 0 -> 3", "run.checkpoint_every: 1 -> 5",
                       "run.progress: false -> true"]
    assert check_resume_recipe(paths, recipe_from_dict(tiny(steps=4)), steps_done=2) == []


def test_resume_refuses_fewer_steps_than_done(tmp_path):
    paths = saved_run(tmp_path, tiny(steps=8))
    assert check_resume_recipe(paths, recipe_from_dict(tiny(steps=6)), steps_done=6) == ["optim.steps: 8 -> 6"]
    with pytest.raises(ResumeMismatchError, match="optim.steps: the run has already done 6 steps; this recipe "
                                                  "asks for 5"):
        check_resume_recipe(paths, recipe_from_dict(tiny(steps=5)), steps_done=6)


def test_a_field_the_saved_recipe_lacks_is_a_difference(tmp_path):
    """A run saved before a field existed ran with the former behaviour: its new default is no match."""
    paths = saved_run(tmp_path, tiny())
    data = tomllib.loads(paths.recipe.read_text())
    del data["optim"]["noise"]
    from zsgm.tomlwrite import dumps_toml

    paths.recipe.write_text(dumps_toml(data))
    with pytest.raises(ResumeMismatchError, match=r"optim.noise: \(not set\) in the run, 'fresh' in this recipe "
                                                  r"\(the field is newer than the run; set noise = \"shared\" in the "
                                                  r"recipe to resume the run as it was made\)"):
        check_resume_recipe(paths, recipe_from_dict(tiny()), steps_done=1)
    # set to the former behaviour, the older run resumes
    assert check_resume_recipe(paths, recipe_from_dict(tiny(noise="shared")), steps_done=1) == []


def test_resume_without_a_readable_saved_recipe_is_refused(tmp_path):
    paths = RunPaths(tmp_path)
    with pytest.raises(RunError, match="recipe.toml is missing"):
        check_resume_recipe(paths, recipe_from_dict(tiny()), steps_done=1)
    paths.recipe.write_bytes(b"\xff\xfe = [")
    with pytest.raises(RunError, match="the run's saved recipe is unreadable"):
        check_resume_recipe(paths, recipe_from_dict(tiny()), steps_done=1)


def test_a_file_system_without_locks_warns_and_runs_unlocked(tmp_path, monkeypatch):
    import errno

    import zsgm.run_dir

    def no_locks(_fd, _op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(zsgm.run_dir.fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match=f"the file system of {tmp_path} has no file locks"):
        with RunDirLock(tmp_path):
            pass
