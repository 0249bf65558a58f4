import pandas as pd
import pytest

from defect_model.workflows.review import (ReviewError, decide_inspection, inspection_corrections, latest_decisions, load_review,
                                 misclassified, plain_records, record_decision, retrain_with_corrections)
from defect_model.access.accounts import Actor, audit_log
from defect_model.runs.store import InspectionStore
from conftest import ENGINEER, INSPECTOR
from review_support import BLANK, PLANTED, make_dataset, write_run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("review") / "data")


@pytest.fixture()
def run(dataset, tmp_path):
    return write_run(tmp_path / "runs", dataset, checkpoint=False)


@pytest.fixture()
def store(tmp_path):
    return InspectionStore(tmp_path / "db.sqlite")


def test_misclassified_worst_first_with_filters(run):
    data = load_review(run)
    wrong = misclassified(data.predictions)
    assert wrong["loss"].is_monotonic_decreasing and wrong["path"].iloc[0] == PLANTED
    assert (wrong["true_label"] != wrong["pred_label"]).all() and len(wrong) == 4
    assert misclassified(data.predictions, ["pit"], ["ok"])["path"].tolist() == ["pit/pit_0002.png"]


def test_missing_results_name_the_file(run):
    run.val_predictions.write_text("path,true_label\nx.png,ok\n")
    with pytest.raises(ReviewError, match=r"val_predictions.csv: missing column\(s\) pred_label"):
        load_review(run)
    run.metrics.unlink()
    with pytest.raises(ReviewError, match="metrics.json: no validation metrics yet"):
        load_review(run)


def test_decisions_are_one_confirmed_row_each(run, store):
    data = load_review(run)
    first = record_decision(store, data, PLANTED, "relabel", ENGINEER, "scratch")
    table = store.corrections()
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["id"], row["source"], row["action"], row["status"]) == (first, "review", "relabel", "confirmed")
    assert (row["photo_path"], row["original_label"], row["new_label"], row["model_label"]) == \
        (PLANTED, "pit", "scratch", "scratch")
    assert (row["who"], row["decided_by"], row["dataset"], row["run_id"]) == ("eng", "eng", data.dataset, run.run_id)
    record_decision(store, data, BLANK, "unusable", ENGINEER)
    assert latest_decisions(store, data.dataset)[BLANK]["new_label"] is None


@pytest.mark.parametrize("photo, action, label, who, words", [
    (PLANTED, "relabel", "pit", ENGINEER, "already labelled 'pit'"),
    (PLANTED, "relabel", "crack", ENGINEER, "'crack' is not one of the classes"),
    (PLANTED, "confirm", None, INSPECTOR, "ana \\(inspector\\) may not relabel"),
    (PLANTED, "confirm", None, None, "Sign in first"),
    ("pit/not_in_val.png", "confirm", None, ENGINEER, "not a validation photo"),
])
def test_bad_decisions_are_refused_and_write_nothing(run, store, photo, action, label, who, words):
    with pytest.raises((ReviewError, PermissionError), match=words):
        record_decision(store, load_review(run), photo, action, who, label)
    assert store.corrections().empty


def test_where_the_plant_asks_a_second_engineer_confirms_a_relabel(run, store, monkeypatch):
    monkeypatch.setenv("DEFECT_SECOND_PERSON", "1")
    data = load_review(run)
    first = record_decision(store, data, PLANTED, "relabel", ENGINEER, "scratch")
    assert store.corrections().set_index("id").loc[first, "status"] == "pending"
    assert PLANTED not in latest_decisions(store, data.dataset)  # not applied by a retrain yet
    waiting = plain_records(inspection_corrections(store, data))
    assert [w["id"] for w in waiting] == [first]
    with pytest.raises(ReviewError, match="you proposed this change yourself.*second engineer"):
        decide_inspection(store, data, waiting[0], True, ENGINEER)
    decide_inspection(store, data, waiting[0], True, Actor("lee", "engineer"))
    assert latest_decisions(store, data.dataset)[PLANTED]["new_label"] == "scratch"
    actions = [(e["action"], e["actor"]) for e in audit_log().events()][::-1]
    assert actions == [("relabel", "eng"), ("confirm", "lee")]


def test_a_relative_inspection_photo_is_refiled_with_its_absolute_path(run, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = load_review(run)
    proposal = store.add_correction(source="inspection", action="unusable", photo_path="data/photos/x.png",
                                    who="ana", dataset=data.dataset)
    decide_inspection(store, data, {**plain_records(inspection_corrections(store, data))[0]}, True, ENGINEER)
    latest = latest_decisions(store, data.dataset)
    assert str(tmp_path / "data/photos/x.png") in latest
    assert store.corrections().set_index("id").loc[proposal, "status"] == "confirmed"


def test_inspector_corrections_are_listed_and_confirmed_for_this_dataset(run, store, tmp_path):
    data = load_review(run)
    filed_elsewhere = store.add_correction(source="inspection", action="relabel", photo_path="/photos/a.png",
                                           new_label="pit", who="ana", run_id=run.run_id, model_label="ok")
    here = store.add_correction(source="inspection", action="relabel", photo_path="/photos/b.png",
                                new_label="scratch", who="ana", dataset=data.dataset)
    store.add_correction(source="inspection", action="relabel", photo_path="/photos/c.png", new_label="ok",
                         dataset="/another/dataset", run_id="another-run")
    assert set(inspection_corrections(store, data)["id"]) == {filed_elsewhere, here}

    pending = inspection_corrections(store, data).set_index("id")
    decide_inspection(store, data, pending.loc[filed_elsewhere].to_dict() | {"id": filed_elsewhere}, True, ENGINEER)
    decide_inspection(store, data, pending.loc[here].to_dict() | {"id": here}, False, ENGINEER)
    assert inspection_corrections(store, data).empty
    out = tmp_path / "c.csv"
    store.write_corrections_csv(data.dataset, out)
    written = pd.read_csv(out)
    assert written.to_dict("records") == [{"path": "/photos/a.png", "label": "pit"}]
    decided = store.corrections().set_index("id")
    assert decided.loc[filed_elsewhere, "status"] == "confirmed" and decided.loc[here, "status"] == "rejected"
    assert decided.loc[here, "decided_by"] == "eng"


def test_retrain_without_confirmed_corrections_is_refused(run, store, tmp_path):
    with pytest.raises(ReviewError, match="No confirmed corrections for"):
        retrain_with_corrections(run, store, ENGINEER, root=tmp_path / "runs")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.run_id]
