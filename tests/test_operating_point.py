"""The operating point: escapes against review load on a hand-made table of probabilities."""

import itertools

import numpy as np
import pytest

from defect_model.access.accounts import PermissionDenied, audit_log
from defect_model.runs.folders import RunDir
from defect_model.workflows.operating_point import (OperatingPoint, least_review_load, load_point, outcome,
                                                    per_class, save_point, sweep)
from defect_model.serve.verdicts import decide_verdict

from conftest import ENGINEER, INSPECTOR

CLASSES = ["ok", "crack", "pit"]
GOOD = ["ok"]
# (true class, probabilities ok / crack / pit), written out by hand
ROWS = [
    ("ok", (0.97, 0.02, 0.01)), ("ok", (0.90, 0.05, 0.05)), ("ok", (0.80, 0.10, 0.10)), ("ok", (0.65, 0.30, 0.05)),
    ("ok", (0.55, 0.40, 0.05)), ("ok", (0.30, 0.60, 0.10)),
    ("crack", (0.85, 0.10, 0.05)), ("crack", (0.60, 0.35, 0.05)), ("crack", (0.20, 0.75, 0.05)),
    ("crack", (0.05, 0.90, 0.05)),
    ("pit", (0.70, 0.05, 0.25)), ("pit", (0.10, 0.10, 0.80)), ("pit", (0.40, 0.05, 0.55)),
    ("pit", (0.02, 0.03, 0.95)),
]
PROBS = np.array([p for _, p in ROWS])
LABELS = np.array([CLASSES.index(c) for c, _ in ROWS])


def test_outcome_counts_escapes_review_and_false_rejects_by_hand():
    # good threshold 0.6: the ok photos at 0.97-0.65 pass, and so do three defective ones whose top class is ok
    # (crack 0.85, crack 0.60, pit 0.70): 3 of 8 defective photos escape;
    # defect threshold 0.7: crack 0.75 / 0.90 and pit 0.80 / 0.95 are rejected;
    # to a person: ok 0.55, the ok photo with crack 0.60 on top, pit 0.55 -> 3 of 14
    result = outcome(PROBS, LABELS, CLASSES, GOOD, 0.6, 0.7)
    assert result.escape_rate == pytest.approx(3 / 8)
    assert result.review_load == pytest.approx(3 / 14)
    assert result.false_reject_rate == pytest.approx(0)  # the ok photo with crack 0.60 on top goes to a person


def test_the_verdict_rule_with_a_point_matches_the_table_function():
    from defect_model.workflows.operating_point import verdicts

    table = verdicts(PROBS, CLASSES, GOOD, 0.82, 0.7)
    assert list(table) == [decide_verdict(p, CLASSES, GOOD, 0.7, good_threshold=0.82) for p in PROBS]


@pytest.mark.parametrize("limit", [0.0, 0.125, 0.25, 0.375, 0.5, 1.0])
def test_least_review_load_meets_the_limit_and_no_threshold_does_better(limit):
    point = least_review_load(PROBS, LABELS, CLASSES, GOOD, limit, 0.7)
    assert point.escape_rate <= limit
    # brute force over a fine grid of good thresholds: none meets the limit with less review load
    for t in np.linspace(0, 1.001, 2003):
        other = outcome(PROBS, LABELS, CLASSES, GOOD, t, 0.7)
        if other.escape_rate <= limit:
            assert other.review_load >= point.review_load - 1e-12


def test_the_points_chosen_on_the_hand_made_table():
    # defective photos whose top class is ok: crack 0.85, pit 0.70, crack 0.60 -> passing none needs a good
    # threshold just above 0.85 (the ok photos at 0.97 and 0.90 still pass); to a person: ok 0.80, 0.65, 0.55,
    # the ok photo with crack 0.60 on top, crack 0.85, crack 0.60, pit 0.70, pit 0.55 -> 8 of 14
    strict = least_review_load(PROBS, LABELS, CLASSES, GOOD, 0.0, 0.7)
    assert 0.85 < strict.good_threshold <= 0.90  # any threshold in between gives the same verdicts
    assert strict.escape_rate == 0 and strict.review_load == pytest.approx(8 / 14)
    one = least_review_load(PROBS, LABELS, CLASSES, GOOD, 1 / 8, 0.7)  # one escape allowed: the crack at 0.85
    assert one.good_threshold == pytest.approx(0.80) and one.escape_rate == pytest.approx(1 / 8)
    assert one.review_load == pytest.approx(6 / 14)  # ok 0.65, 0.55, ok with crack on top, crack 0.60, pit 0.70, 0.55
    table = sweep(PROBS, LABELS, CLASSES, GOOD, 0.7)
    assert table["escape_rate"].is_monotonic_decreasing and table["review_load"].is_monotonic_increasing


