"""The atomic writer: file modes follow the umask, failures name the user's file and keep the old one."""

import errno
import os
import stat

import pytest

from zsgm.io_utils import WriteError, atomic_write, atomic_write_text, file_in_the_way, nearest_existing, read_toml_file


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "shared.txt").st_mode) == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "private.txt").st_mode) == 0o600
    finally:
        os.umask(old)


def test_disk_full_names_the_file_and_keeps_the_previous_one(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("good")

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as info:
        atomic_write(target, write)
    assert str(target) in str(info.value) and "No space left" in str(info.value)
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_unwritable_folder_names_the_requested_file_not_a_temp_file(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(WriteError) as info:
        atomic_write_text(blocker / "recipe.toml", "x")
    message = str(info.value)
    assert str(blocker / "recipe.toml") in message and ".tmp" not in message
    assert message.endswith(f"{blocker} is a file, not a directory")
    with pytest.raises(WriteError, match=f"{blocker} is a file, not a directory$"):
        atomic_write_text(blocker / "deeper" / "x.pt", "x")


def test_torch_save_and_safetensors_on_a_full_disk_are_write_errors(tmp_path, monkeypatch):
    """torch's own file writer turns a short write into an opaque RuntimeError; zsgm serialises in memory and
    writes with a plain write, so a full disk is a WriteError naming the file, for checkpoints and exports."""
    import builtins

    import torch

    from zsgm.generator import save_generator
    from zsgm.generator.checkpoints import export_rosinality
    from zsgm.io_utils import atomic_torch_save, append_jsonl
    from zsgm.plugins import get_registry

    real_open = builtins.open

    class FullFile:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def full_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return FullFile(fh) if ("w" in mode or "a" in mode) else fh

    generator, _ = get_registry().generators.get("tiny-random").load(device="cpu")
    monkeypatch.setattr(builtins, "open", full_open)
    for name, save in (("ckpt.pt", lambda p: atomic_torch_save({"x": torch.ones(3)}, p)),
                       ("g.safetensors", lambda p: save_generator(generator, p)),
                       ("g.pt", lambda p: export_rosinality(generator, p)),
                       ("losses.jsonl", lambda p: append_jsonl(p, {"step": 0}))):
        with pytest.raises(WriteError, match="No space left") as info:
            save(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


@pytest.mark.parametrize("content, kind", [(None, FileNotFoundError), (b"\xff = 1", UnicodeDecodeError),
                                           (b"a = [", ValueError)])
def test_read_toml_file_hands_every_read_failure_to_the_callers_error(tmp_path, content, kind):
    path = tmp_path / "recipe.toml"
    if content is not None:
        path.write_bytes(content)
    seen = []

    def error(exc):
        seen.append(exc)
        return RuntimeError("one line")

    with pytest.raises(RuntimeError, match="one line"):
        read_toml_file(path, error=error)
    assert isinstance(seen[0], kind)


def test_read_toml_file_reads_the_table(tmp_path):
    (tmp_path / "r.toml").write_text('[generator]\ncheckpoint = "x.pt"\n', encoding="utf-8")
    assert read_toml_file(tmp_path / "r.toml", error=RuntimeError) == {"generator": {"checkpoint": "x.pt"}}


def test_file_in_the_way_is_the_file_itself_or_the_nearest_existing_parent_file(tmp_path):
    (tmp_path / "f").write_text("x")
    assert file_in_the_way(tmp_path / "f") == tmp_path / "f"
    assert file_in_the_way(tmp_path / "f" / "a" / "b") == tmp_path / "f"
    assert file_in_the_way(tmp_path / "new" / "a") is None
    assert nearest_existing(tmp_path / "new" / "a") == tmp_path
