"""A list of runs to choose from, whose labels follow each run's state as it changes."""

from __future__ import annotations

import zlib

import streamlit as st

from defect_model.runs.folders import RunDir


def run_select(label: str, runs: list[RunDir], key: str, active: str | None, **kwargs) -> RunDir:
    """A selectbox of runs whose labels carry each run's state, read now; the chosen run id stays in
    st.session_state[key] (the caller sets the default there).

    A keyed selectbox keeps showing the label it had when it was chosen, even after its labels change (a run that
    was "running" when picked would say so after it was cancelled). So the widget is keyed by its labels too: new
    labels draw a new widget, which shows them, and the choice carries over through `key`."""
    ids = [run.run_id for run in runs]
    labels = {run.run_id: run_label(run, active) for run in runs}
    if st.session_state.get(key) not in ids:
        st.session_state[key] = ids[0]
    widget = f"{key}@{zlib.crc32(chr(0).join(labels.values()).encode()):08x}"
    st.session_state[widget] = st.session_state[key]

    def keep() -> None:
        st.session_state[key] = st.session_state[widget]

    chosen = st.selectbox(label, ids, key=widget, format_func=labels.get, on_change=keep, **kwargs)
    return runs[ids.index(chosen)]


def run_state(run: RunDir) -> str:
    """The run's state, read now from its status (a dead training process reads as failed)."""
    return run.status().get("state", "") or "unknown"


def run_label(run: RunDir, active: str | None) -> str:
    """How a list of runs names a run: its id, its state unless it finished, and the active model."""
    state = run_state(run)
    return (run.run_id + ("" if state == "done" else f" · {state}")
            + ("  (active model)" if run.run_id == active else ""))
