"""A name -> class registry with clean errors (used for attention families and tasks).

Unlike a plain dict, an unknown name raises a ConfigError listing what is registered, and a
name can be registered once only.
"""
from __future__ import annotations

from typing import Dict, Generic, List, Optional, Type, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, key: str, base: Optional[type] = None, name_attr: str = "name"):
        self.what = what  # e.g. "attention type", used in error messages
        self.key = key  # the config key the name comes from, e.g. "attention.kind"
        self.base = base
        self.name_attr = name_attr
        self._items: Dict[str, Type[T]] = {}

    def register(self, name: str):
        """Class decorator: register ``cls`` under ``name`` and set ``cls.<name_attr> = name``."""

        def deco(cls: Type[T]) -> Type[T]:
            if self.base is not None and not issubclass(cls, self.base):
                raise TypeError(f"{cls.__name__} must subclass {self.base.__name__}")
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
