"""Uploads are bounded and kept photos have a retention period with a clean-up command (issue 16 item 4)."""

from __future__ import annotations

import os
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from conftest import ROOT, zip_of
from defect_model.photos import uploads
from defect_model.access.accounts import Actor, audit_log
from defect_model.access.audit import verify
from defect_model.cli import main
from defect_model.serve.inference import Predictor, Preprocessing
from defect_model.workflows.inspection import InspectionSettings, inspect_batch
from defect_model.photos.uploads import expand_uploads
from defect_model.train.model import build_model
from defect_model.runs.retention import RETENTION_ENV, clean_up_photos, retention_days
from defect_model.runs.store import InspectionStore, sha256_bytes
from defect_model.common.places import default_db_path
from test_inspection import sample_png

CLASSES = ["ok", "pit", "crack"]
SETTINGS = InspectionSettings(run_id="run-1", good_classes=["ok"], threshold=0.0, inspector="ana")
OLD, RECENT = "2020-01-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00"
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
ADMIN = Actor("root (terminal)", "admin")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor(build_model("resnet18", len(CLASSES), 0.0), CLASSES, Preprocessing(64, (0.5,) * 3, (0.25,) * 3),
                     {"run_id": "untrained"})


def kept_files(store: InspectionStore) -> list[Path]:
    return sorted(p for p in store.photos_dir.rglob("*") if p.is_file()) if store.photos_dir.is_dir() else []


# -- how much an upload may take ----------------------------------------------------------
def test_the_server_takes_uploads_of_at_most_200_mb_and_says_why():
    text = (ROOT / ".streamlit" / "config.toml").read_text()
    assert tomllib.loads(text)["server"]["maxUploadSize"] <= 200
    assert "cannot stream to disk" in text and "in memory" in text  # the reason is kept beside the number


