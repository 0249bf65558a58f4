import json
import os

import pytest

from defect_model.workflows.lifecycle import (ActivationError, DeleteError, activate, activation_history, delete_run,
                                    run_summary)
from defect_model.access.accounts import Actor, audit_log
from defect_model.runs.folders import get_active
from conftest import ADMIN, ENGINEER, INSPECTOR
from review_support import VAL, make_dataset, write_run

COLLAPSED = [(path, true, "ok", 0.9) for path, true, _, _ in VAL]  # predicts ok for everything


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("lifecycle") / "data")


def test_summary_carries_recall_and_the_defect_miss_rate(dataset, tmp_path):
    row = run_summary(write_run(tmp_path, dataset, checkpoint=False))
    assert row["defect_miss_rate"] == pytest.approx(1 / 7)  # pit_0002 predicted ok, of 7 defect photos
    assert row["false_reject_rate"] == pytest.approx(1 / 4)  # ok_0002 predicted pit, of 4 good photos
    assert row["recall"] == "ok 75%, pit 50%, scratch 67%" and row["worst_class"] == "pit"
    assert row["training_s"] == 8.5 and row["status"] == "done" and not row["collapsed"]
    collapsed = run_summary(write_run(tmp_path, dataset, "collapsed", rows=COLLAPSED, checkpoint=False))
    assert collapsed["collapsed"] and "never recognises pit, scratch" in collapsed["problems"]
    assert collapsed["defect_miss_rate"] == 1.0 and collapsed["false_reject_rate"] == 0.0


def test_activation_is_recorded_and_a_collapsed_model_needs_a_reason(dataset, tmp_path):
    good = write_run(tmp_path, dataset)
    bad = write_run(tmp_path, dataset, "collapsed", rows=COLLAPSED)
    for actor in (None, INSPECTOR, ENGINEER):
        with pytest.raises(PermissionError, match="Sign in first|needs the admin role"):
            activate(good, actor, root=tmp_path)
    assert get_active(tmp_path) is None
    record = activate(good, ADMIN, root=tmp_path)
    assert get_active(tmp_path) == record and record["by"] == "adm" and record["at"]
    with pytest.raises(ActivationError, match="never recognises pit, scratch.*override reason"):
        activate(bad, ADMIN, root=tmp_path)
    assert get_active(tmp_path)["run_id"] == good.run_id
    boss = Actor("boss", "admin")
    record = activate(bad, boss, "line stopped, any model beats none", root=tmp_path)
    assert get_active(tmp_path)["override"] == "line stopped, any model beats none"
    history = activation_history()
    assert [h["run_id"] for h in history] == [bad.run_id, good.run_id]
    assert history[0]["by"] == "boss" and history[0]["override"] == "line stopped, any model beats none"
    assert history[0]["sha256"] == record["sha256"]


def test_a_run_still_training_is_refused(dataset, tmp_path):
    run = write_run(tmp_path, dataset)
    run.write_status("running", pid=os.getpid())
    with pytest.raises(ActivationError, match="still training"):
        activate(run, ADMIN, root=tmp_path)
    run.write_status("cancelled")
    with pytest.raises(ActivationError, match="did not finish.*only a finished run"):
        activate(run, ADMIN, root=tmp_path)
    assert get_active(tmp_path) is None


def test_delete_refuses_the_active_and_a_running_run(dataset, tmp_path):
    active = write_run(tmp_path, dataset, "active", checkpoint=False)
    (tmp_path / "active.json").write_text(json.dumps({"run_id": "active"}))
    with pytest.raises(DeleteError, match="is the active model"):
        delete_run(active, ADMIN)
    running = write_run(tmp_path, dataset, "running", checkpoint=False)
    running.write_status("running", pid=os.getpid())
    with pytest.raises(DeleteError, match="still training"):
        delete_run(running, ADMIN)
    finished = write_run(tmp_path, dataset, "finished", checkpoint=False)
    with pytest.raises(PermissionError, match="eng \\(engineer\\) may not delete"):
        delete_run(finished, ENGINEER)
    assert finished.path.exists()
    delete_run(finished, ADMIN)
    assert not finished.path.exists() and active.path.exists() and running.path.exists()
    assert dataset.exists()
    deleted = audit_log().events("delete")
    assert [(e["target"], e["actor"]) for e in deleted] == [("finished", "adm")]


def _spoil(run, how: str) -> None:
    """A finished run whose metrics look fine but whose checkpoint the line could not use."""
    import argparse

    import torch

    payload = torch.load(run.checkpoint, weights_only=True)
    if how == "unpicklable":  # a Python object torch refuses to load with weights_only=True
        payload["meta"]["config"] = argparse.Namespace(backbone="resnet18")
    elif how == "wrong shapes":
        payload["model"] = {k: v for k, v in payload["model"].items() if not k.startswith("fc")}
    else:  # damaged weights: every verdict would be NaN
        payload["model"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in payload["model"].items()}
    torch.save(payload, run.checkpoint)


@pytest.mark.parametrize("how, words", [("unpicklable", "does not load: .*not written by this tool, or it was altered"),
                                        ("wrong shapes", "does not load into its network"),
                                        ("nan weights", "gives no numbers .NaN. on 8 validation photo")])
def test_a_checkpoint_the_line_could_not_use_is_never_made_active(dataset, tmp_path, how, words):
    good = write_run(tmp_path, dataset)
    activate(good, ADMIN, root=tmp_path)
    spoiled = write_run(tmp_path, dataset, "spoiled")
    _spoil(spoiled, how)
    with pytest.raises(ActivationError, match=f"was not made active .the active model is unchanged.*{words}") as refused:
        activate(spoiled, ADMIN, root=tmp_path)
    assert "weights_only=False" not in str(refused.value) and "weights_only" not in str(refused.value)
    assert get_active(tmp_path)["run_id"] == good.run_id
    assert [h["run_id"] for h in activation_history()] == [good.run_id]


def test_activation_records_what_the_trial_ran_on(dataset, tmp_path):
    record = activate(write_run(tmp_path, dataset), ADMIN, root=tmp_path)
    assert record["trial"] == "8 validation photo(s)"
    assert activation_history()[0]["trial"] == "8 validation photo(s)"
