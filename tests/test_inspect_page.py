"""App tests of the Inspect page (streamlit.testing.v1.AppTest on app.py, the page that opens by default)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block

from defect_model.train.metrics import summarize
from defect_model.runs.folders import RunDir, get_active, new_run_dir, write_json_atomic
from defect_model.runs.store import InspectionStore, sha256_bytes
from defect_model.photos.synthetic import demo_config
from conftest import shown, sign_in
from inspect_support import corrupt_png, install_active_run, keep_app_py_as_the_router, metrics, photo_bytes, upload

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_runs(trained_run, tmp_path_factory) -> Path:
    """A runs folder whose active model is the trained demo-set run, with "ok" as the good class."""
    runs = tmp_path_factory.mktemp("inspect-runs")
    install_active_run(trained_run, runs)
    return runs


@pytest.fixture(autouse=True)
def router(monkeypatch):
    keep_app_py_as_the_router(monkeypatch)


@pytest.fixture()
def env(tmp_path, monkeypatch, model_runs):
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(model_runs))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "db" / "inspections.sqlite"))
    return tmp_path


def app(inspector: str = "Ana", role: str = "inspector") -> AppTest:
    """app.py signed in as `inspector` (an account of `role`): the inspector's name comes from the account."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    sign_in(at, role, inspector)
    at.run()
    assert not at.exception, at.exception
    return at


def cards(at: AppTest) -> dict[str, tuple[int, list[str]]]:
    """The result cards by key: (number of images, error messages) in each (a card writes its error in red)."""
    found = {}
    for node in at.main:
        key = getattr(node, "key", None) or ""
        if isinstance(node, Block) and key.startswith("inspect-result-"):
            found[key] = (sum(1 for n in node if n.type == "image"),
                          [n.value[len(":red["):-1] for n in node if n.type == "caption" and n.value.startswith(":red[")])
    return found


def store() -> InspectionStore:
    return InspectionStore()


# -- without a model -----------------------------------------------------------------
def test_without_a_model_the_page_says_so_and_trains_then_offers_the_demo_model(tmp_path, monkeypatch, trained_run):
    runs = tmp_path / "runs"
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(runs))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "db.sqlite"))
    started = []

    def fake_start(cfg, actor):  # the real one starts a two-minute training process
        started.append(cfg)
        run = new_run_dir(runs, cfg.backbone)
        cfg.to_yaml(run.config)
        run.write_status("running", pid=__import__("os").getpid())
        return run

    monkeypatch.setattr("ui.inspect_model.start", fake_start)
    at = app(inspector="boss", role="admin")  # trains and activates the demo model: engineer and admin work
    assert "No model is active yet" in at.info[0].value
    assert not at.file_uploader
    train = next(b for b in at.button if b.label == "Train the demo model")
    train.click().run()
    assert not at.exception, at.exception
    assert len(started) == 1 and started[0] == demo_config(tmp_path / "data" / "demo")
    assert len(list((tmp_path / "data" / "demo" / "ok").glob("*.png"))) == 60  # the demo photos exist
    assert "Training" in at.get("progress")[0].proto.text

    # The job finishes with a useless model: the page says so and does not offer it.
    job = RunDir(next(p for p in runs.iterdir() if p.is_dir()))
    classes = ["crack", "ok", "pit", "scratch", "stain"]
    (job.path / "checkpoint.pt").write_bytes(trained_run.checkpoint.read_bytes())
    everything_ok = np.zeros((5, 5))
    everything_ok[:, 1] = 8  # predicts "ok" for every photo: it would pass every defect
    write_json_atomic(job.metrics, summarize(everything_ok, classes))
    job.write_status("done", val_accuracy=0.2)
    at.run()
    assert any("cannot be used here" in e.value and "recall 0" in e.value for e in at.error)
    assert not [b for b in at.button if b.label == "Use the demo model"]
    next(b for b in at.button if b.label == "Train the demo model again").click().run()  # a way out on this page
    assert len(started) == 2 and started[1] == started[0]
    retry = RunDir(next(p for p in runs.iterdir() if p.is_dir() and p != job.path))
    retry.write_status("failed", error="(this test's stand-in for the second training)")

    # A good model is offered, and using it opens the inspection view.
    write_json_atomic(job.metrics, summarize(np.eye(5) * 8, classes))
    at.run()
    assert "is trained" in at.success[0].value
    next(b for b in at.button if b.label == "Use the demo model").click().run()
    assert not at.exception, at.exception
    assert get_active(runs)["run_id"] == job.run_id
    assert len(at.file_uploader) == 1
    assert f"Model `{job.run_id}`" in at.caption[0].value


