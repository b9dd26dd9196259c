"""Name -> class registries with clean errors: attention families and tasks.

The registries sit at the base of the data flow, beside ``errors``: ``config`` validates
against them, ``attention/`` and ``tasks/`` register into them, and nothing imports a later
stage. ``autoeff/__init__.py`` imports both packages, so the registries are filled before any
``autoeff`` module runs.

Unlike a plain dict, an unknown name raises a ConfigError listing what is registered, and a
name can be registered once only.
"""
from __future__ import annotations

from typing import Dict, Generic, List, Type, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, key: str, name_attr: str = "name"):
        self.what = what  # e.g. "attention type", used in error messages
        self.key = key  # the config key the name comes from, e.g. "attention.kind"
        self.name_attr = name_attr
        self._items: Dict[str, Type[T]] = {}

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
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.what}", key=self.key, value=name, allowed=self.names(),
                              has_value=True) from None

    def names(self) -> List[str]:
        return sorted(self._items)


#: attention families (``autoeff.attention``), by ``attention.kind``
ATTENTIONS: Registry = Registry("attention type", "attention.kind")
#: tasks: built-in generators and loaders of users' data (``autoeff.tasks``), by ``kind``
TASKS: Registry = Registry("task kind", "tasks.kind", name_attr="kind")
