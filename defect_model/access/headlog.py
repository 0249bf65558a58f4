"""The chains' anchor: an append-only log, outside the database, of each chained table's head (its newest row and
that row's hash), optionally signed with a key.

A hash chain alone shows a row edited or removed in its middle, but not rows removed from its end, a table
emptied or dropped, or a chain recomputed from an edited row on: what is left is still a valid chain. The head
log is a second record, in a file of its own (`<database>.heads`, or $DEFECT_AUDIT_HEAD_LOG), that every
chained write appends to after its commit: `{"table", "id", "hash", "time", "prev", "mac"}` per line. `prev` is
the sha256 of the line before (the log is a chain itself); `mac`, when $DEFECT_AUDIT_KEY is set, is
HMAC-SHA256 of the line under that key, so whoever lacks the key cannot write a head that verifies.

A log is started automatically for a database without chained rows (a new one); a database that holds chained
rows from before the head log gets one from `python -m defect_model audit anchor`, which anchors the heads as
they are then and is recorded in the audit trail. What each mode proves and what it cannot: README (audit).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

CHAINED_TABLES = ("audit", "inspections")
GENESIS = "0" * 64
HEAD_LOG_ENV = "DEFECT_AUDIT_HEAD_LOG"
KEY_ENV = "DEFECT_AUDIT_KEY"
TAIL_BYTES = 4096  # the last line is read from at most this far before the end (a line is about 250 bytes)


def head_log_path(db_path: str | Path) -> Path:
    """$DEFECT_AUDIT_HEAD_LOG, else `<database>.heads` beside the database."""
    return Path(os.environ.get(HEAD_LOG_ENV) or f"{db_path}.heads")


def audit_key() -> bytes | None:
    key = os.environ.get(KEY_ENV, "")
    return key.encode() if key else None


def database_file(db: sqlite3.Connection) -> Path:
    return Path(db.execute("PRAGMA database_list").fetchone()[2])


def line_digest(raw: bytes) -> str:
    return hashlib.sha256(raw.rstrip(b"\n")).hexdigest()


def mac_of(entry: dict, key: bytes) -> str:
    content = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True).encode()
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class HeadLog:
    """The open, locked head log of one database (see `locked`)."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def last_line(self) -> bytes:
        size = os.lseek(self.fd, 0, os.SEEK_END)
        start = max(0, size - TAIL_BYTES)
        os.lseek(self.fd, start, os.SEEK_SET)
        tail = os.read(self.fd, size - start).rstrip(b"\n")
        return tail.rsplit(b"\n", 1)[-1] if tail else b""

    def started(self) -> bool:
        return bool(self.last_line())

    def append(self, entries: list[dict]) -> None:
        """Append `entries` as lines (each linked to the one before it, signed when a key is set) and fsync."""
        key, prev_raw = audit_key(), self.last_line()
        prev = line_digest(prev_raw) if prev_raw else GENESIS
        out = b""
        for entry in entries:
            entry = {**entry, "time": _now(), "prev": prev}
            if key:
                entry["mac"] = mac_of(entry, key)
            raw = json.dumps(entry, sort_keys=True).encode()
            out += raw + b"\n"
            prev = line_digest(raw)
        os.write(self.fd, out)
        os.fsync(self.fd)


@contextmanager
def locked(db_path: str | Path) -> Iterator[HeadLog]:
    """The head log of the database at `db_path`, held alone (flock) for a chained write or a start: the order of
    its lines is the order of the commits."""
    path = head_log_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield HeadLog(fd, path)
    finally:
        os.close(fd)  # releases the lock


def table_heads(db: sqlite3.Connection) -> dict[str, dict]:
    """Each chained table's head as it is: {"id", "hash", "first"} (first: the row its chain starts at, or the row
    the next write will get when it has no chained row yet). A missing table reads as empty."""
    present = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    heads = {}
    for table in CHAINED_TABLES:
        if table not in present:
            heads[table] = {"id": 0, "hash": GENESIS, "first": 1}
            continue
        last = db.execute(f"SELECT id, row_hash FROM {table} WHERE row_hash != '' ORDER BY id DESC LIMIT 1").fetchone()
        first = db.execute(f"SELECT MIN(id) FROM {table} WHERE row_hash != ''").fetchone()[0]
        top = db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
        heads[table] = {"id": last[0] if last else 0, "hash": last[1] if last else GENESIS,
                        "first": first if first is not None else top + 1}
    return heads


def start_entries(db: sqlite3.Connection, kind: str = "start") -> list[dict]:
    return [{"kind": kind, "table": table, **head} for table, head in table_heads(db).items()]


def ever_written(db: sqlite3.Connection) -> bool:
    """Whether a chained table holds or ever held a row: its rows, or SQLite's AUTOINCREMENT counter, which
    emptying the table leaves behind."""
    if any(head["id"] for head in table_heads(db).values()):
        return True
    try:
        marks = db.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.OperationalError:  # no AUTOINCREMENT table yet
        return False
    return any(name in CHAINED_TABLES and seq for name, seq in marks)


def start_if_new(log: HeadLog, db: sqlite3.Connection) -> None:
    """Start the head log of a database that never held a chained row (a new database); an older database's is
    started by `audit anchor`, never silently (a deleted head log must not come back as if nothing happened, nor
    after the tables were emptied too)."""
    if not log.started() and not ever_written(db):
        log.append(start_entries(db))


# -- reading and checking -------------------------------------------------------------------------------------
@dataclass
class HeadLogState:
    """What the head log says: each table's start and newest head, and its own problems."""

    exists: bool
    starts: dict[str, dict] = field(default_factory=dict)
    heads: dict[str, dict] = field(default_factory=dict)
    problems: list[tuple[int | None, str]] = field(default_factory=list)  # (line number, problem)
    signed: int = 0  # lines with a MAC
    lines: int = 0


def read_head_log(path: Path, key: bytes | None) -> HeadLogState:
    """Parse and check the head log: each line links to the one before; with `key`, every line from the first
    signed one on carries a valid MAC, and the newest line of each table is signed."""
    try:
        raw_lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return HeadLogState(exists=False)
    state = HeadLogState(exists=bool(raw_lines))
    prev, signing = GENESIS, False
    for number, raw in enumerate(raw_lines, start=1):
        state.lines = number
        try:
            entry = json.loads(raw)
            table = entry["table"]
            head = {"id": int(entry["id"]), "hash": str(entry["hash"]), "line": number,
                    "signed": "mac" in entry, "kind": entry.get("kind", "")}
        except (ValueError, KeyError, TypeError):
            state.problems.append((number, "not a head-log line (damaged or edited)"))
            return state
        if entry.get("prev") != prev:
            state.problems.append((number, "does not link to the line before it: lines were edited, removed or "
                                           "inserted"))
            return state
        prev = line_digest(raw)
        if "mac" in entry:
            state.signed += 1
        if key is not None:
            signing = signing or "mac" in entry
            if signing and not ("mac" in entry and hmac.compare_digest(entry["mac"], mac_of(entry, key))):
                state.problems.append((number, "its MAC does not match DEFECT_AUDIT_KEY: written without the key, "
                                               "or forged"))
                return state
        if entry.get("kind") in ("start", "accept") and table not in state.starts:
            state.starts[table] = {"first": int(entry.get("first", 1)), "line": number}
        state.heads[table] = head
    if key is not None:
        unsigned = [t for t, head in state.heads.items() if not head["signed"]]
        if unsigned:
            state.problems.append((None, f"the newest head of {', '.join(unsigned)} carries no MAC: the writers run "
                                         f"without {KEY_ENV}; set it for the dashboard and the hot folder too"))
    return state
