"""A sized preset (``PresetSpec.sized``) is told the size of the generator the command names."""

from __future__ import annotations

import pytest

from zsgm.cli import make_parser
from zsgm.cli_adapt import build_recipe_dict
from zsgm.hookspecs import hookimpl
from zsgm.plugins import build_registry
from zsgm.registry import PresetSpec

SEEN: list = []


def _sized(generator_size=None, **_):
    SEEN.append(generator_size)
    steps = 2001 if generator_size is None or generator_size > 64 else 300
    return {"source": "photo", "target": "sketch", "optim": {"steps": steps}, "techniques": [{"use": "directional"}]}


def _plain(**context):
    SEEN.append(context)
    return {"source": "photo", "target": "sketch", "techniques": [{"use": "directional"}]}


class SizedPlugin:
    __name__ = "sized_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_presets(register):
        register(PresetSpec(name="sized-demo", build=_sized, sized=True))
        register(PresetSpec(name="plain-demo", build=_plain))


@pytest.fixture
def registry():
    SEEN.clear()
    return build_registry(extra_modules=[SizedPlugin()])[1]


def args_for(*argv):
    return make_parser().parse_args(["adapt", *argv, "--out", "unused"])


def test_sized_preset_gets_the_named_generators_size(registry):
    data = build_recipe_dict(args_for("--preset", "sized-demo", "--generator", "shapes"), registry)
    assert SEEN == [32] and data["optim"]["steps"] == 300


def test_sized_preset_reads_the_generator_of_the_recipe_file(registry, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[generator]\ncheckpoint = "tiny-random"\n')
    data = build_recipe_dict(args_for(str(recipe), "--preset", "sized-demo"), registry)
    assert SEEN == [32] and data["generator"]["checkpoint"] == "tiny-random"


def test_unknown_generator_or_none_leaves_the_size_unknown(registry):
    build_recipe_dict(args_for("--preset", "sized-demo", "--generator", "no-such-generator.pt"), registry)
    build_recipe_dict(args_for("--preset", "sized-demo"), registry)
    assert SEEN == [None, None]


def test_a_preset_that_is_not_sized_is_built_without_context(registry):
    build_recipe_dict(args_for("--preset", "plain-demo", "--generator", "shapes"), registry)
    assert SEEN == [{}]
