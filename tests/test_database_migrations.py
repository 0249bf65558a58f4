"""Migrations: the newest revision builds exactly the schema the code declares, on an empty PostgreSQL database
and an empty SQLite file; a SQLite file written by the code before migrations (made here with that code's own
CREATE TABLE and ALTER TABLE text) upgrades without losing or re-hashing a row, and its chains still verify."""

from __future__ import annotations

import json
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from database_support import raw_rows
from defect_model.access import headlog
from defect_model.access.accounts import Actor, open_accounts
from defect_model.access.audit import AuditLog, _digest, verify
from defect_model.cli import main as cli
from defect_model.database import close_all, migrate, open_as_is
from defect_model.database.schema import metadata
from defect_model.runs.golden import GoldenSet
from defect_model.runs.store import InspectionStore

# What the code before migrations ran on opening a database (runs/store.py, access/audit.py, accounts.py,
# golden.py at 6520f93), first the CREATE TABLE text, then its ALTERs in the order the columns came.
OLD_CREATE = """
CREATE TABLE IF NOT EXISTS inspections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    inspector TEXT NOT NULL DEFAULT '',
    file_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    photo_path TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL DEFAULT '',
    predicted TEXT NOT NULL DEFAULT '',
    confidence REAL,
    probabilities TEXT NOT NULL DEFAULT '{}',
    verdict TEXT NOT NULL,
    threshold REAL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS inspections_time ON inspections(time);
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    who TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    dataset TEXT NOT NULL DEFAULT '',
    photo_path TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    model_label TEXT NOT NULL DEFAULT '',
    original_label TEXT NOT NULL DEFAULT '',
    new_label TEXT,
    run_id TEXT NOT NULL DEFAULT '',
    inspection_id INTEGER REFERENCES inspections(id),
    status TEXT NOT NULL DEFAULT 'pending',
    decided_by TEXT NOT NULL DEFAULT '',
    decided_at TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT ''
);
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
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'session',
    expires TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sign_in_failures (
    name TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sign_in_failures_name ON sign_in_failures(name, time);
CREATE TABLE IF NOT EXISTS unknown_sign_ins (
    window TEXT PRIMARY KEY,
    attempts INTEGER NOT NULL,
    names TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS golden (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    who TEXT NOT NULL,
    photo_path TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT ''
);
"""
OLD_ALTERS = [
    "ALTER TABLE inspections ADD COLUMN model_sha256 TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE inspections ADD COLUMN prev_hash TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE inspections ADD COLUMN row_hash TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE inspections ADD COLUMN source TEXT NOT NULL DEFAULT 'browser'",
    "ALTER TABLE inspections ADD COLUMN unfamiliar_score REAL",
    "ALTER TABLE inspections ADD COLUMN graph_sha256 TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE inspections ADD COLUMN photo_removed TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE inspections ADD COLUMN brightness REAL",
    "ALTER TABLE inspections ADD COLUMN contrast REAL",
    "ALTER TABLE inspections ADD COLUMN width INTEGER",
    "ALTER TABLE inspections ADD COLUMN height INTEGER",
]
AGES = {"before the inspection log's chain": 1, "before the source column": 3,
        "as the last code left it": len(OLD_ALTERS)}


def old_database(path, alters: int) -> None:
    """A file as the code before migrations wrote it: its tables, the first `alters` ALTERs, and chained rows
    hashed, with their head log, as that code did (the hash itself is unchanged: audit._digest)."""
    with sqlite3.connect(path) as db:
        db.executescript(OLD_CREATE)
        for statement in OLD_ALTERS[:alters]:
            db.execute(statement)
        columns = {r[1] for r in db.execute("PRAGMA table_info(inspections)")}
        chained = "row_hash" in columns  # else the log's rows are from before its chain: no hash, as then
        entries = [{"kind": "start", "table": "audit", "id": 0, "hash": "0" * 64, "first": 1},
                   {"kind": "start", "table": "inspections", "id": 0, "hash": "0" * 64, "first": 1 if chained else 6}]
        for table, make in (("inspections", _old_inspection), ("audit", _old_event)):
            prev = "0" * 64
            for i in range(1, 6):
                row = {"id": i, **make(i, columns)}
                if table == "audit" or chained:
                    row["prev_hash"] = prev
                    row["row_hash"] = prev = _digest(row)
                    entries.append({"table": table, "id": i, "hash": row["row_hash"]})
                db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           list(row.values()))
        db.execute("INSERT INTO accounts (name, role, password_hash, created) VALUES ('ana', 'engineer', "
                   "'$argon2id$old', '2026-01-01T00:00:00+00:00')")
        db.execute("INSERT INTO corrections (time, source, action, photo_path, new_label, status) VALUES "
                   "('2026-01-01T00:00:00+00:00', 'review', 'relabel', '/p/1.png', 'pit', 'confirmed')")
        db.execute("INSERT INTO golden (time, who, photo_path, label, source) VALUES "
                   "('2026-01-01T00:00:00+00:00', 'ana', '/p/1.png', 'pit', 'validation')")
    with headlog.locked(path) as heads:
        heads.append(entries)


