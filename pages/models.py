"""Models: every run side by side, the gate before a retrained model goes live, and the active model."""

import streamlit as st

from ui.models_widgets import (active_id, active_summary_ui, activate_ui, compare_pick_ui, comparison_ui,
                               delete_ui, downloads_ui, history_ui, list_runs, manage_pick_ui, review_link_ui,
                               runs_table_ui)
from ui.accounts_widgets import accounts_expander_ui
from ui.router import require_router
from ui.session import page_actor


def main() -> None:
    st.title("Models")
    actor = page_actor("compare")
    runs = list_runs()
    if not runs:
        st.info("No runs yet. Train a model on the Train page (or start the demo model on Inspect).")
        accounts_expander_ui(actor)
        return
    active = active_id()
    active_summary_ui(runs, active)
    runs_table_ui(runs, active)

    st.subheader("Compare two runs")
    a, b = compare_pick_ui(runs, active)
    if a is not None and b is not None:
        comparison_ui(a, b)

    st.subheader("Manage a run")
    run = manage_pick_ui(runs, active)
    activate_ui(run, actor, active)
    review_link_ui(run)
    downloads_ui(run)
    delete_ui(run, active, actor)
    with st.expander("Who made which model active"):
        history_ui()
    accounts_expander_ui(actor)


require_router()
main()