# -- with a model ---------------------------------------------------------------------
def test_good_upload_gives_verdicts_charts_heatmaps_and_log_rows(env):
    files = [("ok-part.png", photo_bytes("ok", 11)), ("pitted.png", photo_bytes("pit", 12))]
    at = upload(app(), files)
    counts = metrics(at)
    assert counts["Error"] == 0 and sum(counts.values()) == 2
    assert any("2 files · the model's most likely class" in c for c in at.caption.values)
    assert cards(at) == {"inspect-result-0": (1, []), "inspect-result-1": (1, [])}  # an overlay each
    # Detail of the first photo: the photo, its heatmap, and a probability chart over every class.
    assert len(at.get("plotly_chart")) == 1
    captions = [img.proto.imgs[0].caption for img in at.image]
    assert any(c.startswith("Photo, 96x96") for c in captions) and any("Heatmap: where the model looked for" in c
                                                                        for c in captions)
    assert len(at.image) == 4  # detail photo + detail overlay + two grid overlays

    log = store().inspections().sort_values("id")
    assert list(log["file_name"]) == ["ok-part.png", "pitted.png"]
    assert set(log["inspector"]) == {"Ana"} and set(log["verdict"]) <= {"pass", "reject", "needs_person"}
    assert list(log["sha256"]) == [sha256_bytes(data) for _, data in files]
    assert all(Path(p).read_bytes() == data for p, (_, data) in zip(log["photo_path"], files))

    # The class toggle redraws the heatmap for another class.
    toggle = at.selectbox(key="inspect_cam_class_0")
    other = next(c for c in toggle.options if "(predicted)" not in c)
    toggle.select(other).run()
    assert not at.exception, at.exception
    assert any(f"where the model looked for “{other}”" in img.proto.imgs[0].caption for img in at.image)
    assert "Grad-CAM" in toggle.help  # the technical name is explained, not shown bare


def test_bad_uploads_get_a_message_each_and_the_rest_is_inspected(env):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("line-3/crack.png", photo_bytes("crack", 21))
        zf.writestr("line-3/readme.txt", b"shift notes")
    files = [("good.png", photo_bytes("stain", 20)), ("half.png", corrupt_png()), ("notes.txt", b"hello"),
             ("batch.zip", archive.getvalue()), ("broken.zip", b"PK not a zip")]
    at = upload(app(), files)
    errors = [shown(m) for _, messages in cards(at).values() for m in messages]  # names are escaped Markdown
    for name in ("half.png", "notes.txt", "batch.zip/line-3/readme.txt", "broken.zip"):
        assert any(message.startswith(name + ":") for message in errors), (name, errors)
    assert any("damaged or truncated" in m and "Export the photo again" in m for m in errors)
    assert metrics(at)["Error"] == 4 and sum(metrics(at).values()) == 6
    on_page = cards(at)
    assert len(on_page) == 6 and sum(images for images, _ in on_page.values()) == 2
    assert sum(len(messages) for _, messages in on_page.values()) == 4

    log = store().inspections()
    assert len(log) == 6  # nothing uploaded is missing from the log
    assert sorted(log.loc[log["verdict"] == "error", "file_name"]) == sorted(
        ["half.png", "notes.txt", "batch.zip/line-3/readme.txt", "broken.zip"])
    assert set(log.loc[log["verdict"] != "error", "file_name"]) == {"good.png", "batch.zip/line-3/crack.png"}


