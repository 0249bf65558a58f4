"""What a tab watching a training job costs the server (issue 16: <= 5 % of a core; bench/load.py measures it)."""

from __future__ import annotations

import tomllib

from streamlit.testing.v1 import AppTest

from conftest import ROOT


def test_the_server_does_not_collect_all_garbage_after_every_script_run():
    # A full gc.collect(2) after each 2-second refresh of a live view was over half of its cost.
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False


def _refreshes():
    import streamlit as st

    from ui import train_job

    now = 1000.0
    events = [{"type": "start", "steps_per_epoch": 4, "total_steps": 8, "epochs": 2, "time": 0.0}]
    built = []
    for step in range(1, 5):
        events.append({"type": "step", "epoch": 1, "step": step, "steps_per_epoch": 4, "global_step": step,
                       "total_steps": 8, "loss": 1.0 / step, "lr": 1e-3, "images_per_s": 10.0, "time": step})
        built.append(id(train_job.live_figures(events, 2, "run-1", now)))
        now += 2.0  # one refresh of the live view
    now += train_job.CHARTS_REFRESH_S
    built.append(id(train_job.live_figures(events, 2, "run-1", now)))
    events.append({**events[-1], "step": 1, "epoch": 2, "global_step": 5, "loss": 0.1})
    built.append(id(train_job.live_figures(events, 2, "run-1", now + 2.0)))
    st.session_state["built"] = built


def test_the_live_view_rebuilds_its_curves_at_most_every_few_seconds():
    at = AppTest.from_function(_refreshes, default_timeout=60).run()
    assert not at.exception
    built = at.session_state["built"]
    # Refreshes 2-4 come within CHARTS_REFRESH_S of the first: they reuse its figures despite new steps.
    assert built[0] == built[1] == built[2] == built[3]
    assert built[4] != built[0]  # later, with steps the figures lack: rebuilt
    assert built[5] == built[4]  # a new step right after a rebuild waits for the next interval
