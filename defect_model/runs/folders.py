"""Run directories: the files a training run writes, its status, the registry and the active model.

The dashboard and the CLI read and write exactly these files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from defect_model.runs import events as event_stream
from defect_model.common.config import TrainConfig
from defect_model.common.durable import write_atomic
from defect_model.common.model_store import ACTIVE_NAME, FolderStore, model_store
from defect_model.common.model_store import file_sha256  # noqa: F401  (its home for the run folder's readers)
from defect_model.common.places import SERVED_DIR, runs_root
from defect_model.common.quality import ModelQuality, assess

STATES = ("queued", "running", "done", "failed", "cancelled")
# A run folder whose settings are this old without a status was never started by any process.
NEVER_STARTED_S = 60
RUN_LABEL_CHARS = 24
# A run trained on another machine (a worker's) is alive while its heartbeat is fresh: its training process writes
# it every HEARTBEAT_S, and so does the worker while it waits on that process; a pid means nothing off its own host.
# The limit allows for a shared folder's attribute caching (NFS: up to 60 s) and clocks a few seconds apart; a run
# quiet for longer is called dead (failed, resumable).
HEARTBEAT_S = 10
REMOTE_STALE_S = 120


def this_host() -> str:
    return socket.gethostname()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data) -> None:
    """Replace `path` with `data` as JSON, whole or not at all, also across a crash or a power cut (the status,
    the metrics: an empty one would lose what a run did)."""
    write_atomic(path, lambda handle: json.dump(data, handle, indent=2))


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def request(self) -> Path:
        """What the user asked for (written once by whoever starts the run)."""
        return self.path / "request.yaml"

    @property
    def config(self) -> Path:
        """The settings the run trains with, resolved by the engine (written once, when training starts)."""
        return self.path / "config.yaml"

    @property
    def corrections(self) -> Path:
        """The confirmed label corrections the run was asked to apply (path,label), when it was."""
        return self.path / "corrections.csv"

    @property
    def requested_split(self) -> Path:
        """A copy of the split CSV the run was asked to train with (a retrain's parent's split)."""
        return self.path / "request-split.csv"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def best_checkpoint(self) -> Path:
        """The checkpoint of the epoch with the best validation macro-F1."""
        return self.path / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def val_predictions(self) -> Path:
        return self.path / "val_predictions.csv"

    @property
    def split(self) -> Path:
        return self.path / "split.csv"

    @property
    def data_report(self) -> Path:
        return self.path / "data_report.json"

    @property
    def status_file(self) -> Path:
        return self.path / "status"

    @property
    def cancel_file(self) -> Path:
        return self.path / "cancel"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def heartbeat_file(self) -> Path:
        """When the run's training process was last seen alive, by itself or by the worker that started it."""
        return self.path / "heartbeat"

    def exists(self) -> bool:
        return self.config.is_file() or self.request.is_file()

    def settings(self) -> TrainConfig:
        """The run's settings: as the engine resolved them, or as requested while it has not started yet."""
        return TrainConfig.from_yaml(self.config if self.config.is_file() else self.request, strict=False)

    def quality(self) -> ModelQuality | None:
        """Accuracy beside per-class recall and the defect miss rate; None before the first validation."""
        metrics = self.read_metrics()
        return assess(metrics, self.settings().good_classes) if metrics else None

    # -- status ---------------------------------------------------------
    def write_status(self, state: str, **fields) -> None:
        """Update the status file; a pid is recorded with its host (it means nothing on another machine)."""
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        current = read_json(self.status_file, {}) or {}
        if fields.get("pid"):
            fields.setdefault("host", this_host())
        current.update(fields)
        current.update({"state": state, "updated": now_iso()})
        if state != "failed":
            current.pop("error", None)
            current.pop("interrupted", None)
        write_json_atomic(self.status_file, current)

    def status(self) -> dict:
        """The recorded status; a 'running' run whose process has died is reported as failed and `interrupted`,
        and the file says so from then on (the first reader to see the dead pid writes it)."""
        current = read_json(self.status_file, None) or self._status_without_file()
        if current.get("state") in ("queued", "running") and current.get("pid"):
            error = self._why_dead(current)
            if error:
                current = dict(current, state="failed", interrupted=True, error=error)
                self._persist_interrupted(current)
        return current

    def _why_dead(self, status: dict) -> str | None:
        """Why a run recorded as queued or running with a process is dead, or None while it lives. Its pid is
        checked on its own host only (a record without a host is from this one); a run on another machine lives
        while its worker's heartbeat is newer than REMOTE_STALE_S."""
        host = status.get("host")
        if not host or host == this_host():
            if process_alive(status.get("pid"), status.get("pid_started")):
                return None
            return ("The training process stopped without finishing (killed or crashed). "
                    "Resume the run to continue from its last checkpoint.")
        quiet = self.seconds_since_heartbeat()
        if quiet is not None and quiet <= REMOTE_STALE_S:
            return None
        return (f"No sign of life from the training worker on {host} for more than {REMOTE_STALE_S} s (its "
                f"heartbeat in {self.heartbeat_file} stopped): the worker or its machine stopped. Resume the run to "
                "continue from its last checkpoint.")

    def beat(self) -> None:
        """Record that the run's training process lives (every HEARTBEAT_S, see `beating`)."""
        write_atomic(self.heartbeat_file, lambda handle: handle.write(f"{time.time():.3f} {this_host()}\n"))

    @contextmanager
    def beating(self, every: float = HEARTBEAT_S):
        """Beat the heartbeat every `every` seconds from a thread while the block runs (the training process does,
        whoever started it: a dashboard on another machine sharing the runs folder judges the run by it)."""
        stop = threading.Event()

        def beat() -> None:
            try:
                self.beat()
            except OSError:
                pass  # a full disk or a lost share: the run's own writes report it

        def loop() -> None:
            while not stop.wait(every):
                beat()

        beat()

        thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def seconds_since_heartbeat(self) -> float | None:
        """Seconds since the newest sign of life: the worker's heartbeat, the status or the events written; None
        when there is none."""
        times = []
        try:
            times.append(float(self.heartbeat_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
        for path in (self.status_file, self.events):
            try:
                times.append(path.stat().st_mtime)
            except OSError:
                pass
        return time.time() - max(times) if times else None

    def _persist_interrupted(self, seen: dict) -> None:
        """Write what a reader found: the dead process's run as failed (interrupted), unless the file changed
        meanwhile (a resume started a new process); a folder this reader may not write is left as it is."""
        recorded = read_json(self.status_file, None)
        if not recorded or recorded.get("pid") != seen.get("pid") or recorded.get("state") not in ("queued", "running"):
            return
        try:
            self.write_status("failed", error=seen["error"], interrupted=True)
        except OSError:
            pass

    def _status_without_file(self) -> dict:
        """A run folder without a status: being created (queued) for a moment, else a job that never started."""
        settings = self.config if self.config.is_file() else self.request
        try:
            age = time.time() - settings.stat().st_mtime
        except OSError:
            return {"state": "failed", "error": f"{self.path}: no request.yaml or config.yaml; not a run."}
        if age < NEVER_STARTED_S:
            return {"state": "queued"}
        return {"state": "failed", "error": "No training process ever started for this run (it has settings but no "
                                            "status). Resume it to train, or delete it."}

    def mark_dead_run_failed(self) -> bool:
        """Persist a detected dead process as failed; returns True when it did."""
        recorded = read_json(self.status_file, {}) or {}
        live = self.status()
        if recorded.get("state") in ("queued", "running") and live["state"] == "failed":
            self.write_status("failed", error=live["error"])
            return True
        return False

    def request_cancel(self) -> None:
        self.cancel_file.write_text(now_iso())

    def cancel_requested(self) -> bool:
        return self.cancel_file.exists()

    # -- events ---------------------------------------------------------
    def read_events(self) -> list[dict]:
        return event_stream.read_events(self.events)

    def training_seconds(self) -> float | None:
        return event_stream.training_seconds(self.read_events())

    def read_metrics(self) -> dict | None:
        return read_json(self.metrics, None)


def process_start_time(pid) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None where it cannot be read."""
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid, started: str | None = None) -> bool:
    """Whether the process `pid` lives (not a zombie); with `started`, also that it is the same process, not a
    later one that was given the same pid."""
    if not pid:
        return False
    if started is not None and process_start_time(pid) not in (None, started):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state not in ("Z", "X")  # a zombie has finished
    return True


def new_run_dir(root: str | Path | None = None, label: str = "run") -> RunDir:
    """A new, empty run folder `<time>-<label>-<4 hex>`; `label` (e.g. the dataset's folder name) is reduced to
    letters, digits, '-' and '_'."""
    root = Path(root) if root is not None else runs_root()
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-_")[:RUN_LABEL_CHARS] or "run"
    path = root / f"{stamp}-{slug}-{secrets.token_hex(2)}"
    path.mkdir()
    return RunDir(path)


def list_runs(root: str | Path | None = None) -> list[RunDir]:
    """Runs, newest first."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and RunDir(p).exists()]
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


def resolve_run(ref: str | Path, root: str | Path | None = None) -> RunDir:
    """A run given by its directory or its id under the runs root."""
    path = Path(ref)
    if not path.is_dir():
        path = (Path(root) if root is not None else runs_root()) / str(ref)
    run = RunDir(path)
    if not run.exists():
        raise FileNotFoundError(f"{ref}: no run there (no request.yaml or config.yaml). List runs with `ls {runs_root()}`.")
    return run


def active_file(root: str | Path | None = None) -> Path:
    """The active-model record's file in the runs root (`root`); where the record really is, with a model store
    set, says `model_store(root).active_location()`."""
    return (Path(root) if root is not None else runs_root()) / ACTIVE_NAME


def get_active(root: str | Path | None = None) -> dict | None:
    """The active-model record, from the model store (DEFECT_MODEL_STORE; unset: `root`, default the runs root)."""
    return model_store(root).read_active()


def pin_checkpoint(checkpoint: Path, folder: Path) -> tuple[Path, str]:
    """A read-only copy of `checkpoint` named by its hash in `folder` (a folder named `served`, so that every load
    of it is checked against its name): what Inspect serves, whatever the run does later (a resume or a retrain
    rewrites the run's own checkpoint.pt, never this copy)."""
    folder = Path(folder)
    if folder.name != SERVED_DIR:
        raise ValueError(f"{folder}: a pinned checkpoint lives in a folder named {SERVED_DIR!r}")
    digest, served = FolderStore(folder.parent).put_checkpoint(checkpoint)
    return Path(served), digest


def served_checkpoint(record: dict | None, root: str | Path | None = None) -> Path | None:
    """A local path of the pinned checkpoint an active-model record points at: the store's copy of its sha256
    (fetched into the local cache for an S3 store and checked against the sha256 there: ModelStoreError when it
    does not match), else the record's own `served` path when it bears that sha256; None when neither is there. Only
    an older record, without a sha256, falls back to the run's own checkpoint: serving that under a record's sha256
    would log inspections under a hash the weights may no longer have."""
    if not record:
        return None
    digest = str(record.get("sha256") or "")
    if digest:
        served = model_store(root).served_path(digest)
        if served is not None:
            return served
        named = Path(str(record.get("served") or ""))
        return named if named.name == f"{digest}.pt" and named.is_file() else None
    if record.get("served") and Path(record["served"]).is_file():
        return Path(record["served"])
    fallback = Path(record.get("path", "")) / "checkpoint.pt"
    return fallback if record.get("path") and fallback.is_file() else None