def test_the_threshold_decides_needs_a_person(env):
    at = upload(app(), [(f"p{i}.png", photo_bytes(label, 30 + i)) for i, label in enumerate(["ok", "pit", "crack"])])
    results = at.session_state["inspect_queue"].results()
    at.slider(key="inspect_threshold").set_value(0.99).run()
    unsure = sum(r.confidence < 0.99 for r in results)
    assert metrics(at)["Needs a person"] == unsure and metrics(at)["Pass"] + metrics(at)["Reject"] == 3 - unsure
    at.pills(key="inspect_show").set_value(["needs_person"]).run()  # the grid shows only those photos
    assert len(cards(at)) == unsure
    at.pills(key="inspect_show").set_value([]).run()
    assert len(cards(at)) == 3
    at.slider(key="inspect_threshold").set_value(1.0).run()
    assert metrics(at)["Needs a person"] == sum(r.confidence < 1.0 for r in results) >= unsure
    at.slider(key="inspect_threshold").set_value(0.5).run()  # the lowest a verdict may rest on
    counts = metrics(at)
    sure = [r for r in results if r.confidence >= 0.5]
    assert counts["Needs a person"] == 3 - len(sure) and counts["Pass"] + counts["Reject"] == len(sure)
    # "ok" is the good class; every other class is a reject
    assert counts["Pass"] == [r.predicted for r in sure].count("ok")
    # The log keeps the verdicts given at inspection time (default threshold 0.7).
    assert set(store().inspections()["threshold"]) == {0.7}


def test_a_correction_is_kept_for_review_and_the_history_filters(env):
    at = upload(app(), [("a.png", photo_bytes("scratch", 40)), ("bad.png", b"nope")])
    result = at.session_state["inspect_queue"].results()[0]
    choice = at.selectbox(key="inspect_correct_label_0")
    new_label = next(c for c in choice.options if c != "(photo unusable)")
    choice.select(new_label)
    at.text_input(key="inspect_correct_note_0").input("dark streak, not a defect")
    next(b for b in at.button if b.label == "Save correction").click().run()
    assert not at.exception, at.exception
    saved = store().corrections()
    assert len(saved) == 1
    row = saved.iloc[0]
    assert (row["source"], row["action"], row["new_label"], row["model_label"]) == (
        "inspection", "relabel", new_label, result.predicted)
    assert (row["who"], row["inspection_id"], row["sha256"], row["status"]) == ("Ana", result.inspection_id,
                                                                                 result.sha256, "pending")
    assert any("Correction saved" in s.value for s in at.success)

    assert not at.multiselect  # the log tab runs only when it is open
    at.session_state["inspect_tab"] = "Inspection log"
    at.run()
    assert not at.file_uploader
    history = at.dataframe[-1].value
    assert sorted(history["file_name"]) == ["a.png", "bad.png"]
    assert dict(zip(history["file_name"], history["correction"])) == {"a.png": new_label, "bad.png": ""}
    at.multiselect(key="inspect_log_verdicts").select("error").run()
    assert list(at.dataframe[-1].value["file_name"]) == ["bad.png"]
    at.multiselect(key="inspect_log_verdicts").unselect("error").run()
    # An inspector reads their own log only: the inspector filter is theirs and cannot be changed.
    assert at.multiselect(key="inspect_log_inspectors").disabled
    assert len(at.dataframe[-1].value) == 2 and set(at.dataframe[-1].value["inspector"]) == {"Ana"}


def test_an_inspector_reads_only_their_own_inspections_an_engineer_every_one(env):
    store = InspectionStore()
    for who in ("Ana", "Bo"):
        store.log_inspection(file_name=f"{who}.png", sha256="0" * 64, photo_path="/x.png", verdict="pass",
                             inspector=who, run_id="r")
    for role, name, seen in (("inspector", "Ana", {"Ana"}), ("engineer", "Eng", {"Ana", "Bo"})):
        at = app(inspector=name, role=role)
        at.session_state["inspect_tab"] = "Inspection log"
        at.run()
        assert set(at.dataframe[-1].value["inspector"]) == seen, role


# -- corrections, export, reload, open ------------------------------------------------------------
# These need a model, not a good one: an untrained one from review_support is ready in a second.
@pytest.fixture()
def quick(tmp_path, monkeypatch):
    from defect_model.workflows.lifecycle import set_active
    from review_support import make_dataset, write_run

    runs = tmp_path / "quick-runs"
    run = write_run(runs, make_dataset(tmp_path / "quick-data"))
    set_active(run, by="test", root=runs, override_reason="page test; its accuracy does not matter")
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(runs))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "db" / "inspections.sqlite"))
    return run


def unescaped(text: str) -> str:
    """A message as the page shows it (names in it are escaped for Markdown)."""
    return text.replace("\\", "")


