"""The hot folder's files: the watched folder and where photos go, the one-watcher lock, when a photo has arrived
(settled, or a `.ready` marker), the journal's high-water mark, the claim into processing, and the move out.
The order of these steps, and why, is in `hotfolder`'s docstring."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from defect_model.photos.uploads import Upload
from defect_model.runs.folders import now_iso, read_json, write_json_atomic

STATE_DIR = ".hotfolder"
READY_SUFFIX = ".ready"
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".swp", "~")
ERROR_NOTE_SUFFIX = ".error.txt"


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
