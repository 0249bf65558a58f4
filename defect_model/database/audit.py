"""The audit table's reads (its appends are chained: chains.py)."""

from __future__ import annotations

from sqlalchemy import select

from defect_model.database.engine import Database
from defect_model.database.schema import audit


def events(db: Database, action: str | None, limit: int) -> list[dict]:
    """The newest `limit` events, newest first (of one action when given), as dicts."""
    query = select(audit).order_by(audit.c.id.desc()).limit(limit)
    if action:
        query = query.where(audit.c.action == action)
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]
