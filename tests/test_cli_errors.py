"""The CLI's error contract: every OS error and every user error is one line and exit 2 (no traceback, also in a
real subprocess); ZSGM_DEBUG=1 keeps the traceback; Ctrl-C exits 130 with the resume hint; --version."""

from __future__ import annotations

import errno
import importlib.metadata
import os
import subprocess
import sys

import pytest

import zsgm.cli
from zsgm.cli import INTERRUPTED_EXIT, USER_ERROR_EXIT, main
from zsgm.io_utils import WriteError

from cli_output import one_error_line  # tests/cli_output.py


OS_ERRORS = {
    "permission": (PermissionError(errno.EACCES, "Permission denied", "/runs/x/recipe.toml"),
                   "/runs/x/recipe.toml: Permission denied"),
    "is-a-directory": (IsADirectoryError(errno.EISDIR, "Is a directory", "/runs/x"), "/runs/x: Is a directory"),
    "not-a-directory": (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/sub"), "/f/sub: Not a directory"),
    "disk-full": (OSError(errno.ENOSPC, "No space left on device"), "No space left on device (the disk is full)"),
    "write-error": (WriteError(errno.ENOSPC, "cannot write /runs/x/last.pt: No space left on device"),
                    "cannot write /runs/x/last.pt: No space left on device (the disk is full)"),
    "rename": (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),
               "/a -> /b: Invalid cross-device link"),
    "bare": (ConnectionResetError("peer went away"), "peer went away"),
}


@pytest.mark.parametrize("kind", sorted(OS_ERRORS))
def test_every_os_error_is_one_line_and_exit_2(capsys, monkeypatch, kind):
    exc, message = OS_ERRORS[kind]

    def failing_command(args):
        raise exc

    monkeypatch.setattr(zsgm.cli, "cmd_plugins", failing_command)
    assert main(["plugins"]) == USER_ERROR_EXIT
    assert one_error_line(capsys) == f"zsgm: error: {message}"


def test_debug_keeps_the_traceback(monkeypatch):
    def failing_command(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/x")

    monkeypatch.setattr(zsgm.cli, "cmd_plugins", failing_command)
    monkeypatch.setenv("ZSGM_DEBUG", "1")
    with pytest.raises(PermissionError):
        main(["plugins"])


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch):
    def buggy_command(args):
        raise KeyError("internal")

    monkeypatch.setattr(zsgm.cli, "cmd_plugins", buggy_command)
    with pytest.raises(KeyError):
        main(["plugins"])


def test_out_of_memory_is_one_line_with_what_to_lower(capsys, monkeypatch):
    import torch

    def oom(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                     "80 GiB of which 1 GiB is free. If reserved but unallocated memory is large try "
                                     "setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")

    monkeypatch.setattr(zsgm.cli, "cmd_plugins", oom)
    assert main(["plugins"]) == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert line.startswith("zsgm: error: CUDA out of memory; lower --batch-size")


def test_out_of_ram_is_one_line(capsys, monkeypatch):
    def oom(args):
        raise MemoryError()

    monkeypatch.setattr(zsgm.cli, "cmd_plugins", oom)
    assert main(["plugins"]) == USER_ERROR_EXIT
    assert one_error_line(capsys) == "zsgm: error: out of memory; lower --batch-size or the CLIP ensemble"


def test_interrupt_keeps_the_resume_hint_naming_the_run(tmp_path, capsys, monkeypatch):
    import zsgm.loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zsgm.loop, "adapt", interrupted)
    out = tmp_path / "run"
    code = main(["adapt", "--preset", "nada", "--target", "sketch", "--generator", "tiny-random", "--clip",
                 "tiny-random", "--out", str(out)])
    assert code == INTERRUPTED_EXIT
    assert capsys.readouterr().err.strip() == f"zsgm: interrupted; resume with `zsgm adapt --resume --out {out}`"


