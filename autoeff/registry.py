"""Name -> class registries with clean errors: attention families and tasks.

The registries sit at the base of the data flow, beside ``errors``: ``config`` validates
against them, ``attention/`` and ``tasks/`` register into them, and nothing imports a later
stage. Each registry names the package that fills it and imports that package the first time
it is asked for a name (as a plugin entry point would), so ``import autoeff`` and the read-only
commands never pay for torch, while ``config`` always validates against a filled registry.

Unlike a plain dict, an unknown name raises a ConfigError listing what is registered, and a
name can be registered once only.
"""
from __future__ import annotations

import importlib
from typing import Dict, Generic, List, Optional, Type, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, key: str, name_attr: str = "name", filled_by: Optional[str] = None):
        self.what = what  # e.g. "attention type", used in error messages
        self.key = key  # the config key the name comes from, e.g. "attention.kind"
        self.name_attr = name_attr
        self.filled_by = filled_by  # the package whose import registers the built-in entries
        self._items: Dict[str, Type[T]] = {}

    def _fill(self) -> None:
        if self.filled_by:
            importlib.import_module(self.filled_by)  # a no-op once imported

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


#: attention families (``autoeff.attention``), by ``attention.kind``
ATTENTIONS: Registry = Registry("attention type", "attention.kind", filled_by="autoeff.attention")
#: tasks: built-in generators and loaders of users' data (``autoeff.tasks``), by ``kind``
TASKS: Registry = Registry("task kind", "tasks.kind", name_attr="kind", filled_by="autoeff.tasks")
