"""AppTest of the Review page's operating point tab on a prepared run (tests/review_support.py)."""

from __future__ import annotations

import pytest

from defect_model.access.accounts import audit_log
from defect_model.runs.folders import RunDir
from defect_model.workflows.operating_point import load_point
from review_support import open_app_page, review_env


@pytest.fixture()
def run(tmp_path, monkeypatch) -> RunDir:
    return review_env(tmp_path, monkeypatch)["run"]


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_no_escapes_costs_review_and_the_point_is_saved_with_the_run(run):
    at = open_app_page("pages/review.py", "engineer")
    limit = next(n for n in at.number_input if n.label.startswith("At most this share of escapes"))
    limit.set_value(0.0).run()
    # review_support.VAL: the one defective photo called ok is pit_0002 at 0.55, so passing none of it needs a
    # good threshold above 0.55: 0.80, the next ok confidence. To a person then: the blank frame (ok 0.50),
    # pit_0002, ok_0002 (pit 0.60 < 0.7) and scratch_0002 (pit 0.65): 4 of 11 photos.
    assert metric(at, "Pass from") == "0.800"
    assert metric(at, "Escapes") == "0.0%" and metric(at, "Review load") == "36.4%"
    per_class = at.dataframe[-1].value.set_index("class")
    assert per_class.loc["pit", "passed"] == 0 and per_class.loc["pit", "to a person"] == pytest.approx(1 / 4)
    next(b for b in at.button if b.label == "Save this operating point with the model").click().run()
    assert not at.exception
    saved = load_point(run)
    assert saved.good_threshold == pytest.approx(0.80) and saved.max_escape_rate == 0.0
    assert saved.review_load == pytest.approx(4 / 11)
    [event] = audit_log().events("operating point", 5)
    assert event["actor"] == "eng" and event["target"] == run.run_id


def test_photos_the_model_finds_unfamiliar_count_as_review_at_every_point(run):
    import pandas as pd

    table = pd.read_csv(run.val_predictions)
    table["unfamiliar_score"] = 1.0
    table["unfamiliar"] = table["path"] == "ok/ok_0000.png"  # the surest ok photo (0.90) is unlike training
    table.to_csv(run.val_predictions, index=False)
    at = open_app_page("pages/review.py", "engineer")
    next(n for n in at.number_input if n.label.startswith("At most this share of escapes")).set_value(0.0).run()
    assert any("1 of them, unlike the training photos, go to a person" in c for c in at.caption.values)
    # as above, plus ok_0000 to a person: 5 of 11
    assert metric(at, "Review load") == "45.5%" and metric(at, "Escapes") == "0.0%"
