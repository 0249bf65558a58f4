"""The golden set: a retrained model that flips a golden photo's verdict shows it on the Models page, needs an
acknowledgement to go live (recorded) and makes `python -m defect_model golden RUN` exit non-zero."""

from __future__ import annotations

import pytest
import torch

from defect_model import cli
from defect_model.access.accounts import PermissionDenied, audit_log
from defect_model.runs.folders import get_active
from defect_model.runs.golden import GoldenSet
from defect_model.train.checkpoint import load_checkpoint, save_checkpoint
from defect_model.workflows.golden_check import compare_golden
from defect_model.workflows.lifecycle import ActivationError, activate, set_active
from review_support import CLASSES, make_dataset, open_app_page, write_run

from conftest import ADMIN, ENGINEER, INSPECTOR


def sure_of(run, name: str):
    """Make the run's model say `name` for every photo, as a retrain that learned otherwise would."""
    payload = load_checkpoint(run.checkpoint)
    bias = torch.full((len(CLASSES),), -20.0)
    bias[CLASSES.index(name)] = 20.0
    payload["model"]["fc.1.bias"] = bias
    save_checkpoint(run.checkpoint, payload["model"], payload["meta"])
    return run


@pytest.fixture()
def env(tmp_path, monkeypatch, database):
    """Runs, a dataset and the database on each backend (conftest's `database` sets the data folder and the
    database's variable)."""
    data = make_dataset(tmp_path / "dataset")
    runs = tmp_path / "runs"
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(runs))
    active = sure_of(write_run(runs, data, "20260101-120000-line"), "ok")
    set_active(active, by="setup", root=runs)
    flipped = sure_of(write_run(runs, data, "20260102-120000-line-retrain", started="2026-01-02T12:00:00+00:00"),
                      "pit")
    same = sure_of(write_run(runs, data, "20260103-120000-line-again", started="2026-01-03T12:00:00+00:00"), "ok")
    GoldenSet().add(ENGINEER, data / "ok" / "ok_0000.png", "ok", "validation")
    return {"data": data, "runs": runs, "active": active, "flipped": flipped, "same": same}


def test_marking_golden_needs_an_engineer_and_an_existing_photo(env):
    with pytest.raises(PermissionDenied):
        GoldenSet().add(INSPECTOR, env["data"] / "ok" / "ok_0001.png", "ok", "validation")
    with pytest.raises(ValueError, match="no photo there"):
        GoldenSet().add(ENGINEER, env["data"] / "ok" / "missing.png", "ok", "validation")
    assert [p["label"] for p in GoldenSet().photos()] == ["ok"]
    assert audit_log().events("golden add", 5)[0]["actor"] == "eng"


def test_the_golden_command_exits_non_zero_on_a_changed_verdict(env, capsys):
    table = compare_golden(env["flipped"])
    assert list(table["active_verdict"]) == ["pass"] and list(table["candidate_verdict"]) == ["reject"]
    assert cli.main(["golden", str(env["flipped"].path)]) == 1
    assert "CHANGED" in capsys.readouterr().out
    assert cli.main(["golden", str(env["same"].path)]) == 0
    assert "CHANGED" not in capsys.readouterr().out


def test_activation_with_a_changed_golden_verdict_needs_an_acknowledgement_which_is_recorded(env):
    with pytest.raises(ActivationError, match="changes the verdict of 1 golden photo"):
        activate(env["flipped"], ADMIN, root=env["runs"])
    assert get_active(env["runs"])["run_id"] == env["active"].run_id
    activate(env["flipped"], ADMIN, root=env["runs"], golden_ack=True)
    assert get_active(env["runs"])["run_id"] == env["flipped"].run_id
    event = audit_log().events("activate", 1)[0]
    assert event["detail"]["golden_checked"] == 1
    assert event["detail"]["golden_changes_acknowledged"] == ["ok_0000.png (ok): pass -> reject"]
    activate(env["same"], ADMIN, root=env["runs"], golden_ack=True)  # back to "ok" everywhere
    assert audit_log().events("activate", 1)[0]["detail"]["golden_changes_acknowledged"] != []


def pick(at, run_id: str) -> None:
    box = next(b for b in at.selectbox if b.key and b.key.split("@")[0] == "manage_run")
    box.select(next(o for o in box.options if run_id in o)).run()


def test_the_models_page_shows_the_changed_golden_verdict(env):
    at = open_app_page("pages/models.py", "admin")
    pick(at, env["flipped"].run_id)
    assert not at.exception, [e.value for e in at.exception]
    assert any("changes 1 of 1 golden verdict" in e.value for e in at.error), [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "candidate_verdict" in d.value.columns)
    assert table.to_dict("records")[0] == {"photo": "ok_0000.png", "label": "ok", "active_verdict": "pass",
                                           "candidate_verdict": "reject", "active_class": "ok",
                                           "candidate_class": "pit"}
    assert any("changed golden verdict" in c.label for c in at.checkbox)
    pick(at, env["same"].run_id)
    assert any("all 1 verdict(s) stay" in s.value for s in at.success)


def test_the_review_page_marks_validation_photos_golden(env):
    at = open_app_page("pages/review.py", "engineer")
    chooser = next(m for m in at.multiselect if m.label == "Validation photos")
    chooser.set_value(["pit/pit_0000.png"]).run()
    next(b for b in at.button if b.label == "Mark as golden").click().run()
    assert not at.exception, [e.value for e in at.exception]
    photos = {p["photo_path"]: p for p in GoldenSet().photos()}
    marked = photos[str((env["data"] / "pit" / "pit_0000.png").resolve())]
    assert marked["label"] == "pit" and marked["source"] == "validation" and marked["who"] == "eng"
