"""A tamper-evident record: hash-chained rows in the project's SQLite database.

Each chained row carries the hash of the row before it (`prev_hash`) and its own (`row_hash`, over its
content and `prev_hash`). Editing a row breaks its own hash; removing one breaks the link of the row after
it. `verify()` walks every chain and names the first row that was altered or removed. This makes changes
visible; it cannot stop someone with write access to the file from rewriting the whole chain.

Chained tables: `audit` (activation, deletion, training jobs, relabels, confirmations, sign-in, accounts)
and `inspections` (the inspection log).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

GENESIS = "0" * 64

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    prev_hash TEXT NOT NULL DEFAULT '',
    row_hash TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action);
"""
CHAIN_COLUMNS = ("prev_hash", "row_hash")


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the project's database in autocommit mode (chained inserts open their own
    transaction), rows as sqlite3.Row; one per call, so it is safe from several sessions and threads."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    return db


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def prepare(db: sqlite3.Connection, table: str) -> None:
    """Give `table` its chain columns (a database from before the chain gets them empty: unverified rows)."""
    if table == "audit":
        db.executescript(AUDIT_SCHEMA)
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for column in CHAIN_COLUMNS:
        if column not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")


# Columns the chained tables gained after they already held chained rows (inspections.source,
# inspections.unfamiliar_score, NULL for a model without the statistics, and the photo statistics brightness,
# contrast, width and height, NULL before the Monitor), with the value those older rows read back with. A
# row's hash leaves such a column out while it holds that value, so rows hashed before the column existed
# still verify; any other value is hashed, and so protected, like the rest of the row.
LATER_COLUMNS = {"source": "browser", "unfamiliar_score": None, "brightness": None, "contrast": None, "width": None,
                 "height": None}
# Columns a chained row may change after it was written, left out of its hash: inspections.photo_removed, the
# time photo retention deleted the stored copy (the row keeps the photo's sha256; each clean-up is itself an
# event in the audit chain).
MUTABLE_COLUMNS = {"photo_removed"}


def _digest(row: dict) -> str:
    content = {k: v for k, v in row.items()
               if k != "row_hash" and k not in MUTABLE_COLUMNS and not (k in LATER_COLUMNS and v == LATER_COLUMNS[k])}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def insert_chained(db: sqlite3.Connection, table: str, values: dict) -> int:
    """Insert `values` as the next link of `table`'s chain; call inside a write transaction."""
    last = db.execute(f"SELECT row_hash FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
    prev = (last[0] if last and last[0] else GENESIS)
    next_id = (db.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}").fetchone()[0])
    row = {"id": next_id, **values, "prev_hash": prev}
    row["row_hash"] = _digest(row)
    names = list(row)
    db.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
               [row[n] for n in names])
    return next_id


def append_chained(db: sqlite3.Connection, table: str, values: dict) -> int:
    """Insert `values` as the next link of `table` in a transaction of its own (on an autocommit connection):
    one writer at a time, so the chain stays a chain."""
    db.execute("BEGIN IMMEDIATE")
    try:
        row_id = insert_chained(db, table, values)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return row_id


@dataclass
class Finding:
    table: str
    row_id: int | None
    problem: str

    def text(self) -> str:
        where = f"{self.table} row {self.row_id}" if self.row_id is not None else self.table
        return f"{where}: {self.problem}"


def verify_table(db: sqlite3.Connection, table: str) -> Finding | None:
    """The first row of `table` that was altered or removed, or None when its chain holds."""
    db.row_factory = sqlite3.Row
    prev_hash, prev_id = GENESIS, 0
    for row in db.execute(f"SELECT * FROM {table} ORDER BY id"):
        row = dict(row)
        if not row.get("row_hash"):  # written before the chain existed
            prev_hash, prev_id = GENESIS, row["id"]
            continue
        if _digest(row) != row["row_hash"]:
            return Finding(table, row["id"], "altered: its content no longer matches its hash")
        if row["prev_hash"] != prev_hash:
            if row["id"] != prev_id + 1:
                missing = f"row {prev_id + 1}" if row["id"] == prev_id + 2 else f"rows {prev_id + 1}-{row['id'] - 1}"
                return Finding(table, prev_id + 1, f"removed ({missing} missing before row {row['id']})")
            return Finding(table, prev_id, f"altered or replaced: row {row['id']} no longer links to it")
        prev_hash, prev_id = row["row_hash"], row["id"]
    return None


def verify(path: str | Path, tables: tuple[str, ...] = ("audit", "inspections")) -> list[Finding]:
    """Every chain in the database at `path`: one finding per broken table (empty when all hold)."""
    path = Path(path)
    if not path.is_file():
        return [Finding("database", None, f"{path} does not exist")]
    found = []
    with closing(sqlite3.connect(path)) as db:
        present = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in tables:
            if table in present:
                finding = verify_table(db, table)
                if finding:
                    found.append(finding)
    return found


class AuditLog:
    """The `audit` table: who did what to what, and when."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            prepare(db, "audit")

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def record(self, actor, action: str, target: str = "", **detail) -> int:
        """Append one event; `actor` has `.name` and `.role` (accounts.Actor)."""
        with closing(self._connect()) as db:
            return append_chained(db, "audit", {
                "time": now_iso(), "actor": actor.name, "role": actor.role, "action": action, "target": target,
                "detail": json.dumps(detail, sort_keys=True, default=str)})

    def events(self, action: str | None = None, limit: int = 500) -> list[dict]:
        """Newest first; `detail` decoded."""
        query, params = "SELECT * FROM audit", []
        if action:
            query += " WHERE action = ?"
            params.append(action)
        with closing(self._connect()) as db:
            rows = [dict(r) for r in db.execute(query + " ORDER BY id DESC LIMIT ?", (*params, limit))]
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return rows
