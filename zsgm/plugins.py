"""The process-wide plugin manager: entry-point loading, broken-plugin handling, listing.

Plugins are modules registered under the ``zsgm`` entry-point group (first-party plugins use the very
same path as third-party ones). A plugin that fails to import produces a warning naming its
distribution and the error; everything else keeps working. ``ZSGM_STRICT_PLUGINS=1`` makes it fatal.

Nothing happens at import time: the manager is built on the first call to :func:`get_plugin_manager`.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from typing import Iterable

import attrs
import pluggy

from zsgm import hookspecs
from zsgm.commands import CommandSpec
from zsgm.registry import ClipSpec, GeneratorSpec, MetricSpec, PresetSpec, Table, TechniqueSpec

ENTRY_POINT_GROUP = "zsgm"
STRICT_ENV = "ZSGM_STRICT_PLUGINS"


class PluginLoadError(RuntimeError):
    """A plugin distribution failed to load while ``ZSGM_STRICT_PLUGINS`` is set."""


class BrokenPluginWarning(UserWarning):
    """A plugin failed to load and was skipped."""


@attrs.define
class PluginInfo:
    """What ``zsgm plugins`` prints for one plugin module."""

    name: str
    distribution: str
    version: str
    hooks: list[str]
    techniques: list[str] = attrs.field(factory=list)
    presets: list[str] = attrs.field(factory=list)
    generators: list[str] = attrs.field(factory=list)
    clip_models: list[str] = attrs.field(factory=list)
    metrics: list[str] = attrs.field(factory=list)
    commands: list[str] = attrs.field(factory=list)


class Registry:
    """Everything plugins registered, collected through the historic registration hooks."""

    def __init__(self):
        self.techniques = Table("technique")
        self.presets = Table("preset")
        self.generators = Table("generator")
        self.clip_models = Table("CLIP model")
        self.metrics = Table("metric")
        self.commands = Table("command")
        self.broken: list[tuple[str, str]] = []  # (distribution, error)
        self.infos: dict[str, PluginInfo] = {}

    @property
    def conflicts(self) -> list[str]:
        tables = (self.techniques, self.presets, self.generators, self.clip_models, self.metrics, self.commands)
        return [c for t in tables for c in t.conflicts]


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _register_module(pm: pluggy.PluginManager, registry: Registry, module, *, name: str,
                     distribution: str, version: str) -> None:
    """Register one plugin module and replay its registration hooks into the tables."""
    pm.register(module, name=name)
    info = PluginInfo(
        name=name,
        distribution=distribution,
        version=version,
        hooks=sorted(impl.name for impl in pm.get_hookcallers(module) or []),
    )
    registry.infos[name] = info
    tables = {
        "zsgm_register_techniques": (registry.techniques, TechniqueSpec, info.techniques),
        "zsgm_register_presets": (registry.presets, PresetSpec, info.presets),
        "zsgm_register_generators": (registry.generators, GeneratorSpec, info.generators),
        "zsgm_register_clip_models": (registry.clip_models, ClipSpec, info.clip_models),
        "zsgm_register_metrics": (registry.metrics, MetricSpec, info.metrics),
        "zsgm_register_commands": (registry.commands, CommandSpec, info.commands),
    }
    for hook_name, (table, spec_type, listed) in tables.items():
        impl = getattr(module, hook_name, None)
        if impl is None:
            continue

        def register(spec, _table=table, _type=spec_type, _listed=listed):
            if not isinstance(spec, _type):
                raise TypeError(f"plugin {name!r}: {hook_name} expects {_type.__name__}, got {type(spec).__name__}")
            _table.add(spec, origin=f"{distribution} ({name})")
            _listed.append(spec.name)

        impl(register=register)


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def build_registry(extra_modules: Iterable = ()) -> tuple[pluggy.PluginManager, Registry]:
    """Load every ``zsgm`` entry point (plus ``extra_modules``) into a fresh manager and registry.

    Args:
        extra_modules: plugin modules to register directly (tests, notebooks), after the entry points.
    """
    pm = _make_manager()
    registry = Registry()
    from zsgm import builtin_plugin  # the core's own registrations (toy generators, tiny CLIP)

    _register_module(pm, registry, builtin_plugin, name="zsgm.builtin", distribution="zsgm",
                     version=_version("zsgm"))
    for ep in sorted(_entry_points(), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
            _register_module(pm, registry, module, name=ep.name, distribution=dist, version=version)
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported, not fatal
            message = f"{type(exc).__name__}: {exc}"
            if _strict():
                raise PluginLoadError(
                    f"plugin {ep.name!r} from distribution {dist!r} failed to load: {message}"
                ) from exc
            registry.broken.append((dist, message))
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
            warnings.warn(
                f"zsgm: skipping plugin {ep.name!r} from distribution {dist!r}: {message} "
                f"(set {STRICT_ENV}=1 to make this fatal)",
                BrokenPluginWarning,
                stacklevel=2,
            )
    for module in extra_modules:
        name = getattr(module, "__name__", repr(module))
        if not pm.has_plugin(name):
            _register_module(pm, registry, module, name=name, distribution="(direct)", version="-")
    for conflict in registry.conflicts:
        warnings.warn(f"zsgm: {conflict}", stacklevel=2)
    return pm, registry


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_STATE: dict[str, object] = {}


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    if "registry" not in _STATE:
        pm, registry = build_registry()
        _STATE["pm"], _STATE["registry"] = pm, registry
    return _STATE["registry"]  # type: ignore[return-value]


def reset_registry() -> None:
    """Forget the cached registry (tests, or after installing a plugin in a live session)."""
    _STATE.clear()


def plugin_versions(registry: Registry | None = None) -> dict[str, str]:
    """``{distribution: version}`` of every loaded plugin, for the run record."""
    registry = registry or get_registry()
    return {info.distribution: info.version for info in registry.infos.values()}
