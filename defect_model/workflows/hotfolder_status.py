"""What a running watcher shows of itself: a row in the database's `watchers` table (pid, host, folders, model,
photo count, last photo, a heartbeat), and `watcher_status()`, which the Monitor page reads. In the database, not
in a file beside it, so Monitor on any server of a plant sees every line's watchers."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

from defect_model.database import open_database, watchers
from defect_model.runs.folders import process_alive
from defect_model.workflows.hotfolder_intake import Folders

# A watcher on another machine is taken for running while its heartbeat is this fresh (it beats every 2 s when
# idle, after every batch when busy); on this machine its process is asked.
STALE_S = 30.0


def host_name() -> str:
    return socket.gethostname()


def watcher_id(folders: Folders, host: str | None = None) -> str:
    """One watcher per incoming folder per machine (the folder lock keeps it one)."""
    return hashlib.sha256(f"{host or host_name()}:{folders.incoming}".encode()).hexdigest()[:16]


def publish(status: dict, folders: Folders, where: str | Path | None = None) -> None:
    """Write this watcher's status (WatchState.as_dict) as its row."""
    watchers.put(open_database(where), watcher_id(folders), host_name(), str(folders.incoming),
                 float(status.get("heartbeat_unix", time.time())), status)


def watcher_status(where: str | Path | None = None) -> list[dict]:
    """Every watcher that has run against this database (`where`: default the project's), newest heartbeat
    first, each with `running` (its process is alive: asked on this machine, by its heartbeat elsewhere),
    `heartbeat_age_s`, `host`, the folders, model, photo count and its last photo."""
    here, now = host_name(), time.time()
    found = []
    for status in watchers.every(open_database(where)):
        age = max(0.0, now - float(status.get("heartbeat_unix", 0)))
        if status.get("host", here) == here:
            alive = process_alive(status.get("pid"), status.get("pid_started"))
        else:
            alive = age <= STALE_S
        status["running"] = bool(status.get("state") == "running" and alive)
        status["heartbeat_age_s"] = age
        found.append(status)
    return found
