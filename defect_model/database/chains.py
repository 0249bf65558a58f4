"""The statements of the hash chains (access/audit.py gives them their meaning: what a row's hash covers, what a
finding says): appending a link, one writer at a time, and reading a chain back.

One writer at a time, on both backends, decided in the database, never by a file lock:
- SQLite: the append's transaction is BEGIN IMMEDIATE (the database's one write lock, taken when it begins);
- PostgreSQL: `pg_advisory_xact_lock` per chained table inside the append's transaction, and, around the
  transaction and the head-log line written after its commit, a session advisory lock (`chain_writer`), so the
  head log's lines are in the commits' order whichever machine wrote them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, func, insert, literal_column, select, table as sql_table, text
from sqlalchemy.exc import SQLAlchemyError

from defect_model.database.engine import Database
from defect_model.database.schema import CHAINED

GENESIS = "0" * 64
HEAD_LOG_LOCK = 0x6465666563740002  # session lock: a chained write and its head-log line
TABLE_LOCKS = {"audit": 0x6465666563740003, "inspections": 0x6465666563740004}  # transaction locks per chain
_process_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def _process_lock(db: Database) -> threading.Lock:
    # One thread per process waits on the database's lock, holding one pooled connection, not all of them.
    with _guard:
        return _process_locks.setdefault(str(db.where), threading.Lock())


@contextmanager
def chain_writer(db: Database) -> Iterator[Connection]:
    """A connection that alone appends to the chains while it is held (PostgreSQL: the session advisory lock,
    across machines; SQLite: its appends begin IMMEDIATE, and the head log's file lock orders their lines)."""
    if db.is_sqlite:
        with db.engine.connect() as conn:
            conn.execution_options(defect_write=True)
            yield conn
        return
    with _process_lock(db), db.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": HEAD_LOG_LOCK})
        conn.commit()
        try:
            yield conn
        finally:
            try:
                if conn.in_transaction():
                    conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": HEAD_LOG_LOCK})
                conn.commit()
            except SQLAlchemyError:  # the connection broke: the server ended its session, and with it the lock
                conn.invalidate()


def append(conn: Connection, name: str, values: dict, digest: Callable[[dict], str],
           first: Callable[[Connection], None] | None = None) -> tuple[int, str]:
    """Insert `values` as the next link of chain `name` in a transaction of its own on `conn` (from
    `chain_writer`): the link's id and hash. `digest(row)` is the row's hash; `first(conn)` runs first, in the same
    transaction (the head log's start)."""
    with conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TABLE_LOCKS[name]})
        if first is not None:
            first(conn)
        row_id, row_hash = insert_link(conn, name, values, digest)
    return row_id, row_hash


def storable(value):
    """A text value as both backends keep it: PostgreSQL's text cannot hold NUL, so U+FFFD stands for it."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def insert_link(conn: Connection, name: str, values: dict, digest: Callable[[dict], str]) -> tuple[int, str]:
    """The insert of one link, inside the caller's write transaction."""
    table = CHAINED[name]
    values = {key: storable(value) for key, value in values.items()}  # hashed as it will read back
    last = conn.execute(select(table.c.row_hash).order_by(table.c.id.desc()).limit(1)).first()
    prev = last[0] if last and last[0] else GENESIS
    next_id = conn.execute(select(func.coalesce(func.max(table.c.id), 0) + 1)).scalar_one()
    row = {"id": next_id, **values, "prev_hash": prev}
    row["row_hash"] = digest(row)
    conn.execute(insert(table).values(row))
    if conn.dialect.name == "postgresql":  # the id sequence marks that the table held rows (ever_written)
        conn.execute(text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :id)"), {"t": name, "id": next_id})
    return next_id, row["row_hash"]


# -- reading ----------------------------------------------------------------------------------------------
def tables_present(conn: Connection) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(conn).get_table_names())


def rows(conn: Connection, name: str) -> Iterator[dict]:
    """Every row of chain `name` as it is in the database (whatever its columns are), oldest first."""
    result = conn.execute(select(literal_column("*")).select_from(sql_table(name)).order_by(literal_column("id")))
    for row in result.mappings():
        yield dict(row)


def top_id(conn: Connection, name: str) -> int:
    return int(conn.execute(select(func.coalesce(func.max(literal_column("id")), 0))
                            .select_from(sql_table(name))).scalar_one())


def hash_of(conn: Connection, name: str, row_id: int) -> str | None:
    found = conn.execute(select(literal_column("row_hash")).select_from(sql_table(name))
                         .where(literal_column("id") == row_id)).first()
    return found[0] if found else None


def table_heads(conn: Connection, names: tuple[str, ...]) -> dict[str, dict]:
    """Each chain's head as it is: {"id", "hash", "first"} (first: the row its chain starts at, or the row the
    next write will get when it has no chained row yet). A missing table reads as empty."""
    present = tables_present(conn)
    heads = {}
    for name in names:
        if name not in present:
            heads[name] = {"id": 0, "hash": GENESIS, "first": 1}
            continue
        t = sql_table(name, literal_column("id"), literal_column("row_hash"))
        hashed = select(literal_column("id"), literal_column("row_hash")).select_from(t).where(
            literal_column("row_hash") != "")
        last = conn.execute(hashed.order_by(literal_column("id").desc()).limit(1)).first()
        first = conn.execute(select(func.min(literal_column("id"))).select_from(t).where(
            literal_column("row_hash") != "")).scalar()
        top = top_id(conn, name)
        heads[name] = {"id": last[0] if last else 0, "hash": last[1] if last else GENESIS,
                       "first": first if first is not None else top + 1}
    return heads


def ever_written(conn: Connection, names: tuple[str, ...]) -> bool:
    """Whether a chain holds or ever held a row: its rows, or the id counter an emptied table leaves behind
    (SQLite's AUTOINCREMENT record, PostgreSQL's id sequence)."""
    if any(head["id"] for head in table_heads(conn, names).values()):
        return True
    present = tables_present(conn)
    if conn.dialect.name == "postgresql":
        for name in names:
            if name in present and conn.execute(text("SELECT pg_sequence_last_value(pg_get_serial_sequence(:t, "
                                                     "'id')::regclass)"), {"t": name}).scalar():
                return True
        return False
    if "sqlite_sequence" not in {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}:
        return False
    marks = conn.execute(text("SELECT name, seq FROM sqlite_sequence")).all()
    return any(name in names and seq for name, seq in marks)
