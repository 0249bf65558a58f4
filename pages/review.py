"""Review: how a run does on its validation photos, what it gets wrong, and the label fixes that feed a retrain."""

import streamlit as st

from ui.review_cards import cell_ui, misclassified_ui
from ui.review_retrain import inspection_ui, retrain_ui
from ui.review_widgets import (calibration_ui, confusion_ui, metrics_ui, quality_header, review_data_ui, run_choice_ui,
                               store_ui)
from ui.golden_ui import mark_golden_ui
from ui.operating_point_ui import operating_point_ui
from ui.router import require_router
from ui.session import page_actor


def main() -> None:
    st.title("Review")
    actor = page_actor("review")
    run = run_choice_ui()
    if run is None:
        return
    data = review_data_ui(run)
    if data is None:
        return
    quality_header(data.metrics, data.config.good_classes)
    store = store_ui()

    matrix_tab, metrics_tab, wrong_tab, inspector_tab, calibration_tab, point_tab, golden_tab, retrain_tab = st.tabs(
        ["Confusion matrix", "Per-class metrics", "Misclassified", "Inspector corrections", "Calibration",
         "Operating point", "Golden set", "Retrain with corrections"])
    with matrix_tab:
        true, pred = confusion_ui(data)
        if true and pred:
            cell_ui(data, true, pred, store, actor)
    with metrics_tab:
        metrics_ui(data.metrics)
    with wrong_tab:
        misclassified_ui(data, store, actor)
    with calibration_tab:
        calibration_ui(data)
    with point_tab:
        operating_point_ui(data, actor)
    with golden_tab:
        mark_golden_ui(data, store, actor)
    if store is not None:
        with inspector_tab:
            inspection_ui(data, store, actor)
        with retrain_tab:
            retrain_ui(data, store, actor)


require_router()
main()
