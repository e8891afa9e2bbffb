"""Reading a recipe file: each way a file can be unreadable is one clear problem naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsgm.recipe import RecipeError, load_recipe, read_recipe_file

GOOD = 'source = "photo"\ntarget = "sketch"\n[generator]\ncheckpoint = "tiny-random"\n'


def refusal(path) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        read_recipe_file(path)
    assert info.value.source == str(path)
    assert len(info.value.problems) == 1
    return info.value


def test_reads_a_good_file_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert read_recipe_file(path)["generator"] == {"checkpoint": "tiny-random"}


def test_missing_file(tmp_path):
    assert refusal(tmp_path / "missing.toml").problems == ["no such file"]


def test_a_directory_is_not_called_missing(tmp_path):
    assert refusal(tmp_path).problems == ["is a directory, not a recipe file"]


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "r.toml"
    path.write_text(GOOD)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod does not stop root, who may run the tests
    assert refusal(path).problems == ["permission denied (cannot read the file)"]


def test_not_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('source = "café"\n'.encode("latin-1"))
    error = refusal(path)
    assert error.problems == ["not UTF-8 text: byte 13 is b'\\xe9'; save the recipe as UTF-8"]
    assert str(error).startswith(f"{path}: 1 problem")
    with pytest.raises(RecipeError, match="latin1.toml: 1 problem\n  not UTF-8 text: byte 13"):
        load_recipe(path)  # load_recipe reads through read_recipe_file


def test_not_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("source = \n")
    (problem,) = refusal(path).problems
    assert problem.startswith("not valid TOML: ")


def test_a_name_no_file_system_accepts(tmp_path):
    assert refusal(f"{tmp_path}/r\0.toml").problems == ["cannot read the file: embedded null byte"]
