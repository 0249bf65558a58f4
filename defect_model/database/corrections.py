"""The label corrections' statements."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import insert, select, update

from defect_model.database.engine import Database
from defect_model.database.schema import corrections


def add_once(db: Database, row: dict) -> tuple[int, bool]:
    """Insert `row` unless it repeats its photo's latest correction (same person, action, label and sha256, not
    rejected): (id, True), or (the earlier id, False). The look-up and the insert are one write transaction."""
    c = corrections.c
    with db.write("corrections") as conn:  # two sessions saving the same photo at once: one after the other
        latest = conn.execute(
            select(c.id, c.who, c.action, c.new_label, c.sha256, c.status)
            .where(c.dataset == row["dataset"], c.photo_path == row["photo_path"]).order_by(c.id.desc()).limit(1)
        ).mappings().first()
        if latest is not None and latest["status"] != "rejected" and (
                latest["who"], latest["action"], latest["new_label"], latest["sha256"]) == (
                row["who"], row["action"], row["new_label"], row["sha256"]):
            return int(latest["id"]), False
        new_id = conn.execute(insert(corrections).values(row).returning(c.id)).scalar_one()
        return int(new_id), True


def decide(db: Database, correction_id: int, status: str, who: str, when: str) -> None:
    with db.write() as conn:
        conn.execute(update(corrections).where(corrections.c.id == correction_id)
                     .values(status=status, decided_by=who, decided_at=when))


def table(db: Database, dataset: str | None, status: str | None) -> pd.DataFrame:
    query = select(corrections)
    if dataset is not None:
        query = query.where(corrections.c.dataset == dataset)
    if status is not None:
        query = query.where(corrections.c.status == status)
    with db.read() as conn:
        return pd.read_sql_query(query.order_by(corrections.c.id), conn)
