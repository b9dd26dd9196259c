"""One error type for bad input, so the CLI can print one clean line and exit 2."""
from __future__ import annotations

from typing import Any, Iterable, Optional


class ConfigError(ValueError):
    """Bad user input: names the file, the key, the bad value and what is allowed."""

    def __init__(
        self,
        problem: str,
        *,
        file: Optional[str] = None,
        key: Optional[str] = None,
        value: Any = None,
        allowed: Any = None,
        has_value: bool | None = None,
    ):
        self.problem = problem
        self.file = file
        self.key = key
        self.value = value
        self.allowed = allowed
        self.has_value = has_value if has_value is not None else value is not None
        super().__init__(self.render())

    def with_file(self, file: Optional[str]) -> "ConfigError":
        if self.file is None and file is not None:
            self.file = str(file)
            self.args = (self.render(),)
        return self

    def render(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.key:
            where.append(f"key '{self.key}'")
        head = ": ".join(where)
        msg = f"{head}: {self.problem}" if head else self.problem
        if self.has_value:
            msg += f" (got {self.value!r})"
        if self.allowed is not None:
            msg += f"; allowed: {_fmt_allowed(self.allowed)}"
        return msg

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.render()


def _fmt_allowed(allowed: Any) -> str:
    if isinstance(allowed, str):
        return allowed
    if isinstance(allowed, Iterable):
        return ", ".join(str(a) for a in allowed)
    return str(allowed)
