"""The engine for a database location, and the transactions every statement runs in.

A location is a PostgreSQL URL (`postgresql://user@host:port/db`, also `postgresql+psycopg://`; driven by
psycopg 3) or the path of a SQLite file. `location()` is $DEFECT_DATABASE_URL when set, else the SQLite file at
`default_db_path()`, exactly as before (`make run` needs no service).

SQLite: WAL, a 30 s busy timeout, a small pool of connections per process, reads in deferred
transactions and writes in `BEGIN IMMEDIATE` (one writer at a time, decided when the transaction starts, so a
look-then-write never deadlocks). The file upgrades itself on its first opening in a process.
PostgreSQL: a small pool per process; a database behind the code's newest migration is refused with what to run
(`python -m defect_model db upgrade`): see migrate.py for why servers do not upgrade it themselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from defect_model.common.places import default_db_path

URL_ENV = "DEFECT_DATABASE_URL"
BUSY_TIMEOUT_MS = 30_000

DatabaseError = SQLAlchemyError  # what callers catch: every failure of a statement, of a connection, or below


class DatabaseNotReady(SQLAlchemyError):
    """The database cannot be used as it is (unreachable, or behind the code's schema); the message says what
    to do."""


def location(where: str | Path | None = None) -> str | Path:
    """Where the database is: `where` when given (a URL, or a SQLite file's path), else $DEFECT_DATABASE_URL, else
    the SQLite file at default_db_path()."""
    if where is None:
        where = os.environ.get(URL_ENV) or default_db_path()
    if isinstance(where, str) and "://" in where:
        if where.startswith("sqlite:///"):
            return Path(where[len("sqlite:///"):])
        return where
    return Path(where)


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise DatabaseNotReady(f"{shown_url(url)}: not a database URL this tool knows; set {URL_ENV} to "
                           "postgresql://user@host:port/database, or unset it for the SQLite file")


def shown_url(where: str | Path) -> str:
    """The location as it may be shown: a URL's password replaced by ***."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", str(where))


@dataclass
class Database:
    """One database: its engine and what kind it is. Get it from `open_database`."""

    where: str | Path
    engine: Engine

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def shown(self) -> str:
        return shown_url(self.where)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading (a deferred transaction, rolled back at the end)."""
        with self.engine.connect() as conn:
            yield conn

    def hold_open(self):
        """A connection held open, idle, for a long-running writer (the hot-folder watcher); close() it at the
        end. SQLite folds the WAL into the database, with an fsync, whenever its last connection closes; the
        store opens one per call, so without this one every logged photo paid for that (9 ms a row against 1 ms,
        measured on the 2-core machine). It counts once it has read the database; idle, it holds no lock.
        PostgreSQL keeps its pool: nothing to hold."""
        raw = self.engine.raw_connection()
        if self.is_sqlite:
            raw.driver_connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return raw

    @contextmanager
    def write(self, *alone: str) -> Iterator[Connection]:
        """A write transaction, committed at the end. SQLite: BEGIN IMMEDIATE (the one writer from its start, so a
        look-then-write is one step). PostgreSQL: the tables named in `alone` are locked against other writers
        (SHARE ROW EXCLUSIVE) for the transaction, for the same look-then-write."""
        with self.engine.connect() as conn:
            conn.execution_options(defect_write=True)
            with conn.begin():
                if alone and not self.is_sqlite:
                    conn.exec_driver_sql(f"LOCK TABLE {', '.join(alone)} IN SHARE ROW EXCLUSIVE MODE")
                yield conn


def _sqlite_engine(path: Path, pooled: bool = True) -> Engine:
    # Pooled: a connection kept open saves opening the file and, above all, SQLite's checkpoint of the WAL with an
    # fsync whenever a file's last connection closes (9 ms a chained append against 22-27 ms with a connection
    # per call, on the loaded 2-core machine: /tmp/measure_sqlite.py in the issue-29 note).
    pool = dict(pool_size=2, max_overflow=30, pool_timeout=60) if pooled else dict(poolclass=NullPool)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000,
                                                              "check_same_thread": False}, **pool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # transactions begin where `_begin` says (pysqlite's own are off)
        dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("defect_write") else "BEGIN")

    return engine


def _postgres_engine(url: str, pooled: bool = True) -> Engine:
    pool = dict(pool_size=4, max_overflow=8, pool_pre_ping=True, pool_recycle=1800) if pooled else dict(
        poolclass=NullPool)
    return create_engine(sqlalchemy_url(url), connect_args={"connect_timeout": 10}, **pool)


def open_as_is(where: str | Path | None = None) -> Database:
    """The database at `where` as it is, neither upgraded nor checked (`db upgrade`, `db check`, `audit verify`);
    unpooled, so nothing stays open after use. A SQLite file that is not there is not made."""
    where = location(where)
    if isinstance(where, Path):
        return Database(where, _sqlite_engine(where, pooled=False))
    return Database(where, _postgres_engine(where, pooled=False))
