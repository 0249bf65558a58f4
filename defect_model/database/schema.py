"""The schema: every table of the database as SQLAlchemy Core tables in one MetaData. A change here comes with a
new revision in migrations/versions (tests/test_database_migrations.py checks that the newest revision builds
exactly these tables).

Types are the same on both backends where a row's hash reads them back (access/audit.py): TEXT, INTEGER and
FLOAT(53) (SQLite REAL, PostgreSQL double precision: an 8-byte float on both, so a value hashes alike).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text, text

metadata = MetaData()
EMPTY = text("''")
DOUBLE = Float(precision=53)


def _text(name: str, default: str | None = "", **kw) -> Column:
    """A NOT NULL text column with a default (None: no default)."""
    server_default = None if default is None else text("'" + default.replace("'", "''") + "'")
    return Column(name, Text, nullable=False, server_default=server_default, **kw)


def _chain() -> list[Column]:
    return [_text("prev_hash"), _text("row_hash")]


# The inspection log, hash-chained (access/audit.py). Columns after `error` were added over time (the old
# `_prepare` ALTERs; audit.LATER_COLUMNS keeps rows hashed before them verified).
inspections = Table(
    "inspections", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _text("time", None), _text("inspector"), _text("file_name", None), _text("sha256", None), _text("photo_path"),
    _text("run_id"), _text("predicted"), Column("confidence", DOUBLE), _text("probabilities", "{}"),
    _text("verdict", None), Column("threshold", DOUBLE), _text("error"),
    _text("model_sha256"), _text("source", "browser"), Column("unfamiliar_score", DOUBLE), _text("graph_sha256"),
    _text("photo_removed"), Column("brightness", DOUBLE), Column("contrast", DOUBLE), Column("width", Integer),
    Column("height", Integer), *_chain(),
    Index("inspections_time", "time"),
    sqlite_autoincrement=True,
)

# Label corrections from inspectors and the engineer's review (the label queue). inspection_id names an
# inspection without a foreign key: SQLite never enforced the old REFERENCES, and a correction may name a photo
# logged elsewhere.
corrections = Table(
    "corrections", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _text("time", None), _text("who"), _text("source", None), _text("action", None), _text("dataset"),
    _text("photo_path", None), _text("sha256"), _text("model_label"), _text("original_label"),
    Column("new_label", Text), _text("run_id"), Column("inspection_id", Integer), _text("status", "pending"),
    _text("decided_by"), _text("decided_at"), _text("note"),
    sqlite_autoincrement=True,
)

# Who did what (hash-chained).
audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _text("time", None), _text("actor", None), _text("role"), _text("action", None), _text("target"),
    _text("detail", "{}"), *_chain(),
    Index("audit_action", "action"),
    sqlite_autoincrement=True,
)

accounts = Table(
    "accounts", metadata,
    Column("name", Text, primary_key=True),
    _text("role", None), _text("password_hash"), _text("created", None),
    Column("disabled", Integer, nullable=False, server_default=text("0")),
)

sessions = Table(
    "sessions", metadata,
    Column("token_hash", Text, primary_key=True),
    _text("name", None), _text("kind", "session"), _text("expires", None),
)

sign_in_failures = Table(
    "sign_in_failures", metadata,
    _text("name", None), _text("time", None),
    Index("sign_in_failures_name", "name", "time"),
)

unknown_sign_ins = Table(
    "unknown_sign_ins", metadata,
    Column("window", Text, primary_key=True),
    Column("attempts", Integer, nullable=False), _text("names", "[]"),
)

golden = Table(
    "golden", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _text("time", None), _text("who", None), _text("photo_path", None, unique=True), _text("label", None),
    _text("source", None), _text("sha256"),
    sqlite_autoincrement=True,
)

# What each hot-folder watcher shows of itself (was a JSON file per watcher beside the SQLite file): one row per
# watcher (its host and incoming folder), its status as JSON, rewritten at each heartbeat.
# Every operating point saved for a run, newest last: the one Inspect and the hot folder judge with is the
# newest (revision 0002; before it, a file in the run folder, still read for runs that have no row).
operating_points = Table(
    "operating_points", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _text("run_id", None), _text("time", None), _text("who", None), _text("point", None),
    Index("operating_points_run", "run_id", "id"),
)

watchers = Table(
    "watchers", metadata,
    Column("id", Text, primary_key=True),
    _text("host"), _text("incoming"), Column("heartbeat_unix", DOUBLE, nullable=False, server_default=text("0")),
    _text("status", "{}"),
)

CHAINED = {"audit": audit, "inspections": inspections}
