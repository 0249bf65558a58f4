"""Cached, shared resources. The Predictor is cached per checkpoint path and modification time."""

from __future__ import annotations

import streamlit as st

from defect_model.runs import RunDir, get_active, resolve_run


@st.cache_resource(show_spinner="Loading the model (a new model's fast inference graph is prepared once)…",
                   max_entries=4)
def _load_predictor(checkpoint: str, mtime: float):
    from defect_model.inference import Predictor  # torch loads here, once, not at start-up
    from defect_model.inspection import inference_threads

    return Predictor.from_checkpoint(checkpoint, threads=inference_threads())


def predictor_for(run: RunDir):
    """The run's Predictor, loaded once per checkpoint version and shared by every session."""
    return _load_predictor(str(run.checkpoint), run.checkpoint.stat().st_mtime)


def active_run() -> RunDir | None:
    record = get_active()
    if not record:
        return None
    try:
        run = resolve_run(record["run_id"])
    except FileNotFoundError:
        return None
    return run if run.checkpoint.is_file() else None