def test_a_photo_over_the_size_limit_is_refused_by_name_and_not_kept(predictor, tmp_path, monkeypatch):
    store = InspectionStore(tmp_path / "inspections.sqlite")
    small, large = sample_png("pit", 1, 64), sample_png("crack", 2, 200)
    monkeypatch.setattr(uploads, "MAX_PHOTO_BYTES", (len(small) + len(large)) // 2)
    results = inspect_batch(predictor, expand_uploads([("small.png", small), ("large.png", large)]), SETTINGS, store)
    assert results[0].ok
    assert results[1].error.startswith("large.png: the file is 0 MB, more than the 0 MB a photo may be.")
    assert "Save it as JPEG, or resize it, and upload it again." in results[1].error
    assert kept_files(store) == [Path(results[0].photo_path)] and results[1].photo_path == ""


def test_only_photos_are_kept_other_files_are_logged_by_their_sha256(predictor, tmp_path):
    store = InspectionStore(tmp_path / "inspections.sqlite")
    photo = sample_png("ok", 3, 64)
    files = [("part.png", photo), ("notes.txt", b"not a photo"), ("fake.jpg", b"text named like a photo"),
             ("inner.zip", zip_of({"readme.md": b"# hello", "a/part2.png": sample_png("pit", 4, 64)})),
             ("broken.zip", b"PK\x03\x04 not really a zip")]
    results = inspect_batch(predictor, expand_uploads(files), SETTINGS, store)
    assert [r.ok for r in results] == [True, False, False, False, True, False]
    kept = {Path(p).read_bytes() for p in (r.photo_path for r in results) if p}
    assert kept == {photo, sample_png("pit", 4, 64)}
    assert len(kept_files(store)) == 2
    log = store.inspections().sort_values("id")
    assert len(log) == 6 and (log["sha256"].str.len() == 64).all()
    assert list(log["photo_path"] == "") == [False, True, True, True, False, True]


# -- retention -----------------------------------------------------------------------------
def inspected(store: InspectionStore, data: bytes, name: str, time: str) -> str:
    """A stored copy and its inspection at `time`; returns the copy's path as the log holds it."""
    _, path = store.store_photo(data, name)
    path = str(path.resolve())
    store.log_inspection(file_name=name, sha256=sha256_bytes(data), photo_path=path, verdict="pass", time=time)
    return path


@pytest.fixture()
def aged_store(tmp_path):
    """Copies last inspected long ago (one of them inspected again lately), one wanted by a pending correction,
    one by a confirmed one (by sha256), one whose correction was rejected, and an old copy no row points at."""
    store = InspectionStore(tmp_path / "db" / "inspections.sqlite")
    photos = {name: sample_png("pit", seed, 48) for seed, name in enumerate(
        ["old", "again", "pending", "confirmed", "rejected", "orphan"])}
    paths = {name: inspected(store, photos[name], f"{name}.png", OLD) for name in photos if name != "orphan"}
    inspected(store, photos["again"], "again-later.png", RECENT)
    store.add_correction(source="inspection", action="relabel", photo_path=paths["pending"], new_label="ok", who="ana")
    store.add_correction(source="inspection", action="relabel", photo_path="/elsewhere/x.png", new_label="ok",
                         who="ana", sha256=sha256_bytes(photos["confirmed"]), dataset="/d", status="confirmed")
    rejected = store.add_correction(source="inspection", action="unusable", photo_path=paths["rejected"], who="ana")
    store.decide_correction(rejected, "rejected", "eng")
    _, orphan = store.store_photo(photos["orphan"], "orphan.png")
    os.utime(orphan, (NOW.timestamp() - 400 * 86400,) * 2)
    paths["orphan"] = str(orphan.resolve())
    return store, paths


def test_cleanup_deletes_copies_past_retention_that_no_correction_needs(aged_store):
    store, paths = aged_store
    dry = clean_up_photos(store, 365, ADMIN, dry_run=True, now=NOW)
    assert sorted(map(str, dry.removed)) == sorted([paths["old"], paths["rejected"], paths["orphan"]])
    assert all(Path(p).is_file() for p in paths.values())  # a dry run changes nothing
    assert (store.inspections()["photo_removed"] == "").all() and not audit_log(store.path).events("photos_cleanup")

    done = clean_up_photos(store, 365, ADMIN, now=NOW)
    assert sorted(map(str, done.removed)) == sorted(map(str, dry.removed))
    assert sorted(map(str, done.kept_for_corrections)) == sorted([paths["pending"], paths["confirmed"]])
    assert {name for name, p in paths.items() if Path(p).is_file()} == {"again", "pending", "confirmed"}

    log = store.inspections()
    assert len(log) == 6 and (log["sha256"].str.len() == 64).all()  # every row stays, with its fingerprint
    removed = log[log["photo_removed"] != ""]
    assert sorted(removed["photo_path"]) == sorted([paths["old"], paths["rejected"]])  # path kept, marked removed
    assert verify(store.path) == []  # the inspection log's hash chain still holds

    event = audit_log(store.path).events("photos_cleanup")[0]
    assert event["actor"] == ADMIN.name and event["target"] == str(store.photos_dir)
    assert event["detail"]["removed"] == 3 and event["detail"]["kept_for_corrections"] == 2
    assert event["detail"]["rows_marked"] == 2 and event["detail"]["older_than_days"] == 365
    assert "removed 3 photo copies" in done.summary() and "kept 2 older ones that corrections" in done.summary()


def test_only_an_admin_may_clean_up(aged_store):
    store, _ = aged_store
    with pytest.raises(PermissionError):
        clean_up_photos(store, 365, Actor("ana", "inspector"), now=NOW)


def test_the_retention_period_comes_from_the_environment_with_a_clear_error():
    assert retention_days({}) == 365
    assert retention_days({RETENTION_ENV: "90"}) == 90
    with pytest.raises(ValueError, match=rf"{RETENTION_ENV}='forever' is not a number of days above 0\. Set it"):
        retention_days({RETENTION_ENV: "forever"})


def test_the_cleanup_command(monkeypatch, capsys):
    store = InspectionStore(default_db_path())  # the test's private database (conftest)
    old = inspected(store, sample_png("pit", 7, 48), "old.png", OLD)
    fresh = inspected(store, sample_png("pit", 8, 48), "fresh.png", datetime.now(timezone.utc).isoformat())
    monkeypatch.setenv(RETENTION_ENV, "30")

    assert main(["photos", "cleanup", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [old] and "would remove 1 photo copies" in err and Path(old).is_file()

    assert main(["photos", "cleanup"]) == 0
    assert "removed 1 photo copies" in capsys.readouterr().err
    assert not Path(old).exists() and Path(fresh).is_file()
    assert main(["photos", "cleanup", "--older-than", "0"]) == 2
    assert "--older-than 0: give a number of days above 0" in capsys.readouterr().err
    monkeypatch.setenv(RETENTION_ENV, "-3")
    assert main(["photos", "cleanup"]) == 2
    assert f"{RETENTION_ENV}='-3' is not a number of days above 0" in capsys.readouterr().err


def test_an_older_database_gains_the_removed_mark_and_still_verifies(tmp_path):
    import sqlite3

    path = tmp_path / "inspections.sqlite"
    store = InspectionStore(path)
    store.log_inspection(file_name="a.png", sha256="a" * 64, photo_path="/p/a.png", verdict="pass", time=OLD)
    from defect_model.database import close_all

    close_all()
    with sqlite3.connect(path) as db:  # as a database written before the column existed (and migrations)
        db.execute("ALTER TABLE inspections DROP COLUMN photo_removed")
        db.execute("DROP TABLE alembic_version")
    InspectionStore(path)
    assert verify(path) == [] and list(InspectionStore(path).inspections()["photo_removed"]) == [""]


def test_a_photo_removed_by_retention_says_so_when_read_back_from_the_log(predictor):
    from types import SimpleNamespace

    from ui.inspect_history import logged_result

    row = dict(id=1, file_name="a.png", sha256="a" * 64, time=OLD, run_id="r", threshold=0.7, verdict="pass",
               error="", photo_path="/nowhere/a.png", probabilities='{"ok": 0.9, "pit": 0.05, "crack": 0.05}',
               photo_removed="2026-12-01T03:00:00+00:00")
    result, array = logged_result(row, 0, SimpleNamespace(classes=CLASSES, predictor=predictor))
    assert array is None and result.predicted == "ok"
    assert "removed on 2026-12-01 (photo retention; the log keeps its fingerprint)" in result.message
