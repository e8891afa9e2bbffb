"""Recipe values are converted strictly and checked for sense: every wrong value is one path-named problem.

No silent coercion (2.7 is no integer, "no" no boolean, 3 no string, a string no table or list), no
non-finite float anywhere, no empty texts; and whatever a user writes, the loader answers with a
RecipeError, never a traceback of another type.
"""

from __future__ import annotations

import copy

import attrs
import pytest

from zsgm.hookspecs import hookimpl
from zsgm.plugins import build_registry
from zsgm.recipe import RecipeError, recipe_from_dict
from zsgm.registry import TechniqueSpec
from zsgm.technique import Technique


def base():
    return {
        "source": "photo",
        "target": "sketch",
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}]},
        "techniques": [{"use": "directional"}, {"use": "layer-freeze", "k": 3}],
    }


def with_value(path: tuple, value):
    """``base()`` with the value at ``path`` (keys and list indices) replaced."""
    data = base()
    data.setdefault("optim", {})
    data.setdefault("run", {})
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def problems(data):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    return info.value.problems


@pytest.mark.parametrize("path, value, message", [
    # no float -> int, no bool -> int, no str -> number
    (("optim", "steps"), 2.7, "optim.steps: expected an integer, got 2.7"),
    (("optim", "steps"), 3.0, "optim.steps: expected an integer, got 3.0"),
    (("optim", "steps"), True, "optim.steps: expected an integer, got a boolean (true)"),
    (("optim", "lr"), "0.1", "optim.lr: expected a number, got a string ('0.1')"),
    (("optim", "lr"), False, "optim.lr: expected a number, got a boolean (false)"),
    # no str/int -> bool
    (("run", "progress"), "no", "run.progress: expected true or false, got a string ('no')"),
    (("run", "progress"), 0, "run.progress: expected true or false, got 0"),
    # no number -> str
    (("target",), 3, "target: expected a string, got 3"),
    (("run", "device"), 0, "run.device: expected a string, got 0"),
    # a string (or number) where a table belongs
    (("optim",), "fast", "optim: expected a table, got a string"),
    (("generator",), 3, "generator: expected a table, got 3"),
    (("clip", "models", 0), "ViT-B-32", "clip.models[0]: expected a table, got a string"),
    # a string where a list belongs (it used to be split into characters)
    (("target_images",), "style.png", "target_images: expected a list, got a string"),
    (("clip", "models"), {"name": "x"}, "clip.models: expected a list, got a table"),
    (("clip", "templates"), ["a {}", 3], "clip.templates[1]: expected a string, got 3"),
    # the techniques list and its entries
    (("techniques",), "directional", "techniques: expected a list of tables ([[techniques]]), got a string"),
    (("techniques", 0), "directional", "techniques[0]: expected a table with a 'use' key, got a string"),
    (("techniques", 0, "use"), ["directional"], "techniques[0].use: expected a technique name (a string), got a list"),
    (("techniques", 0, "weight"), "1", "techniques[0].weight: expected a number, got a string ('1')"),
    (("techniques", 1, "k"), 2.5, "techniques[1].k: expected an integer, got 2.5"),  # technique configs too
    (("techniques", 1, "slots"), "0,1", "techniques[1].slots: expected a list, got a string"),
    # None where a value belongs (Python dicts), and integers no generator could use
    (("optim", "steps"), None, "optim.steps: expected an integer, got nothing (None)"),
    (("run", "seed"), 10**30, "run.seed: expected an integer that fits in 64 bits, got an integer of 31 digits"),
    (("run", "seed"), 2**63, "run.seed: expected an integer that fits in 64 bits, got 9223372036854775808"),
    (("source",), b"photo", "source: expected a string, got a value of type 'bytes'"),
    (("optim", "lr"), 10**400, "optim.lr: expected a number a float can hold, got an integer of 401 digits"),
])
def test_wrong_types_are_refused_with_their_path(path, value, message):
    assert message in problems(with_value(path, value))


@pytest.mark.parametrize("path, value, message", [
    (("target",), "", "target: must not be empty"),
    (("target",), "  \t", "target: must not be only whitespace"),
    (("source",), " ", "source: must not be only whitespace"),
    (("generator", "checkpoint"), "", "generator.checkpoint: must not be empty"),
    (("clip", "models", 0, "pretrained"), "", "clip.models[0].pretrained: must not be empty"),
    (("run", "device"), " ", "run.device: must not be only whitespace"),
    (("techniques", 0, "label"), "", "techniques[0].label: must not be empty"),
    (("optim", "lr"), float("inf"), "optim.lr: must be a finite number, got inf"),
    (("optim", "beta1"), float("nan"), "optim.beta1: must be a finite number, got nan"),
    (("optim", "ema_decay"), float("nan"), "optim.ema_decay: must be a finite number, got nan"),
    (("techniques", 0, "weight"), float("nan"), "techniques[0].weight: must be a finite number, got nan"),
    (("techniques", 0, "weight"), float("-inf"), "techniques[0].weight: must be a finite number, got -inf"),
    (("techniques", 1, "probe_lr"), float("inf"), "techniques[1].probe_lr: must be a finite number, got inf"),
    (("generator", "sample_truncation"), float("nan"), "generator.sample_truncation: must be a finite number, got nan"),
    (("techniques", 0, "weight"), -1.0, "techniques[0].weight: must be >= 0, got -1.0"),
])
def test_senseless_values_are_refused_with_their_path(path, value, message):
    assert problems(with_value(path, value)) == [message]


