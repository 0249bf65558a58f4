"""App tests of the Train page (streamlit.testing AppTest): form defaults, refusals, and the live view."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from defect_model.photos import synthetic
from defect_model.common.config import TrainConfig, settings_of
from defect_model.train.metrics import metrics_from_predictions
from defect_model.runs.folders import RunDir, get_active, list_runs
from ui.train_data import FOLDER, UPLOADED, ZIP

from conftest import shown, sign_in, zip_of

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "train.py")


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Private runs, data and database folders; a small demo set already in place (no generation wait)."""
    monkeypatch.syspath_prepend(str(ROOT))
    paths = {"runs": tmp_path / "runs", "data": tmp_path / "data"}
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(paths["runs"]))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(paths["data"]))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "inspections.sqlite"))
    synthetic.generate(paths["data"] / "demo", per_class=4, size=48, seed=3)
    return paths


def page(role: str = "engineer") -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=60)
    sign_in(app, role)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def values(array) -> list:
    """A plotly trace array from a chart's JSON: a list, or base64 binary ({'dtype', 'bdata'})."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def chart_traces(app: AppTest, key: str) -> dict[str, list]:
    spec = json.loads(app.get_by_key(key).proto.spec)
    return {trace["name"]: values(trace["y"]) for trace in spec["data"]}


def run_choice(app: AppTest):
    """The run list (ui.run_picker.run_select keys its widget by the key and the runs' labels)."""
    return next(box for box in app.selectbox if box.key and box.key.split("@")[0] == "train_view_run")


def errors(app: AppTest) -> str:
    """The error messages as the page shows them (names inside are escaped Markdown)."""
    return "\n".join(shown(e.value) for e in app.error)


def test_the_form_shows_what_training_will_use_with_help_texts(env):
    """New runs default to the product preset, and the form shows what it will use on this dataset (not the
    reference recipe beneath it); the reference preset shows the reference recipe; a field set by hand wins."""
    app = page()
    assert app.get_by_key("train_preset").value == "product"
    reference = TrainConfig()
    # What the preset picks for the demo set (40 photos a class, 128 px): EfficientNet-Lite0 from its ImageNet
    # weights at the photos' size, strong augmentation, a fixed few passes, early stop on a plateau, the best
    # epoch kept.
    picked = {"backbone": "efficientnet_lite0", "pretrained": True, "image_size": 128, "augmentation": "strong",
              "keep_best": True, "schedule": "warmup-cosine", "epochs": 7, "time_budget_min": 0.0}
    for name, value in picked.items():
        assert app.get_by_key(f"train_{name}").value == value, name
    assert app.get_by_key("train_patience").value >= 2
    decided = next(m.value for m in app.markdown if "network efficientnet\\_lite0 from ImageNet" in m.value)
    assert "strong augmentation" in decided  # the box says why, and the form agrees with it
    checked = 0
    for setting in settings_of():
        if not setting.form or setting.name == "good_classes":
            continue
        widget = app.get_by_key(f"train_{setting.name}")
        assert widget.help == setting.help and widget.label == setting.label, setting.name
        checked += 1
    assert checked >= 25
    (good,) = [w for w in app.multiselect if w.key.startswith("train_good_classes")]
    assert good.value == ["ok"]  # suggested from the demo's class names
    estimate = next(m.value for m in app.markdown if "Estimated training time" in m.value)  # 7 passes, no budget
    assert "images/s" in estimate and "no past efficientnet_lite0 run" in estimate
    assert any("7 epoch(s) of efficientnet\\_lite0 from ImageNet weights at 128 px" in c.value for c in app.caption)
    assert not app.button(key="train_start").disabled

    app.selectbox(key="train_preset").set_value("reference").run()
    for name in ("backbone", "image_size", "batch_size", "epochs", "lr", "optimizer", "schedule", "weight_decay",
                 "grad_clip", "dropout", "val_fraction", "split_csv", "seed", "augmentation", "keep_best"):
        assert app.get_by_key(f"train_{name}").value == getattr(reference, name), name
    assert tuple(float(v) for v in app.get_by_key("train_mean").value.split(",")) == reference.mean

    app.selectbox(key="train_preset").set_value("product").run()
    app.selectbox(key="train_backbone").set_value("resnet34").run()  # chosen by hand: the preset keeps it
    assert app.get_by_key("train_backbone").value == "resnet34"
    assert app.get_by_key("train_augmentation").value == "strong"
    estimate = next(m.value for m in app.markdown if "Training time budget" in m.value)  # from scratch: a budget
    assert "resnet34" in estimate
    assert app.get_by_key("train_pretrained").value is False


def test_a_missing_folder_and_a_flat_folder_are_refused_with_the_path(env, tmp_path):
    app = page()
    app.radio(key="train_source").set_value(FOLDER).run()
    missing = env["data"] / "no-such-folder"
    app.text_input(key="train_folder").set_value(str(missing)).run()
    assert f"{missing}: the folder does not exist" in errors(app)
    assert not [b for b in app.button if b.key == "train_start"]

    flat = env["data"] / "flat"
    flat.mkdir()
    for photo in sorted((env["data"] / "demo" / "ok").iterdir()):  # photos, but no class sub-folders
        shutil.copy(photo, flat / photo.name)
    app.text_input(key="train_folder").set_value(str(flat)).run()
    assert not app.exception
    message = errors(app)
    assert str(flat) in message and "class folder" in message and "sub-folder" in message
    assert not [b for b in app.button if b.key == "train_start"]


def test_the_chosen_dataset_survives_a_reload(env):
    """Issue 14 item 7: the dataset source and folder are kept in the address; a reload finds them again, and a
    kept folder is checked like a typed one."""
    chosen = env["data"] / "line-2"
    shutil.copytree(env["data"] / "demo", chosen)
    app = page()
    app.radio(key="train_source").set_value(FOLDER).run()
    app.text_input(key="train_folder").set_value(str(chosen)).run()
    assert app.query_params["train_source"] == FOLDER and app.query_params["train_folder"] == str(chosen)

    reloaded = AppTest.from_file(PAGE, default_timeout=60)
    sign_in(reloaded, "engineer")
    reloaded.query_params.update(train_source=FOLDER, train_folder=str(chosen))
    reloaded.run()
    assert reloaded.radio(key="train_source").value == FOLDER
    assert reloaded.text_input(key="train_folder").value == str(chosen)
    assert not reloaded.error and [b for b in reloaded.button if b.key == "train_start"]  # ready to train on it

    tampered = AppTest.from_file(PAGE, default_timeout=60)
    sign_in(tampered, "engineer")
    tampered.query_params.update(train_source="../../etc", train_folder="/etc")
    tampered.run()
    assert tampered.radio(key="train_source").value == "Demo dataset"  # not one of the sources: ignored


def test_paths_typed_into_the_form_stay_inside_the_data_and_runs_folders(env, tmp_path):
    """A split CSV or a weights file elsewhere on the server is refused before anything reads it."""
    secret = tmp_path / "elsewhere" / "split.csv"
    secret.parent.mkdir()
    secret.write_text("path,label,split\n")
    app = page()
    app.text_input(key="train_split_csv").set_value(str(secret)).run()
    assert str(secret) in errors(app) and "files a training run reads must lie inside" in errors(app)
    assert app.button(key="train_start").disabled
    app.text_input(key="train_split_csv").set_value("").run()
    app.text_input(key="train_init_from").set_value("/etc/passwd").run()
    assert "/etc/passwd: files a training run reads must lie inside" in errors(app)
    inside = env["data"] / "split.csv"
    inside.write_text("path,label,split\n" + "".join(
        f"{p.parent.name}/{p.name},{p.parent.name},{'val' if i % 4 == 0 else 'train'}\n"
        for i, p in enumerate(sorted((env["data"] / "demo").glob("*/*.png")))))
    app.text_input(key="train_init_from").set_value("").run()
    app.text_input(key="train_split_csv").set_value(str(inside)).run()
    assert not app.error and not app.button(key="train_start").disabled


def test_a_folder_outside_the_data_roots_is_refused_and_nothing_of_it_is_shown(env, tmp_path, monkeypatch):
    """Issue 16 item 1: another user's folder was listed, its photos shown and a file of it named."""
    other = tmp_path / "other-user"
    shutil.copytree(env["data"] / "demo", other)
    (other / "ok" / "salaries.txt").write_text("private")
    app = page()
    app.radio(key="train_source").set_value(FOLDER).run()
    app.text_input(key="train_folder").set_value(str(other)).run()
    message = errors(app)
    assert str(other) in message and str(env["data"].resolve()) in message and "DEFECT_DATA_ROOTS" in message
    assert not app.dataframe and not [c for c in app.get("plotly_chart")]  # no file list, no counts
    assert not [b for b in app.button if b.key == "train_start"]

    monkeypatch.setenv("DEFECT_DATA_ROOTS", f"{env['data']}{os.pathsep}{tmp_path / 'other-user'}")
    app.run()  # the same folder is allowed once it lies inside a configured root
    assert not app.error, errors(app)
    assert [b for b in app.button if b.key == "train_start"]


def _upload(app: AppTest, file_name: str, data: bytes, name: str = "") -> AppTest:
    app.file_uploader(key="train_zip").set_value((file_name, data, "application/zip"))
    app.text_input(key="train_zip_name").set_value(name)
    app.button(key="train_zip_add").click().run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_bad_zips_are_refused_and_a_good_one_is_kept_by_name(env):
    app = page()
    app.radio(key="train_source").set_value(ZIP).run()
    _upload(app, "broken.zip", b"this is not a zip at all")
    assert "broken.zip: this is not a valid .zip file" in errors(app)

    _upload(app, "evil.zip", zip_of({"../outside.png": b"x"}))
    assert "evil.zip: member '../outside.png' points outside" in errors(app)
    assert not (env["data"] / "outside.png").exists()

    _upload(app, "flat.zip", zip_of({"a.png": b"x", "b.png": b"y"}), name="flat")
    assert "flat.zip:" in errors(app) and "one folder per class" in errors(app)
    assert not (env["data"] / "datasets" / "flat").exists()  # a refused upload leaves nothing behind

    photos = {f"parts/{label}/{p.name}": p.read_bytes()
              for label in ("ok", "pit") for p in sorted((env["data"] / "demo" / label).iterdir())}
    _upload(app, "parts.zip", zip_of(photos), name="line-3")
    assert not app.error
    assert any("Saved parts.zip as dataset 'line-3'" in shown(s.value) for s in app.success)
    assert app.radio(key="train_source").value == UPLOADED
    assert app.selectbox(key="train_uploaded").value == "line-3"
    assert sorted(p.name for p in (env["data"] / "datasets" / "line-3").iterdir()) == ["ok", "pit"]
    assert any(m.value.startswith("**pit**  \n4 photos") for m in app.markdown)

    fresh = page()  # another session picks it again
    fresh.radio(key="train_source").set_value(UPLOADED).run()
    assert fresh.selectbox(key="train_uploaded").options == ["line-3"]


def test_settings_changed_before_adding_a_dataset_survive_the_upload(env, live_pid):
    """Issue 27: "Invalid training settings: lr must be positive; val_fraction ...; mean and std need three values"
    right after a successful "Add dataset" while another job ran. The form is not drawn while the zip source waits
    for its zip, Streamlit then drops the fields' state, and a field the user had changed came back at its minimum."""
    _prepare_run(env, "20260101-120000-resnet18-live", "running", _events(3, 6, 9, time.time() - 10), pid=live_pid)
    app = page()
    app.number_input(key="train_lr").set_value(0.005).run()
    app.number_input(key="train_val_fraction").set_value(0.3).run()
    app.text_input(key="train_mean").set_value("0.4, 0.4, 0.4").run()
    app.radio(key="train_source").set_value(ZIP).run()
    photos = {f"parts/{label}/{p.name}": p.read_bytes()
              for label in ("ok", "pit") for p in sorted((env["data"] / "demo" / label).iterdir())}
    _upload(app, "parts.zip", zip_of(photos), name="line-3")
    assert any("Saved parts.zip as dataset 'line-3'" in shown(s.value) for s in app.success)
    assert "Invalid training settings" not in errors(app) and not app.error, errors(app)
    assert app.number_input(key="train_lr").value == 0.005
    assert app.number_input(key="train_val_fraction").value == 0.3
    assert app.text_input(key="train_mean").value == "0.4, 0.4, 0.4"


# --- the job panel, from prepared run directories ---------------------------------------------------

def _events(epochs: int, steps_per_epoch: int, done_steps: int, t0: float) -> list[dict]:
    start = {"type": "start", "time": t0, "run_id": "x", "classes": ["ok", "pit"], "train_images": 24,
             "val_images": 6, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
             "total_steps": epochs * steps_per_epoch, "resumed": False, "start_epoch": 1, "skip_steps": 0}
    events, t = [start], t0
    for g in range(1, done_steps + 1):
        epoch, step = (g - 1) // steps_per_epoch + 1, (g - 1) % steps_per_epoch + 1
        t += 0.5
        events.append({"type": "step", "time": t, "epoch": epoch, "step": step, "steps_per_epoch": steps_per_epoch,
                       "global_step": g, "total_steps": epochs * steps_per_epoch, "loss": 1.5 / g, "lr": 1e-3 / g,
                       "images_per_s": 40.0})
        if step == steps_per_epoch:
            t += 1.0
            events.append({"type": "epoch", "time": t, "epoch": epoch, "epochs": epochs, "complete": True,
                           "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "val_accuracy": 0.5 + 0.1 * epoch,
                           "val_micro_f1": 0.5 + 0.1 * epoch, "val_macro_f1": 0.45 + 0.1 * epoch,
                           "epoch_seconds": 4.0, "elapsed_s": t - t0, "eta_s": 4.0})
    return events


def _prepare_run(env, run_id: str, state: str, events: list[dict], pid: int | None = None, **status) -> RunDir:
    run = RunDir(env["runs"] / run_id)
    run.path.mkdir(parents=True)
    TrainConfig(data_dir=str(env["data"] / "demo"), backbone="resnet18", image_size=48, epochs=3,
                good_classes=["ok"]).to_yaml(run.config)
    run.events.write_text("".join(json.dumps(e) + "\n" for e in events))
    run.log.write_text("run directory: somewhere\nepoch 1/3: train loss 1.0000, val loss 1.1000\n")
    run.status_file.write_text(json.dumps({"state": state, "pid": pid, **status}))
    if state == "done":  # a real one: activation loads it and runs it before it switches (issue 27)
        from defect_model.train.checkpoint import save_checkpoint
        from defect_model.train.model import build_model

        save_checkpoint(run.checkpoint, build_model("resnet18", 2, 0.2).state_dict(),
                        {"classes": ["ok", "pit"], "config": {"backbone": "resnet18", "dropout": 0.2},
                         "preprocessing": {"image_size": 48, "mean": [0.5] * 3, "std": [0.25] * 3}})
    return run


@pytest.fixture()
def live_pid():
    """A process that is alive for the test: it stands in for a training process."""
    process = subprocess.Popen(["sleep", "120"])
    yield process.pid
    process.kill()
    process.wait()


def test_live_view_reads_a_prepared_events_file(env, live_pid):
    run = _prepare_run(env, "20260101-120000-resnet18-live", "running", _events(3, 6, 9, time.time() - 10),
                       pid=live_pid)
    app = page()
    assert run_choice(app).value == run.run_id
    assert "running" in run_choice(app).format_func(run.run_id)  # the label says what the run is doing
    (progress,) = app.get("progress")
    assert progress.value == 50  # 9 of 18 steps
    assert "Epoch 2/3 · step 3/6 · 9/18 steps (50%) · about " in progress.text and run.run_id in progress.text
    assert "40 images/s" in progress.text
    loss = chart_traces(app, f"live_{run.run_id}_loss")
    assert loss["train (per step)"] == pytest.approx([1.5 / g for g in range(1, 10)])
    assert loss["validation"] == pytest.approx([1.1])
    assert chart_traces(app, f"live_{run.run_id}_lr")["learning rate"] == pytest.approx([1e-3 / g for g in range(1, 10)])
    assert chart_traces(app, f"live_{run.run_id}_scores")["accuracy"] == pytest.approx([0.6])
    assert "epoch 1/3: train loss" in "\n".join(c.value for c in app.code)
    assert not app.button(key=f"train_cancel_{run.run_id}").disabled

    # Another start while it runs is refused, naming the running job.
    app.button(key="train_start").click().run()
    assert f"Not started: Training job {run.run_id} is still running" in errors(app)
    assert [r.run_id for r in list_runs()] == [run.run_id]


def test_with_training_workers_the_page_says_where_jobs_train(env, monkeypatch, plant_database_url):
    """DEFECT_TRAINING=worker (issue 29): Start says jobs wait for a worker instead of a refusal, a queued job says
    it waits for a worker (not "pid None"), and the processes are the worker's to choose, not this machine's."""
    monkeypatch.setenv("DEFECT_DATABASE_URL", plant_database_url)
    monkeypatch.setenv("DEFECT_TRAINING", "worker")
    run = _prepare_run(env, "20260101-120000-resnet18-queued", "queued", [],
                       waiting="waits for a training worker", queue="training")
    app = page()
    assert any("one job per worker; a start waits in the queue" in c.value for c in app.caption)
    assert not any("a start is refused" in c.value for c in app.caption)
    header = next(m.value for m in app.markdown if f"Training {run.run_id}" in m.value.replace("\\", ""))
    assert "waiting for a training worker" in header and "pid None" not in header
    processes = app.get_by_key("train_processes")
    assert processes.max == 8 and "worker machine" in processes.help
    assert not app.button(key=f"train_cancel_{run.run_id}").disabled  # a waiting job can be taken out of the queue


def test_a_job_whose_process_died_is_shown_failed_with_resume(env):
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = _prepare_run(env, "20260101-120000-resnet18-dead", "running", _events(3, 6, 8, time.time() - 60),
                       pid=dead.pid)
    app = page()
    assert "failed.** The training process stopped without finishing (killed or crashed)" in errors(app)
    assert json.loads(run.status_file.read_text())["state"] == "failed"  # recorded, not only displayed
    assert app.button(key=f"train_resume_{run.run_id}").label == "Resume from the beginning (no checkpoint was saved before it stopped)"
    assert not app.get("progress")


def _metrics(good: bool) -> dict:
    truth = ["ok", "ok", "ok", "pit", "pit", "pit"]
    predicted = truth if good else ["ok"] * 6
    return metrics_from_predictions(pd.DataFrame({"path": list("abcdef"), "true_label": truth,
                                                  "pred_label": predicted}), ["ok", "pit"])


def test_a_finished_run_shows_its_curves_and_is_made_active(env):
    run = _prepare_run(env, "20260101-120000-resnet18-done", "done",
                       _events(3, 6, 18, time.time() - 60) + [{"type": "end", "time": time.time(), "state": "done",
                                                                "elapsed_s": 75.0}])
    run.metrics.write_text(json.dumps(_metrics(good=True)))
    app = page()
    assert any("finished in 1 min 15 s" in s.value for s in app.success)
    scores = chart_traces(app, f"final_{run.run_id}_scores")
    assert scores["macro-F1"] == pytest.approx([0.55, 0.65, 0.75])
    # an engineer may not (admins choose): the button is not shown, the page says who may
    assert not [b for b in app.button if b.key == f"train_activate_{run.run_id}"]
    assert any("Only an admin can make a run active" in c.value for c in app.caption)
    app = page("admin")
    app.button(key=f"train_activate_{run.run_id}").click().run()
    assert get_active()["run_id"] == run.run_id and "override" not in get_active()
    assert get_active()["by"] == "adm"
    assert any("This run is the active model" in i.value for i in app.info)


def test_a_collapsed_model_needs_a_logged_reason_to_be_made_active(env):
    run = _prepare_run(env, "20260101-120000-resnet18-flat", "done", _events(3, 6, 18, time.time() - 60))
    run.metrics.write_text(json.dumps(_metrics(good=False)))
    app = page("admin")
    assert "flagged as useless" in errors(app) and "never recognises pit" in errors(app)
    button = app.button(key=f"train_activate_{run.run_id}")
    assert button.disabled  # a reason first
    app.text_input(key=f"train_override_{run.run_id}").set_value("line stopped, any model beats none").run()
    app.button(key=f"train_activate_{run.run_id}").click().run()
    record = get_active()
    assert record["run_id"] == run.run_id and record["override"] == "line stopped, any model beats none"


def test_confirmed_corrections_are_shown_and_a_start_includes_them(env, monkeypatch):
    from defect_model.runs.store import InspectionStore

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    demo = str((env["data"] / "demo").resolve())
    store = InspectionStore()
    store.add_correction(source="review", action="relabel", photo_path="ok/ok_0001.png", original_label="ok",
                         new_label="pit", dataset=demo, status="confirmed", who="eng")
    store.add_correction(source="review", action="unusable", photo_path="pit/pit_0002.png", dataset=demo,
                         status="confirmed", who="eng")
    store.add_correction(source="inspection", action="relabel", photo_path="/photos/x.png", new_label="crack",
                         dataset=demo, who="ana")  # pending: shown, not included
    store.add_correction(source="review", action="relabel", photo_path="ok/ok_0000.png", new_label="pit",
                         dataset="/another/dataset", status="confirmed")
    app = page()
    assert any(e.label == "Label corrections: 2 confirmed, 1 pending" for e in app.expander)
    include = app.checkbox(key="train_include_corrections")
    assert include.value and "2 confirmed" in include.label

    app.selectbox(key="train_preset").set_value("reference").run()  # the product preset would add its step floor
    app.selectbox(key="train_backbone").set_value("resnet18")
    app.number_input(key="train_image_size").set_value(32)
    app.number_input(key="train_epochs").set_value(1)
    app.button(key="train_start").click().run()
    assert not app.error, errors(app)
    (run,) = list_runs()
    try:
        cfg = TrainConfig.from_yaml(run.request)  # what was asked, written before the process starts
        assert (cfg.backbone, cfg.image_size, cfg.epochs, cfg.data_dir) == ("resnet18", 32, 1, demo)
        assert cfg.corrections_csv == str(run.corrections.resolve())  # a copy in the run folder
        rows = pd.read_csv(cfg.corrections_csv, keep_default_na=False).to_dict("records")
        assert rows == [{"path": "ok/ok_0001.png", "label": "pit"}, {"path": "pit/pit_0002.png", "label": ""}]
        assert any(f"Training job {run.run_id} started" in shown(s.value) for s in app.success)
        assert run_choice(app).value == run.run_id
        deadline = time.time() + 120
        while run.status()["state"] in ("queued", "running") and time.time() < deadline:
            time.sleep(0.5)
        assert run.status()["state"] == "done", run.log.read_text()
        assert json.loads(run.data_report.read_text())["corrections_applied"] == 2
    finally:
        pid = run.status().get("pid")
        if run.status()["state"] in ("queued", "running") and pid:
            subprocess.run(["kill", "-9", str(pid)], check=False)


def test_good_classes_are_suggested_from_names_that_read_like_a_good_part():
    from ui.train_settings import suggested_good_classes

    classes = ["functional", "possibly_defective", "ok_parts", "not_ok", "no_defect", "Good", "scratch", "free"]
    assert suggested_good_classes(classes) == ["functional", "ok_parts", "no_defect", "Good", "free"]


def test_an_empty_class_folder_is_named_where_the_classes_are_shown(env):
    """Issue 27: its name was only in the collapsed list of files left out of training."""
    chosen = Path(shutil.copytree(env["data"] / "demo", env["data"] / "with-empty"))
    (chosen / "rust").mkdir()
    app = page()
    app.radio(key="train_source").set_value(FOLDER).run()
    app.text_input(key="train_folder").set_value(str(chosen)).run()
    (warning,) = [w for w in app.warning if "without photos" in shown(w.value)]
    assert "1 class folder(s) without photos, left out of the classes: rust." in shown(warning.value)
