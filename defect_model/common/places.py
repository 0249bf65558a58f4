"""Where things live: the runs, the data folder, the inspection database (read by every layer that opens them)."""

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
