"""The one SQL layer on both backends: a row hashes alike on SQLite and PostgreSQL, the chains stay chains under
several writer processes at once (then a tampered row is named), `db check` says where a database stands, and the
watchers' status is shared through the database."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from database_support import append_rows, is_postgres, raw_rows, raw_sql
from defect_model.access.audit import append_chained, verify
from defect_model.cli import main as cli
from defect_model.runs.store import InspectionStore

WRITERS, ROWS_EACH = 4, 25


def test_a_row_hashes_alike_on_both_backends(tmp_path, postgres_url, monkeypatch):
    """Floats (a third, a long fraction), NULLs and integers read back alike from both, so a hash made on one
    verifies on the other: a plant can move its log from the embedded file to PostgreSQL."""
    from defect_model.database import close_all, migrate

    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "data"))
    migrate.upgrade(postgres_url)
    hashes = {}
    for where in (tmp_path / "one.sqlite", postgres_url):
        store = InspectionStore(where)
        store.log_inspection(file_name="a.png", sha256="a" * 64, photo_path="/p/a.png", verdict="needs_person",
                             confidence=1 / 3, threshold=0.7, probabilities={"ok": 1 / 3, "pit": 2 / 3},
                             time="2026-12-07T04:00:00+00:00", unfamiliar_score=None, model_sha256="b" * 64,
                             photo_stats={"brightness": 0.123456789012345, "contrast": None, "width": 640,
                                          "height": None})
        append_chained(where, "audit", {"time": "2026-12-07T04:00:01+00:00", "actor": "ana", "role": "admin",
                                        "action": "activate", "target": "run-1", "detail": '{"x": 1.5}'})
        assert verify(where) == []
        hashes[str(where)] = [row["row_hash"] for table in ("inspections", "audit") for row in raw_rows(where, table)]
    close_all()
    sqlite_hashes, postgres_hashes = hashes.values()
    assert sqlite_hashes == postgres_hashes and len(sqlite_hashes) == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_several_writer_processes_keep_the_chains_and_a_tampered_row_is_named(tmp_path, request, backend, capsys,
                                                                              monkeypatch):
    from defect_model.database import close_all, migrate

    env = {"DEFECT_DATA_DIR": str(tmp_path / "data")}
    if backend == "sqlite":
        where = tmp_path / "data" / "inspections.sqlite"
        env["DEFECT_DB"] = str(where)
        monkeypatch.delenv("DEFECT_DATABASE_URL", raising=False)
    else:
        where = request.getfixturevalue("postgres_url")
        env["DEFECT_DATABASE_URL"] = where
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    migrate.upgrade(where)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    writers = [context.Process(target=append_rows, args=(where, env, n, ROWS_EACH, start)) for n in range(WRITERS)]
    for writer in writers:
        writer.start()
    time.sleep(0.5)
    start.set()  # all at once
    for writer in writers:
        writer.join(timeout=300)
    assert [w.exitcode for w in writers] == [0] * WRITERS

    total = WRITERS * ROWS_EACH
    for table in ("inspections", "audit"):
        rows = raw_rows(where, table)
        assert [r["id"] for r in rows] == list(range(1, total + 1)), table
        assert all(b["prev_hash"] == a["row_hash"] for a, b in zip(rows, rows[1:])), table
    inspectors = {r["inspector"] for r in raw_rows(where, "inspections")}
    assert inspectors == {f"writer-{n}" for n in range(WRITERS)}  # they did write at once, into one chain
    assert verify(where) == []
    assert cli(["audit", "verify"]) == 0

    raw_sql(where, "UPDATE inspections SET verdict = 'reject' WHERE id = ?", (57,))
    raw_sql(where, "DELETE FROM audit WHERE id = ?", (30,))
    findings = verify(where)
    assert [(f.table, f.row_id) for f in findings] == [("audit", 30), ("inspections", 57)]
    assert "altered" in findings[1].problem and "removed" in findings[0].problem
    assert cli(["audit", "verify"]) == 1
    assert "inspections row 57: altered" in capsys.readouterr().err
    close_all()


def test_db_check_names_an_unreachable_database_without_its_password(monkeypatch, capsys, postgres_server_url):
    from defect_model.database import migrate

    port = postgres_server_url.rsplit(":", 1)[1].split("/")[0]
    url = f"postgresql://line1:secret-pw@127.0.0.1:{port}/no_such_database"
    monkeypatch.setenv("DEFECT_DATABASE_URL", url)
    assert cli(["db", "check"]) == 1
    err = capsys.readouterr().err
    assert "postgresql://line1:***@127.0.0.1" in err and "secret-pw" not in err
    assert "cannot reach the database" in err and "DEFECT_DATABASE_URL" in err
    assert not migrate.check(url).ok


def test_a_server_refuses_a_postgres_database_behind_the_code(postgres_url, monkeypatch, capsys):
    from defect_model.database import DatabaseNotReady, close_all

    monkeypatch.setenv("DEFECT_DATABASE_URL", postgres_url)
    with pytest.raises(DatabaseNotReady, match="python -m defect_model db upgrade"):
        InspectionStore()
    assert cli(["db", "check"]) == 1 and "without a schema revision" in capsys.readouterr().err
    assert cli(["db", "upgrade"]) == 0 and "revision none -> 0002" in capsys.readouterr().out
    assert cli(["db", "upgrade"]) == 0 and "already at revision 0002" in capsys.readouterr().out
    assert cli(["db", "check"]) == 0 and "current revision 0002, newest 0002" in capsys.readouterr().out
    assert InspectionStore().last_inspection_id() == 0
    close_all()


def test_monitor_sees_watchers_of_every_machine(database, tmp_path):
    """A watcher's status is a row in the database: one on another machine shows as running while its heartbeat
    is fresh; one on this machine by its process."""
    from defect_model.database import open_database, watchers
    from defect_model.workflows.hotfolder_intake import Folders
    from defect_model.workflows.hotfolder_status import STALE_S, publish, watcher_status
    from defect_model.runs.folders import process_start_time

    here = Folders(incoming=tmp_path / "cam1", done=tmp_path / "done", rejects=None, errors=tmp_path / "err",
                   results=tmp_path / "results.csv")
    status = {"state": "running", "pid": os.getpid(), "pid_started": process_start_time(os.getpid()),
              "heartbeat_unix": time.time(), "incoming": str(here.incoming), "count": 3}
    publish(status, here)
    db = open_database()
    watchers.put(db, "line2-cam", "line2-pc", "/line2/cam", time.time() - 5,
                 {**status, "pid": 1, "incoming": "/line2/cam", "heartbeat_unix": time.time() - 5, "count": 9})
    watchers.put(db, "line3-cam", "line3-pc", "/line3/cam", time.time() - STALE_S - 60,
                 {**status, "pid": 1, "incoming": "/line3/cam", "heartbeat_unix": time.time() - STALE_S - 60})
    found = {s["incoming"]: s for s in watcher_status()}
    assert [s["running"] for s in (found[str(here.incoming)], found["/line2/cam"], found["/line3/cam"])] == [
        True, True, False]
    assert found["/line2/cam"]["host"] == "line2-pc" and found["/line2/cam"]["count"] == 9
    publish({**status, "state": "stopped", "count": 4}, here)  # the same watcher's row is rewritten
    mine = [s for s in watcher_status() if s["incoming"] == str(here.incoming)]
    assert len(mine) == 1 and not mine[0]["running"] and mine[0]["count"] == 4
    assert is_postgres(database) == (not open_database().is_sqlite)


def test_an_emptied_chain_with_its_head_log_deleted_is_still_seen(database, capsys):
    """The id counter an emptied table leaves behind (SQLite's sqlite_sequence, PostgreSQL's id sequence) tells
    a new installation from a wiped one; `audit anchor` starts a head log for a database without one."""
    from defect_model.access.accounts import Actor
    from defect_model.access.audit import AuditLog
    from defect_model.access.headlog import head_log_path

    log = AuditLog()
    for i in range(3):
        log.record(Actor("adm", "admin"), "activate", f"run-{i}")
    head_log_path().unlink()
    assert "missing or empty" in verify()[0].problem
    assert cli(["audit", "anchor"]) == 0 and "anchored audit: row 3" in capsys.readouterr().out
    assert verify() == []
    raw_sql(database, "DELETE FROM audit")
    assert "the table is empty" in verify()[0].problem
    head_log_path().unlink()
    assert [f.table for f in verify()] == ["head log"] and "missing or empty" in verify()[0].problem
