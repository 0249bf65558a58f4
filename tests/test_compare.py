import json

import pytest

from defect_model.workflows.compare import changed_predictions, compare_runs, epoch_curves, metric_deltas, with_confidence
from review_support import BLANK, PLANTED, VAL, make_dataset, predictions_table, write_run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("compare") / "data")


def candidate_rows():
    """The retrain: planted photo relabelled to scratch, blank dropped, one ok photo now wrong, pit_0002 fixed."""
    rows = []
    for path, true, pred, conf in VAL:
        if path == BLANK:
            continue
        if path == PLANTED:
            true = "scratch"
        if path == "pit/pit_0002.png":
            pred = "pit"
        if path == "ok/ok_0001.png":
            pred = "scratch"
        rows.append((path, true, pred, conf))
    return rows


def test_compare_two_runs(dataset, tmp_path):
    a = write_run(tmp_path, dataset, "a", checkpoint=False)
    b = write_run(tmp_path, dataset, "b", rows=candidate_rows(), checkpoint=False)
    result = compare_runs(a, b)
    changed = result.changed.set_index("path")
    assert set(changed.index) == {"pit/pit_0002.png", "ok/ok_0001.png"}
    assert changed.loc["pit/pit_0002.png", "outcome"] == "fixed"
    assert changed.loc["ok/ok_0001.png", "outcome"] == "broken"
    assert result.fixed == 1 and result.broken == 1
    assert result.changed["outcome"].iloc[0] == "broken", "regressions are listed first"
    assert changed.loc["ok/ok_0001.png", ["pred_a", "pred_b"]].tolist() == ["ok", "scratch"]
    assert changed.loc["ok/ok_0001.png", "conf_a"] == pytest.approx(0.80)
    assert result.only_a == [BLANK] and result.only_b == []
    assert result.common_photos == len(VAL) - 1

    metrics = result.metrics.set_index("metric")
    assert result.metrics["metric"].iloc[0] == "defect miss rate", "the defect miss rate comes first"
    for name in ("a", "b"):
        data = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics.loc["accuracy", name] == pytest.approx(data["accuracy"])
        assert metrics.loc["recall pit", name] == pytest.approx(data["per_class"]["pit"]["recall"])
    accuracy = metrics.loc["accuracy"]
    assert accuracy["delta"] == pytest.approx(accuracy["b"] - accuracy["a"])


def test_unchanged_predictions_give_an_empty_list_and_labels_are_judged_by_b():
    a = with_confidence(predictions_table())
    assert changed_predictions(a, a).empty
    b_rows = [(p, "scratch" if p == PLANTED else t, "pit" if p == PLANTED else pr, c) for p, t, pr, c in VAL]
    changed = changed_predictions(a, with_confidence(predictions_table(b_rows)))
    row = changed.set_index("path").loc[PLANTED]
    # A said scratch (right under the corrected label), B says pit: a regression, and the label was corrected.
    assert row["outcome"] == "broken" and bool(row["label_corrected"]) and row["true_label_a"] == "pit"


def test_better_respects_direction():
    base = {"classes": ["ok", "pit"], "accuracy": 0.8, "micro_f1": 0.8, "macro_f1": 0.7, "val_loss": 0.5,
            "confusion_matrix": [[4, 1], [1, 4]],
            "per_class": {c: {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 5} for c in ("ok", "pit")}}
    better = dict(base, accuracy=0.9, val_loss=0.3, confusion_matrix=[[4, 1], [0, 5]])
    table = metric_deltas(base, better, ["ok"], ["ok"]).set_index("metric")
    assert table.loc["accuracy", "better"] == "b"
    assert table.loc["val loss", "better"] == "b"  # lower loss is better
    assert table.loc["defect miss rate", "better"] == "b"  # 1/5 -> 0/5
    assert table.loc["macro-F1", "better"] == ""


def test_epoch_curves_keep_the_last_report_of_a_repeated_epoch(dataset, tmp_path):
    run = write_run(tmp_path, dataset, "c", checkpoint=False)
    with run.events.open("a") as handle:
        handle.write(json.dumps({"type": "epoch", "epoch": 2, "train_loss": 0.1, "val_loss": 0.2,
                                 "val_accuracy": 0.99, "val_macro_f1": 0.98, "elapsed_s": 9.0}) + "\n")
    curves = epoch_curves(run)
    assert curves["epoch"].tolist() == [1, 2]
    assert curves["val_accuracy"].iloc[-1] == 0.99


def test_a_run_without_results_is_refused_with_its_path(dataset, tmp_path):
    a = write_run(tmp_path, dataset, "a", checkpoint=False)
    b = write_run(tmp_path, dataset, "b", checkpoint=False)
    b.metrics.unlink()
    with pytest.raises(FileNotFoundError, match=str(b.path)):
        compare_runs(a, b)
