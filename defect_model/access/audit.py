"""A tamper-evident record: hash-chained rows in the project's SQLite database.

Each chained row carries the hash of the row before it (`prev_hash`) and its own (`row_hash`, over its
content and `prev_hash`). Editing a row breaks its own hash; removing one breaks the link of the row after
it. Every chained write also appends the table's new head to the head log outside the database (headlog.py), so
rows removed from the end, an emptied or dropped table and a recomputed chain no longer match the anchored head.
`verify()` walks every chain, compares each head with the head log and names the first problem per table. What
this proves and what it cannot, with and without a key: README (audit).

Chained tables: `audit` (activation, deletion, training jobs, relabels, confirmations, sign-in, accounts)
and `inspections` (the inspection log).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from defect_model.access import headlog
from defect_model.access.headlog import CHAINED_TABLES, GENESIS

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


# Columns the chained tables gained after they already held chained rows (inspections.source, graph_sha256,
# inspections.unfamiliar_score, NULL for a model without the statistics, and the photo statistics brightness,
# contrast, width and height, NULL before the Monitor), with the value those older rows read back with. A
# row's hash leaves such a column out while it holds that value, so rows hashed before the column existed
# still verify; any other value is hashed, and so protected, like the rest of the row.
LATER_COLUMNS = {"source": "browser", "unfamiliar_score": None, "brightness": None, "contrast": None, "width": None,
                 "height": None, "graph_sha256": ""}
# Columns a chained row may change after it was written, left out of its hash: inspections.photo_removed, the
# time photo retention deleted the stored copy (the row keeps the photo's sha256; each clean-up is itself an
# event in the audit chain).
MUTABLE_COLUMNS = {"photo_removed"}


def _digest(row: dict) -> str:
    content = {k: v for k, v in row.items()
               if k != "row_hash" and k not in MUTABLE_COLUMNS and not (k in LATER_COLUMNS and v == LATER_COLUMNS[k])}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def insert_chained(db: sqlite3.Connection, table: str, values: dict) -> tuple[int, str]:
    """Insert `values` as the next link of `table`'s chain; call inside a write transaction. Returns the row's id
    and hash."""
    last = db.execute(f"SELECT row_hash FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
    prev = (last[0] if last and last[0] else GENESIS)
    next_id = (db.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}").fetchone()[0])
    row = {"id": next_id, **values, "prev_hash": prev}
    row["row_hash"] = _digest(row)
    names = list(row)
    db.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
               [row[n] for n in names])
    return next_id, row["row_hash"]


def append_chained(db: sqlite3.Connection, table: str, values: dict) -> int:
    """Insert `values` as the next link of `table` in a transaction of its own (on an autocommit connection):
    one writer at a time, so the chain stays a chain; then anchor the new head in the head log, under the same
    lock, so the log's order is the commits' order."""
    with headlog.locked(headlog.database_file(db)) as heads:
        db.execute("BEGIN IMMEDIATE")
        try:
            headlog.start_if_new(heads, db)
            row_id, row_hash = insert_chained(db, table, values)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if heads.started():
            try:
                heads.append([{"table": table, "id": row_id, "hash": row_hash}])
            except OSError as exc:  # the row is committed; `audit verify` will name it as not anchored
                logging.getLogger(__name__).error("%s: the head of %s (row %d) could not be anchored: %s",
                                                  heads.path, table, row_id, exc)
    return row_id


@dataclass
class Finding:
    table: str
    row_id: int | None
    problem: str

    def text(self) -> str:
        where = f"{self.table} row {self.row_id}" if self.row_id is not None else self.table
        return f"{where}: {self.problem}"


def verify_table(db: sqlite3.Connection, table: str, first: int | None = None) -> Finding | None:
    """The first row of `table` that was altered or removed, or None when its chain holds. `first`: the row the
    chain starts at (from the head log); without it, the first row that has a hash. From there on a row without
    a hash is a finding (blanked), not a row from before the chain."""
    db.row_factory = sqlite3.Row
    prev_hash, prev_id, began = GENESIS, 0, False
    for row in db.execute(f"SELECT * FROM {table} ORDER BY id"):
        row = dict(row)
        began = began or bool(row.get("row_hash")) or (first is not None and row["id"] >= first)
        if not row.get("row_hash"):
            if began:
                return Finding(table, row["id"], "its hash is blank though the chain began before it (blanked, "
                                                 "perhaps to hide an edit)")
            prev_hash, prev_id = GENESIS, row["id"]  # written before the chain existed
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


def check_head(db: sqlite3.Connection, table: str, anchored: dict) -> Finding | None:
    """The table's head against the newest head the head log anchored for it."""
    head = headlog.table_heads(db)[table]
    top = db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
    where = f"the head log (line {anchored['line']}) anchors row {anchored['id']}"
    if anchored["id"] > top:
        now = f"the table ends at row {top}" if top else "the table is empty"
        return Finding(table, anchored["id"], f"rows removed from the end: {where}, {now}")
    if anchored["id"] and db.execute(f"SELECT row_hash FROM {table} WHERE id = ?",
                                     (anchored["id"],)).fetchone()[0] != anchored["hash"]:
        return Finding(table, anchored["id"], f"rewritten: {where} with hash {anchored['hash'][:12]}..., the "
                                              "table's row has another (the chain was recomputed or replaced)")
    if head["id"] > anchored["id"]:
        rows = f"row {head['id']}" if head["id"] == anchored["id"] + 1 else f"rows {anchored['id'] + 1}-{head['id']}"
        return Finding(table, anchored["id"] + 1, f"{rows} not in the head log ({where}): added to the database "
                                                  "directly, or a writer stopped between the two writes. After "
                                                  "checking them, `python -m defect_model audit anchor` accepts them")
    return None


