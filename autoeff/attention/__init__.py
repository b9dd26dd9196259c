"""Attention families, registered by name.

Add a family: write one file with an options dataclass and an ``AttentionBase`` subclass
decorated with ``@register_attention("name")``, then add its import line at the bottom of this
file. The contract tests in tests/attention run over every registered family.
"""
from __future__ import annotations

from typing import List, Type

from ..registry import ATTENTIONS
from .base import AttentionBase
from .cache import LayerCache  # noqa: F401  (re-exported)
from .rotary import Rotary  # noqa: F401  (re-exported)

_REGISTRY = ATTENTIONS


def register_attention(name: str):
    """Class decorator: register an AttentionBase subclass under ``name``."""

    def deco(cls: Type[AttentionBase]) -> Type[AttentionBase]:
        if not (isinstance(cls, type) and issubclass(cls, AttentionBase)):
            raise TypeError(f"{cls!r} must subclass AttentionBase")
        return _REGISTRY.register(name)(cls)

    return deco


def get_attention(name: str) -> Type[AttentionBase]:
    return _REGISTRY.get(name)


def list_attentions() -> List[str]:
    """Names of the registered attention families."""
    return _REGISTRY.names()


# one import line per family ---------------------------------------------------------
from . import full  # noqa: E402,F401
from . import linformer  # noqa: E402,F401
from . import linear  # noqa: E402,F401
from . import longformer  # noqa: E402,F401
from . import synthesizer  # noqa: E402,F401
from . import reformer  # noqa: E402,F401
from . import sliding_window  # noqa: E402,F401
from . import gated_deltanet  # noqa: E402,F401
