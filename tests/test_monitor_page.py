"""AppTest of the Monitor page on a seeded log (tests/monitor_support.py): the p-charts mark the spike day, drift
flags the brightened photos, and a photo labelled from the queue becomes a correction."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import shown
from defect_model.runs.folders import process_start_time
from defect_model.database import open_database, watchers
from defect_model.workflows.monitor import QUEUE_SOURCE, validation_reference
from monitor_support import SPIKE_DAY, UNSURE, seeded_log
from review_support import open_app_page


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "app-data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "app-data" / "inspections.sqlite"))
    return seeded_log(tmp_path)


def traces(at, key: str) -> dict:
    chart = next(c for c in at.get("plotly_chart") if c.proto.id and key in c.proto.id)
    return {t.get("name"): t for t in json.loads(chart.proto.spec)["data"]}


def test_monitor_page_charts_drift_and_queue(env):
    at = open_app_page("pages/monitor.py", "engineer")
    assert [t.label for t in at.tabs] == ["Control charts", "Drift", "Label these next"]
    assert at.selectbox(key="monitor_model").value == env["run"].run_id  # the active model by default
    reject = traces(at, "monitor_chart_reject")
    assert reject["outside the limits"]["x"] == [f"2026-02-{SPIKE_DAY:02d}"]
    assert len(reject["Reject rate"]["x"]) == 10
    assert any(f"2026-02-{SPIKE_DAY:02d} 66.7% (8 of 12" in shown(e.value) for e in at.error)
    assert "outside the limits" in traces(at, "monitor_chart_needs_person")

    at.button_group(key="monitor_cut").set_value("shift").run()  # 3 shifts from 06:00: all seeded photos in one
    assert traces(at, "monitor_chart_reject")["Reject rate"]["x"][0] == "2026-02-01 06:00–14:00"
    at.button_group(key="monitor_cut").set_value("day").run()

    at.multiselect(key="monitor_sources").set_value(["hot folder"]).run()  # 4 of the 12 photos a day
    assert all("of 4;" in shown(e.value) for e in at.error) or not at.error

    at.multiselect(key="monitor_sources").set_value([]).run()
    at.session_state["monitor_tab"] = "Drift"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    alarm = next(shown(e.value) for e in at.error if e.value.startswith("Drift"))
    assert "brightness" in alarm
    table = at.dataframe[0].value.set_index("feature")
    assert table.loc["brightness", "drifted"] and not table.loc["width", "drifted"]

    at.session_state["monitor_tab"] = "Label these next"
    at.run()
    store = env["store"]
    log = store.inspections()
    unsure = int(log.loc[log["file_name"] == UNSURE, "id"].iloc[0])
    label_boxes = [s for s in at.selectbox if s.key and s.key.startswith("queue:")]
    assert label_boxes[0].key == f"queue:{unsure}:label"
    at.selectbox(key=f"queue:{unsure}:label").set_value("scratch")
    at.button(key=f"queue:{unsure}:save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    saved = store.corrections()
    assert len(saved) == 1
    row = saved.iloc[0]
    assert (row["source"], row["action"], row["new_label"], row["who"], row["inspection_id"], row["dataset"]) == (
        QUEUE_SOURCE, "relabel", "scratch", "eng", unsure, str(env["dataset"]))
    assert any(UNSURE in shown(s.value) and "labelled" in s.value for s in at.success)
    assert f"queue:{unsure}:label" not in [s.key for s in at.selectbox]  # it left the queue


def test_inspect_model_line_shows_the_drift_alarm(env):
    at = open_app_page("pages/inspect.py", "inspector")
    assert not [m for m in at.markdown if "Drift:" in m.value]  # no reference read yet: no alarm
    validation_reference(env["run"])  # what the Monitor page does the first time it shows drift
    at = open_app_page("pages/inspect.py", "inspector", name="ana2")
    alarm = [shown(m.value) for m in at.markdown if "Drift:" in m.value]
    # One plain line for an inspector: what drifted, what it means, who knows; the statistics stay on Monitor.
    assert len(alarm) == 1 and "brightness" in alarm[0] and "The engineer has been told on Monitor" in alarm[0]
    assert "KS" not in alarm[0] and " p " not in alarm[0]


def test_monitor_page_shows_the_hot_folder_watcher(env, tmp_path):
    db = open_database()  # the watchers' rows, as two watchers on this machine wrote them
    alive = {"state": "running", "pid": os.getpid(), "pid_started": process_start_time(os.getpid()),
             "heartbeat_unix": time.time(), "incoming": str(tmp_path / "camera1"), "model": env["run"].run_id,
             "count": 17, "started": "2026-02-10T06:00:00+00:00", "last_photo": "cam1_0017.png",
             "last_verdict": "reject", "last_time": "2026-02-10T09:41:07+00:00"}
    from defect_model.workflows.hotfolder_status import host_name

    watchers.put(db, "camera1", host_name(), alive["incoming"], alive["heartbeat_unix"], alive)
    watchers.put(db, "camera2", host_name(), "/line/camera2", time.time() - 3600,
                 {**alive, "pid": 2**22 + 12345, "incoming": "/line/camera2", "heartbeat_unix": time.time() - 3600})
    at = open_app_page("pages/monitor.py", "engineer")
    running = [shown(s.value) for s in at.success if "watcher running" in s.value]
    assert len(running) == 1 and "camera1" in running[0] and "17 photo(s)" in running[0]
    assert "last photo `cam1_0017.png` (reject, 2026-02-10 09:41:07 UTC)" in running[0]
    assert any("Watcher not running" in c.value and "camera2" in shown(c.value) for c in at.caption)


def test_monitor_page_with_an_empty_log_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "app-data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "app-data" / "inspections.sqlite"))
    at = open_app_page("pages/monitor.py", "engineer")
    assert any("No inspections match these filters yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")
