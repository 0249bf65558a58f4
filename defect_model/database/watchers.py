"""The hot-folder watchers' status rows: one per watcher (its host and incoming folder), rewritten at each
heartbeat, read by Monitor on any server."""

from __future__ import annotations

import json

from sqlalchemy import delete, select, update

from defect_model.database.engine import Database
from defect_model.database.schema import watchers

W = watchers.c


def put(db: Database, watcher_id: str, host: str, incoming: str, heartbeat_unix: float, status: dict) -> None:
    values = {"host": host, "incoming": incoming, "heartbeat_unix": heartbeat_unix,
              "status": json.dumps(status, sort_keys=True, default=str)}
    with db.write("watchers") as conn:
        if not conn.execute(update(watchers).where(W.id == watcher_id).values(values)).rowcount:
            conn.execute(watchers.insert().values(id=watcher_id, **values))


def every(db: Database) -> list[dict]:
    """Each watcher's status (its JSON decoded, with `host`), newest heartbeat first."""
    with db.read() as conn:
        found = conn.execute(select(W.host, W.status).order_by(W.heartbeat_unix.desc())).all()
    out = []
    for host, text in found:
        try:
            status = json.loads(text)
        except ValueError:
            continue
        if isinstance(status, dict):
            out.append({**status, "host": host})
    return out


def forget(db: Database, watcher_id: str) -> None:
    with db.write() as conn:
        conn.execute(delete(watchers).where(W.id == watcher_id))
