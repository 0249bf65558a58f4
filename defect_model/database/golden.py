"""The golden set's statements."""

from __future__ import annotations

from sqlalchemy import delete, select

from defect_model.database.engine import Database
from defect_model.database.schema import golden

G = golden.c


def put(db: Database, photo_path: str, label: str, who: str, source: str, sha256: str, when: str) -> bool:
    """Mark the photo golden with `label` (or change its label); False when it already was, with this label."""
    with db.write("golden") as conn:
        old = conn.execute(select(G.label).where(G.photo_path == photo_path)).first()
        if old is not None and old[0] == label:
            return False
        if old is None:
            conn.execute(golden.insert().values(time=when, who=who, photo_path=photo_path, label=label,
                                                source=source, sha256=sha256))
        else:
            conn.execute(golden.update().where(G.photo_path == photo_path)
                         .values(label=label, who=who, time=when, source=source))
    return True


def remove(db: Database, photo_path: str) -> None:
    with db.write() as conn:
        conn.execute(delete(golden).where(G.photo_path == photo_path))


def photos(db: Database) -> list[dict]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(select(golden).order_by(G.id)).mappings()]
