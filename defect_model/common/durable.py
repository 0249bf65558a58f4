"""Files that survive a crash or a power cut whole: what the run files and checkpoints share (standard
library only, so the run folder's readers and the engine may both use it).

A file is written beside its target under a name of its own, fsynced, renamed over the target, and the
rename made durable by an fsync of the folder: a crash at any moment leaves the old file or the new one,
never an empty or half-written one. A process killed mid-write (SIGKILL, power cut) leaves its temporary file
behind - for a checkpoint, hundreds of MB - so the next write of the same file removes the ones left long enough
ago that no live writer can still own them.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

STALE_TMP_S = 3600.0  # a temporary file untouched this long belongs to a writer that died (a write takes seconds)
FULL = (errno.ENOSPC, errno.EDQUOT)
NEARLY_FULL_BYTES = 64 * 1024**2  # torch's writer reports a failed write as "unexpected pos": with this little free


class DiskFull(OSError):
    """A write that found no space; the message names the folder, its free space and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without "[Errno 28]"


def disk_full(exc: BaseException, folder: Path) -> DiskFull | None:
    """`exc` as a DiskFull naming `folder` when it (or what it was raised from) is a full disk or quota; torch's
    checkpoint writer turns a failed write into `RuntimeError: ... unexpected pos ...`, which counts when the
    folder is nearly full. Else None."""
    free = free_bytes(folder)
    seen = exc
    while seen is not None:
        if isinstance(seen, DiskFull):
            return seen
        full = isinstance(seen, OSError) and seen.errno in FULL
        torch_write = isinstance(seen, RuntimeError) and "unexpected pos" in str(seen) and free < NEARLY_FULL_BYTES
        if full or torch_write:
            return DiskFull(errno.ENOSPC, f"no space left on device in {folder}: free {free // 1024**2} MB. Free "
                                          "space there (delete old runs, or set DEFECT_RUNS_DIR to a larger disk), "
                                          "then resume the run: it continues from its last saved checkpoint")
        seen = seen.__cause__ or seen.__context__
    return None


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def write_atomic(path: str | Path, write: Callable[[IO], None], mode: str = "w", newline: str | None = None) -> None:
    """Replace `path` with what `write(handle)` writes, whole or not at all; DiskFull when there is no space."""
    path = Path(path)
    remove_stale_tmp(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise disk_full(exc, path.parent) or exc
    try:
        with os.fdopen(fd, mode, newline=newline) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        full = disk_full(exc, path.parent)
        if full is None:
            raise
        raise full from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_folder(path.parent)


def remove_stale_tmp(path: Path, older_than_s: float = STALE_TMP_S) -> list[Path]:
    """Remove the temporary files earlier writes of `path` left when they were killed; returns them."""
    removed, now = [], time.time()
    for tmp in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass  # gone meanwhile, or not ours to remove: the write itself goes on
    return removed


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text))


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable. Without it a file renamed into place just before a crash can
    come back as the old one, or empty (ext4 with delayed allocation), even though its own bytes were synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform that cannot open folders (Windows): the rename is as durable as it gets there
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the file's own fsync still happened
    finally:
        os.close(fd)
