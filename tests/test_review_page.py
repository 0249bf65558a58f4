"""AppTest of the Review page on a prepared run directory (tests/review_support.py)."""

from __future__ import annotations

import base64
from pathlib import Path
import json
import time

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from defect_model.workflows.calibration import reliability
from defect_model.runs.folders import list_runs
from conftest import shown
from review_support import (BLANK, PLANTED, PLANTED_TRAIN, expected_confusion, open_app_page, review_env,
                            tree_fingerprint)



@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A dataset, a finished active run, and empty app data, all private to the test."""
    return review_env(tmp_path, monkeypatch)


def open_review(role: str = "engineer") -> AppTest:
    return open_app_page("pages/review.py", role)


def figure(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def decode(values) -> np.ndarray:
    """Plotly sends numpy arrays as typed arrays: {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(values, dict) and "bdata" in values:
        shape = [int(n) for n in str(values.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).reshape(shape)
    return np.asarray(values)


def heatmap_values(at: AppTest) -> np.ndarray:
    trace = next(t for t in figure(at)["data"] if t["type"] == "heatmap")
    return decode(trace["z"])


def card_paths(at: AppTest, section: str) -> list[str]:
    """The photo paths of the cards shown in a section, top to bottom."""
    return [b.key.split(":")[1] for b in at.button if b.key and b.key.startswith(f"{section}:")
            and b.key.endswith(":relabel")]


def test_confusion_matrix_counts_equal_val_predictions(env):
    at = open_review()
    expected = expected_confusion(pd.read_csv(env["run"].val_predictions))
    assert heatmap_values(at).tolist() == expected.tolist()
    # The header: defect miss rate first, recall per class beside accuracy.
    labels = [m.label for m in at.metric]
    assert labels[:5] == ["Defect miss rate", "False-reject rate", "Worst recall (pit)", "Val accuracy", "Macro-F1"]
    assert at.metric[0].value == "14.3%"

    at.button_group(key="cm_view").set_value("Row-normalised").run()
    shares = heatmap_values(at)
    np.testing.assert_allclose(shares, expected / expected.sum(axis=1, keepdims=True))


def test_a_cell_lists_its_photos_and_a_relabel_writes_one_row(env):
    at = open_review()
    before = tree_fingerprint(env["dataset"])
    at.selectbox(key="cell_true").set_value("pit")
    at.selectbox(key="cell_pred").set_value("scratch")
    at.run()
    listed = at.dataframe[0].value
    assert listed["path"].tolist() == [PLANTED]
    assert any("1 photo(s) of pit predicted as scratch" in m.value for m in at.markdown)

    # Never pre-filled with the model's answer (issue #26 item 3): empty, and Relabel waits for a choice.
    box = at.selectbox(key=f"cell:{PLANTED}:new_label")
    assert box.value is None and box.proto.placeholder == "choose the correct class"
    assert at.button(key=f"cell:{PLANTED}:relabel").disabled
    at.selectbox(key=f"cell:{PLANTED}:new_label").set_value("scratch").run()
    at.button(key=f"cell:{PLANTED}:relabel").click().run()
    assert not at.exception
    rows = env["store"].corrections()
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["source"], row["action"], row["status"], row["who"]) == ("review", "relabel", "confirmed", "eng")
    assert (row["photo_path"], row["original_label"], row["new_label"]) == (PLANTED, "pit", "scratch")
    assert row["dataset"] == str(env["dataset"]) and row["run_id"] == env["run"].run_id and row["time"]
    assert any("relabelled to scratch" in s.value for s in at.success)
    assert tree_fingerprint(env["dataset"]) == before, "the original photos are never edited or deleted"
    at.run()  # a rerun does not repeat the decision
    assert len(env["store"].corrections()) == 1


def test_misclassified_gallery_worst_first_with_filters(env):
    at = open_review()
    predictions = pd.read_csv(env["run"].val_predictions)
    wrong = predictions[predictions["true_label"] != predictions["pred_label"]].sort_values("loss", ascending=False)
    assert card_paths(at, "wrong") == wrong["path"].tolist()
    at.multiselect(key="wrong_true").set_value(["pit"]).run()
    at.multiselect(key="wrong_pred").set_value(["ok"]).run()
    assert card_paths(at, "wrong") == ["pit/pit_0002.png"]


def test_an_inspector_cannot_reach_the_review_page_by_its_address(env):
    from streamlit.testing.v1 import AppTest

    from conftest import sign_in

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    sign_in(at, "inspector")
    at.switch_page("pages/review.py")
    at.run()
    # The address opens a page that says why, not the Review page (issue #26 item 5: not a silent Inspect either)
    assert any("Review is not available for your role (inspector)" in e.value for e in at.error)
    assert not at.metric and not [t for t in at.tabs]
    assert not [b for b in at.button if b.key and b.key.endswith((":relabel", ":confirm", ":unusable"))]


def test_per_class_metrics_and_calibration_match_the_run(env):
    at = open_review()
    metrics = json.loads(env["run"].metrics.read_text())
    table = next(d.value for d in at.dataframe if "precision" in d.value.columns)
    per_class = table.set_index("class")
    for name, values in metrics["per_class"].items():
        assert per_class.loc[name, "recall"] == pytest.approx(values["recall"])
        assert per_class.loc[name, "support"] == values["support"]
    assert per_class.loc["macro avg", "f1"] == pytest.approx(metrics["macro_f1"])
    assert "accuracy" not in per_class.index  # it has no precision or recall: said in words below the table
    assert any(c.value.startswith(f"Accuracy {metrics['accuracy']:.3f}") for c in at.caption)
    expected = reliability(pd.read_csv(env["run"].val_predictions), metrics["classes"], 10)
    ece = next(m for m in at.metric if m.label == "Expected calibration error")
    assert ece.value == f"{expected.ece:.3f}"


def test_inspector_corrections_appear_for_confirmation(env):
    store = env["store"]
    proposal = store.add_correction(source="inspection", action="relabel", photo_path=str(env["dataset"] / BLANK),
                                    new_label="pit", who="ana", run_id=env["run"].run_id, model_label="ok")
    at = open_review()
    assert any("ana proposes to relabel **zz\\_blank\\.png** as **pit**" in m.value for m in at.markdown)
    at.button(key=f"inspection:{proposal}:yes").click().run()
    assert not at.exception
    table = store.corrections().set_index("id")
    assert table.loc[proposal, "status"] == "confirmed" and table.loc[proposal, "decided_by"] == "eng"
    refiled = table[table["note"].str.contains(f"#{proposal}")]
    assert len(refiled) == 1 and refiled.iloc[0]["dataset"] == str(env["dataset"])
    assert any("No inspector corrections are waiting" in i.value for i in at.info)


def test_retrain_with_corrections_trains_on_the_corrected_labels(env):
    """The planted photo (a scratch filed as pit) is relabelled and the blank frame dropped; the retrain's
    validation set then carries the corrected label and lacks the blank frame."""
    at = open_review()
    before = tree_fingerprint(env["dataset"])
    at.multiselect(key="wrong_true").set_value(["pit"]).run()
    at.selectbox(key=f"wrong:{PLANTED}:new_label").set_value("scratch").run()  # Relabel waits for a choice
    at.button(key=f"wrong:{PLANTED}:relabel").click().run()
    at.selectbox(key="cell_true").set_value("ok")
    at.selectbox(key="cell_pred").set_value("ok")
    at.run()
    at.button(key=f"cell:{BLANK}:unusable").click().run()
    # A training photo is not on the Review page; its fix arrives like any confirmed correction.
    env["store"].add_correction(source="review", action="relabel", photo_path=PLANTED_TRAIN, new_label="scratch",
                                original_label="pit", dataset=str(env["dataset"]), who="eng", status="confirmed")
    assert len(env["store"].corrections(status="confirmed")) == 3

    at.button(key="retrain").click().run()  # asks first, with the time it will take
    assert [run.run_id for run in list_runs(env["runs"])] == [env["run"].run_id]
    assert any("of training on this machine" in m.value and "3 correction(s)" in m.value for m in at.markdown)
    at.button(key="retrain_confirm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    new = next(run for run in list_runs(env["runs"]) if run.run_id != env["run"].run_id)
    deadline = time.time() + 240
    while new.status()["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(1)
    assert new.status()["state"] == "done", new.log.read_text()[-2000:]

    corrections = pd.read_csv(_config(new)["corrections_csv"], keep_default_na=False)
    assert dict(zip(corrections["path"], corrections["label"])) == {PLANTED: "scratch", BLANK: "",
                                                                    PLANTED_TRAIN: "scratch"}
    val = pd.read_csv(new.val_predictions)
    assert val.loc[val["path"] == PLANTED, "true_label"].tolist() == ["scratch"]
    assert BLANK not in set(val["path"])
    report = json.loads(new.data_report.read_text())
    assert report["corrections_applied"] == 3
    # Trained on the corrected labels: the training photos per class are the parent split's, one pit moved to scratch.
    split = pd.read_csv(env["run"].split)
    parent_counts = split[split["split"] == "train"]["label"].value_counts().to_dict()
    assert report["train_counts"] == {"ok": parent_counts["ok"], "pit": parent_counts["pit"] - 1,
                                      "scratch": parent_counts["scratch"] + 1}
    assert _config(new)["split_csv"], "the retrain keeps the original run's split"
    assert _config(new)["init_from"] == str(env["run"].path.resolve()), "it starts from the corrected run's weights"
    warm = [e["text"] for e in new.read_events() if e["type"] == "decision" and e["text"].startswith("started from")]
    assert warm and "head included" in warm[0]
    provenance = json.loads((new.path / "retrain.json").read_text())
    assert provenance["parent_run"] == env["run"].run_id and provenance["by"] == "eng"
    assert tree_fingerprint(env["dataset"]) == before


def _config(run) -> dict:
    import yaml

    return yaml.safe_load(run.config.read_text())


def test_a_damaged_predictions_file_is_named_on_the_page(env):
    env["run"].val_predictions.write_text("path,true_label\nx.png,ok\n")
    at = open_review()
    assert any(str(env["run"].val_predictions) in shown(e.value) and "missing column(s)" in shown(e.value)
               for e in at.error)


def test_no_runs_yet(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "app-data"))
    at = open_review()
    assert any("No run with validation results yet" in i.value for i in at.info)


def test_inspector_correction_cards_name_the_uploaded_file_not_the_stored_copy(env):
    store = env["store"]
    stored = "/var/photos/ab/ab12cd34ef.png"
    inspection = store.log_inspection(file_name="line3-scratch-07.png", sha256="ab12cd34ef", photo_path=stored,
                                      verdict="pass", inspector="ana", run_id=env["run"].run_id, predicted="ok")
    store.add_correction(source="inspection", action="relabel", photo_path=stored, new_label="scratch", who="ana",
                         run_id=env["run"].run_id, model_label="ok", inspection_id=inspection, note="a *deep* one")
    at = open_review()
    text = next(m.value for m in at.markdown if "proposes to" in m.value)
    assert "line3\\-scratch\\-07\\.png" in text and "ab12cd34ef" not in text
    assert "Note: a *deep* one" in [t.value for t in at.text]  # the inspector's words as typed, not Markdown


def test_a_relabel_clicked_twice_is_one_correction_and_the_card_shows_the_new_label(env):
    at = open_review()
    at.multiselect(key="wrong_true").set_value(["pit"]).run()
    at.selectbox(key=f"wrong:{PLANTED}:new_label").set_value("scratch").run()  # Relabel waits for a choice
    at.button(key=f"wrong:{PLANTED}:relabel").click().run()
    at.button(key=f"wrong:{PLANTED}:relabel").click().run()
    assert len(env["store"].corrections()) == 1
    title = next(m.value for m in at.markdown if m.value.startswith("**pit/zz\\_planted"))
    assert "label **scratch** (relabelled; filed as pit)" in title
    assert at.selectbox(key=f"wrong:{PLANTED}:new_label").value == "scratch"  # the same choice: a click repeats it
    assert at.button(key=f"wrong:{PLANTED}:confirm").label == "Back to pit"
    at.button(key=f"wrong:{PLANTED}:confirm").click().run()  # undo: the label it was filed under is right
    title = next(m.value for m in at.markdown if m.value.startswith("**pit/zz\\_planted"))
    assert "label **pit**, predicted **scratch**" in title


def test_the_probability_list_always_has_the_photos_label():
    from collections import namedtuple

    from ui.review_cards import probability_lines

    classes = [f"c{i}" for i in range(7)]
    Row = namedtuple("Row", ["true_label", "pred_label"] + [f"prob_{c}" for c in classes])
    row = Row("c6", "c0", 0.4, 0.2, 0.15, 0.1, 0.08, 0.05, 0.02)  # the label has the lowest probability
    lines = probability_lines(row, classes, "c6")
    assert len(lines) == 6 and lines[0] == "c0: **40.0%** (predicted)" and lines[-1] == "c6: **2.0%** (label)"
    relabelled = probability_lines(row, classes, "c5")
    assert relabelled[-2:] == ["c5: **5.0%** (label)", "c6: **2.0%** (filed as)"]


def test_retrain_is_not_started_without_confirmation(env):
    env["store"].add_correction(source="review", action="relabel", photo_path=PLANTED, new_label="scratch",
                                original_label="pit", dataset=str(env["dataset"]), who="eng", status="confirmed")
    at = open_review()
    at.button(key="retrain").click().run()
    plan = next(m.value for m in at.markdown if "of training on this machine" in m.value)
    assert plan.startswith("About **") and "1 correction(s)" in plan and "resnet18 at 64 px" in plan
    at.button(key="retrain_cancel").click().run()
    assert not at.exception
    assert [run.run_id for run in list_runs(env["runs"])] == [env["run"].run_id]
    assert not [b for b in at.button if b.key == "retrain_confirm"]  # the question is closed