@dataclass
class Verification:
    findings: list[Finding]
    mode: str  # what was checked: chains, head log, MACs


def verify_all(path: str | Path, tables: tuple[str, ...] = CHAINED_TABLES) -> Verification:
    """Every chain in the database at `path` and its head against the head log: one finding per broken table or
    head log (none when all hold), and a line saying what was checked."""
    path = Path(path)
    if not path.is_file():
        return Verification([Finding("database", None, f"{path} does not exist")], "nothing")
    key = headlog.audit_key()
    log_path = headlog.head_log_path(path)
    log = headlog.read_head_log(log_path, key)
    found = [Finding("head log", line, f"{log_path}: {problem}" if line is None else f"{log_path} line {line}: "
                                                                                  f"{problem}")
             for line, problem in log.problems]
    with closing(sqlite3.connect(path)) as db:
        present = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not log.exists and headlog.ever_written(db):
            found.append(Finding("head log", None, f"{log_path} is missing or empty though the database holds "
                                                   "(or held) chained rows: rows removed from the end cannot be seen. If this "
                                                   "database is from before the head log, start one with `python -m "
                                                   "defect_model audit anchor`; otherwise the log was deleted"))
        for table in tables:
            anchored = log.heads.get(table)
            if table not in present:
                if anchored and anchored["id"]:
                    found.append(Finding(table, None, f"the table is missing (dropped); the head log anchors row "
                                                      f"{anchored['id']}"))
                continue
            start = log.starts.get(table)
            finding = verify_table(db, table, start["first"] if start else None)
            if finding is None and anchored and not log.problems:
                finding = check_head(db, table, anchored)
            if finding:
                found.append(finding)
    if not log.exists:
        mode = "the chains only (no head log)"
    elif key is not None:
        mode = f"the chains, their heads against {log_path}, and its MACs with {headlog.KEY_ENV}"
    elif log.signed:
        mode = (f"the chains and their heads against {log_path}; its {log.signed} MAC(s) not checked: set "
                f"{headlog.KEY_ENV} to check them")
    else:
        mode = f"the chains and their heads against {log_path} (no key: a rewrite of both files is not detected)"
    return Verification(found, mode)


def verify(path: str | Path, tables: tuple[str, ...] = CHAINED_TABLES) -> list[Finding]:
    """verify_all's findings: empty when every chain holds and matches its anchored head."""
    return verify_all(path, tables).findings


def anchor(path: str | Path, actor) -> list[str]:
    """Start the head log of a database from before it, or accept rows written after the anchored heads; refused
    while anything else is wrong (a removed, rewritten or blanked row is never anchored over). Recorded in the
    audit trail. Returns what was anchored, one line per table."""
    path = Path(path)
    problems = [f for f in verify(path) if "not in the head log" not in f.problem
                and not (f.table == "head log" and "missing or empty" in f.problem)]
    if problems:
        raise ValueError("Not anchored: " + "; ".join(f.text() for f in problems) + ". Find out what changed first.")
    with headlog.locked(path) as heads, closing(sqlite3.connect(path)) as db:
        kind = "accept" if heads.started() else "start"
        entries = headlog.start_entries(db, kind)
        heads.append(entries)
    done = [f"{e['table']}: row {e['id']}" for e in entries]
    AuditLog(path).record(actor, "head_log_anchored", str(headlog.head_log_path(path)), kind=kind, heads=done)
    return done


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
