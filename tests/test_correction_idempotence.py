"""A correction saved twice (Enter in the form, then its button; a double click) is stored once: the store
decides, not the page."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from defect_model.access.accounts import Actor, audit_log
from defect_model.workflows.lifecycle import set_active
from defect_model.workflows.review import load_review, record_decision
from defect_model.runs.store import InspectionStore
from review_support import PLANTED, make_dataset, write_run

PROPOSAL = dict(source="inspection", action="relabel", photo_path="/photos/ab/abc.png", new_label="pit", who="ana",
                sha256="abc", model_label="ok", run_id="r1", inspection_id=7, note="dark streak")


@pytest.fixture()
def store(tmp_path):
    return InspectionStore(tmp_path / "db" / "inspections.sqlite")


def test_the_same_correction_twice_is_one_row(store):
    first = store.add_correction(**PROPOSAL)
    assert store.add_correction(**PROPOSAL) == first
    assert store.add_correction_once(**PROPOSAL) == (first, False)
    assert len(store.corrections()) == 1


def test_a_different_label_person_or_photo_is_a_new_correction(store):
    store.add_correction(**PROPOSAL)
    store.add_correction(**{**PROPOSAL, "new_label": "scratch"})  # a change of mind
    store.add_correction(**{**PROPOSAL, "who": "bo"})  # a second person agreeing counts
    store.add_correction(**{**PROPOSAL, "photo_path": "/photos/cd/cde.png"})
    store.add_correction(**{**PROPOSAL, "action": "unusable", "new_label": None})
    assert len(store.corrections()) == 5


def test_going_back_to_an_earlier_label_is_stored_so_the_latest_decision_wins(store, tmp_path):
    decision = dict(source="review", action="relabel", photo_path="pit/1.png", dataset="/d", who="eng",
                    status="confirmed")
    store.add_correction(**decision, new_label="crack")
    store.add_correction(**decision, new_label="scratch")
    store.add_correction(**decision, new_label="crack")
    assert len(store.corrections()) == 3
    store.write_corrections_csv("/d", tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text().splitlines()[1] == "pit/1.png,crack"


def test_a_rejected_proposal_may_be_proposed_again(store):
    first = store.add_correction(**PROPOSAL)
    store.decide_correction(first, "rejected", who="eng")
    assert store.add_correction(**PROPOSAL) != first
    assert len(store.corrections()) == 2


def test_many_sessions_saving_the_same_correction_at_once_store_one(store):
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: store.add_correction(**PROPOSAL), range(16)))
    assert len(ids) == 1 and len(store.corrections()) == 1


def test_a_review_decision_clicked_twice_is_one_correction_and_one_audit_entry(tmp_path):
    run = write_run(tmp_path / "runs", make_dataset(tmp_path / "dataset"))
    set_active(run, by="setup", root=tmp_path / "runs")
    store = InspectionStore(tmp_path / "db" / "inspections.sqlite")
    data = load_review(run)
    engineer = Actor("eng", "engineer")
    first = record_decision(store, data, PLANTED, "relabel", engineer, "scratch")
    assert record_decision(store, data, PLANTED, "relabel", engineer, "scratch") == first
    assert len(store.corrections()) == 1
    assert [e["action"] for e in audit_log().events()] == ["relabel"]


def test_photos_kept_without_a_copy_are_told_apart_by_their_fingerprint(store):
    uncopied = {**PROPOSAL, "photo_path": ""}
    first = store.add_correction(**uncopied)
    assert store.add_correction(**uncopied) == first
    assert store.add_correction(**{**uncopied, "sha256": "other"}) != first