def test_the_correction_form_chooses_no_class_and_saving_twice_stores_one(quick):
    at = upload(app(), [("a.png", photo_bytes("scratch", 40))])
    choice = at.selectbox(key="inspect_correct_label_0")
    assert choice.value is None  # a careless click cannot save a wrong label
    save = next(b for b in at.button if b.label == "Save correction")
    save.click().run()
    assert store().corrections().empty
    assert any("Choose the correct class" in w.value for w in at.warning)

    label = next(c for c in choice.options if c != "(photo unusable)")
    at.selectbox(key="inspect_correct_label_0").select(label)
    at.text_input(key="inspect_correct_note_0").input("streak")
    next(b for b in at.button if b.label == "Save correction").click().run()  # Enter in the note field
    next(b for b in at.button if b.label == "Save correction").click().run()  # then the button
    saved = store().corrections()
    assert len(saved) == 1 and saved.iloc[0]["new_label"] == label and saved.iloc[0]["who"] == "Ana"
    assert any("Correction saved" in s.value for s in at.success)


def test_the_results_csv_names_the_inspector(quick):
    import pandas as pd

    from defect_model.serve.verdicts import DEFAULT_THRESHOLD
    from ui.inspect_widgets import results_csv_of

    at = upload(app(), [("a.png", photo_bytes("ok", 41)), ("b.png", photo_bytes("pit", 42))])
    results = at.session_state["inspect_queue"].results()
    table = pd.read_csv(io.BytesIO(results_csv_of(results, DEFAULT_THRESHOLD, ["ok"], "Ana")))
    assert list(table["inspector"]) == ["Ana", "Ana"]
    assert list(table.columns).index("inspector") == list(table.columns).index("time") + 1


def test_a_reload_keeps_the_batch_through_the_address(quick):
    files = [("ok-part.png", photo_bytes("ok", 51)), ("pitted.png", photo_bytes("pit", 52)), ("bad.png", b"nope")]
    at = upload(app(), files)
    before = at.session_state["inspect_queue"].results()
    batch = at.query_params["batch"]
    assert batch == f"{before[0].inspection_id}-{before[-1].inspection_id}"

    # A reload is a new session with the same address: sign in again, the batch comes back from the log.
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    sign_in(again, "inspector", "Ana")
    again.query_params["batch"] = batch
    again.run()
    assert not again.exception, again.exception
    assert sorted(cards(again)) == ["inspect-result-0", "inspect-result-1", "inspect-result-2"]
    assert metrics(again) == metrics(at)
    assert cards(again)["inspect-result-0"][0] == 1  # its heatmap overlay was computed again
    assert any(unescaped(m).startswith("bad.png:") for _, messages in cards(again).values() for m in messages)
    # New photos join the batch after the restored ones, and the address follows.
    upload(again, [("more.png", photo_bytes("crack", 53))])
    assert "inspect-result-3" in cards(again)
    assert again.query_params["batch"] == f"{before[0].inspection_id}-{before[0].inspection_id + 3}"
    # Clear results empties the page and the address.
    next(b for b in again.button if b.label == "Clear results").click().run()
    assert not cards(again) and "batch" not in again.query_params


def test_another_inspector_or_model_does_not_get_the_batch(quick):
    at = upload(app(), [("a.png", photo_bytes("ok", 61))])
    batch = at.query_params["batch"]
    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    sign_in(other, "inspector", "Bo")
    other.query_params["batch"] = batch
    other.run()
    assert not cards(other)
    assert any("not yours" in c.value for c in other.caption)


def test_open_scrolls_to_the_detail(quick):
    def scroll_scripts():  # the sidebar's own scripts (session cookie, closing on narrow screens) left aside
        return [frame.proto.srcdoc for frame in at.get("iframe") if "scrollIntoView" in frame.proto.srcdoc]

    at = upload(app(), [("a.png", photo_bytes("ok", 71)), ("b.png", photo_bytes("pit", 72))])
    assert not scroll_scripts()
    at.button(key="inspect_open_1").click().run()
    assert at.session_state["inspect_selected"] == 1
    scripts = scroll_scripts()
    assert len(scripts) == 1 and "inspect-detail" in scripts[0]
    at.run()
    assert not scroll_scripts(), "only right after the click"
