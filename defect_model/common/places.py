"""Where things live: the runs, the data folder, the inspection database, the served copies of checkpoints (read
by every layer that opens them)."""

from __future__ import annotations

import os
from pathlib import Path


def runs_root() -> Path:
    """Where runs live: $DEFECT_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("DEFECT_RUNS_DIR", "runs"))


def data_root() -> Path:
    """Where the demo dataset, uploads and the inspection database live: $DEFECT_DATA_DIR, else ./data."""
    return Path(os.environ.get("DEFECT_DATA_DIR", "data"))


def default_db_path() -> Path:
    """$DEFECT_DB, else <data folder>/inspections.sqlite."""
    return Path(os.environ.get("DEFECT_DB", data_root() / "inspections.sqlite"))


SERVED_DIR = "served"  # beside active.json: read-only copies of the checkpoints made active, named <sha256>.pt


def pinned_sha256(path: Path) -> str | None:
    """The sha256 a pinned copy (`<folder>/served/<sha256>.pt`) must hash to; None for any other checkpoint."""
    path = Path(path)
    stem = path.name[:-3] if path.name.endswith(".pt") else ""
    pinned = path.parent.name == SERVED_DIR and len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)
    return stem if pinned else None
