"""Photo retention: the inspection store's copies of inspected photos are deleted once nothing needs them.

Every inspected photo is kept as a copy named by its hash (InspectionStore.store_photo, in <data>/photos), so
that the engineer can look at it, correct its label and retrain with it. A copy goes when its newest inspection
is older than the retention period ($DEFECT_PHOTO_RETENTION_DAYS, default 365 days) and no correction that is
not rejected points at it (a pending one waits for review; a confirmed one is training data). Its inspection
rows stay in the log with the photo's sha256 and path, marked with the time the copy was removed; each
clean-up is an event in the audit trail. `python -m defect_model photos cleanup` runs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from defect_model.access.accounts import Actor, audit_log, require
from defect_model.runs.store import InspectionStore

RETENTION_ENV = "DEFECT_PHOTO_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 365.0


class RetentionError(ValueError):
    """A retention setting that cannot be used; the message says what to set."""


def retention_days(environ=os.environ) -> float:
    """Days a kept photo copy stays after its newest inspection: $DEFECT_PHOTO_RETENTION_DAYS, else 365."""
    text = environ.get(RETENTION_ENV, "").strip()
    if not text:
        return DEFAULT_RETENTION_DAYS
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days > 0:
        raise RetentionError(f"{RETENTION_ENV}={text!r} is not a number of days above 0. Set it to e.g. 365, or "
                             "unset it for the default of 365 days.")
    return days


@dataclass
class Cleanup:
    """What a clean-up removed (or, in a dry run, would remove), and what it kept because corrections need it."""

    cutoff: datetime
    dry_run: bool
    removed: list[Path] = field(default_factory=list)
    kept_for_corrections: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    rows_marked: int = 0
    failed: list[str] = field(default_factory=list)  # copies that could not be deleted, each with the reason

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        text = (f"{verb} {len(self.removed)} photo copies ({self.freed_bytes / 1024**2:.1f} MB) last inspected "
                f"before {self.cutoff.isoformat(timespec='seconds')}")
        if self.kept_for_corrections:
            text += f"; kept {len(self.kept_for_corrections)} older ones that corrections still need"
        if not self.dry_run and self.removed:
            text += (f"; {self.rows_marked} inspection rows keep their sha256 and are marked as having no copy "
                     "any more")
        if self.failed:
            text += (f"; {len(self.failed)} could not be deleted (first: {self.failed[0]}): check the photo "
                     "folder's owner and permissions, then run the clean-up again")
        return text


def stored_copies(photos_dir: Path) -> list[Path]:
    """Every file in the photo store (copies and temporary files a crash left), as absolute paths like the
    log's, without following links."""
    if not photos_dir.is_dir():
        return []
    return sorted(path for path in photos_dir.resolve().rglob("*") if path.is_file() and not path.is_symlink())


def last_used(copy: Path, log_times: dict[str, str]) -> datetime:
    """When `copy` was last needed: its newest inspection in the log, else (a copy no row points at) its mtime."""
    logged = log_times.get(str(copy))
    if logged:
        moment = datetime.fromisoformat(logged)
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    try:
        return datetime.fromtimestamp(copy.stat().st_mtime, timezone.utc)
    except FileNotFoundError:  # removed meanwhile (a writer's temporary file renamed into place)
        return datetime.now(timezone.utc)


def plan_cleanup(store: InspectionStore, older_than_days: float, now: datetime | None = None,
                 dry_run: bool = False) -> Cleanup:
    """Which copies are past retention (oldest use before now - older_than_days) and which of those stay."""
    now = now or datetime.now(timezone.utc)
    plan = Cleanup(cutoff=now - timedelta(days=older_than_days), dry_run=dry_run)
    log_times = store.photo_last_used()
    needed_paths, needed_digests = store.photos_corrections_need()
    for copy in stored_copies(store.photos_dir):
        if last_used(copy, log_times) >= plan.cutoff:
            continue
        digest = copy.name.split(".", 1)[0]
        if str(copy) in needed_paths or digest in needed_digests:
            plan.kept_for_corrections.append(copy)
            continue
        plan.removed.append(copy)
        plan.freed_bytes += _size(copy)
    return plan


def clean_up_photos(store: InspectionStore, older_than_days: float, actor: Actor, dry_run: bool = False,
                    now: datetime | None = None) -> Cleanup:
    """Delete the photo copies past retention that no correction needs, mark their log rows and record the
    clean-up in the audit trail (admins; a terminal on the server is one). A dry run changes nothing."""
    require(actor, "delete")
    if not older_than_days > 0:
        raise RetentionError(f"--older-than {older_than_days:g}: give a number of days above 0.")
    plan = plan_cleanup(store, older_than_days, now, dry_run)
    if dry_run or not plan.removed:
        return plan
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    gone = []
    for copy in plan.removed:
        try:
            copy.unlink(missing_ok=True)
        except OSError as exc:
            plan.failed.append(f"{copy}: {exc}")
            plan.freed_bytes -= _size(copy)
            continue
        gone.append(copy)
        _remove_if_empty(copy.parent, store.photos_dir.resolve())
    plan.removed = gone
    plan.rows_marked = store.mark_photos_removed([str(copy) for copy in gone], when)
    audit_log(store.path).record(actor, "photos_cleanup", str(store.photos_dir), removed=len(gone),
                                 freed_bytes=plan.freed_bytes, older_than_days=older_than_days,
                                 cutoff=plan.cutoff.isoformat(timespec="seconds"), rows_marked=plan.rows_marked,
                                 kept_for_corrections=len(plan.kept_for_corrections))
    return plan


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove_if_empty(folder: Path, photos_dir: Path) -> None:
    if folder != photos_dir:
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty: other copies share the hash prefix
