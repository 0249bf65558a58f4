"""Inspect: upload product photos, get a verdict, every class's confidence and a heatmap (Grad-CAM) of where the
model looked for each; export the results; every inspection is logged, and a reload keeps the batch."""

import streamlit as st

from ui.inspect_history import history_ui
from ui.inspect_model import active_model_ui
from ui.inspect_widgets import results_ui, session_queue, store_ui, submit, threshold_ui, upload_ui
from ui.router import require_router
from ui.session import page_actor


def main() -> None:
    st.title("Inspect")
    actor = page_actor("inspect")
    model = active_model_ui()
    if model is None:
        return
    store = store_ui()
    if store is None:
        return
    # Only the open tab runs (on_change="rerun"), so inspecting never waits for the log's query.
    inspect_tab, log_tab = st.tabs(["Inspect photos", "Inspection log"], key="inspect_tab", on_change="rerun")
    if inspect_tab.open:
        with inspect_tab:
            inspect_ui(model, store)
    if log_tab.open:
        with log_tab:
            history_ui(store, model.classes, actor)


def inspect_ui(model, store) -> None:
    upload_col, threshold_col = st.columns([3, 1])
    with threshold_col:
        threshold = threshold_ui(model)
    with upload_col:
        files = upload_ui()
    queue = session_queue(model, store)  # after a reload: the batch named in the address, read back from the log
    if files:
        submit(queue, model, files, threshold, store)
    results_ui(queue, model, threshold, store)


require_router()
main()
