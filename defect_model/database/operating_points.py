"""The operating points' statements: each save is a row; a run's point is its newest."""

from __future__ import annotations

import json

from sqlalchemy import select

from defect_model.database.engine import Database
from defect_model.database.schema import operating_points

P = operating_points.c


def add(db: Database, run_id: str, point: dict, who: str, when: str) -> None:
    with db.write() as conn:
        conn.execute(operating_points.insert().values(run_id=run_id, time=when, who=who,
                                                      point=json.dumps(point, sort_keys=True)))


def newest(db: Database, run_id: str) -> dict | None:
    """The run's newest saved point with `by` and `at`, or None."""
    with db.read() as conn:
        row = conn.execute(select(P.point, P.who, P.time).where(P.run_id == run_id).order_by(P.id.desc())
                           .limit(1)).first()
    return None if row is None else {**json.loads(row.point), "by": row.who, "at": row.time}
