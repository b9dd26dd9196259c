"""Attention families, registered by name.

Add a family: write one file with an options dataclass and an ``AttentionBase`` subclass
decorated with ``@register_attention("name")``, then add its import line at the bottom of this
file. The contract tests in tests/attention run over every registered family.
"""
from __future__ import annotations

from typing import Dict, List, Type

from ..errors import ConfigError
from .base import AttentionBase

_REGISTRY: Dict[str, Type[AttentionBase]] = {}


def register_attention(name: str):
    """Class decorator: register an AttentionBase subclass under ``name``."""

    def deco(cls: Type[AttentionBase]) -> Type[AttentionBase]:
        if not issubclass(cls, AttentionBase):
            raise TypeError(f"{cls.__name__} must subclass AttentionBase")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attention family {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_attention(name: str) -> Type[AttentionBase]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError("unknown attention type", key="attention.kind", value=name,
                          allowed=list_attentions(), has_value=True) from None


def list_attentions() -> List[str]:
    """Names of the registered attention families."""
    return sorted(_REGISTRY)


# one import line per family ---------------------------------------------------------
from . import full  # noqa: E402,F401
from . import linformer  # noqa: E402,F401
from . import linear  # noqa: E402,F401
from . import longformer  # noqa: E402,F401
from . import synthesizer  # noqa: E402,F401
from . import reformer  # noqa: E402,F401
