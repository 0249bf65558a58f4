"""Both backends for the tests: a SQLite file or a fresh PostgreSQL database (conftest's `database` fixture), and
direct SQL into either, bypassing the tool (to tamper, or to read what is stored), through sqlite3 or psycopg."""

from __future__ import annotations

from pathlib import Path


def is_postgres(where) -> bool:
    return isinstance(where, str) and where.startswith("postgresql")


def raw_sql(where, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement straight in the database (`?` placeholders on both backends); the rows it returns."""
    if is_postgres(where):
        import psycopg

        with psycopg.connect(where, autocommit=True) as db:
            cursor = db.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []
    import sqlite3

    with sqlite3.connect(Path(where)) as db:
        cursor = db.execute(sql, params)
        rows = cursor.fetchall()
    return rows


def raw_rows(where, table: str) -> list[dict]:
    """Every row of `table`, oldest first, as dicts, read straight from the database."""
    if is_postgres(where):
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(where, row_factory=dict_row) as db:
            return list(db.execute(f"SELECT * FROM {table} ORDER BY id"))
    import sqlite3

    with sqlite3.connect(Path(where)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]


def append_rows(where, env: dict, worker: int, count: int, start) -> None:
    """One writer process: `count` inspections and `count` audit events, interleaved, once `start` is set."""
    import os

    os.environ.update(env)
    from defect_model.access.accounts import Actor
    from defect_model.access.audit import AuditLog
    from defect_model.runs.store import InspectionStore

    store, log = InspectionStore(where), AuditLog(where)
    actor = Actor(f"writer-{worker}", "engineer")
    start.wait()
    for i in range(count):
        store.log_inspection(file_name=f"w{worker}-{i}.png", sha256=f"{worker:032x}{i:032x}", photo_path="",
                             verdict="pass", confidence=0.5 + i / 100, threshold=0.7, inspector=actor.name)
        log.record(actor, "relabel", f"w{worker}-{i}", n=i)


def raw_many(where, sql: str, rows: list[tuple]) -> None:
    """One statement for each of `rows`, straight in the database, in one transaction."""
    if is_postgres(where):
        import psycopg

        with psycopg.connect(where) as db, db.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)
        return
    import sqlite3

    with sqlite3.connect(Path(where)) as db:
        db.executemany(sql, rows)


def open_new_log(where, start, results) -> None:
    """One process opening the log (made or upgraded on opening) once `start` is set; puts what happened."""
    start.wait()
    try:
        from defect_model.runs.store import InspectionStore

        InspectionStore(where).log_inspection(file_name="a.png", sha256="a" * 64, photo_path="", verdict="pass")
        results.put("ok")
    except Exception as exc:  # noqa: BLE001  (any failure is the finding)
        results.put(repr(exc))
