"""The golden set: photos the plant cares most about, each with its confirmed label, kept in the inspection
database. A model is run on them before it goes live (workflows.golden_check)."""

from __future__ import annotations

from pathlib import Path

from defect_model.access.accounts import Actor, audit_log, require
from defect_model.access.audit import now_iso
from defect_model.database import golden as golden_rows, open_database

SOURCES = ("validation", "correction", "inspection")


class GoldenSet:
    def __init__(self, path: str | Path | None = None):
        self.db = open_database(path)
        self.path = self.db.where

    def add(self, actor: Actor, photo_path: str | Path, label: str, source: str, sha256: str = "") -> bool:
        """Mark a photo golden with its confirmed label (engineers; audited). False when it already was, with
        this label."""
        require(actor, "review")
        if source not in SOURCES:
            raise ValueError(f"unknown golden source {source!r}; use one of {', '.join(SOURCES)}")
        photo = str(Path(photo_path).resolve())
        if not Path(photo).is_file():
            raise ValueError(f"{photo}: no photo there, so it cannot be golden. Pick a photo that still exists.")
        if not golden_rows.put(self.db, photo, label, actor.name, source, sha256, now_iso()):
            return False
        audit_log(self.path).record(actor, "golden add", photo, label=label, source=source)
        return True

    def remove(self, actor: Actor, photo_path: str) -> None:
        require(actor, "review")
        golden_rows.remove(self.db, str(photo_path))
        audit_log(self.path).record(actor, "golden remove", str(photo_path))

    def photos(self) -> list[dict]:
        """Every golden photo, oldest first: photo_path, label, source, who, time."""
        return golden_rows.photos(self.db)
