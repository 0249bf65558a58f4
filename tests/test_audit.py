"""The hash-chained audit trail and inspection log: an edit or a removed row is named by `audit verify`;
activation pins the served checkpoint."""

import shutil

import numpy as np
import pytest

from database_support import raw_many, raw_rows, raw_sql

from defect_model.access.audit import AuditLog, verify
from defect_model.cli import main as cli
from defect_model.serve.inference import Predictor
from defect_model.workflows.lifecycle import activate
from defect_model.runs.folders import RunDir, get_active, served_checkpoint
from defect_model.runs.store import InspectionStore
from conftest import ADMIN
from inspect_support import photo_bytes


@pytest.fixture()
def db(database):
    """A log with chained rows on each backend (conftest's `database`); its location."""
    path = database
    store = InspectionStore(path)
    for i in range(5):
        store.log_inspection(file_name=f"p{i}.png", sha256=f"{i:064x}", photo_path=f"/photos/p{i}.png",
                             verdict="pass", inspector="ana", run_id="run-1", predicted="ok", confidence=0.9,
                             probabilities={"ok": 0.9, "pit": 0.1}, threshold=0.7, model_sha256="ab" * 32)
    log = AuditLog(path)
    for i in range(4):
        log.record(ADMIN, "activate", f"run-{i}", sha256=f"{i}" * 64)
    return path


def _execute(path, sql: str, *params) -> None:
    raw_sql(path, sql, params)


def test_an_untouched_log_verifies(db, capsys):
    assert verify(db) == []
    assert cli(["audit", "verify"]) == 0
    assert "verify (no row altered or removed;" in capsys.readouterr().out


@pytest.mark.parametrize("table, sql, row, words", [
    ("inspections", "UPDATE inspections SET verdict = 'reject' WHERE id = 3", 3, "altered"),
    ("inspections", "UPDATE inspections SET confidence = 0.99 WHERE id = 5", 5, "altered"),
    ("inspections", "DELETE FROM inspections WHERE id = 2", 2, "removed (row 2 missing before row 3)"),
    ("audit", "UPDATE audit SET actor = 'mallory' WHERE id = 2", 2, "altered"),
    ("audit", "DELETE FROM audit WHERE id = 3", 3, "removed"),
])
def test_an_edited_or_removed_row_is_named(db, capsys, table, sql, row, words):
    _execute(db, sql)
    findings = verify(db)
    assert [(f.table, f.row_id) for f in findings] == [(table, row)]
    assert words in findings[0].problem
    assert cli(["audit", "verify"]) == 1
    assert f"{table} row {row}: " in capsys.readouterr().err


def test_a_row_rewritten_with_a_fresh_hash_still_breaks_the_next_link(db):
    row = raw_rows(db, "inspections")[1]
    from defect_model.access.audit import _digest

    row["verdict"] = "reject"
    row["row_hash"] = _digest(row)
    _execute(db, "UPDATE inspections SET verdict = ?, row_hash = ? WHERE id = 2", row["verdict"], row["row_hash"])
    assert [(f.table, f.row_id) for f in verify(db)] == [("inspections", 2)]


def test_each_inspection_records_the_served_checkpoints_hash(db):
    log = InspectionStore(db).inspections()
    assert set(log["model_sha256"]) == {"ab" * 32}


def test_resuming_or_retraining_the_active_run_does_not_change_what_inspect_serves(trained_run, tmp_path):
    runs = tmp_path / "runs"
    run = RunDir(shutil.copytree(trained_run.path, runs / trained_run.run_id))
    record = activate(run, ADMIN, "page test; its accuracy does not matter", root=runs)
    served = served_checkpoint(get_active(runs))
    assert served != run.checkpoint and served.name == f"{record['sha256']}.pt"
    photo = tmp_path / "photo.png"
    photo.write_bytes(photo_bytes("pit", 3))
    before = Predictor.from_checkpoint(served).predict(photo)

    # A resume or retrain rewrites the run's own checkpoint with other weights ...
    payload = __import__("torch").load(run.checkpoint, weights_only=True)
    payload["model"] = {k: v * 0 if v.is_floating_point() else v for k, v in payload["model"].items()}
    __import__("torch").save(payload, run.checkpoint)
    assert not np.allclose(Predictor.from_checkpoint(run.checkpoint).predict(photo), before)
    # ... and Inspect still serves the pinned copy, unchanged.
    after = Predictor.from_checkpoint(served_checkpoint(get_active(runs))).predict(photo)
    assert np.array_equal(after, before)


def test_audit_show_into_a_closed_pipe_ends_quietly(db):
    """`audit show | head -1`: the reader leaves after one line; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    # more than a pipe's buffer holds (their chain does not matter here)
    raw_many(db, "INSERT INTO audit (id, time, actor, action, target) VALUES (?, 't', 'adm', 'sign_in', ?)",
             [(100 + i, f"n{i}" * 20) for i in range(3000)])
    shell = f"{sys.executable} -m defect_model audit show --limit 3000 | head -1"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], capture_output=True, text=True,
                          env=dict(os.environ), cwd=__import__("conftest").ROOT)
    assert done.stdout.count("\n") == 1 and "sign_in" in done.stdout
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0


def test_the_head_log_can_live_elsewhere(tmp_path, monkeypatch):
    """DEFECT_AUDIT_HEAD_LOG: on another disk or mount than the database, where its writers may only append."""
    from defect_model.access.headlog import head_log_path

    elsewhere = tmp_path / "other-mount" / "line3.heads"
    monkeypatch.setenv("DEFECT_AUDIT_HEAD_LOG", str(elsewhere))
    path = tmp_path / "db" / "inspections.sqlite"
    AuditLog(path).record(ADMIN, "activate", "run-1")
    assert head_log_path(path) == elsewhere and elsewhere.is_file()
    assert not (tmp_path / "db" / "inspections.sqlite.heads").exists()
    assert verify(path) == []
    _execute(path, "DELETE FROM audit")
    assert [f.table for f in verify(path)] == ["audit"]
