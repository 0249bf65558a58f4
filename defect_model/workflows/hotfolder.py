"""The hot folder: photos a line camera writes into a folder, inspected with the active model as they arrive.

    python -m defect_model watch IN_DIR --done DONE_DIR [--rejects DIR] [--results CSV]

A photo has arrived when it is completely written: its size and modification time have not changed for
`settle_s` seconds, or a `<name>.ready` marker stands beside it (for writers that pause mid-file). Names
that say a copy is in progress (`.tmp`, `.part`, ...) and hidden files are left alone. Only the top level
of IN_DIR is watched.

Each photo goes through the Inspect page's own path (`inspection.inspect_batch`: checks, Grad-CAM, a stored
copy, one log row) with the active model's served checkpoint and good classes, is logged with source
"hot folder", gets one line in the results CSV (written, flushed and fsynced before the photo moves), and
is moved to DONE_DIR, to REJECTS for a reject verdict when given, or, unreadable, to the errors folder
beside a `<name>.error.txt` holding the message.

Restart safety. A batch goes: journal -> claim -> inspect and log -> CSV line -> move.
  - journal: `.hotfolder/journal.json` records the log's newest row id before the batch (a high-water mark);
  - claim: each photo is renamed into `.hotfolder/processing/` (atomic, same folder tree);
  - the log row is the commit point: once it is written the photo counts as inspected.
On start, a photo still in processing for which a hot-folder row logged after the mark has the same name
and the same bytes was inspected before the crash: its CSV line is written if the CSV's tail lacks that
inspection id, and it is moved; any other photo in processing never reached the log and is inspected now.
Why this and not the alternatives: a journal of finished photos written apart from the log leaves a gap
between the two writes (the log is the only record written atomically with the verdict), and looking the
photo up by its sha256 alone would refuse a photo that rightly arrives twice (a part shot again, a file
copied back to be inspected with a new model); the mark limits "already inspected" to this claim.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from defect_model.access.audit import connect
from defect_model.workflows.inspection import FileResult, InspectionSettings, good_classes_of, inspect_batch
from defect_model.workflows.operating_point import OperatingPoint, load_point
from defect_model.runs.folders import RunDir, file_sha256, get_active, now_iso, process_alive, process_start_time, read_json, served_checkpoint, write_json_atomic
from defect_model.runs.store import InspectionStore, sha256_bytes
from defect_model.common.places import default_db_path
from defect_model.photos.uploads import Upload
from defect_model.serve.verdicts import DEFAULT_THRESHOLD

HOT_FOLDER = "hot folder"  # the source, and the inspector, of every row the watcher logs
STATE_DIR = ".hotfolder"
READY_SUFFIX = ".ready"
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".swp", "~")
ERROR_NOTE_SUFFIX = ".error.txt"
CSV_COLUMNS = ("time", "file", "verdict", "class", "confidence", "model", "inspection_id", "error")
DEFAULT_SETTLE_S = 1.0
DEFAULT_POLL_S = 0.2
DEFAULT_BATCH_SIZE = 32
HEARTBEAT_S = 2.0
RESULTS_TAIL_BYTES = 1 << 20  # recovery looks for a crashed batch's lines in this much of the CSV's end


class WatchError(RuntimeError):
    """The watcher cannot start or go on; the message names the file or folder and says what to do."""


# -- folders ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Folders:
    incoming: Path
    done: Path
    rejects: Path | None
    errors: Path
    results: Path

    @property
    def state(self) -> Path:
        return self.incoming / STATE_DIR

    @property
    def processing(self) -> Path:
        return self.state / "processing"

    @property
    def journal(self) -> Path:
        return self.state / "journal.json"

    @property
    def lock(self) -> Path:
        return self.state / "lock"


def make_folders(incoming: str | Path, done: str | Path, rejects: str | Path | None = None,
                 errors: str | Path | None = None, results: str | Path | None = None) -> Folders:
    """The watcher's folders, created where missing; errors default to DONE/errors, results to DONE/results.csv."""
    incoming = Path(incoming).resolve()
    if not incoming.is_dir():
        raise WatchError(f"{incoming}: no such folder to watch. Create it, or give the folder the camera writes "
                         "into.")
    done = Path(done).resolve()
    folders = Folders(incoming=incoming, done=done, rejects=Path(rejects).resolve() if rejects else None,
                      errors=Path(errors).resolve() if errors else done / "errors",
                      results=Path(results).resolve() if results else done / "results.csv")
    for option, folder in (("--done", folders.done), ("--rejects", folders.rejects), ("--errors", folders.errors)):
        if folder == incoming:
            raise WatchError(f"{folder}: the {option} folder is the watched folder, so every photo would arrive "
                             f"again. Give another {option} folder.")
    for folder in (folders.done, folders.rejects, folders.errors, folders.processing, folders.results.parent):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WatchError(f"{folder}: the folder cannot be created ({exc.strerror}). Make its parent "
                             "writable for the watcher's user or choose another folder.") from None
    return folders


