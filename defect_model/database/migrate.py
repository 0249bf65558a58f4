"""Schema migrations (Alembic, configured here in code; the revisions are in migrations/versions): upgrade a
database to the newest revision, and say where one stands.

An embedded SQLite file upgrades itself when a process first opens it (inside BEGIN IMMEDIATE, so sessions
opening a new file at once upgrade it once), exactly as the old code completed its tables on opening.

A PostgreSQL database is upgraded only by `python -m defect_model db upgrade`; a server, watcher or worker that
finds it behind refuses to start and says to run that. Why not upgrade on start: the database is the whole
plant's, shared by servers that restart at different times and may run different versions during a roll-out; a
schema change there is a step someone takes on purpose, after the backup IT takes, once, not a side effect of
whichever line's PC restarts first (an older server still running would go on writing into the new schema).
`db upgrade` itself holds an advisory lock, so two started at once apply each revision once.
"""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from defect_model.database.engine import (Database, DatabaseNotReady, URL_ENV, open_as_is, location,
                                          shown_url)

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATE_LOCK = 0x6465666563740001  # pg_advisory_xact_lock key of `db upgrade` ("defect" + 1)
UPGRADE_HINT = "run `python -m defect_model db upgrade` (after taking a backup)"


def _config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


@functools.cache
def head() -> str:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(conn: Connection) -> str | None:
    """The database's revision (None: never migrated: empty, or written before migrations)."""
    return MigrationContext.configure(conn).get_current_revision()


def _upgrade_in(conn: Connection) -> None:
    command.upgrade(_config(conn), "head")


def prepare_sqlite(db: Database) -> None:
    """WAL, and the newest schema (a new file gets every table; an older one is completed)."""
    raw = db.engine.raw_connection()  # outside any transaction: the journal mode cannot change inside one
    try:
        raw.driver_connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:  # the driver's own error, given the type every caller catches (DatabaseError)
        raise OperationalError("PRAGMA journal_mode=WAL", None, exc) from exc
    finally:
        raw.close()
    with db.read() as conn:
        if current(conn) == head():
            return
    with db.write() as conn:  # BEGIN IMMEDIATE: one opener upgrades; the others then find it done
        if current(conn) != head():
            _upgrade_in(conn)


def require_current(db: Database) -> None:
    """DatabaseNotReady unless the PostgreSQL database is reachable and at the newest revision."""
    state = check(db.where, db)
    if not state.ok:
        raise DatabaseNotReady(state.message)


@dataclass
class State:
    where: str  # shown: the password hidden
    current: str | None
    head: str
    ok: bool
    message: str


def check(where: str | Path | None = None, db: Database | None = None) -> State:
    """Where the database at `where` stands against this code's newest revision."""
    where = location(where)
    shown = shown_url(where)
    if isinstance(where, Path) and not where.is_file():
        return State(shown, None, head(), False, f"{shown}: no database file there yet (it is made on the first "
                                                 f"start, or {UPGRADE_HINT.split(' (')[0]})")
    db = db or open_as_is(where)
    try:
        with db.read() as conn:
            revision = current(conn)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return State(shown, None, head(), False, f"{shown}: cannot reach the database ({shown_url(reason)}). Check "
                                                 f"that the server is running and that {URL_ENV} names it.")
    if revision == head():
        return State(shown, revision, head(), True, f"{shown}: at revision {revision}, the newest")
    now = f"at revision {revision}" if revision else "without a schema revision (empty, or made before migrations)"
    return State(shown, revision, head(), False, f"{shown}: {now}; this code needs revision {head()}: "
                                                 f"{UPGRADE_HINT}")


def upgrade(where: str | Path | None = None) -> list[str]:
    """Bring the database at `where` to the newest revision (the training queue's own schema is the queue's: `db
    upgrade` applies it after this). Returns what was done, one line each."""
    where = location(where)
    db = open_as_is(where)
    done = []
    try:
        if db.is_sqlite:
            before = _revision(db)
            Path(db.where).parent.mkdir(parents=True, exist_ok=True)
            prepare_sqlite(db)
        else:
            with db.engine.connect() as conn, conn.begin():  # PostgreSQL's DDL is transactional: all or nothing
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
                before = current(conn)
                if before != head():
                    _upgrade_in(conn)
        done.append(f"{db.shown}: revision {before or 'none'} -> {head()}" if before != head()
                    else f"{db.shown}: already at revision {head()}")
    finally:
        db.engine.dispose()
    return done


def _revision(db: Database) -> str | None:
    if isinstance(db.where, Path) and not db.where.is_file():
        return None
    with db.read() as conn:
        return current(conn)
