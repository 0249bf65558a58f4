"""The Monitor page's frame: the hot-folder watchers, the filters over the inspection log, how it is cut into
periods and which of them are the reference, and the CSV download of what a section shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import streamlit as st

from defect_model.runs.folders import RunDir, resolve_run
from defect_model.runs.store import SOURCES, InspectionStore
from defect_model.database import DatabaseError, location
from defect_model.workflows.hotfolder_status import watcher_status
from defect_model.workflows.monitor import (REFERENCE_FILE, MonitorError, Periods, default_reference, drift_alarm,
                                            load_log)
from ui.resources import active_run
from ui.text import code, md

ALL_MODELS = "All models"


@dataclass(frozen=True)
class LogView:
    """The filtered log and how the page reads it."""

    log: pd.DataFrame
    run: RunDir | None  # the one model version shown (drift and the queue need one); None for all models
    periods: Periods
    reference: tuple[pd.Timestamp, pd.Timestamp] | None


def watchers_ui() -> list[dict]:
    """Whether a hot-folder watcher is running, and the last photo it inspected."""
    watchers = watcher_status()
    if not watchers:
        st.caption(":material/folder_off: No hot-folder watcher has run against this inspection log "
                   "(`python -m defect_model watch IN_DIR --done DONE_DIR`).")
        return watchers
    for status in watchers:
        last = (f"last photo {code(status.get('last_photo'))} ({md(status.get('last_verdict', ''))}, "
                f"{md(str(status.get('last_time', ''))[:19].replace('T', ' '))} UTC)"
                if status.get("last_photo") else "no photo yet")
        host = f" (machine {code(status['host'])})" if status.get("host") else ""
        where = f"{code(status.get('incoming', '?'))}{host} with model {code(status.get('model', '?'))}"
        count = f"{status.get('count', 0)} photo(s) since {md(str(status.get('started', ''))[:16].replace('T', ' '))}"
        if status["running"]:
            st.success(f"Hot folder watcher running on {where}: {count}, {last}.", icon=":material/folder_eye:")
        else:
            st.caption(f":material/folder_off: Watcher not running (state {md(status.get('state', '?'))}, last seen "
                       f"{status['heartbeat_age_s'] / 60:.0f} min ago) on {where}: {count}, {last}.")
    return watchers


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def _cached_log(path: str, newest_id: int, run_ids: tuple, inspectors: tuple, sources: tuple) -> pd.DataFrame:
    """The filtered log, read again only when an inspection was added (newest_id) or a minute passed."""
    return load_log(InspectionStore(path), run_ids, inspectors, sources)


def filters_ui(store: InspectionStore) -> LogView:
    """Model version, inspector and source; days or shifts; the reference period."""
    active = active_run()
    models = store.distinct("run_id")
    if active is not None and active.run_id not in models:
        models.append(active.run_id)
    options = [ALL_MODELS] + sorted(models, reverse=True)
    default = options.index(active.run_id) if active is not None else 0
    model_col, who_col, source_col = st.columns([1.6, 1, 1])
    model = model_col.selectbox("Model version", options, index=default, key="monitor_model",
                                help="Drift and the label queue need one model version; the charts take any.")
    inspectors = who_col.multiselect("Inspector", store.distinct("inspector"), key="monitor_inspectors",
                                     placeholder="every inspector")
    sources = source_col.multiselect("Source", SOURCES, key="monitor_sources", placeholder="browser and hot folder")
    run_ids = () if model == ALL_MODELS else (model,)
    log = _cached_log(str(store.path), store.last_inspection_id(), run_ids, tuple(inspectors), tuple(sources))
    run = None
    if model != ALL_MODELS:
        try:
            run = resolve_run(model)
        except FileNotFoundError:
            st.warning(f"The run {code(model)} is no longer in the runs folder: its charts are shown, but not its "
                       "drift or label queue.", icon=":material/warning:")
    periods = periods_ui()
    return LogView(log, run, periods, reference_ui(log, periods, run))


def periods_ui() -> Periods:
    cut_col, shifts_col, hour_col = st.columns([1.6, 1, 1])
    cut = cut_col.segmented_control("One point per", ["day", "shift"], default="day", key="monitor_cut",
                                    required=True)
    if cut == "day":
        return Periods()
    shifts = shifts_col.number_input("Shifts a day", 1, 24, 3, key="monitor_shifts")
    first = hour_col.number_input("First shift starts (hour, UTC)", 0, 23, 6, key="monitor_first_hour")
    try:
        return Periods.shifts(int(shifts), int(first))
    except MonitorError as exc:
        st.error(md(exc), icon=":material/schedule:")
        return Periods()


def reference_ui(log: pd.DataFrame, periods: Periods, run: RunDir | None) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The periods the control limits are computed from: by default the first days of the model shown."""
    way_col, days_col = st.columns([1.6, 2])
    way = way_col.radio("Control limits from", ["the model's first days", "dates I pick"], key="monitor_ref_way",
                        horizontal=True)
    if way == "the model's first days":
        days = days_col.number_input("First days of the model", 1, 365, 7, key="monitor_ref_days")
        return default_reference(log, periods, run.run_id if run else None, float(days))
    today = datetime.now(timezone.utc).date()
    first = log["when"].min().date() if len(log) else today
    span = days_col.date_input("Reference dates (UTC)", value=(first, first + timedelta(days=6)),
                               key="monitor_ref_dates")
    start, end = (tuple(span) + (None, None))[:2] if isinstance(span, (tuple, list)) else (span, span)
    if start is None:
        return None
    return pd.Timestamp(start, tz="UTC"), pd.Timestamp(end or start, tz="UTC") + pd.Timedelta(days=1)


def csv_download_ui(table: pd.DataFrame, name: str, key: str) -> None:
    st.download_button(f"Download {name.replace('-', ' ')} CSV", lambda: table.to_csv(index=False).encode(),
                       file_name=f"{name}.csv", mime="text/csv", icon=":material/download:", key=key,
                       on_click="ignore")


# -- the alarm on the Inspect page's model line ------------------------------------------------------
ALARM_DAYS = 7


@st.cache_data(ttl=300, max_entries=4, show_spinner=False)
def _drifted(db_path: str, run_path: str, reference_mtime: float) -> list[str]:
    """At most every five minutes per model and reference: the log is read whole, which an inspector should not
    wait for. The names of the drifted features."""
    return [d.feature for d in drift_alarm(InspectionStore(db_path), RunDir(Path(run_path)), ALARM_DAYS)]


def drift_alarm_ui(run: RunDir, engineer: bool = False) -> None:
    """One plain line when the last week's photos drifted from the model's validation photos (once the Monitor page
    has read those); the statistics stay on the Monitor page, which an engineer gets a link to."""
    try:
        reference = run.path / REFERENCE_FILE
        read_at = reference.stat().st_mtime if reference.is_file() else 0.0
        drifted = _drifted(str(location()), str(run.path), read_at)
    except (OSError, ValueError, DatabaseError):  # advice only: inspecting goes on without it
        return
    if not drifted:
        return
    words = ", ".join(md(name.replace("_", " ")) for name in drifted[:3]) + (" …" if len(drifted) > 3 else "")
    st.markdown(f":orange[:material/warning: **Drift:** this week's photos look different from the ones the model "
                f"learned from ({words}); its verdicts may be less reliable. "
                + ("Details on the Monitor page.]" if engineer else "The engineer has been told on Monitor.]"))