def test_interrupting_another_command_exits_130_without_a_resume_hint(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(zsgm.cli, "cmd_plugins", interrupted)
    assert main(["plugins"]) == INTERRUPTED_EXIT
    assert capsys.readouterr().err == "zsgm: interrupted\n"


def test_real_file_given_as_the_out_directory_is_one_line(tmp_path, capsys):
    """`zsgm eval --out FILE`: eval.json and eval.md go into a directory."""
    (tmp_path / "table.md").write_text("x")
    assert main(["eval", "tiny-random", "--out", str(tmp_path / "table.md")]) == USER_ERROR_EXIT
    assert f"--out {tmp_path / 'table.md'}: is a file" in one_error_line(capsys)


def test_missing_or_unreadable_eval_target_is_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing-run")]) == USER_ERROR_EXIT
    assert one_error_line(capsys).startswith(f"zsgm: error: {tmp_path / 'missing-run'}: no such run directory or "
                                             f"generator file, and not a registered generator name")
    (tmp_path / "file").write_text("x")
    assert main(["eval", str(tmp_path / "file")]) == USER_ERROR_EXIT
    assert one_error_line(capsys).startswith(f"zsgm: error: {tmp_path / 'file'}: ")


def test_a_recipe_error_with_one_problem_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["eval", str(run)]) == USER_ERROR_EXIT
    assert str(run / "recipe.toml") in one_error_line(capsys)


def test_unwritable_destination_of_convert_is_one_line(tmp_path, capsys):
    """A real IsADirectoryError from the atomic writer (the destination is a directory named like a file)."""
    from zsgm.builtin_plugin import tiny_random_generator
    from zsgm.generator import save_generator

    save_generator(tiny_random_generator()[0], tmp_path / "g.safetensors")
    (tmp_path / "dst.safetensors").mkdir()
    assert main(["convert", str(tmp_path / "g.safetensors"), str(tmp_path / "dst.safetensors")]) == USER_ERROR_EXIT
    line = one_error_line(capsys)
    assert str(tmp_path / "dst.safetensors") in line and "Is a directory" in line and ".tmp" not in line


def test_no_traceback_reaches_stderr_of_the_real_program(tmp_path):
    """The installed entry point, run as a user runs it: an --out that is a file, before anything loads."""
    out = tmp_path / "taken"
    out.write_text("not a run directory")
    env = {k: v for k, v in os.environ.items() if k != "ZSGM_DEBUG"}
    result = subprocess.run([sys.executable, "-m", "zsgm", "adapt", "--preset", "nada", "--target", "sketch",
                             "--generator", "tiny-random", "--clip", "tiny-random", "--out", str(out)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == USER_ERROR_EXIT
    assert result.stderr == f"zsgm: error: --out {out}: is a file, not a directory (give a new or existing run " \
                            f"directory)\n"
    assert out.read_text() == "not a run directory"


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"zsgm {importlib.metadata.version('zsgm')}"


def test_every_option_of_every_command_says_what_it_means_and_its_default():
    parser = zsgm.cli.make_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = []
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            text = action.help or ""
            if not text or (action.option_strings and "default" not in text and "(required)" not in text):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


@pytest.mark.parametrize("command", ["adapt", "sample", "eval", "convert", "plugins"])
def test_help_of_every_command_prints(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage: zsgm " + command in capsys.readouterr().out


def test_clip_option_keeps_schema_names_whole():
    """``hf-hub:org/repo`` and ``local-dir:/folder`` are names; only the colon after them separates weights."""
    from zsgm.cli_options import clip_override

    assert clip_override("hf-hub:org/repo") == [{"name": "hf-hub:org/repo"}]
    assert clip_override("local-dir:/models/clip,ViT-B-32:/w.pt") == [
        {"name": "local-dir:/models/clip"}, {"name": "ViT-B-32", "pretrained": "/w.pt"}]
    assert clip_override("shapes") == [{"name": "shapes"}]
