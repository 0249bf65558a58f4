import pandas as pd
import pytest

from defect_model.train.data import apply_corrections, read_corrections_csv
from defect_model.runs.store import InspectionStore


@pytest.fixture()
def store(database):
    """The log on each backend (conftest's `database`: a SQLite file, a PostgreSQL database)."""
    return InspectionStore(database)


def test_a_sqlite_log_is_in_wal_mode(tmp_path):
    import sqlite3

    store = InspectionStore(tmp_path / "db" / "inspections.sqlite")
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_inspection_round_trip(store):
    sha, path = store.store_photo(b"fake photo bytes", "a.PNG")
    assert path.read_bytes() == b"fake photo bytes" and path.suffix == ".png"
    first = store.log_inspection(file_name="a.png", sha256=sha, photo_path=path, verdict="reject",
                                 inspector="ana", run_id="r1", predicted="pit", confidence=0.9,
                                 probabilities={"ok": 0.1, "pit": 0.9}, threshold=0.7)
    store.log_inspection(file_name="b.png", sha256="x", photo_path="", verdict="error", error="b.png: broken")
    log = store.inspections()
    assert list(log["id"]) == [first + 1, first]
    assert list(store.inspections(verdicts=["reject"])["file_name"]) == ["a.png"]
    assert list(store.inspections(inspectors=["ana"], classes=["pit"])["id"]) == [first]


def test_a_file_name_with_a_nul_character_is_logged_alike_on_both_backends(store, database):
    """PostgreSQL's text holds no NUL character (SQLite's does): a hostile upload's name with one is logged on
    both with U+FFFD in its place, hashed as stored, so the chain still verifies."""
    from defect_model.access.audit import verify

    store.log_inspection(file_name="part\x00.png", sha256="x", photo_path="", verdict="error",
                         error="part\x00.png: not a photo")
    row = store.inspections().iloc[0]
    assert row["file_name"] == "part\ufffd.png" and row["error"] == "part\ufffd.png: not a photo"
    assert verify(database) == []


def test_corrections_export_latest_confirmed_decision(store, tmp_path):
    store.add_correction(source="review", action="relabel", photo_path="pit/1.png", new_label="crack",
                         dataset="/d", status="confirmed", who="eng")
    store.add_correction(source="review", action="unusable", photo_path="ok/2.png", dataset="/d",
                         status="confirmed", who="eng")
    pending = store.add_correction(source="inspection", action="relabel", photo_path="/photos/x.png",
                                   new_label="pit", dataset="/d", who="ana")
    store.add_correction(source="review", action="relabel", photo_path="pit/9.png", new_label="ok",
                         dataset="/other", status="confirmed")
    assert store.write_corrections_csv("/d", tmp_path / "c.csv") == 2
    store.decide_correction(pending, "confirmed", who="eng")
    assert store.write_corrections_csv("/d", tmp_path / "c.csv") == 3
    table = pd.read_csv(tmp_path / "c.csv", keep_default_na=False)
    assert dict(zip(table["path"], table["label"])) == {"/photos/x.png": "pit", "ok/2.png": "", "pit/1.png": "crack"}

    corrections = read_corrections_csv(tmp_path / "c.csv", ["crack", "ok", "pit"])
    rows = [("pit/1.png", "pit", "train"), ("ok/2.png", "ok", "val"), ("ok/3.png", "ok", "train")]
    assert apply_corrections(rows, corrections) == [("pit/1.png", "crack", "train"), ("ok/3.png", "ok", "train"),
                                                    ("/photos/x.png", "pit", "train")]


def test_bad_correction_requests_are_refused(store):
    with pytest.raises(ValueError, match="new label"):
        store.add_correction(source="review", action="relabel", photo_path="a.png")
    with pytest.raises(ValueError, match="unknown correction action"):
        store.add_correction(source="review", action="delete", photo_path="a.png")


def test_the_same_photo_stored_by_many_sessions_at_once_never_collides(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = InspectionStore(tmp_path / "db" / "inspections.sqlite")
    data = b"\x89PNG same bytes" * 1000
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: store.store_photo(data, "x.png"), range(200)))
    assert len({path for _, path in results}) == 1 and results[0][1].read_bytes() == data
    assert not list(results[0][1].parent.glob("*.tmp"))


def test_sessions_opening_a_new_database_at_once_all_get_it(tmp_path):
    """The first page loads after a start open the log together: each must find it ready, none fail on a column
    another added a moment before ('duplicate column name: source' sank 7 of 8 sessions in bench/load.py)."""
    import threading

    for trial in range(30):
        path = tmp_path / f"db{trial}" / "inspections.sqlite"
        barrier, errors = threading.Barrier(8), []

        def open_log() -> None:
            barrier.wait()
            try:
                InspectionStore(path)
            except Exception as exc:  # noqa: BLE001  (any failure is the finding)
                errors.append(exc)

        threads = [threading.Thread(target=open_log) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[0]
        assert {"model_sha256", "source", "photo_removed"} <= set(InspectionStore(path).inspections().columns)


def test_processes_opening_a_new_database_at_once_all_get_it(tmp_path):
    """A dashboard, a watcher and a command started together on a new file: each process makes or finds the
    schema (BEGIN IMMEDIATE around the upgrade, retries while the WAL switch needs the file alone)."""
    import multiprocessing

    from database_support import open_new_log
    from defect_model.access.audit import verify

    context = multiprocessing.get_context("spawn")
    path, start, results = tmp_path / "new" / "inspections.sqlite", context.Event(), context.Queue()
    processes = [context.Process(target=open_new_log, args=(path, start, results)) for _ in range(4)]
    for process in processes:
        process.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == ["ok"] * 4
    assert InspectionStore(path).last_inspection_id() == 4 and verify(path) == []
