"""The inspection log and label corrections, in the project's database (SQLite, or PostgreSQL where
$DEFECT_DATABASE_URL names one; the statements are in defect_model.database).

Every inspection is kept with a stored copy of its photo; corrections
(from inspectors and from the engineer's review) are kept for retraining.
Original dataset files are never edited or deleted.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from defect_model.access.audit import append_chained
from defect_model.common.places import default_db_path
from defect_model.database import corrections as correction_rows, inspections as inspection_rows, open_database

VERDICTS = ("pass", "reject", "needs_person", "error")
CORRECTION_ACTIONS = ("confirm", "relabel", "unusable")
CORRECTION_STATES = ("pending", "confirmed", "rejected")
SOURCES = ("browser", "hot folder")  # where an inspected photo came from
# Per-photo statistics (defect_model.photos.stats) logged with each inspection; NULL for rows from before them
# and for files that were no photo (audit.LATER_COLUMNS keeps those rows verified).
PHOTO_STAT_COLUMNS = ("brightness", "contrast", "width", "height")

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class InspectionStore:
    """The inspection log and corrections of one database; safe from several sessions, threads and machines."""

    def __init__(self, path: str | Path | None = None, photos_dir: str | Path | None = None, source: str = "browser"):
        if source not in SOURCES:
            raise ValueError(f"unknown inspection source {source!r}; use one of {', '.join(SOURCES)}")
        self.source = source  # what log_inspection records unless told otherwise
        self.db = open_database(path)  # a SQLite file is made or upgraded; PostgreSQL must be at the newest schema
        self.path = self.db.where  # the SQLite file's path, or the PostgreSQL URL
        home = self.path.parent if isinstance(self.path, Path) else default_db_path().parent
        self.photos_dir = Path(photos_dir) if photos_dir is not None else home / "photos"

    # -- photos -----------------------------------------------------------
    def store_photo(self, data: bytes, file_name: str) -> tuple[str, Path]:
        """Keep a copy of an uploaded photo, named by its hash; returns (sha256, path)."""
        digest = sha256_bytes(data)
        suffix = Path(file_name).suffix.lower()[:8] or ".bin"
        path = self.photos_dir / digest[:2] / f"{digest}{suffix}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # A name of its own per writer: two sessions storing the same photo at once must not share one.
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return digest, path

    def photo_last_used(self) -> dict[str, str]:
        """Each stored copy the log still points at (its photo_path) -> the time of its newest inspection."""
        return inspection_rows.photo_last_used(self.db)

    def photos_corrections_need(self) -> tuple[set[str], set[str]]:
        """(photo paths, sha256s) of the corrections that are not rejected: a pending one waits for review, a
        confirmed one is training data for the next retrain; both need their photo."""
        rows = inspection_rows.photos_corrections_need(self.db)
        return {row[0] for row in rows if row[0]}, {row[1] for row in rows if row[1]}

    def mark_photos_removed(self, photo_paths: list[str], when: str) -> int:
        """Note in the log that these stored copies were deleted at `when`; the rows, their sha256 and
        photo_path stay. Returns the number of rows marked."""
        return inspection_rows.mark_photos_removed(self.db, list(photo_paths), when)

    # -- inspections ------------------------------------------------------
    def log_inspection(self, *, file_name: str, sha256: str, photo_path: str | Path, verdict: str,
                       inspector: str = "", run_id: str = "", predicted: str = "", confidence: float | None = None,
                       probabilities: dict | None = None, threshold: float | None = None, error: str = "",
                       time: str | None = None, model_sha256: str = "", source: str | None = None,
                       photo_stats: dict | None = None, unfamiliar_score: float | None = None,
                       graph_sha256: str = "") -> int:
        """Append one inspection as the next link of the log's hash chain (see audit.py); `photo_stats` are the
        photo's brightness, contrast, width and height (defect_model.photos.stats); `model_sha256` and
        `graph_sha256` name what judged it (the checkpoint's and the ONNX graph's bytes)."""
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}")
        source = source or self.source
        if source not in SOURCES:
            raise ValueError(f"unknown inspection source {source!r}; use one of {', '.join(SOURCES)}")
        return append_chained(self.path, "inspections", {
            "time": time or _now(), "inspector": inspector, "file_name": file_name, "sha256": sha256,
            "photo_path": str(photo_path), "run_id": run_id, "predicted": predicted, "confidence": confidence,
            "probabilities": json.dumps(probabilities or {}), "verdict": verdict, "threshold": threshold,
            "error": error, "model_sha256": model_sha256, "graph_sha256": graph_sha256, "source": source,
            "unfamiliar_score": unfamiliar_score,
            **{column: (photo_stats or {}).get(column) for column in PHOTO_STAT_COLUMNS}})


    def last_inspection_id(self) -> int:
        """The id of the newest logged inspection (0 for an empty log); ids only grow."""
        return inspection_rows.last_id(self.db)

    def inspections_after(self, after_id: int, source: str) -> list[dict]:
        """Inspections from `source` logged after row `after_id`, oldest first, as dicts."""
        return inspection_rows.after(self.db, after_id, source)

    def inspections(self, since: str | None = None, until: str | None = None, verdicts=None, classes=None,
                    inspectors=None, sources=None) -> pd.DataFrame:
        """The log, newest first, filtered by ISO time range, verdict, predicted class, inspector and source."""
        return inspection_rows.log(self.db, since, until, {"verdict": verdicts, "predicted": classes,
                                                           "inspector": inspectors, "source": sources})

    def distinct(self, column: str) -> list[str]:
        """The different non-empty values of an inspections column (for filter choices), sorted."""
        return inspection_rows.distinct_values(self.db, column)

    def inspections_by_id(self, ids) -> pd.DataFrame:
        """These inspections (a page's batch, the photos corrections refer to), oldest first; unknown ids are
        left out."""
        return inspection_rows.by_id(self.db, sorted({int(i) for i in ids}))

    # -- corrections ------------------------------------------------------
    def add_correction(self, *, source: str, action: str, photo_path: str, new_label: str | None = None,
                       who: str = "", dataset: str = "", sha256: str = "", model_label: str = "",
                       original_label: str = "", run_id: str = "", inspection_id: int | None = None,
                       status: str = "pending", note: str = "") -> int:
        """Record a correction; returns its id. Saving the same one again (same photo, action, label and person
        as the photo's latest correction, not rejected) returns that correction's id and stores nothing: a form
        sent twice (Enter, then the button) is one correction."""
        return self.add_correction_once(
            source=source, action=action, photo_path=photo_path, new_label=new_label, who=who, dataset=dataset,
            sha256=sha256, model_label=model_label, original_label=original_label, run_id=run_id,
            inspection_id=inspection_id, status=status, note=note)[0]

    def add_correction_once(self, *, source: str, action: str, photo_path: str, new_label: str | None = None,
                            who: str = "", dataset: str = "", sha256: str = "", model_label: str = "",
                            original_label: str = "", run_id: str = "", inspection_id: int | None = None,
                            status: str = "pending", note: str = "") -> tuple[int, bool]:
        """add_correction that also says whether a row was stored: (id, True), or (the earlier id, False) when
        it repeats the photo's latest correction."""
        if action not in CORRECTION_ACTIONS:
            raise ValueError(f"unknown correction action {action!r}; use one of {', '.join(CORRECTION_ACTIONS)}")
        if status not in CORRECTION_STATES:
            raise ValueError(f"unknown correction status {status!r}")
        if action == "relabel" and not new_label:
            raise ValueError("a relabel needs the new label")
        if action == "unusable":
            new_label = None
        elif action == "confirm":
            new_label = new_label or original_label
        decided = status != "pending"
        return correction_rows.add_once(self.db, {
            "time": _now(), "who": who, "source": source, "action": action, "dataset": dataset,
            "photo_path": str(photo_path), "sha256": sha256, "model_label": model_label,
            "original_label": original_label, "new_label": new_label, "run_id": run_id,
            "inspection_id": inspection_id, "status": status, "decided_by": who if decided else "",
            "decided_at": _now() if decided else "", "note": note})

    def decide_correction(self, correction_id: int, status: str, who: str = "") -> None:
        if status not in CORRECTION_STATES:
            raise ValueError(f"unknown correction status {status!r}")
        correction_rows.decide(self.db, correction_id, status, who, _now())

    def corrections(self, dataset: str | None = None, status: str | None = None) -> pd.DataFrame:
        return correction_rows.table(self.db, dataset, status)

    def write_corrections_csv(self, dataset: str, out: str | Path) -> int:
        """Confirmed corrections for `dataset` as the `path,label` CSV training reads; returns the row count.

        The latest decision per photo wins; an empty label drops the photo as unusable.
        """
        table = self.corrections(dataset=dataset, status="confirmed")
        latest: dict[str, str] = {}
        for row in table.itertuples():
            latest[row.photo_path] = "" if pd.isna(row.new_label) else str(row.new_label)
        with Path(out).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows(sorted(latest.items()))
        return len(latest)
