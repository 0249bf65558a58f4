"""The golden set: photos the plant cares most about, each with its confirmed label, kept in the inspection
database. A model is run on them before it goes live (workflows.golden_check)."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from defect_model.access.accounts import Actor, audit_log, require
from defect_model.access.audit import connect, now_iso
from defect_model.common.places import default_db_path

SOURCES = ("validation", "correction", "inspection")

SCHEMA = """
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


class GoldenSet:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(connect(self.path)) as db:
            db.executescript(SCHEMA)

    def add(self, actor: Actor, photo_path: str | Path, label: str, source: str, sha256: str = "") -> bool:
        """Mark a photo golden with its confirmed label (engineers; audited). False when it already was, with
        this label."""
        require(actor, "review")
        if source not in SOURCES:
            raise ValueError(f"unknown golden source {source!r}; use one of {', '.join(SOURCES)}")
        photo = str(Path(photo_path).resolve())
        if not Path(photo).is_file():
            raise ValueError(f"{photo}: no photo there, so it cannot be golden. Pick a photo that still exists.")
        with closing(connect(self.path)) as db:
            old = db.execute("SELECT label FROM golden WHERE photo_path = ?", (photo,)).fetchone()
            if old is not None and old["label"] == label:
                return False
            db.execute("INSERT INTO golden (time, who, photo_path, label, source, sha256) VALUES (?,?,?,?,?,?) "
                       "ON CONFLICT(photo_path) DO UPDATE SET label = excluded.label, who = excluded.who, "
                       "time = excluded.time, source = excluded.source",
                       (now_iso(), actor.name, photo, label, source, sha256))
        audit_log(self.path).record(actor, "golden add", photo, label=label, source=source)
        return True

    def remove(self, actor: Actor, photo_path: str) -> None:
        require(actor, "review")
        with closing(connect(self.path)) as db:
            db.execute("DELETE FROM golden WHERE photo_path = ?", (str(photo_path),))
        audit_log(self.path).record(actor, "golden remove", str(photo_path))

    def photos(self) -> list[dict]:
        """Every golden photo, oldest first: photo_path, label, source, who, time."""
        with closing(connect(self.path)) as db:
            return [dict(row) for row in db.execute("SELECT * FROM golden ORDER BY id")]
