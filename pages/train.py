"""Train: choose a labelled dataset, look into it, set the recipe, and train in the background."""

import streamlit as st

from ui.router import require_router
from ui.session import page_actor
from ui.train_data import corrections_ui, dataset_source_ui, insights_for, insights_ui
from ui.train_job import job_ui, start_ui
from ui.train_processes import processes_ui
from ui.text import md
from ui.train_settings import estimate_ui, settings_ui


def main() -> None:
    st.title("Train")
    page_actor("train")
    st.caption("Training runs as a separate process: reload or close this page at any time, the job goes on.")

    st.subheader("Training job")
    job_ui()

    st.subheader("1 · Dataset")
    dataset = dataset_source_ui()
    insights = insights_for(dataset) if dataset else None
    if insights is None:
        return
    insights_ui(insights)
    with_corrections = corrections_ui(dataset, insights.classes)

    st.subheader("2 · Settings")
    cfg, problems = settings_ui(dataset.path, insights.classes, insights)
    for problem in problems:
        st.error(md(problem), icon=":material/tune:")  # problems quote what was typed
    cfg = processes_ui(cfg)
    if cfg is not None:
        estimate_ui(cfg, insights)
    start_ui(cfg, with_corrections)


require_router()
main()