def _old_inspection(i: int, columns: set) -> dict:
    row = {"time": f"2026-01-0{i}T08:00:00+00:00", "inspector": "ana", "file_name": f"p{i}.png",
           "sha256": f"{i:064x}", "photo_path": f"/p/{i}.png", "run_id": "run-1", "predicted": "ok",
           "confidence": 0.9 - i / 30, "probabilities": json.dumps({"ok": 0.9}), "verdict": "pass", "threshold": 0.7,
           "error": "", "model_sha256": "ab" * 32}
    return {k: v for k, v in row.items() if k in columns}


def _old_event(i: int, _columns: set) -> dict:
    return {"time": f"2026-01-0{i}T09:00:00+00:00", "actor": "root", "role": "admin", "action": "activate",
            "target": f"run-{i}", "detail": json.dumps({"sha256": str(i) * 64})}


def _schema_differences(where) -> list:
    db = open_as_is(where)
    try:
        with db.read() as conn:
            # Only our tables: on PostgreSQL `db upgrade` also makes the training queue's (procrastinate's own).
            ours = {"include_name": lambda name, kind, _parents: kind != "table" or name in metadata.tables}
            return compare_metadata(MigrationContext.configure(conn, opts=ours), metadata)
    finally:
        db.engine.dispose()


def test_an_empty_postgres_database_gets_the_declared_schema(postgres_url, monkeypatch, capsys):
    monkeypatch.setenv("DEFECT_DATABASE_URL", postgres_url)
    assert cli(["db", "upgrade"]) == 0
    assert cli(["db", "check"]) == 0 and "current revision 0002, newest 0002" in capsys.readouterr().out
    assert _schema_differences(postgres_url) == []


def test_a_new_sqlite_file_gets_the_declared_schema_on_opening(tmp_path):
    path = tmp_path / "new.sqlite"
    InspectionStore(path)
    assert _schema_differences(path) == []
    assert migrate.check(path).ok


@pytest.mark.parametrize("age", list(AGES))
def test_a_database_written_before_migrations_upgrades_with_nothing_lost(tmp_path, monkeypatch, capsys, age):
    path = tmp_path / "data" / "inspections.sqlite"
    path.parent.mkdir()
    old_database(path, AGES[age])
    monkeypatch.setenv("DEFECT_DB", str(path))
    monkeypatch.delenv("DEFECT_DATABASE_URL", raising=False)
    before = {table: raw_rows(path, table) for table in ("inspections", "audit")}
    if AGES[age] >= 3:
        assert verify(path) == []  # the old file verifies as it is

    assert cli(["db", "check"]) == 1
    assert "without a schema revision" in capsys.readouterr().err
    assert cli(["db", "upgrade"]) == 0 and "revision none -> 0002" in capsys.readouterr().out
    assert cli(["db", "check"]) == 0

    for table, rows in before.items():  # every row kept, every old value and hash as it was
        after = raw_rows(path, table)
        assert [{k: r[k] for k in old} for r, old in zip(after, rows)] == rows and len(after) == len(rows)
    assert verify(path) == []
    store = InspectionStore()
    assert set(store.inspections()["source"]) == {"browser"}  # older rows read as browser uploads
    store.log_inspection(file_name="new.png", sha256="f" * 64, photo_path="", verdict="reject", source="hot folder",
                         photo_stats={"brightness": 0.4, "contrast": 0.1, "width": 64, "height": 64})
    AuditLog().record(Actor("root", "admin"), "activate", "run-9")
    assert verify(path) == [] and store.last_inspection_id() == 6
    assert open_accounts().role_of("ana") == "engineer"
    assert [g["label"] for g in GoldenSet().photos()] == ["pit"]
    assert len(store.corrections(status="confirmed")) == 1
    close_all()


def test_the_old_file_upgrades_itself_when_the_dashboard_opens_it(tmp_path):
    """`make run` on a plant's old file: no command needed, as before."""
    path = tmp_path / "inspections.sqlite"
    old_database(path, 1)
    assert InspectionStore(path).last_inspection_id() == 5 and migrate.check(path).ok
    assert verify(path) == []


def test_a_database_at_the_first_revision_upgrades_to_operating_points_with_its_rows(database, monkeypatch):
    """Revision 0002 (operating points in the database) on a database the first revision made, on both backends:
    the log's rows and chain are kept, the new table is there, and db check then passes."""
    from alembic import command

    InspectionStore(database).log_inspection(file_name="a.png", sha256="a" * 64, photo_path="", verdict="pass")
    close_all()
    db = open_as_is(database)
    try:
        with db.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("DROP TABLE operating_points")
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    finally:
        db.engine.dispose()
    assert not migrate.check(database).ok
    db = open_as_is(database)
    try:
        with db.engine.connect() as conn, conn.begin():
            assert migrate.current(conn) == "0001"
            command.upgrade(migrate._config(conn), "head")
    finally:
        db.engine.dispose()
    assert migrate.check(database).ok
    assert _schema_differences(database) == []
    assert list(InspectionStore(database).inspections()["file_name"]) == ["a.png"] and verify(database) == []