def test_per_class_detail():
    table = per_class(PROBS, LABELS, CLASSES, GOOD, 0.6, 0.7).set_index("class")
    assert table.loc["crack", "passed"] == pytest.approx(2 / 4) and table.loc["pit", "to a person"] == pytest.approx(1 / 4)
    assert table["photos"].sum() == len(ROWS)


def test_no_good_class_means_nothing_to_trade():
    with pytest.raises(ValueError, match="no class is marked good"):
        least_review_load(PROBS, LABELS, CLASSES, [], 0.05)


def test_saving_a_point_needs_an_engineer_and_is_audited(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    point = least_review_load(PROBS, LABELS, CLASSES, GOOD, 0.125, 0.7)
    with pytest.raises(PermissionDenied):
        save_point(run, point, INSPECTOR)
    assert load_point(run) is None
    save_point(run, point, ENGINEER)
    assert load_point(run) == point
    [event] = audit_log().events("operating point", 5)
    assert event["actor"] == "eng" and event["target"] == "run" and event["detail"]["good_threshold"] == point.good_threshold
    with pytest.raises(ValueError, match="not a probability"):
        save_point(run, OperatingPoint(1.5, 0.7), ENGINEER)


def test_the_hot_folder_decides_with_the_saved_point_unless_given_a_threshold():
    from pathlib import Path

    from defect_model.serve.verdicts import DEFAULT_THRESHOLD
    from defect_model.workflows.hotfolder import ActiveModel, settings_for

    with_point = ActiveModel("run", "sha", Path("checkpoint.pt"), None, ["ok"], OperatingPoint(0.9, 0.6))
    settings = settings_for(with_point, None)
    assert (settings.threshold, settings.good_threshold) == (0.6, 0.9)
    settings = settings_for(with_point, 0.5)  # --threshold given: one threshold, as before
    assert (settings.threshold, settings.good_threshold) == (0.5, None)
    settings = settings_for(ActiveModel("run", "sha", Path("checkpoint.pt"), None, ["ok"]), None)
    assert (settings.threshold, settings.good_threshold) == (DEFAULT_THRESHOLD, None)


def test_an_inspection_override_is_recorded():
    from defect_model.workflows.operating_point import record_override

    record_override(INSPECTOR, "run", 0.4, OperatingPoint(0.9, 0.6), 3)
    [event] = audit_log().events("threshold override", 5)
    assert event["actor"] == "ana" and event["detail"]["threshold"] == 0.4 and event["detail"]["photos"] == 3


# Two good classes: the model mistakes cracks for "rework" at high confidence but for "ok" only at 0.6, so
# "ok" can pass from a lower probability than "rework" without letting a crack through.
CLASSES_2 = ["ok", "rework", "crack"]
GOOD_2 = ["ok", "rework"]
ROWS_2 = [
    ("ok", (0.95, 0.03, 0.02)), ("ok", (0.90, 0.05, 0.05)), ("ok", (0.80, 0.10, 0.10)), ("ok", (0.70, 0.10, 0.20)),
    ("crack", (0.60, 0.10, 0.30)),
    ("rework", (0.05, 0.90, 0.05)), ("rework", (0.10, 0.85, 0.05)),
    ("crack", (0.10, 0.80, 0.10)), ("crack", (0.05, 0.75, 0.20)),
    ("crack", (0.05, 0.05, 0.90)), ("ok", (0.30, 0.10, 0.60)),
]
PROBS_2 = np.array([p for _, p in ROWS_2])
LABELS_2 = np.array([CLASSES_2.index(c) for c, _ in ROWS_2])


def test_per_class_thresholds_pass_more_when_one_good_class_is_safer_than_the_other():
    # no escape allowed: one threshold must clear the crack at rework 0.80, so ok 0.80 and 0.70 go to a person;
    # per class, ok passes from 0.70 (the crack at ok 0.60 stays with a person) and rework from 0.85
    point = least_review_load(PROBS_2, LABELS_2, CLASSES_2, GOOD_2, 0.0, 0.7)
    assert point.passes_from == {"ok": pytest.approx(0.70), "rework": pytest.approx(0.85)}
    assert point.escape_rate == 0
    # to a person: the crack at ok 0.60, the two cracks on rework, the ok photo with crack 0.60 on top -> 4 of 11
    assert point.review_load == pytest.approx(4 / 11)
    # the best single threshold (just above 0.80) sends ok 0.80 and 0.70 to a person as well: 6 of 11
    assert outcome(PROBS_2, LABELS_2, CLASSES_2, GOOD_2, 0.8001, 0.7).review_load == pytest.approx(6 / 11)
    verdicts_each = [decide_verdict(p, CLASSES_2, GOOD_2, 0.7, good_threshold=point.passes_from) for p in PROBS_2]
    assert verdicts_each[:5] == ["pass", "pass", "pass", "pass", "needs_person"]
    assert verdicts_each[7:9] == ["needs_person", "needs_person"]


@pytest.mark.parametrize("limit", [0.0, 0.2, 0.4, 0.6, 1.0])
def test_per_class_thresholds_are_the_least_review_load_of_every_pair(limit):
    point = least_review_load(PROBS_2, LABELS_2, CLASSES_2, GOOD_2, limit, 0.7)
    assert point.escape_rate <= limit + 1e-12
    grid = np.concatenate([[0.0], np.unique(PROBS_2), [1.01]])  # every value at which a verdict can change
    for ok_t, rework_t in itertools.product(grid, grid):
        other = outcome(PROBS_2, LABELS_2, CLASSES_2, GOOD_2, {"ok": ok_t, "rework": rework_t}, 0.7)
        if other.escape_rate <= limit + 1e-12:
            assert other.review_load >= point.review_load - 1e-12, (ok_t, rework_t)


def test_one_good_class_keeps_one_threshold():
    point = least_review_load(PROBS, LABELS, CLASSES, GOOD, 0.125, 0.7)
    assert point.class_thresholds == () and point.passes_from == point.good_threshold


def test_unfamiliar_photos_go_to_a_person_at_every_point():
    unfamiliar = np.zeros(len(ROWS), dtype=bool)
    unfamiliar[0] = True  # the ok photo at 0.97
    for t in (0.0, 0.6, 0.95):
        plain = outcome(PROBS, LABELS, CLASSES, GOOD, t, 0.7)
        flagged = outcome(PROBS, LABELS, CLASSES, GOOD, t, 0.7, unfamiliar)
        assert flagged.review_load == pytest.approx(plain.review_load + 1 / 14)
    point = least_review_load(PROBS_2, LABELS_2, CLASSES_2, GOOD_2, 0.0, 0.7, np.arange(len(ROWS_2)) == 3)
    assert point.review_load == pytest.approx(5 / 11)  # ok 0.70 is flagged: one more to a person, nothing else


def test_a_point_with_per_class_thresholds_is_saved_and_read_back(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    point = least_review_load(PROBS_2, LABELS_2, CLASSES_2, GOOD_2, 0.0, 0.7)
    save_point(run, point, ENGINEER)
    assert load_point(run) == point
    from defect_model.database import open_database, operating_points

    saved = operating_points.newest(open_database(), run.run_id)  # the plant's one record, not the run folder
    assert saved["class_thresholds"] == {"ok": 0.7, "rework": 0.85} and saved["by"] == ENGINEER.name
    assert not (run.path / "operating_point.json").exists()
    assert point.describe_pass() == "0.70 (ok), 0.85 (rework)"
    with pytest.raises(ValueError, match="pass threshold of 'ok'"):
        save_point(run, OperatingPoint(0.5, 0.7, class_thresholds=(("ok", -0.1),)), ENGINEER)


def test_the_point_is_the_databases_on_both_backends_and_an_older_runs_file_is_still_read(database, tmp_path):
    """Issue 29: the saved point lives in the plant's database (every server and watcher reads the same); a run
    from before keeps the point its folder holds until a new one is saved."""
    import json

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    older = OperatingPoint(0.8, 0.6)
    (run.path / "operating_point.json").write_text(json.dumps({**older.to_dict(), "by": "eng", "at": "2026"}))
    assert load_point(run) == older
    point = least_review_load(PROBS, LABELS, CLASSES, GOOD, 0.125, 0.7)
    save_point(run, point, ENGINEER)
    assert load_point(run) == point
