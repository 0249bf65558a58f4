"""A tamper-evident record: hash-chained rows in the project's database (SQLite or PostgreSQL).

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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from defect_model.access import headlog
from defect_model.access.headlog import CHAINED_TABLES, GENESIS
from defect_model.database import audit as audit_rows, chains, open_as_is, open_database

def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def insert_chained(conn, table: str, values: dict) -> tuple[int, str]:
    """Insert `values` as the next link of `table`'s chain on `conn`, inside the caller's write transaction (no
    head-log line: what a writer bypassing the tool does). Returns the row's id and hash."""
    return chains.insert_link(conn, table, values, _digest)


def append_chained(where: str | Path, table: str, values: dict) -> int:
    """Append `values` as the next link of `table` in a transaction of its own, one writer at a time (the
    database serialises it: chains.py), so the chain stays a chain; then anchor the new head in the head log
    while still alone, so the log's order is the commits' order."""
    db = open_database(where)
    with chains.chain_writer(db) as conn, headlog.locked(db.where) as heads:
        row_id, row_hash = chains.append(conn, table, values, _digest,
                                         first=lambda c: headlog.start_if_new(heads, c))
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


def verify_table(conn, table: str, first: int | None = None) -> Finding | None:
    """The first row of `table` that was altered or removed, or None when its chain holds. `first`: the row the
    chain starts at (from the head log); without it, the first row that has a hash. From there on a row without
    a hash is a finding (blanked), not a row from before the chain."""
    prev_hash, prev_id, began = GENESIS, 0, False
    for row in chains.rows(conn, table):
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


def check_head(conn, table: str, anchored: dict) -> Finding | None:
    """The table's head against the newest head the head log anchored for it."""
    head = headlog.table_heads(conn)[table]
    top = chains.top_id(conn, table)
    where = f"the head log (line {anchored['line']}) anchors row {anchored['id']}"
    if anchored["id"] > top:
        now = f"the table ends at row {top}" if top else "the table is empty"
        return Finding(table, anchored["id"], f"rows removed from the end: {where}, {now}")
    if anchored["id"] and chains.hash_of(conn, table, anchored["id"]) != anchored["hash"]:
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


def verify_all(where: str | Path | None = None, tables: tuple[str, ...] = CHAINED_TABLES) -> Verification:
    """Every chain in the database at `where` (default: the project's) and its head against the head log: one
    finding per broken table or head log (none when all hold), and a line saying what was checked. The database
    is read as it is (neither upgraded nor changed)."""
    db = open_as_is(where)
    if db.is_sqlite and not Path(db.where).is_file():
        return Verification([Finding("database", None, f"{db.where} does not exist")], "nothing")
    key = headlog.audit_key()
    log_path = headlog.head_log_path(db.where)
    log = headlog.read_head_log(log_path, key)
    found = [Finding("head log", line, f"{log_path}: {problem}" if line is None else f"{log_path} line {line}: "
                                                                                  f"{problem}")
             for line, problem in log.problems]
    with db.read() as conn:
        present = chains.tables_present(conn)
        if not log.exists and headlog.ever_written(conn):
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
            finding = verify_table(conn, table, start["first"] if start else None)
            if finding is None and anchored and not log.problems:
                finding = check_head(conn, table, anchored)
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


def verify(where: str | Path | None = None, tables: tuple[str, ...] = CHAINED_TABLES) -> list[Finding]:
    """verify_all's findings: empty when every chain holds and matches its anchored head."""
    return verify_all(where, tables).findings


def anchor(where: str | Path | None, actor) -> list[str]:
    """Start the head log of a database from before it, or accept rows written after the anchored heads; refused
    while anything else is wrong (a removed, rewritten or blanked row is never anchored over). Recorded in the
    audit trail. Returns what was anchored, one line per table."""
    problems = [f for f in verify(where) if "not in the head log" not in f.problem
                and not (f.table == "head log" and "missing or empty" in f.problem)]
    if problems:
        raise ValueError("Not anchored: " + "; ".join(f.text() for f in problems) + ". Find out what changed first.")
    db = open_database(where)
    with chains.chain_writer(db) as conn, headlog.locked(db.where) as heads:
        kind = "accept" if heads.started() else "start"
        with conn.begin():
            entries = headlog.start_entries(conn, kind)
        heads.append(entries)
    done = [f"{e['table']}: row {e['id']}" for e in entries]
    AuditLog(db.where).record(actor, "head_log_anchored", str(headlog.head_log_path(db.where)), kind=kind,
                              heads=done)
    return done


class AuditLog:
    """The `audit` table: who did what to what, and when."""

    def __init__(self, where: str | Path | None = None):
        self.db = open_database(where)
        self.path = self.db.where  # a SQLite file's path, or the PostgreSQL URL

    def record(self, actor, action: str, target: str = "", **detail) -> int:
        """Append one event; `actor` has `.name` and `.role` (accounts.Actor)."""
        return append_chained(self.path, "audit", {
            "time": now_iso(), "actor": actor.name, "role": actor.role, "action": action, "target": target,
            "detail": json.dumps(detail, sort_keys=True, default=str)})

    def events(self, action: str | None = None, limit: int = 500) -> list[dict]:
        """Newest first; `detail` decoded."""
        rows = audit_rows.events(self.db, action, limit)
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return rows
