"""Checks of the sqlite stores a search writes (the Optuna study, the MLflow tracking store).

Run where the URIs enter (the space file, overrides), before Optuna or MLflow open them: a path
that exists but is not a database of the right kind gets one clear error and is never modified
(SQLAlchemy would otherwise fail with a traceback, or create its tables in a stranger's file).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Optional

from ..errors import ConfigError

SQLITE_HEADER = b"SQLite format 3\x00"
#: tables that identify a store: what autoeff expects to find in an existing file
OPTUNA_TABLES = ("studies", "trials", "version_info")
MLFLOW_TABLES = ("experiments", "runs")


def sqlite_path(url: str) -> Optional[Path]:
    """The file of a ``sqlite:///path`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(rest).expanduser() if rest and rest != ":memory:" else None


def check_sqlite_store(url: str, *, what: str, tables: Iterable[str], key: str, file: Optional[str] = None) -> None:
    """Raise ConfigError if ``url`` names an existing file that is not an SQLite database, or
    one whose tables show it belongs to something else. Opens the file read-only."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    fix = f"point {key} at a new file (e.g. {key}=sqlite:///{path.stem}-autoeff.db) or move this one away"
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not {what}; {fix}", file=file, key=key, value=url, has_value=True)
    if path.stat().st_size == 0:
        return  # an empty file: SQLite treats it as a new database
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        raise ConfigError(f"{path} exists but is not an SQLite database, so it is not {what}; {fix}",
                          file=file, key=key, value=url, has_value=True)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        raise ConfigError(f"{path} cannot be read as an SQLite database ({e}), so it is not {what}; {fix}",
                          file=file, key=key, value=url, has_value=True) from None
    want = set(tables)
    if found and not want <= found:
        shown = ", ".join(sorted(found)[:8]) + (", ..." if len(found) > 8 else "")
        raise ConfigError(f"{path} is an SQLite database of something else (tables: {shown}), not {what}; {fix}",
                          file=file, key=key, value=url, has_value=True)
