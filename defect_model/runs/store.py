"""The inspection log and label corrections, in SQLite (WAL mode).

Every inspection is kept with a stored copy of its photo; corrections
(from inspectors and from the engineer's review) are kept for retraining.
Original dataset files are never edited or deleted.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from defect_model.access.audit import append_chained, connect, prepare as prepare_chain
from defect_model.common.places import default_db_path

VERDICTS = ("pass", "reject", "needs_person", "error")
CORRECTION_ACTIONS = ("confirm", "relabel", "unusable")
CORRECTION_STATES = ("pending", "confirmed", "rejected")
SOURCES = ("browser", "hot folder")  # where an inspected photo came from
# Per-photo statistics (defect_model.photos.stats) logged with each inspection; NULL for rows from before them
# and for files that were no photo (audit.LATER_COLUMNS keeps those rows verified).
PHOTO_STAT_COLUMNS = {"brightness": "REAL", "contrast": "REAL", "width": "INTEGER", "height": "INTEGER"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS inspections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    inspector TEXT NOT NULL DEFAULT '',
    file_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    photo_path TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL DEFAULT '',
    predicted TEXT NOT NULL DEFAULT '',
    confidence REAL,
    probabilities TEXT NOT NULL DEFAULT '{}',
    verdict TEXT NOT NULL,
    threshold REAL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS inspections_time ON inspections(time);
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    who TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    dataset TEXT NOT NULL DEFAULT '',
    photo_path TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    model_label TEXT NOT NULL DEFAULT '',
    original_label TEXT NOT NULL DEFAULT '',
    new_label TEXT,
    run_id TEXT NOT NULL DEFAULT '',
    inspection_id INTEGER REFERENCES inspections(id),
    status TEXT NOT NULL DEFAULT 'pending',
    decided_by TEXT NOT NULL DEFAULT '',
    decided_at TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT ''
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


OPEN_ATTEMPTS = 20  # about 10 s of retries for a new database opened by many sessions at once


class InspectionStore:
    """Small SQLite wrapper; a connection per call, so it is safe from several sessions and threads."""

    def __init__(self, path: str | Path | None = None, photos_dir: str | Path | None = None, source: str = "browser"):
        if source not in SOURCES:
            raise ValueError(f"unknown inspection source {source!r}; use one of {', '.join(SOURCES)}")
        self.source = source  # what log_inspection records unless told otherwise
        self.path = Path(path) if path is not None else default_db_path()
        self.photos_dir = Path(photos_dir) if photos_dir is not None else self.path.parent / "photos"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A new database's first opening switches it to WAL, which needs it alone; a session that holds a read
        # lock while another waits to write is answered "locked" at once (SQLite skips the busy wait where
        # waiting could deadlock), so the opening is tried again. Everything in it is idempotent.
        for attempt in range(OPEN_ATTEMPTS):
            try:
                self._prepare()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _prepare(self) -> None:
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            # Look and add columns in one write transaction: sessions opening a new database at once (the first
            # page loads after a start) otherwise both find a column missing and the second ALTER fails.
            db.execute("BEGIN IMMEDIATE")
            columns = {row[1] for row in db.execute("PRAGMA table_info(inspections)")}
            if "model_sha256" not in columns:  # a database from before inspections recorded the checkpoint
                db.execute("ALTER TABLE inspections ADD COLUMN model_sha256 TEXT NOT NULL DEFAULT ''")
            if "source" not in columns:  # older rows were all browser uploads; audit.LATER_COLUMNS keeps them verified
                db.execute("ALTER TABLE inspections ADD COLUMN source TEXT NOT NULL DEFAULT 'browser'")
            if "unfamiliar_score" not in columns:  # older rows have none (NULL); audit.LATER_COLUMNS
                db.execute("ALTER TABLE inspections ADD COLUMN unfamiliar_score REAL")
            if "graph_sha256" not in columns:  # the ONNX graph that judged (audit.LATER_COLUMNS; '' before it)
                db.execute("ALTER TABLE inspections ADD COLUMN graph_sha256 TEXT NOT NULL DEFAULT ''")
            if "photo_removed" not in columns:  # when retention deleted the stored copy (audit.MUTABLE_COLUMNS)
                db.execute("ALTER TABLE inspections ADD COLUMN photo_removed TEXT NOT NULL DEFAULT ''")
            for column, kind in PHOTO_STAT_COLUMNS.items():  # what the camera saw (Monitor's drift; NULL before)
                if column not in columns:
                    db.execute(f"ALTER TABLE inspections ADD COLUMN {column} {kind}")
            prepare_chain(db, "inspections")

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

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
        with closing(self._connect()) as db:
            rows = db.execute("SELECT photo_path, MAX(time) FROM inspections WHERE photo_path != '' AND "
                              "photo_removed = '' GROUP BY photo_path")
            return {row[0]: row[1] for row in rows}

    def photos_corrections_need(self) -> tuple[set[str], set[str]]:
        """(photo paths, sha256s) of the corrections that are not rejected: a pending one waits for review, a
        confirmed one is training data for the next retrain; both need their photo."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT photo_path, sha256 FROM corrections WHERE status != 'rejected'").fetchall()
        return {row[0] for row in rows if row[0]}, {row[1] for row in rows if row[1]}

    def mark_photos_removed(self, photo_paths: list[str], when: str) -> int:
        """Note in the log that these stored copies were deleted at `when`; the rows, their sha256 and
        photo_path stay. Returns the number of rows marked."""
        marked = 0
        with closing(self._connect()) as db, db:
            db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(photo_paths), 500):
                part = photo_paths[start:start + 500]
                marked += db.execute(f"UPDATE inspections SET photo_removed = ? WHERE photo_removed = '' AND "
                                     f"photo_path IN ({','.join('?' * len(part))})", (when, *part)).rowcount
        return marked

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
        with closing(self._connect()) as db:
            return append_chained(db, "inspections", {
                "time": time or _now(), "inspector": inspector, "file_name": file_name, "sha256": sha256,
                "photo_path": str(photo_path), "run_id": run_id, "predicted": predicted, "confidence": confidence,
                "probabilities": json.dumps(probabilities or {}), "verdict": verdict, "threshold": threshold,
                "error": error, "model_sha256": model_sha256, "graph_sha256": graph_sha256, "source": source,
                "unfamiliar_score": unfamiliar_score,
                **{column: (photo_stats or {}).get(column) for column in PHOTO_STAT_COLUMNS}})

    def last_inspection_id(self) -> int:
        """The id of the newest logged inspection (0 for an empty log); ids only grow."""
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM inspections").fetchone()[0])

    def inspections_after(self, after_id: int, source: str) -> list[dict]:
        """Inspections from `source` logged after row `after_id`, oldest first, as dicts."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM inspections WHERE id > ? AND source = ? ORDER BY id", (after_id, source))
            return [dict(row) for row in rows]

    def inspections(self, since: str | None = None, until: str | None = None, verdicts=None, classes=None,
                    inspectors=None, sources=None) -> pd.DataFrame:
        """The log, newest first, filtered by ISO time range, verdict, predicted class, inspector and source."""
        clauses, params = [], []
        if since:
            clauses.append("time >= ?")
            params.append(since)
        if until:
            clauses.append("time <= ?")
            params.append(until)
        for column, values in (("verdict", verdicts), ("predicted", classes), ("inspector", inspectors),
                               ("source", sources)):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params += list(values)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with closing(self._connect()) as db:
            return pd.read_sql_query(f"SELECT * FROM inspections {where} ORDER BY id DESC", db, params=params)

    def distinct(self, column: str) -> list[str]:
        """The different non-empty values of an inspections column (for filter choices), sorted."""
        if column not in ("inspector", "predicted", "verdict", "run_id", "source"):
            raise ValueError(f"no filter on column {column!r}")
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT DISTINCT {column} FROM inspections WHERE {column} != '' ORDER BY 1")
            return [row[0] for row in rows]

    def inspections_by_id(self, ids) -> pd.DataFrame:
        """These inspections (a page's batch, the photos corrections refer to), oldest first; unknown ids are
        left out."""
        ids = sorted({int(i) for i in ids})
        with closing(self._connect()) as db:
            frames = [pd.read_sql_query(f"SELECT * FROM inspections WHERE id IN ({','.join('?' * len(part))})",
                                        db, params=part) for part in (ids[i:i + 500] for i in range(0, len(ids), 500))]
        if not frames:
            return self.inspections().head(0)
        return pd.concat(frames).sort_values("id").reset_index(drop=True)

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
        with closing(self._connect()) as db, db:
            db.execute("BEGIN IMMEDIATE")  # the look-up and the insert as one step, also across sessions
            latest = db.execute(
                "SELECT id, who, action, new_label, sha256, status FROM corrections WHERE dataset = ? AND"
                " photo_path = ? ORDER BY id DESC LIMIT 1", (dataset, str(photo_path))).fetchone()
            if latest is not None and latest["status"] != "rejected" and (  # sha256: a photo kept without a copy
                    latest["who"], latest["action"], latest["new_label"], latest["sha256"]) == (
                    who, action, new_label, sha256):
                return int(latest["id"]), False
            cursor = db.execute(
                "INSERT INTO corrections (time, who, source, action, dataset, photo_path, sha256, model_label,"
                " original_label, new_label, run_id, inspection_id, status, decided_by, decided_at, note)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (_now(), who, source, action, dataset, str(photo_path), sha256, model_label, original_label,
                 new_label, run_id, inspection_id, status, who if status != "pending" else "",
                 _now() if status != "pending" else "", note))
            return int(cursor.lastrowid), True

    def decide_correction(self, correction_id: int, status: str, who: str = "") -> None:
        if status not in CORRECTION_STATES:
            raise ValueError(f"unknown correction status {status!r}")
        with closing(self._connect()) as db, db:
            db.execute("UPDATE corrections SET status=?, decided_by=?, decided_at=? WHERE id=?",
                       (status, who, _now(), correction_id))

    def corrections(self, dataset: str | None = None, status: str | None = None) -> pd.DataFrame:
        clauses, params = [], []
        if dataset is not None:
            clauses.append("dataset = ?")
            params.append(dataset)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with closing(self._connect()) as db:
            return pd.read_sql_query(f"SELECT * FROM corrections {where} ORDER BY id", db, params=params)

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
