"""The plugin manager: entry points, broken plugins, strict mode, listing, documented hooks."""

from __future__ import annotations

import inspect
import types

import pytest

from zsgm import hookspecs, plugins
from zsgm.hookspecs import hookimpl
from zsgm.registry import RegistryError, TechniqueSpec


class FakeDist:
    def __init__(self, name, version="9.9"):
        self.name, self.version = name, version


class FakeEntryPoint:
    def __init__(self, name, loader, dist):
        self.name, self._loader, self.dist = name, loader, FakeDist(dist)

    def load(self):
        return self._loader()


def good_module():
    mod = types.ModuleType("fake_good_plugin")

    @hookimpl
    def zsgm_register_techniques(register):
        register(TechniqueSpec(name="fake-technique", config=dict, build=lambda c: None))

    mod.zsgm_register_techniques = zsgm_register_techniques
    return mod


def broken_loader():
    raise ImportError("No module named 'missing_dependency'")


@pytest.fixture
def fake_entry_points(monkeypatch):
    def install(*eps):
        monkeypatch.setattr(plugins, "_entry_points", lambda: list(eps))

    return install


def test_good_plugin_is_registered_and_listed(fake_entry_points):
    fake_entry_points(FakeEntryPoint("good", good_module, "zsgm-plugin-good"))
    _, registry = plugins.build_registry()
    assert "fake-technique" in registry.techniques
    info = registry.infos["good"]
    assert (info.distribution, info.version, info.techniques) == ("zsgm-plugin-good", "9.9", ["fake-technique"])
    assert info.hooks == ["zsgm_register_techniques"]


def test_broken_plugin_warns_with_distribution_and_others_keep_working(fake_entry_points):
    fake_entry_points(FakeEntryPoint("bad", broken_loader, "zsgm-plugin-bad"),
                      FakeEntryPoint("good", good_module, "zsgm-plugin-good"))
    with pytest.warns(plugins.BrokenPluginWarning, match="zsgm-plugin-bad.*missing_dependency"):
        _, registry = plugins.build_registry()
    assert "fake-technique" in registry.techniques
    assert registry.broken == [("zsgm-plugin-bad", "ImportError: No module named 'missing_dependency'")]


def test_strict_mode_makes_broken_plugins_fatal(fake_entry_points, monkeypatch):
    fake_entry_points(FakeEntryPoint("bad", broken_loader, "zsgm-plugin-bad"))
    monkeypatch.setenv(plugins.STRICT_ENV, "1")
    with pytest.raises(plugins.PluginLoadError, match="zsgm-plugin-bad"):
        plugins.build_registry()


def test_name_conflicts_are_reported_and_first_wins(fake_entry_points):
    fake_entry_points(FakeEntryPoint("a", good_module, "dist-a"), FakeEntryPoint("b", good_module, "dist-b"))
    with pytest.warns(UserWarning, match="registered by both dist-a"):
        _, registry = plugins.build_registry()
    assert registry.techniques.origin("fake-technique").startswith("dist-a")


def test_unknown_name_suggests_closest():
    _, registry = plugins.build_registry()
    with pytest.raises(RegistryError, match="Did you mean 'tiny-random'"):
        registry.generators.get("tiny-randm")


def test_first_party_plugins_come_through_entry_points():
    _, registry = plugins.build_registry()
    assert registry.infos["nada"].distribution == "zsgm-nada"
    assert {"directional", "layer-freeze", "global", "image-target"} <= set(registry.techniques.names())
    assert "nada" in registry.presets


def test_every_hook_is_documented():
    specs = [name for name, obj in vars(hookspecs).items() if name.startswith("zsgm_") and callable(obj)]
    assert len(specs) >= 13
    for name in specs:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 40, f"hook {name} lacks documentation"
        assert name in (hookspecs.__doc__ or "") or name.startswith("zsgm_register"), name
