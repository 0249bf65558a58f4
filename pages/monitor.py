"""Monitor: is the live model still right? Control charts of its verdicts, drift of what the camera sees against
its validation photos, the photos to label next, and the hot-folder watchers."""

import streamlit as st

from ui.monitor_charts import control_charts_ui, drift_ui
from ui.monitor_queue import queue_ui
from ui.monitor_widgets import filters_ui, watchers_ui
from ui.review_widgets import store_ui
from ui.router import require_router
from ui.session import page_actor


def main() -> None:
    st.title("Monitor")
    actor = page_actor("read_all_logs")
    watchers_ui()
    store = store_ui()
    if store is None:
        return
    view = filters_ui(store)
    if view.log.empty:
        st.info("No inspections match these filters yet.", icon=":material/info:")
        return
    st.caption(f"{len(view.log)} inspections from {view.log['when'].min():%Y-%m-%d} to "
               f"{view.log['when'].max():%Y-%m-%d} (UTC).")
    # Only the open tab runs (on_change="rerun"): drift reads the validation photos the first time.
    charts_tab, drift_tab, queue_tab = st.tabs(["Control charts", "Drift", "Label these next"], key="monitor_tab",
                                               on_change="rerun")
    if charts_tab.open:
        with charts_tab:
            control_charts_ui(view)
    if drift_tab.open:
        with drift_tab:
            drift_ui(view)
    if queue_tab.open:
        with queue_tab:
            queue_ui(store, view, actor)


require_router()
main()
