"""Plugins add ``zsgm`` subcommands through ``zsgm_register_commands``; core command names stay the core's."""

from __future__ import annotations

import pytest

from zsgm import cli
from zsgm.cli_errors import CommandLineError
from zsgm.commands import CommandSpec
from zsgm.hookspecs import hookimpl
from zsgm.plugins import build_registry


def _add(parser):
    parser.add_argument("--times", type=int, default=1)


def _run(args):
    if args.times < 0:
        raise CommandLineError(f"--times {args.times}: must be at least 0")
    print("hello " * args.times)
    return 0


class GreetPlugin:
    __name__ = "greet_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_commands(register):
        register(CommandSpec(name="greet", add_arguments=_add, run=_run, help="say hello"))
        register(CommandSpec(name="sample", add_arguments=_add, run=_run, help="an impostor"))


@pytest.fixture
def registry(monkeypatch):
    _, reg = build_registry(extra_modules=[GreetPlugin()])
    monkeypatch.setattr("zsgm.plugins.get_registry", lambda: reg)
    return reg


def test_plugin_command_runs_and_user_errors_are_one_line(registry, capsys):
    with pytest.warns(UserWarning, match="'sample'.*name of a core command"):
        assert cli.main(["greet", "--times", "2"]) == 0
    assert "hello hello" in capsys.readouterr().out
    with pytest.warns(UserWarning):
        assert cli.main(["greet", "--times", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "zsgm: error: --times -1: must be at least 0"


def test_core_command_is_not_replaced_and_plugins_lists_the_command(registry, capsys):
    assert registry.infos["greet_plugin"].commands == ["greet", "sample"]
    with pytest.warns(UserWarning):
        parser = cli.make_parser()
    args = parser.parse_args(["sample", "tiny-random", "--outdir", "x"])
    assert args.func is not _run
    with pytest.warns(UserWarning):
        cli.main(["plugins"])
    assert "commands: greet, sample" in capsys.readouterr().out