def test_a_clip_ensemble_whose_weights_are_all_zero_is_refused():
    data = base()
    data["clip"]["models"] = [{"name": "tiny-random", "weight": 0.0}, {"name": "tiny-random", "weight": 0}]
    assert problems(data) == ["clip.models: every model has weight 0, so the ensemble would give no signal; "
                              "give at least one model a weight > 0"]
    data["clip"]["models"][1]["weight"] = 0.5
    recipe_from_dict(data)


def test_integers_are_accepted_where_numbers_belong():
    data = base()
    data["optim"] = {"lr": 1, "steps": 4}
    recipe = recipe_from_dict(data)
    assert recipe.optim.lr == 1.0 and isinstance(recipe.optim.lr, float) and recipe.optim.steps == 4


def _leaf_paths(node, prefix=()):
    """Every (path) of ``node``'s leaves and containers, containers first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _leaf_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield prefix + (i,)
            yield from _leaf_paths(value, prefix + (i,))


FULL = {
    "source": "photo", "target": "sketch", "target_images": [],
    "generator": {"checkpoint": "tiny-random", "sample_truncation": 0.7},
    "clip": {"models": [{"name": "tiny-random", "pretrained": "x", "weight": 1.0, "trust_torchscript": False}],
             "preprocess": "nada", "text_aggregate": "nada", "templates": ["a {}"]},
    "optim": {"steps": 3, "batch_size": 2, "lr": 0.002, "reg_ratio": 0.8, "beta1": 0.0, "beta2": 0.99,
              "ema_decay": 0.9, "mixing": 0.0, "noise": "fresh"},
    "run": {"seed": 0, "device": "cpu", "sample_every": 1, "checkpoint_every": 1, "n_samples": 2, "progress": False},
    "techniques": [{"use": "directional", "weight": 1.0, "every": 1, "label": "d"},
                   {"use": "layer-freeze", "k": 3, "auto_layer_iters": 1, "probe_lr": 0.01, "slots": [0, 1],
                    "text": "t"}],
}
WRONG = [None, "", "x", 2.7, float("nan"), True, -(10**30), [], [1, "a"], {}, {"a": 1}, ["x"], [None], {1: 2}]


def test_fuzz_every_field_with_wrong_types_gives_only_path_named_recipe_errors():
    recipe_from_dict(copy.deepcopy(FULL))  # the full recipe is valid
    checked = 0
    for path in _leaf_paths(FULL):
        for value in WRONG:
            data = copy.deepcopy(FULL)
            node = data
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            try:
                recipe_from_dict(data)
            except RecipeError as exc:  # anything else fails the test with its traceback
                assert exc.problems and all(isinstance(p, str) and ": " in p for p in exc.problems), (path, value)
                checked += 1
    assert checked > 300


@pytest.mark.parametrize("target", ["photo", " Photo ", "PHOTO"])
def test_a_target_text_equal_to_the_source_is_refused(target):
    data = base()
    data["target"] = target
    assert problems(data) == ["target: the same text as source ('photo'), so the text direction would be zero"]
    data["target"] = "photo sketch"
    recipe_from_dict(data)


@attrs.define(kw_only=True)
class TableOptionConfig:
    scales: dict[str, float] = attrs.field(factory=dict)


class TableOptionPlugin:
    __name__ = "table_option_plugin"

    @staticmethod
    @hookimpl
    def zsgm_register_techniques(register):
        register(TechniqueSpec(name="table-option", config=TableOptionConfig, build=Technique))


@pytest.mark.parametrize("value, message", [
    ("a=1", "techniques[1].scales: expected a table, got a string"),
    ({"a": "1"}, "techniques[1].scales.a: expected a number, got a string ('1')"),
    ({"a": float("nan")}, None),
])
def test_a_plugin_table_option_is_strict_too(value, message):
    _, registry = build_registry(extra_modules=[TableOptionPlugin()])
    data = base()
    data["techniques"] = [{"use": "directional"}, {"use": "table-option", "scales": value}]
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, registry=registry)
    if message is not None:
        assert message in info.value.problems
    else:  # a non-finite float inside a table
        assert info.value.problems == ["techniques[1].scales.a: must be a finite number, got nan"]


def test_a_field_marked_allows_non_finite_is_the_only_one_that_may_hold_inf():
    from zsgm.recipe_checks import field_value_problems
    from zsgm.validators import ALLOWS_NON_FINITE

    @attrs.define
    class Config:
        ceiling: float = attrs.field(default=1.0, metadata=ALLOWS_NON_FINITE)
        weight: float = 1.0

    assert field_value_problems(Config(ceiling=float("inf")), "techniques[0]") == []
    problems = field_value_problems(Config(weight=float("inf")), "techniques[0]")
    assert len(problems) == 1 and problems[0].startswith("techniques[0].weight: ")
