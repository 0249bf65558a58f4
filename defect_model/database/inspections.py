"""The inspection log's statements (its appends are chained: access/audit.py, chains.py)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from sqlalchemy import func, select, update

from defect_model.database.engine import Database
from defect_model.database.schema import corrections, inspections

CHUNK = 500  # ids or paths per IN (...) list
FILTER_COLUMNS = ("inspector", "predicted", "verdict", "run_id", "source")


def _frame(db: Database, query) -> pd.DataFrame:
    with db.read() as conn:
        return pd.read_sql_query(query, conn)


def photo_last_used(db: Database) -> dict[str, str]:
    query = (select(inspections.c.photo_path, func.max(inspections.c.time))
             .where(inspections.c.photo_path != "", inspections.c.photo_removed == "")
             .group_by(inspections.c.photo_path))
    with db.read() as conn:
        return {row[0]: row[1] for row in conn.execute(query)}


def photos_corrections_need(db: Database) -> list[tuple[str, str]]:
    with db.read() as conn:
        return [tuple(row) for row in conn.execute(
            select(corrections.c.photo_path, corrections.c.sha256).where(corrections.c.status != "rejected"))]


def mark_photos_removed(db: Database, photo_paths: list[str], when: str) -> int:
    marked = 0
    with db.write() as conn:
        for start in range(0, len(photo_paths), CHUNK):
            part = photo_paths[start:start + CHUNK]
            marked += conn.execute(update(inspections).where(inspections.c.photo_removed == "",
                                                             inspections.c.photo_path.in_(part))
                                   .values(photo_removed=when)).rowcount
    return marked


def last_id(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.coalesce(func.max(inspections.c.id), 0))).scalar_one())


def after(db: Database, after_id: int, source: str) -> list[dict]:
    query = (select(inspections).where(inspections.c.id > after_id, inspections.c.source == source)
             .order_by(inspections.c.id))
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def log(db: Database, since: str | None, until: str | None, filters: dict[str, Iterable]) -> pd.DataFrame:
    """The log, newest first: ISO time range, and per column the values kept (an empty filter keeps all)."""
    query = select(inspections)
    if since:
        query = query.where(inspections.c.time >= since)
    if until:
        query = query.where(inspections.c.time <= until)
    for column, values in filters.items():
        if values:
            query = query.where(inspections.c[column].in_(list(values)))
    return _frame(db, query.order_by(inspections.c.id.desc()))


def distinct_values(db: Database, column: str) -> list[str]:
    if column not in FILTER_COLUMNS:
        raise ValueError(f"no filter on column {column!r}")
    col = inspections.c[column]
    with db.read() as conn:
        return [row[0] for row in conn.execute(select(col).distinct().where(col != "").order_by(col))]


def by_id(db: Database, ids: list[int]) -> pd.DataFrame:
    """These inspections, oldest first; unknown ids are left out."""
    frames = [_frame(db, select(inspections).where(inspections.c.id.in_(ids[i:i + CHUNK])))
              for i in range(0, len(ids), CHUNK)]
    if not frames:
        return _frame(db, select(inspections).where(inspections.c.id < 0))
    return pd.concat(frames).sort_values("id").reset_index(drop=True)
