"""The chains' anchor: an append-only log, outside the database, of each chained table's head (its newest row and
that row's hash), optionally signed with a key.

A hash chain alone shows a row edited or removed in its middle, but not rows removed from its end, a table
emptied or dropped, or a chain recomputed from an edited row on: what is left is still a valid chain. The head
log is a second record, in a file of its own, that every chained write appends to after its commit: `{"table", "id", "hash", "time", "prev", "mac"}` per line. `prev` is
the sha256 of the line before (the log is a chain itself); `mac`, when $DEFECT_AUDIT_KEY is set, is
HMAC-SHA256 of the line under that key, so whoever lacks the key cannot write a head that verifies.

A log is started automatically for a database without chained rows (a new one); a database that holds chained
rows from before the head log gets one from `python -m defect_model audit anchor`, which anchors the heads as
they are then and is recorded in the audit trail. What each mode proves and what it cannot: README (audit).

Where it is: $DEFECT_AUDIT_HEAD_LOG when set; else, for a SQLite file, `<file>.heads` beside it; for PostgreSQL,
`audit-heads.log` in $DEFECT_MODEL_STORE's folder (a shared folder) or else the data folder. With several
machines writing to one PostgreSQL database it must be one file on a shared folder that every writer appends to.
Its lines are written in the commits' order: on SQLite the file is locked (flock) around the chained write and
its line; on PostgreSQL a session advisory lock in the database does that (database/chains.py), because a file
lock on a network folder cannot be trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from defect_model.common.places import data_root
from defect_model.database import chains, location

CHAINED_TABLES = ("audit", "inspections")
GENESIS = "0" * 64
HEAD_LOG_ENV = "DEFECT_AUDIT_HEAD_LOG"
KEY_ENV = "DEFECT_AUDIT_KEY"
TAIL_BYTES = 4096  # the last line is read from at most this far before the end (a line is about 250 bytes)


SHARED_NAME = "audit-heads.log"


def head_log_path(where: str | Path | None = None) -> Path:
    """$DEFECT_AUDIT_HEAD_LOG; else `<file>.heads` beside a SQLite database; else, for PostgreSQL,
    `<$DEFECT_MODEL_STORE or the data folder>/audit-heads.log` (an s3:// store is no folder: the data folder)."""
    if os.environ.get(HEAD_LOG_ENV):
        return Path(os.environ[HEAD_LOG_ENV])
    where = location(where)
    if isinstance(where, Path):
        return Path(f"{where}.heads")
    store = os.environ.get("DEFECT_MODEL_STORE", "")
    return (Path(store) if store and "://" not in store else data_root()) / SHARED_NAME


def audit_key() -> bytes | None:
    key = os.environ.get(KEY_ENV, "")
    return key.encode() if key else None


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
def locked(where: str | Path | None = None) -> Iterator[HeadLog]:
    """The head log of the database at `where`, open for a chained write or a start. For a SQLite file it is
    held alone (flock), so the order of its lines is the order of the commits; for PostgreSQL the caller holds
    the database's lock for that (chains.chain_writer)."""
    where = location(where)
    path = head_log_path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        if isinstance(where, Path):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield HeadLog(fd, path)
    finally:
        os.close(fd)  # releases the lock


def table_heads(conn) -> dict[str, dict]:
    """Each chained table's head as it is (see chains.table_heads); `conn` is a database connection."""
    return chains.table_heads(conn, CHAINED_TABLES)


def start_entries(conn, kind: str = "start") -> list[dict]:
    return [{"kind": kind, "table": table, **head} for table, head in table_heads(conn).items()]


def ever_written(conn) -> bool:
    """Whether a chained table holds or ever held a row (emptying a table leaves its id counter behind)."""
    return chains.ever_written(conn, CHAINED_TABLES)


def start_if_new(log: HeadLog, conn) -> None:
    """Start the head log of a database that never held a chained row (a new database); an older database's is
    started by `audit anchor`, never silently (a deleted head log must not come back as if nothing happened, nor
    after the tables were emptied too)."""
    if not log.started() and not ever_written(conn):
        log.append(start_entries(conn))


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
