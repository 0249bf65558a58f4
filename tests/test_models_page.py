"""AppTest of the Models page on prepared run directories (tests/review_support.py)."""

from __future__ import annotations


import pytest
from streamlit.testing.v1 import AppTest

from defect_model.workflows.compare import compare_runs
from defect_model.workflows.lifecycle import activation_history
from defect_model.common.quality import assess
from defect_model.workflows.lifecycle import set_active
from defect_model.runs.folders import get_active
from conftest import shown
from review_support import PLANTED, VAL, make_dataset, open_app_page, write_run

# The candidate fixes pit_0002 and the planted photo's label, and breaks ok_0001.
BETTER = [(p, "scratch" if p == PLANTED else t, {"pit/pit_0002.png": "pit", "ok/ok_0001.png": "scratch"}.get(p, pr), c)
          for p, t, pr, c in VAL]
COLLAPSED = [(p, t, "ok", 0.9) for p, t, _, _ in VAL]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("models") / "data")


@pytest.fixture()
def runs(dataset, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(root))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "app-data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "app-data" / "inspections.sqlite"))
    made = {
        "base": write_run(root, dataset, "20260101-120000-resnet18-base"),
        "better": write_run(root, dataset, "20260102-120000-resnet18-better", rows=BETTER,
                            started="2026-01-02T12:00:00+00:00"),
        "collapsed": write_run(root, dataset, "20260103-120000-resnet18-flat", rows=COLLAPSED,
                               started="2026-01-03T12:00:00+00:00"),
    }
    set_active(made["base"], by="setup", root=root)
    return made


def open_models(role: str = "admin", name: str | None = None) -> AppTest:
    return open_app_page("pages/models.py", role, name)


def run_choice(at: AppTest, key: str):
    """A run list (ui.run_picker.run_select keys its widget by `key` and its labels)."""
    return next(box for box in at.selectbox if box.key and box.key.split("@")[0] == key)


