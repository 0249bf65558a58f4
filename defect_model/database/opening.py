"""Opening the database once per location and process: a SQLite file is made or upgraded on its first opening, a
PostgreSQL database is checked to be at the newest revision (migrate.py)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy.exc import OperationalError

from defect_model.database import migrate
from defect_model.database.engine import Database, _postgres_engine, _sqlite_engine, location

OPEN_ATTEMPTS = 20  # about 10 s of retries for a new SQLite file opened by many sessions at once

_opened: dict[tuple[str, int], Database] = {}
_lock = threading.Lock()
_opening: dict[tuple[str, int], threading.Lock] = {}  # one thread of a process opens a location; the rest wait


def open_database(where: str | Path | None = None) -> Database:
    """The database at `where` (see `location`), ready for this code's statements: a SQLite file is created
    or upgraded to the newest schema; a PostgreSQL database is checked to be at the newest schema (else
    DatabaseNotReady names what to run). One per location and process."""
    where = location(where)
    key = (str(where), os.getpid())  # a forked process opens its own connections
    with _lock:
        found = _opened.get(key)
        opening = _opening.setdefault(key, threading.Lock())
    if found is not None and (not isinstance(where, Path) or where.exists()):
        return found
    with opening:
        return _open(where, key)


def _open(where: str | Path, key: tuple[str, int]) -> Database:
    with _lock:
        found = _opened.get(key)
    if found is not None and (not isinstance(where, Path) or where.exists()):
        return found  # another thread opened it while this one waited
    if found is not None:  # a SQLite file deleted meanwhile is made again, as a new one
        found.engine.dispose()
    if isinstance(where, Path):
        where.parent.mkdir(parents=True, exist_ok=True)
        db = Database(where, _sqlite_engine(where))
        _with_retries(lambda: migrate.prepare_sqlite(db))
    else:
        db = Database(where, _postgres_engine(where))
        migrate.require_current(db)
    with _lock:
        _opened[key] = db
    return db


def _with_retries(step) -> None:
    # A new file's first opening switches it to WAL, which needs it alone; a session holding a read lock while
    # another waits to write is answered "locked" at once (SQLite skips the busy wait where waiting could
    # deadlock), so the opening is tried again. Every step of it is idempotent.
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return step()
        except (OperationalError, sqlite3.OperationalError) as exc:  # (the WAL switch runs on the driver itself)
            if "locked" not in str(exc) or attempt == OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _forget_in_child() -> None:
    # A forked child must not use, nor close, its parent's pooled connections: it opens its own.
    for db in _opened.values():
        db.engine.dispose(close=False)
    _opened.clear()
    _opening.clear()  # a lock a parent's thread held at the fork would stay held here


os.register_at_fork(after_in_child=_forget_in_child)


def close_all() -> None:
    """Close every pooled connection of this process (tests, before a database is dropped)."""
    with _lock:
        opened = list(_opened.values())
        _opened.clear()
    for db in opened:
        db.engine.dispose()
