"""The sidebar every page shares: who is inspecting and which model is active."""

from __future__ import annotations

import streamlit as st

from defect_model.config import TrainConfig
from defect_model.quality import assess
from ui.resources import active_run


def model_card(run) -> None:
    """Run id, classes, accuracy beside per-class recall (and the defect miss rate), date."""
    metrics = run.read_metrics()
    st.markdown(f"**Active model** `{run.run_id}`")
    if not metrics:
        st.caption("No validation metrics yet.")
        return
    cfg = TrainConfig.from_yaml(run.config)
    quality = assess(metrics, cfg.good_classes)
    if quality.collapsed:
        st.error("This model is flagged as useless: " + "; ".join(quality.problems), icon=":material/warning:")
    st.caption(f"Classes: {', '.join(metrics['classes'])}")
    st.caption(quality.headline())
    st.caption("Recall per class: " + ", ".join(f"{c} {r:.0%}" for c, r in quality.recall.items()))
    st.caption(f"Trained {run.status().get('finished', run.status().get('updated', ''))[:16].replace('T', ' ')}")


def sidebar() -> None:
    with st.sidebar:
        st.text_input("Inspector name", key="inspector", placeholder="Your name (logged with each inspection)")
        run = active_run()
        if run is None:
            st.info("No active model yet. Train one on the Train page, or start the demo model on Inspect.")
        else:
            model_card(run)