def frame(at: AppTest, column: str):
    """The first table on the page that has this column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_every_run_is_a_row_and_the_defect_miss_rate_comes_first(runs, dataset):
    at = open_models()
    table = frame(at, "flag")
    assert table["run"].tolist() == [runs[k].run_id for k in ("collapsed", "better", "base")]
    assert list(table.columns[:5]) == ["active", "run", "status", "started (UTC)", "defect miss rate"]
    for name, run in runs.items():
        row = table.set_index("run").loc[run.run_id]
        quality = assess(run.read_metrics(), ["ok"])
        assert row["defect miss rate"] == pytest.approx(quality.defect_miss_rate)
        assert row["val accuracy"] == pytest.approx(quality.accuracy)
        assert row["recall per class"] == ", ".join(f"{c} {r:.0%}" for c, r in quality.recall.items())
        assert row["flag"].startswith("COLLAPSED") == (name == "collapsed")
        assert (row["status"], row["training time"], row["dataset"]) == ("done", "8 s", str(dataset))
        assert row["started (UTC)"] == run.status()["started"][:16].replace("T", " ")
    assert table.set_index("run").loc[runs["base"].run_id, "active"] == "★ active"
    # The page's first number is the active model's defect miss rate.
    assert at.metric[0].label == "Defect miss rate"


def test_compare_lists_the_changed_photos(runs):
    at = open_models()
    run_choice(at, "compare_a").set_value(runs["base"].run_id)
    run_choice(at, "compare_b").set_value(runs["better"].run_id)
    at.run()
    changed = frame(at, "outcome")
    expected = compare_runs(runs["base"], runs["better"]).changed
    assert changed["path"].tolist() == expected["path"].tolist() == ["ok/ok_0001.png", "pit/pit_0002.png"]
    assert changed["outcome"].tolist() == ["broken", "fixed"]
    assert any("2 validation photo(s) changed prediction" in m.value and "1 fixed, 1 broken" in m.value
               for m in at.markdown)
    assert any("B gets 1 photo(s) wrong that A got right" in w.value for w in at.warning)
    metrics = frame(at, "B − A")
    assert metrics["metric"].iloc[0] == "defect miss rate"


def test_make_active_records_who_and_when(runs):
    at = open_models(name="boss")
    run_choice(at, "manage_run").set_value(runs["better"].run_id).run()
    at.button(key=f"activate_{runs['better'].run_id}").click().run()
    assert get_active()["run_id"] == runs["base"].run_id, "nothing changes before the confirmation"
    at.button(key=f"activate_confirm_{runs['better'].run_id}").click().run()
    record = get_active()
    assert record["run_id"] == runs["better"].run_id and record["by"] == "boss" and record["at"]
    assert any("is now the active model" in s.value for s in at.success)
    history = activation_history()[0]
    assert (history["run_id"], history["by"], history["sha256"]) == (runs["better"].run_id, "boss", record["sha256"])


def test_an_engineer_compares_but_cannot_activate_or_delete(runs):
    at = open_models("engineer")
    run_choice(at, "manage_run").set_value(runs["better"].run_id).run()
    # An admin's control is not shown to an engineer (not even greyed out); the page says who may.
    assert not [b for b in at.button if b.key == f"activate_{runs['better'].run_id}"]
    assert any("Only an admin can make a model active" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == f"delete_{runs['better'].run_id}"]
    assert any("Only an admin can delete a run" in c.value for c in at.caption)


def test_a_collapsed_model_needs_an_override_reason(runs):
    at = open_models()
    flat = runs["collapsed"].run_id
    run_choice(at, "manage_run").set_value(flat).run()
    assert any("is flagged" in e.value and "never recognises" in e.value for e in at.error)
    at.button(key=f"activate_{flat}").click().run()
    at.button(key=f"activate_confirm_{flat}").click().run()
    assert get_active()["run_id"] == runs["base"].run_id
    assert any("override reason" in e.value and "flagged" in e.value for e in at.error)
    at.text_input(key=f"override_{flat}").input("demo only, line stopped")
    at.button(key=f"activate_{flat}").click().run()
    assert any("Override reason (recorded): demo only, line stopped" in m.value for m in at.markdown)
    at.button(key=f"activate_confirm_{flat}").click().run()
    record = get_active()
    assert record["run_id"] == flat and record["override"] == "demo only, line stopped" and record["by"] == "adm"


def test_delete_needs_confirmation_and_spares_the_active_model(runs):
    at = open_models()
    victim = runs["collapsed"]
    run_choice(at, "manage_run").set_value(victim.run_id).run()
    assert at.button(key=f"delete_{victim.run_id}").disabled
    at.checkbox(key=f"confirm_delete_{victim.run_id}").check().run()
    at.button(key=f"delete_{victim.run_id}").click().run()
    assert not victim.path.exists() and runs["base"].path.exists()
    assert any(f"Deleted run {victim.run_id}" in shown(s.value) for s in at.success)
    assert victim.run_id not in frame(at, "flag")["run"].tolist()
    run_choice(at, "manage_run").set_value(runs["base"].run_id).run()
    assert not [b for b in at.button if b.key == f"delete_{runs['base'].run_id}"]


def test_onnx_export_from_the_page(runs):
    at = open_models()
    run = runs["base"]
    run_choice(at, "manage_run").set_value(run.run_id).run()
    at.button(key=f"export_{run.run_id}").click().run()
    assert not at.exception and (run.path / "model.onnx").is_file()
    assert any("ONNX opset 17" in shown(c.value) and "(batch, 3, 64, 64)" in shown(c.value) for c in at.caption)
    assert not [b for b in at.button if b.key == f"export_{run.run_id}"], "the export is done: no second button"


def test_review_this_run_opens_the_review_page_on_it(runs):
    at = open_models()
    run_choice(at, "manage_run").set_value(runs["better"].run_id).run()
    at.button(key=f"review-link:{runs['better'].run_id}").click().run()
    assert not at.exception
    assert at.title[0].value == "Review"
    assert run_choice(at, "review_run").value == runs["better"].run_id


def test_make_active_asks_first_with_what_changes_for_the_inspectors(runs, dataset, tmp_path):
    other = write_run(runs["base"].path.parent, dataset, "20260104-120000-resnet18-two", started="2026-01-04T12:00:00+00:00",
                      rows=[(p, "scratch" if t == "pit" else t, "scratch" if pr == "pit" else pr, c)
                            for p, t, pr, c in VAL])  # "pit" is no longer a class
    import json

    metrics = json.loads(other.metrics.read_text())
    metrics["classes"] = ["ok", "scratch"]
    metrics["per_class"].pop("pit")
    other.metrics.write_text(json.dumps(metrics))
    at = open_models(name="boss")
    run_choice(at, "manage_run").set_value(runs["better"].run_id).run()
    at.button(key=f"activate_{runs['better'].run_id}").click().run()
    text = "\n".join(m.value for m in at.markdown)
    assert f"Inspections will use **{runs['better'].run_id.replace('-', chr(92) + '-')}**" in text
    assert "Classes (unchanged): ok, pit, scratch." in text
    assert "Recorded as made active by **boss** (admin)" in text
    overall = frame(at, "change").set_index("")
    base, better = assess(runs["base"].read_metrics(), ["ok"]), assess(runs["better"].read_metrics(), ["ok"])
    assert overall.loc["defect miss rate", "now"] == f"{base.defect_miss_rate:.1%}"
    assert overall.loc["defect miss rate", "after"] == f"{better.defect_miss_rate:.1%}"
    per_class = frame(at, "missed after").set_index("class")
    assert per_class.loc["pit", "recall after"] == f"{better.recall['pit']:.1%}"
    assert per_class.loc["pit", "missed after"] == f"{1 - better.recall['pit']:.1%}"
    at.button(key=f"activate_cancel_{runs['better'].run_id}").click().run()
    assert get_active()["run_id"] == runs["base"].run_id

    run_choice(at, "manage_run").set_value(other.run_id).run()
    at.button(key=f"activate_{other.run_id}").click().run()
    assert any("**Classes change**: it drops pit" in m.value for m in at.markdown)


def test_runs_on_different_datasets_are_not_compared_photo_by_photo(runs, tmp_path):
    elsewhere = write_run(runs["base"].path.parent, make_dataset(tmp_path / "line-2"),
                          "20260105-120000-resnet18-line2", started="2026-01-05T12:00:00+00:00")
    at = open_models()
    run_choice(at, "compare_a").set_value(runs["base"].run_id)
    run_choice(at, "compare_b").set_value(elsewhere.run_id)
    at.run()
    assert any("cannot be compared photo by photo" in i.value for i in at.info)
    assert not any("changed prediction" in m.value for m in at.markdown)
    assert not [d for d in at.dataframe if "outcome" in d.value.columns]


def test_cancelled_and_failed_runs_are_labelled_in_every_run_list(runs):
    runs["better"].write_status("cancelled")
    runs["collapsed"].write_status("failed", error="out of memory")
    at = open_models()
    table = frame(at, "flag").set_index("run")
    assert table.loc[runs["better"].run_id, "status"] == "cancelled (stopped early)"
    assert table.loc[runs["collapsed"].run_id, "status"] == "failed"
    assert any("Grey rows did not finish" in c.value for c in at.caption)
    labels = run_choice(at, "manage_run").options  # as the list shows them
    assert f"{runs['better'].run_id} · cancelled" in labels and f"{runs['collapsed'].run_id} · failed" in labels


def test_the_activation_summary_says_in_red_what_gets_worse(runs):
    at = open_models()
    run_choice(at, "manage_run").set_value(runs["collapsed"].run_id).run()
    at.text_input(key=f"override_{runs['collapsed'].run_id}").input("demo")
    at.button(key=f"activate_{runs['collapsed'].run_id}").click().run()
    text = "\n".join(m.value for m in at.markdown)
    assert ":red[**It misses more defects**: 14.3% of defect photos pass now, 100.0% after.]" in text
    assert "**Recognised less often**: pit 50.0% → 0.0%, scratch 66.7% → 0.0%." in text


def test_an_admin_with_no_runs_yet_can_make_accounts_and_sees_each_at_once(tmp_path, monkeypatch):
    """A first start sends the admin to Models to create accounts, before any run exists; the table shows a saved
    account on the same click (it was one save behind)."""
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "app-data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "app-data" / "inspections.sqlite"))
    at = open_models()
    assert any("No runs yet" in i.value for i in at.info)
    at.text_input(key="account_name").set_value("insp1")
    at.selectbox(key="account_role").set_value("inspector")
    at.text_input(key="account_password").set_value("a long enough password 1")
    next(b for b in at.button if b.label == "Save account").click().run()
    accounts = next(d.value for d in at.dataframe if "role" in d.value.columns)
    assert "insp1" in set(accounts["name"]) and set(accounts["disabled"]) == {"no"}
    assert any("insp1 saved (inspector)" in shown(s.value) for s in at.success)


def test_an_unreachable_model_store_is_said_in_the_sidebar_and_the_page_still_works(runs, monkeypatch):
    """DEFECT_MODEL_STORE on a bucket nobody answers for (issue 29): every page still draws, without an active
    model, and the sidebar names the store and what to set, instead of a traceback."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("DEFECT_MODEL_STORE", "s3://plant-models/line-2")
    monkeypatch.setenv("DEFECT_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    at = open_models()
    said = "\n".join(shown(e.value) for e in at.sidebar.error)
    assert "s3://plant-models/line-2/active.json" in said and "DEFECT_S3_ENDPOINT_URL" in said
    assert run_choice(at, "manage_run").value  # the run list is there to act on
