"""Name -> class registries with clean errors: attention families and tasks.

The registries sit at the base of the data flow, beside ``errors``: ``config`` validates
against them, ``attention/`` and ``tasks/`` register into them, and nothing imports a later
stage. Each registry names the package that fills it and imports that package the first time
it is asked for a name, so ``import autoeff`` and the read-only commands never pay for torch,
while ``config`` always validates against a filled registry.

**Plugins.** The same first fill then loads the entry points of the registry's group
(``autoeff.attention``, ``autoeff.tasks``) from every installed distribution, through
``importlib.metadata``, so a user's family or task exists in every process that looks a name
up (a Ray worker, a second ``autoeff search`` worker, a spawned subprocess), not only in the
one that imported it::

    [project.entry-points."autoeff.attention"]
    mywin = "my_pkg.attention:MyWindowAttention"   # the class, or the module that registers it

The entry point's name is the registered name. Its value is either the class (registered
under that name unless its module already registered it, decorated, under that name) or a
module whose import registers it. Anything that goes wrong (the import fails, the object is not
a family / task, the name is taken or never registered) is one :class:`PluginError` naming the
entry point and its distribution.

Unlike a plain dict, an unknown name raises a ConfigError listing what is registered, and a
name can be registered once only.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Generic, List, Optional, Type, TypeVar

from .errors import ConfigError

T = TypeVar("T")

#: entry-point groups, by registry
ATTENTION_GROUP = "autoeff.attention"
TASK_GROUP = "autoeff.tasks"


class PluginError(ConfigError):
    """A plugin's entry point could not be loaded or registered (names the entry point)."""


def _entry_points(group: str) -> List[Any]:
    """The installed entry points of ``group``, one per name (the first on sys.path wins, as
    Python's own import does), in name order."""
    from importlib.metadata import entry_points

    seen: Dict[str, Any] = {}
    for ep in entry_points(group=group):
        seen.setdefault(ep.name, ep)
    return [seen[n] for n in sorted(seen)]


def _describe(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    src = f" (distribution {dist.name} {dist.version})" if dist is not None else ""
    return f"plugin entry point '{ep.name} = {ep.value}' in group '{ep.group}'{src}"


class Registry(Generic[T]):
    def __init__(self, what: str, key: str, name_attr: str = "name", filled_by: Optional[str] = None,
                 group: Optional[str] = None, base: Optional[str] = None):
        self.what = what  # e.g. "attention type", used in error messages
        self.key = key  # the config key the name comes from, e.g. "attention.kind"
        self.name_attr = name_attr
        self.filled_by = filled_by  # the package whose import registers the built-in entries
        self.group = group  # the entry-point group whose plugins are loaded on the first fill
        self.base = base  # "module:Class" every entry must subclass (checked for plugins)
        self._items: Dict[str, Type[T]] = {}
        self._plugins = "todo"  # todo -> loading -> done (back to todo when a plugin fails)

    def _fill(self) -> None:
        if self.filled_by:
            importlib.import_module(self.filled_by)  # a no-op once imported
        if self.group and self._plugins == "todo":
            self._plugins = "loading"  # a plugin that looks a name up while it loads sees the built-ins
            try:
                for ep in _entry_points(self.group):
                    self._load_plugin(ep)
            except BaseException:
                self._plugins = "todo"  # the next lookup reports the broken plugin again
                raise
            self._plugins = "done"

    def _load_plugin(self, ep: Any) -> None:
        where = _describe(ep)
        name = ep.name
        try:
            obj = ep.load()
        except Exception as e:
            raise PluginError(f"{where} failed to load: {type(e).__name__}: {e}") from e
        if isinstance(obj, type):
            if self._items.get(name) is obj:
                return  # its module registered it under this name
            registered_as = getattr(obj, self.name_attr, "")
            if registered_as and self._items.get(registered_as) is obj:
                raise PluginError(f"{where}: {obj.__qualname__} is registered as '{registered_as}'; an entry "
                                  f"point's name must be the {self.what}'s name")
            if self.base:
                mod, _, cls = self.base.partition(":")
                base = getattr(importlib.import_module(mod), cls)
                if not issubclass(obj, base):
                    raise PluginError(f"{where}: {obj.__qualname__} does not subclass {mod}.{cls}")
            if name in self._items:
                raise PluginError(f"{where}: the {self.what} '{name}' is already registered by "
                                  f"{self._items[name].__module__}.{self._items[name].__qualname__}")
            self.register(name)(obj)
        elif name not in self._items:  # a module (or anything else) must have registered the name
            raise PluginError(f"{where} loaded but registered no {self.what} named '{name}' (point it at "
                              f"the class, or register the class under the entry point's name)")

    def register(self, name: str):
        """Class decorator: register ``cls`` under ``name`` and set ``cls.<name_attr> = name``."""

        def deco(cls: Type[T]) -> Type[T]:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"{self.what} {name!r} registered twice")
            setattr(cls, self.name_attr, name)
            self._items[name] = cls
            return cls

        return deco

    def get(self, name: str) -> Type[T]:
        self._fill()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.what}", key=self.key, value=name, allowed=self.names(),
                              has_value=True) from None

    def names(self) -> List[str]:
        self._fill()
        return sorted(self._items)


#: attention families (``autoeff.attention``, plugins: entry-point group ``autoeff.attention``), by ``attention.kind``
ATTENTIONS: Registry = Registry("attention type", "attention.kind", filled_by="autoeff.attention",
                                group=ATTENTION_GROUP, base="autoeff.attention.base:AttentionBase")
#: tasks: built-in generators and loaders of users' data (``autoeff.tasks``, plugins: entry-point
#: group ``autoeff.tasks``), by ``kind``
TASKS: Registry = Registry("task kind", "tasks.kind", name_attr="kind", filled_by="autoeff.tasks",
                           group=TASK_GROUP, base="autoeff.tasks.base:Task")
