"""What a running watcher shows of itself: a status file beside the inspection database (pid, folders, model,
photo count, last photo, a heartbeat), and `watcher_status()`, which the Monitor page reads."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from defect_model.common.places import default_db_path
from defect_model.runs.folders import process_alive, read_json
from defect_model.workflows.hotfolder_intake import Folders


def status_dir(db_path: str | Path | None = None) -> Path:
    """Where watchers write their status files: a `watchers` folder beside the inspection database."""
    return Path(db_path or default_db_path()).parent / "watchers"


def status_file(folders: Folders, folder: Path) -> Path:
    return folder / f"{hashlib.sha256(str(folders.incoming).encode()).hexdigest()[:16]}.json"


def watcher_status(folder: str | Path | None = None) -> list[dict]:
    """Every watcher that has run against this database, newest heartbeat first, each with `running` (its
    process is alive), `heartbeat_age_s`, the folders, model, photo count and its last photo."""
    folder = Path(folder) if folder is not None else status_dir()
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.json"):
        status = read_json(path, None)
        if not isinstance(status, dict):
            continue
        alive = status.get("state") == "running" and process_alive(status.get("pid"), status.get("pid_started"))
        status["running"] = bool(alive)
        status["heartbeat_age_s"] = max(0.0, time.time() - float(status.get("heartbeat_unix", 0)))
        found.append(status)
    return sorted(found, key=lambda s: s.get("heartbeat_unix", 0), reverse=True)