def lock_folder(folders: Folders):
    """An open, exclusively locked file: one watcher per folder (two would claim the same photos)."""
    handle = open(folders.lock, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise WatchError(f"{folders.incoming}: another watcher (pid {owner}) is already watching this folder. "
                         f"Stop it first (kill -TERM {owner}); two watchers would inspect the same photos.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


# -- arrivals ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sighting:
    size: int
    mtime_ns: int
    since: float  # monotonic time this size and mtime were first seen


def is_candidate(name: str) -> bool:
    """A file that may be a photo: not hidden, not a marker, not a copy in progress."""
    lowered = name.lower()
    return not (name.startswith(".") or lowered.endswith(READY_SUFFIX) or lowered.endswith(IN_PROGRESS_SUFFIXES))


def scan(folders: Folders) -> tuple[dict[str, os.stat_result], set[str]]:
    """(the candidate files at the top of the watched folder, by name, with their stat; the names of markers)."""
    found, markers = {}, set()
    with os.scandir(folders.incoming) as entries:
        for entry in entries:
            if entry.name.lower().endswith(READY_SUFFIX):
                markers.add(entry.name)
            if not is_candidate(entry.name) or Path(entry.path) == folders.results:
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    found[entry.name] = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # gone between listing and stat
                continue
    return found, markers


def complete_photos(folders: Folders, sightings: dict[str, Sighting], now: float,
                    settle_s: float) -> tuple[list[str], dict[str, Sighting]]:
    """(names completely written, oldest first; the sightings to pass to the next call).

    Complete: a `<name>.ready` marker is there, or the size and mtime have not changed for `settle_s`."""
    present, markers = scan(folders)
    updated: dict[str, Sighting] = {}
    ready = []
    for name, stat in present.items():
        before = sightings.get(name)
        if before is not None and (before.size, before.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            updated[name] = before
        else:
            updated[name] = Sighting(stat.st_size, stat.st_mtime_ns, now)
        if name + READY_SUFFIX in markers or now - updated[name].since >= settle_s:
            ready.append(name)
    ready.sort(key=lambda name: (present[name].st_mtime_ns, name))
    return ready, updated


# -- the journal and the claim ---------------------------------------------------------------
def write_journal(folders: Folders, log_before: int) -> None:
    """Record the log's newest row id before a batch is claimed (see the module's docstring)."""
    write_json_atomic(folders.journal, {"log_before": int(log_before), "written": now_iso()})
    fsync_folder(folders.state)


def read_journal(folders: Folders) -> int:
    """The high-water mark of the last batch; 0 without a journal (then any hot-folder row may match)."""
    return int((read_json(folders.journal, {}) or {}).get("log_before", 0))


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in `folder` survive a power cut (the folder's entry, not only the data)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def claim(folders: Folders, names: list[str]) -> list[str]:
    """Move photos into processing; returns those claimed (a name still in processing waits for the next batch)."""
    claimed = []
    for name in names:
        target = folders.processing / name
        if target.exists():
            continue
        # The marker goes first: a crash between the two leaves a photo that settles, never a stale marker
        # that would let a later file of the same name be taken half-written.
        (folders.incoming / (name + READY_SUFFIX)).unlink(missing_ok=True)
        try:
            os.rename(folders.incoming / name, target)
        except FileNotFoundError:
            continue
        claimed.append(name)
    if claimed:
        fsync_folder(folders.processing)
    return claimed


def read_claimed(folders: Folders, names: list[str]) -> list[Upload]:
    uploads = []
    for name in names:
        try:
            uploads.append(Upload(name, (folders.processing / name).read_bytes()))
        except OSError as exc:
            uploads.append(Upload(name, b"", f"{name}: the file cannot be read ({exc.strerror}). Check the camera's "
                                             "file permissions and write the photo again."))
    return uploads


# -- the active model ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActiveModel:
    run_id: str
    sha256: str
    checkpoint: Path
    predictor: object  # inference.Predictor
    good_classes: list[str] = field(default_factory=list)
    point: OperatingPoint | None = None  # the operating point saved with the run (Review page), if any


def active_sha256(runs_dir: str | Path | None = None) -> str:
    return (get_active(runs_dir) or {}).get("sha256", "")


def load_active_model(runs_dir: str | Path | None = None, threads: int | None = None) -> ActiveModel:
    """The active model's served checkpoint, loaded; WatchError when there is none."""
    from defect_model.runs.folders import active_file

    record = get_active(runs_dir)
    checkpoint = served_checkpoint(record)
    if checkpoint is None:
        where = active_file(runs_dir)
        if record:
            raise WatchError(f"{where}: the active model {record.get('run_id')} has no checkpoint any more. "
                             "Make another model active on the Models page, then start the watcher again.")
        raise WatchError(f"{where}: no model is active, so photos cannot be inspected. An admin makes one active "
                         "on the Models page (set DEFECT_RUNS_DIR if the runs live elsewhere); then start the "
                         "watcher again.")
    from defect_model.serve.inference import Predictor  # torch loads here, once there is a model to load

    predictor = Predictor.from_checkpoint(checkpoint, threads=threads)
    warm_up(predictor)
    run = RunDir(Path(record.get("path", "")))
    return ActiveModel(record["run_id"], record.get("sha256", ""), checkpoint, predictor,
                       good_classes_of(run, predictor), load_point(run))


def warm_up(predictor) -> None:
    """Import the heatmap code and run one blank photo through the model now, so the first photo of the line
    does not wait for it (seconds on two cores)."""
    import numpy as np

    from defect_model.serve.explain import heatmaps

    size = predictor.preprocessing.image_size
    heatmaps(predictor, [np.full((size, size, 3), 128, dtype=np.uint8)])


def settings_for(model: ActiveModel, threshold: float | None) -> InspectionSettings:
    """`threshold` None: the model's saved operating point, else the Inspect page's default threshold."""
    good_threshold = None
    if threshold is None and model.point is not None:
        threshold, good_threshold = model.point.defect_threshold, model.point.passes_from
    return InspectionSettings(run_id=model.run_id, good_classes=model.good_classes,
                              threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                              good_threshold=good_threshold, inspector=HOT_FOLDER, model_sha256=model.sha256)


# -- the results CSV -------------------------------------------------------------------------------
def prepare_results(path: Path) -> None:
    """Create the CSV with its header; cut a line torn by a crash mid-write, so every line is whole."""
    with path.open("ab+") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - RESULTS_TAIL_BYTES))
        tail = handle.read()
        if tail and not tail.endswith(b"\n"):
            size = size - len(tail) + tail.rfind(b"\n") + 1
            handle.truncate(size)
            os.fsync(handle.fileno())
    if size == 0:
        append_result(path, list(CSV_COLUMNS))


def csv_line(row: dict) -> list[str]:
    """One CSV line from a logged inspection (a row of the log, or a FileResult's fields in its names)."""
    confidence = row.get("confidence")
    return [row["time"], row["file_name"], row["verdict"], row.get("predicted") or "",
            "" if confidence is None else f"{float(confidence):.4f}", row.get("run_id") or "",
            str(row.get("id") or ""), " ".join(str(row.get("error") or "").split())]


def append_result(path: Path, line: list[str]) -> None:
    """Append one line and force it to disk before the photo moves (a PLC may read it at once)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(line)
    with path.open("a", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def ids_in_results(path: Path) -> set[str]:
    """Inspection ids of the lines near the CSV's end (where a crashed batch's lines are)."""
    try:
        with path.open("rb") as handle:
            start = max(0, handle.seek(0, os.SEEK_END) - RESULTS_TAIL_BYTES)
            handle.seek(start)
            tail = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return set()
    lines = tail.splitlines()[1:] if start else tail.splitlines()  # the first line of a tail may be cut
    index = CSV_COLUMNS.index("inspection_id")
    return {fields[index] for fields in csv.reader(lines) if len(fields) > index and fields[index]}


def result_row(result: FileResult) -> dict:
    """A FileResult in the log's column names (what csv_line reads)."""
    return {"time": result.time, "file_name": result.name, "verdict": result.verdict, "predicted": result.predicted,
            "confidence": result.confidence, "run_id": result.model_id, "id": result.inspection_id,
            "error": result.error}


# -- moving on -------------------------------------------------------------------------------------
def destination(folders: Folders, verdict: str) -> Path:
    if verdict == "error":
        return folders.errors
    if verdict == "reject" and folders.rejects is not None:
        return folders.rejects
    return folders.done


def free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `stem-2.ext`, `stem-3.ext`, ... when a photo of that name is there already."""
    target = folder / name
    number = 2
    while target.exists() or (folder / (target.name + ERROR_NOTE_SUFFIX)).exists():
        target = folder / f"{Path(name).stem}-{number}{Path(name).suffix}"
        number += 1
    return target


def move_photo(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, target)  # another file system: copy, then delete


def finish(folders: Folders, row: dict, written_ids: set[str] | None = None) -> Path:
    """The last steps for one logged photo in processing: its CSV line (unless written already), its error note,
    the move. Returns where the photo went."""
    if written_ids is None or str(row["id"]) not in written_ids:
        append_result(folders.results, csv_line(row))
    target = free_name(destination(folders, row["verdict"]), row["file_name"])
    move_photo(folders.processing / row["file_name"], target)
    if row["verdict"] == "error":  # after the move: a crash between leaves the message in the CSV and the log
        target.with_name(target.name + ERROR_NOTE_SUFFIX).write_text(str(row.get("error") or "") + "\n")
    return target


# -- recovery after a crash -----------------------------------------------------------------------
def recover(folders: Folders, store: InspectionStore) -> tuple[list[dict], list[str]]:
    """Settle the photos a crash left in processing: (rows of those already logged, now written and moved;
    names never logged, to inspect now)."""
    waiting = sorted(p.name for p in folders.processing.iterdir() if p.is_file())
    if not waiting:
        return [], []
    logged = {(row["file_name"], row["sha256"]): row
              for row in store.inspections_after(read_journal(folders), HOT_FOLDER)}  # the latest row wins
    written = ids_in_results(folders.results)
    settled, again = [], []
    for name in waiting:
        row = logged.get((name, file_sha256(folders.processing / name)))
        if row is None:
            again.append(name)
            continue
        finish(folders, row, written)
        settled.append(row)
    return settled, again


# -- the heartbeat ---------------------------------------------------------------------------------
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


# -- the loop ----------------------------------------------------------------------------------------
@dataclass
class WatchOptions:
    settle_s: float = DEFAULT_SETTLE_S
    poll_s: float = DEFAULT_POLL_S
    batch_size: int = DEFAULT_BATCH_SIZE
    threshold: float | None = None  # None: the model's operating point, else DEFAULT_THRESHOLD
    threads: int | None = None
    runs_dir: str | Path | None = None
    status_dir: str | Path | None = None


@dataclass
class WatchState:
    """What the status file shows; updated as photos are finished."""

    folders: Folders
    model: ActiveModel
    started: str = field(default_factory=now_iso)
    count: int = 0
    errors: int = 0
    last_photo: str = ""
    last_verdict: str = ""
    last_time: str = ""

    def record(self, row: dict) -> None:
        self.count += 1
        self.errors += row["verdict"] == "error"
        self.last_photo, self.last_verdict, self.last_time = row["file_name"], row["verdict"], row["time"]

    def as_dict(self, state: str, message: str = "") -> dict:
        return {"state": state, "message": message, "pid": os.getpid(), "pid_started": process_start_time(os.getpid()),
                "started": self.started, "heartbeat": now_iso(), "heartbeat_unix": time.time(),
                "incoming": str(self.folders.incoming), "done": str(self.folders.done),
                "rejects": str(self.folders.rejects or ""), "errors_folder": str(self.folders.errors),
                "results": str(self.folders.results), "model": self.model.run_id,
                "model_sha256": self.model.sha256, "count": self.count, "errors": self.errors,
                "last_photo": self.last_photo, "last_verdict": self.last_verdict, "last_time": self.last_time}


def inspect_and_finish(folders: Folders, names: list[str], model: ActiveModel, threshold: float,
                       store: InspectionStore) -> tuple[list[dict], str]:
    """Inspect and log claimed photos in one batch, then write and move each: (rows finished, the log error if
    some could not be logged; those stay in processing and are inspected at the next start)."""
    uploads = read_claimed(folders, names)
    settings = settings_for(model, threshold)
    try:
        results = inspect_batch(model.predictor, uploads, settings, store)
    except Exception as exc:  # as the Inspect page's queue does: log them as errors rather than retry forever
        results = [failed_result(upload, settings, store, exc) for upload in uploads]
    finished, log_error = [], ""
    for result in results:
        if result.inspection_id is None:
            log_error = log_error or result.log_error or f"{result.name}: not logged"
            continue
        row = result_row(result)
        finish(folders, row)
        finished.append(row)
    return finished, log_error


def check_options(options: WatchOptions) -> None:
    if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
        raise WatchError(f"threshold {options.threshold:g} is not a probability. Give --threshold between 0 and 1 "
                         f"(the Inspect page's default is {DEFAULT_THRESHOLD:g}).")
    if options.batch_size < 1 or options.settle_s < 0 or options.poll_s <= 0:
        raise WatchError(f"batch size {options.batch_size}, settle {options.settle_s:g} s, poll {options.poll_s:g} s: "
                         "give a batch size of at least 1, a settle time of 0 s or more and a poll above 0 s.")


def failed_result(upload: Upload, settings: InspectionSettings, store: InspectionStore, exc: Exception) -> FileResult:
    result = FileResult(index=0, name=upload.name, sha256=sha256_bytes(upload.data), time=now_iso(),
                        model_id=settings.run_id, threshold=settings.threshold, verdict="error",
                        error=f"{upload.name}: inspection failed ({type(exc).__name__}: {exc}). Copy it into the "
                              "folder again; tell the engineer if it repeats.")
    try:
        result.inspection_id = store.log_inspection(
            file_name=result.name, sha256=result.sha256, photo_path="", verdict="error", inspector=settings.inspector,
            run_id=settings.run_id, threshold=settings.threshold, error=result.error, time=result.time,
            model_sha256=settings.model_sha256)
    except Exception as log_exc:
        result.log_error = f"{upload.name}: not logged ({type(log_exc).__name__}: {log_exc})"
    return result


def watch(folders: Folders, store: InspectionStore, options: WatchOptions, stop: threading.Event,
          on_photo: Callable[[dict], None] | None = None, model: ActiveModel | None = None) -> WatchState:
    """Inspect photos as they arrive until `stop` is set (the batch in progress is finished first).

    Raises WatchError when no model is active, the folder is watched already, or the log cannot be written."""
    check_options(options)
    lock = lock_folder(folders)
    # SQLite folds the WAL into the database, with an fsync, whenever its last connection closes; the store
    # opens one per call, so without this idle one held open every logged photo paid for that (9 ms a row
    # against 1 ms, measured on the 2-core machine). It counts once it has read the database; idle, it holds
    # no lock.
    keep_open = connect(store.path)
    keep_open.execute("SELECT 1 FROM inspections LIMIT 1").fetchall()
    try:
        model = model or load_active_model(options.runs_dir, options.threads)
        state = WatchState(folders, model)
        heartbeat = status_file(folders, Path(options.status_dir) if options.status_dir else status_dir(store.path))
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
        prepare_results(folders.results)
        settled, _ = recover(folders, store)
        for row in settled:
            state.record(row)
            if on_photo:
                on_photo(row)
        write_json_atomic(heartbeat, state.as_dict("running"))
        try:
            _loop(folders, store, options, stop, state, heartbeat, on_photo)
        except WatchError as exc:
            write_json_atomic(heartbeat, state.as_dict("stopped", str(exc)))
            raise
        write_json_atomic(heartbeat, state.as_dict("stopped", "stopped on request"))
        return state
    finally:
        keep_open.close()
        lock.close()


def _loop(folders, store, options, stop, state, heartbeat, on_photo) -> None:
    sightings: dict[str, Sighting] = {}
    beat = time.monotonic()
    while not stop.is_set():
        if active_sha256(options.runs_dir) not in ("", state.model.sha256):
            state.model = _reload(options)
        # Photos a crash or a failed log write left in processing come first, then the new arrivals.
        waiting = sorted(p.name for p in folders.processing.iterdir() if p.is_file())
        ready, sightings = complete_photos(folders, sightings, time.monotonic(), options.settle_s)
        batch = waiting[:options.batch_size]
        if batch or ready:
            write_journal(folders, store.last_inspection_id())  # before the claim: see the module's docstring
            batch = batch or claim(folders, ready[:options.batch_size])
        if batch:
            finished, log_error = inspect_and_finish(folders, batch, state.model, options.threshold, store)
            for row in finished:
                state.record(row)
                if on_photo:
                    on_photo(row)
            write_json_atomic(heartbeat, state.as_dict("running"))
            beat = time.monotonic()
            if log_error:
                raise WatchError(f"{store.path}: the inspection log cannot be written ({log_error}). The photos not "
                                 f"logged stay in {folders.processing} and are inspected when the watcher starts "
                                 "again; make the database writable first.")
            continue  # more may be ready: no sleep in a burst
        if time.monotonic() - beat >= HEARTBEAT_S:
            write_json_atomic(heartbeat, state.as_dict("running"))
            beat = time.monotonic()
        stop.wait(options.poll_s)


def _reload(options: WatchOptions) -> ActiveModel:
    try:
        return load_active_model(options.runs_dir, options.threads)
    except WatchError:
        raise
    except Exception as exc:  # CheckpointError and the loaders' other failures
        raise WatchError(f"the newly active model cannot be loaded ({type(exc).__name__}: {exc}). The watcher "
                         "stopped rather than go on with the old one; photos wait in the folder. Make a working "
                         "model active, then start the watcher again.") from None
