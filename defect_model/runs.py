"""Run directories: the files a training run writes, its status, the registry and the active model.

The dashboard and the CLI read and write exactly these files.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "cancelled")


def runs_root() -> Path:
    """Where runs live: $DEFECT_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("DEFECT_RUNS_DIR", "runs"))


def data_root() -> Path:
    """Where the demo dataset, uploads and the inspection database live: $DEFECT_DATA_DIR, else ./data."""
    return Path(os.environ.get("DEFECT_DATA_DIR", "data"))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


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
    def config(self) -> Path:
        return self.path / "config.yaml"

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

    def exists(self) -> bool:
        return self.config.is_file()

    # -- status ---------------------------------------------------------
    def write_status(self, state: str, **fields) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        current = read_json(self.status_file, {}) or {}
        current.update(fields)
        current.update({"state": state, "updated": now_iso()})
        if state != "failed":
            current.pop("error", None)
        write_json_atomic(self.status_file, current)

    def status(self) -> dict:
        """The recorded status; a 'running' run whose process has died is reported as failed."""
        current = read_json(self.status_file, None) or {"state": "queued" if self.exists() else "failed"}
        if current.get("state") in ("queued", "running") and current.get("pid") \
                and not process_alive(current.get("pid")):
            current = dict(current, state="failed",
                           error="The training process stopped without finishing (killed or crashed). "
                                 "Resume the run to continue from its last checkpoint.")
        return current

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
        if not self.events.is_file():
            return []
        events = []
        with self.events.open() as handle:
            for line in handle:
                line = line.strip()
                if line:
                    try:
                        events.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line still being written
        return events

    def read_metrics(self) -> dict | None:
        return read_json(self.metrics, None)


def process_alive(pid) -> bool:
    if not pid:
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


def new_run_dir(root: str | Path | None = None, backbone: str = "run") -> RunDir:
    root = Path(root) if root is not None else runs_root()
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{backbone}-{secrets.token_hex(2)}"
    path.mkdir()
    return RunDir(path)


def list_runs(root: str | Path | None = None) -> list[RunDir]:
    """Runs, newest first."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and (p / "config.yaml").is_file()]
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


def resolve_run(ref: str | Path, root: str | Path | None = None) -> RunDir:
    """A run given by its directory or its id under the runs root."""
    path = Path(ref)
    if not path.is_dir():
        path = (Path(root) if root is not None else runs_root()) / str(ref)
    run = RunDir(path)
    if not run.exists():
        raise FileNotFoundError(f"{ref}: no run there (no config.yaml). List runs with `ls {runs_root()}`.")
    return run


def active_file(root: str | Path | None = None) -> Path:
    return (Path(root) if root is not None else runs_root()) / "active.json"


def get_active(root: str | Path | None = None) -> dict | None:
    return read_json(active_file(root), None)


class ActivationRefused(ValueError):
    """A run that must not become the active model without an explicit, logged override."""


def activation_problems(run: RunDir) -> list[str]:
    """Why a run should not inspect parts: unfinished, no checkpoint, or a collapsed model."""
    from .config import TrainConfig
    from .quality import assess

    if not run.checkpoint.is_file():
        return ["it has no checkpoint yet"]
    metrics = run.read_metrics()
    if not metrics:
        return ["it has no validation metrics"]
    return assess(metrics, TrainConfig.from_yaml(run.config).good_classes).problems


def set_active(run: RunDir, by: str = "", override_reason: str = "", root: str | Path | None = None) -> dict:
    """Make `run` the model inspections use. A flagged run needs `override_reason`; every change is logged."""
    problems = activation_problems(run)
    if problems and not run.checkpoint.is_file():
        raise ActivationRefused(f"{run.run_id} cannot be the active model: {'; '.join(problems)}.")
    if problems and not override_reason.strip():
        raise ActivationRefused(f"{run.run_id} is flagged: {'; '.join(problems)}. It would pass defective parts. "
                                "Give an override reason to activate it anyway (it is logged).")
    record = {"run_id": run.run_id, "path": str(run.path), "by": by, "at": now_iso()}
    if problems:
        record.update(override=override_reason.strip(), problems=problems)
    path = active_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    with (path.parent / "activations.jsonl").open("a") as log:
        log.write(json.dumps(record) + "\n")
    return record


def activation_log(root: str | Path | None = None) -> list[dict]:
    path = active_file(root).parent / "activations.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
