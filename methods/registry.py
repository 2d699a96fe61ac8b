"""Registries: one per kind (heads, backbones, decoders, data sets, grids), name -> `Entry`.

An entry is a torch-free description (display name, options type, what it needs) plus a lazy
builder ("module:attribute", imported on first use), so the dry run and `--set` validation never
import torch. Entries of this repository register with one line each (methods/catalog.py,
benchmark/catalog.py, experiments/__init__.py); installed packages register through the
entry-point group `protoseg_bench.<kind>s` (one entry point per name, its value a module or an
`Entry`-returning callable) or a module imported by `--plugin` / `$PROTOSEG_PLUGINS`. An entry
from outside the repository names its package and version (`Entry.origin`), which records keep.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata as metadata
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

PLUGINS_ENV = "PROTOSEG_PLUGINS"  # comma-separated modules every process imports (workers too)
GROUP_PREFIX = "protoseg_bench."  # entry-point groups: protoseg_bench.heads, .backbones, ...


class RegistryError(ValueError):
    """An unknown name or a plugin that cannot be imported; one line naming the fix."""


@dataclass(frozen=True)
class Origin:
    """Where an entry from outside the repository comes from (part of every record using it)."""

    package: str  # distribution name, or the module for `--plugin` modules not installed
    version: str
    module: str  # what a worker imports to register it again

    def as_dict(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "module": self.module}


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, lazy builder and torch-free description."""

    kind: str
    name: str
    target: str  # "module:attribute" of the builder (class or function)
    display: str = ""  # human name for tables; default: the name
    options: type | None = None  # the frozen options dataclass (heads)
    needs: tuple[str, ...] = ()  # e.g. ("pretrained",) or ("data:camvid",): what to check first
    info: Mapping[str, Any] = field(default_factory=dict)  # kind-specific description
    origin: Origin | None = None  # None: this repository

    @property
    def label(self) -> str:
        return self.display or self.name

    def load(self) -> Any:
        """The builder (imports its module on first use)."""
        module, _, attribute = self.target.partition(":")
        try:
            value: Any = importlib.import_module(module)
        except ImportError as err:
            raise RegistryError(f"{self.kind} {self.name!r}: cannot import {module} ({err}); "
                                f"{_install_hint(self.origin)}") from None
        for part in attribute.split(".") if attribute else ():
            value = getattr(value, part)
        return value


def _install_hint(origin: Origin | None) -> str:
    if origin is None:
        return "reinstall this repository (pip install -e .)"
    return f"install {origin.package}=={origin.version} in this environment"


_LOADING: list[Origin] = []  # the plugin being imported: what its registrations are stamped with


class Registry:
    """name -> Entry for one kind; names from installed plugins load when first asked for."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.group = f"{GROUP_PREFIX}{kind}s"
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str, **description: Any) -> Entry:
        """Add one entry (a second entry of the same name is an error, never a silent swap)."""
        origin = _LOADING[-1] if _LOADING else None
        entry = Entry(self.kind, name, target, origin=origin, **description)
        old = self._entries.get(name)
        if old is not None and old != entry:
            raise RegistryError(f"{self.kind} {name!r} is registered twice ({old.target} and "
                                f"{target}); rename one")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a fixture head)."""
        self._entries.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or self._from_plugin(name))

    def get(self, name: str) -> Entry:
        """The entry called `name`, importing the installed plugin that provides it if needed;
        RegistryError with the close names otherwise."""
        if name in self._entries or self._from_plugin(name):
            return self._entries[name]
        names = self.names()
        near = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(near)}? " if near else ""
        raise RegistryError(f"unknown {self.kind} {name!r}; {hint}choose one of "
                            f"{', '.join(names)} (or install/--plugin the package providing it)")

    def names(self) -> tuple[str, ...]:
        """Registered names, then the names installed plugins offer (not imported)."""
        return tuple(dict.fromkeys([*self._entries, *(ep.name for ep in _entry_points(
            self.group))]))

    def entries(self) -> Iterator[Entry]:
        """Every entry, installed plugins included (imports them)."""
        for name in self.names():
            yield self.get(name)

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the builder of `name`."""
        return self.get(name).load()(*args, **kwargs)

    def _from_plugin(self, name: str) -> bool:
        """Load the entry point called `name` of this kind's group; True when it registered."""
        for ep in _entry_points(self.group):
            if ep.name == name:
                load_entry_point(ep, self)
                return name in self._entries
        return False


def _entry_points(group: str) -> tuple[metadata.EntryPoint, ...]:
    return tuple(metadata.entry_points(group=group))


def _origin_of_module(module: str) -> Origin:
    """The installed distribution providing `module` (its top-level package), or the module."""
    top = module.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        return Origin(dist, metadata.version(dist), module)
    return Origin(module, "unversioned", module)


@contextlib.contextmanager
def _stamping(origin: Origin) -> Iterator[None]:
    _LOADING.append(origin)
    try:
        yield
    finally:
        _LOADING.pop()


def load_entry_point(ep: metadata.EntryPoint, registry: Registry) -> None:
    """Import an entry point; a callable value is called with the registry and may return an
    Entry-like mapping, a module registers at import. Stamped with its distribution."""
    dist = ep.dist
    module = ep.value.partition(":")[0].strip()
    origin = (Origin(dist.name, dist.version, module) if dist is not None
              else _origin_of_module(module))
    with _stamping(origin):
        try:
            value = ep.load()
        except ImportError as err:
            raise RegistryError(f"plugin {origin.package} ({ep.value}) cannot be imported: "
                                f"{err}") from None
        if callable(value) and ep.name not in registry._entries:
            value(registry)


_IMPORTED: set[str] = set()


def import_plugins(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import plugin modules (`--plugin`, then `$PROTOSEG_PLUGINS`) once each; their
    registrations are stamped with the distribution providing them. Returns what was imported."""
    wanted = [*modules, *(m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m)]
    done = []
    for module in dict.fromkeys(m for m in wanted if m):
        if module in _IMPORTED:
            continue
        with _stamping(_origin_of_module(module)):
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise RegistryError(f"--plugin {module}: cannot import it ({err}); install the "
                                    f"package providing it or fix the name") from None
        _IMPORTED.add(module)
        done.append(module)
    return done


def plugin_origins(pairs: list[tuple[Registry, str]]) -> list[dict[str, str]]:
    """The plugins that (registry, name) pairs come from, as record-ready dicts."""
    out = []
    for registry, name in pairs:
        entry = registry.get(name)
        if entry.origin is not None:
            out.append({"kind": registry.kind, "name": name, **entry.origin.as_dict()})
    return out


def require_plugins(plugins: list[Mapping[str, str]],
                    registries: Mapping[str, Registry]) -> None:
    """In a worker: import what a run's record says its cell uses, before the cell is rebuilt;
    one RegistryError line naming the package when it is not installed here."""
    for plugin in plugins:
        registry = registries[plugin["kind"]]
        if plugin["name"] in registry:
            continue
        try:
            import_plugins([plugin["module"]])
        except RegistryError:
            pass
        if plugin["name"] not in registry:
            raise RegistryError(
                f"{plugin['kind']} {plugin['name']!r} comes from plugin package "
                f"{plugin['package']} {plugin['version']} (module {plugin['module']}), which is "
                f"not installed in this worker's environment; pip install it there")

