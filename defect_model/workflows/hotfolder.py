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

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from defect_model.photos.uploads import Upload
from defect_model.common.model_store import ActiveWatch, ModelStoreError, model_store
from defect_model.runs.folders import (RunDir, file_sha256, get_active, now_iso, process_start_time,
                                       served_checkpoint)
from defect_model.runs.store import InspectionStore, sha256_bytes
from defect_model.serve.verdicts import DEFAULT_THRESHOLD
from defect_model.workflows.hotfolder_intake import (ERROR_NOTE_SUFFIX, Folders, Sighting, WatchError, claim,
                                                     complete_photos, destination, free_name, lock_folder, move_photo,
                                                     read_claimed, read_journal, write_journal)
from defect_model.workflows.hotfolder_results import (append_result, csv_line, ids_in_results, line_words,
                                                      prepare_results, result_row)
from defect_model.workflows.hotfolder_status import publish
from defect_model.workflows.inspection import FileResult, InspectionSettings, good_classes_of, inspect_batch
from defect_model.workflows.operating_point import OperatingPoint, load_point

HOT_FOLDER = "hot folder"  # the source, and the inspector, of every row the watcher logs
DEFAULT_SETTLE_S = 1.0
DEFAULT_POLL_S = 0.2
DEFAULT_BATCH_SIZE = 32
HEARTBEAT_S = 2.0


# -- the active model ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActiveModel:
    run_id: str
    sha256: str
    checkpoint: Path
    predictor: object  # inference.Predictor
    good_classes: list[str] = field(default_factory=list)
    point: OperatingPoint | None = None  # the operating point saved with the run (Review page), if any


def load_active_model(runs_dir: str | Path | None = None, threads: int | None = None) -> ActiveModel:
    """The active model's served checkpoint, loaded and checked against its sha256; WatchError when there is none
    or it is not the one made active."""
    record = get_active(runs_dir)
    try:
        checkpoint = served_checkpoint(record, runs_dir)
    except ModelStoreError as exc:  # the message names the file and what to do
        raise WatchError(str(exc)) from None
    if checkpoint is None:
        where = model_store(runs_dir).active_location()
        if record:
            raise WatchError(f"{where}: the active model {record.get('run_id')} has no checkpoint any more. "
                             "Make another model active on the Models page, then start the watcher again.")
        raise WatchError(f"{where}: no model is active, so photos cannot be inspected. An admin makes one active "
                         "on the Models page (set DEFECT_MODEL_STORE, or DEFECT_RUNS_DIR, where the record lives "
                         "elsewhere); then start the watcher again.")
    from defect_model.serve.inference import Predictor  # torch loads here, once there is a model to load
    from defect_model.serve.serving import GraphLedger
    from defect_model.train.checkpoint import CheckpointError

    try:
        predictor = Predictor.from_checkpoint(checkpoint, threads=threads, ledger=GraphLedger.default())
    except CheckpointError as exc:  # a served copy that does not hash to its name, among others
        raise WatchError(str(exc)) from None
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


# -- finishing a photo -----------------------------------------------------------------------------
def finish(folders: Folders, row: dict, written_ids: set[str] | None = None) -> Path:
    """The last steps for one logged photo in processing: its CSV line (unless written already), its error note,
    the move. Returns where the photo went."""
    if written_ids is None or str(row["id"]) not in written_ids:
        append_result(folders.results, csv_line(row))
    target = free_name(destination(folders, row["verdict"]), row["file_name"])
    move_photo(folders.processing / row["file_name"], target)
    if row["verdict"] == "error":  # after the move: a crash between leaves the message in the CSV and the log
        target.with_name(target.name + ERROR_NOTE_SUFFIX).write_text(line_words(str(row.get("error") or "")) + "\n")
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


# -- the loop ----------------------------------------------------------------------------------------
@dataclass
class WatchOptions:
    settle_s: float = DEFAULT_SETTLE_S
    poll_s: float = DEFAULT_POLL_S
    batch_size: int = DEFAULT_BATCH_SIZE
    threshold: float | None = None  # None: the model's operating point, else DEFAULT_THRESHOLD
    threads: int | None = None
    runs_dir: str | Path | None = None


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
    keep_open = store.db.hold_open()
    try:
        model = model or load_active_model(options.runs_dir, options.threads)
        state = WatchState(folders, model)

        def heartbeat(status: dict) -> None:
            publish(status, folders, store.path)

        prepare_results(folders.results)
        settled, _ = recover(folders, store)
        for row in settled:
            state.record(row)
            if on_photo:
                on_photo(row)
        heartbeat(state.as_dict("running"))
        try:
            _loop(folders, store, options, stop, state, heartbeat, on_photo)
        except WatchError as exc:
            heartbeat(state.as_dict("stopped", str(exc)))
            raise
        heartbeat(state.as_dict("stopped", "stopped on request"))
        return state
    finally:
        keep_open.close()
        lock.close()


def _loop(folders, store, options, stop, state, heartbeat, on_photo) -> None:
    sightings: dict[str, Sighting] = {}
    beat = time.monotonic()
    active = ActiveWatch(model_store(options.runs_dir))  # a stat (an ETag for S3) per look, not a read per photo
    while not stop.is_set():
        try:
            record = active.changed()
        except ModelStoreError:
            record = None  # the store did not answer this time: go on with the loaded model, look again next time
        if record is not None and record.get("sha256", "") not in ("", state.model.sha256):
            state.model = _reload(options)  # between batches: the old model finished the photos it was judging
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
            heartbeat(state.as_dict("running"))
            beat = time.monotonic()
            if log_error:
                raise WatchError(f"{store.path}: the inspection log cannot be written ({log_error}). The photos not "
                                 f"logged stay in {folders.processing} and are inspected when the watcher starts "
                                 "again; make the database writable first.")
            continue  # more may be ready: no sleep in a burst
        if time.monotonic() - beat >= HEARTBEAT_S:
            heartbeat(state.as_dict("running"))
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
