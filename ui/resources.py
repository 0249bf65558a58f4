"""Cached, shared resources. The Predictor is cached per checkpoint path and modification time."""

from __future__ import annotations

import streamlit as st

from pathlib import Path

from defect_model.common.model_store import ModelStoreError
from defect_model.runs.folders import RunDir, get_active, resolve_run, served_checkpoint


@st.cache_resource(show_spinner="Loading the model (a new model's fast inference graph is prepared once)…",
                   max_entries=4)
def _load_predictor(checkpoint: str, mtime: float):
    from defect_model.serve.inference import Predictor  # torch loads here, once, not at start-up
    from defect_model.serve.serving import GraphLedger
    from defect_model.workflows.inspection import inference_threads

    return Predictor.from_checkpoint(checkpoint, threads=inference_threads(), ledger=GraphLedger.default())


def predictor_for(run: RunDir, checkpoint: Path | None = None):
    """The Predictor of `checkpoint` (default: the run's own), loaded once per checkpoint version and shared by
    every session."""
    checkpoint = checkpoint or run.checkpoint
    return _load_predictor(str(checkpoint), checkpoint.stat().st_mtime)


def read_active(root: Path | None = None) -> tuple[dict | None, str | None]:
    """(the active-model record, None), or (None, why the model store cannot be read right now): one read."""
    try:
        return get_active(root), None
    except ModelStoreError as exc:
        return None, str(exc)


def active_record(root: Path | None = None) -> dict | None:
    """The active-model record for pages that only show it; None also when the model store cannot be read (the
    sidebar says why: read_active)."""
    return read_active(root)[0]


def served_model() -> tuple[RunDir, Path, str] | None:
    """(run, the pinned checkpoint Inspect serves, its sha256) of the active model, or None. Raises
    ModelStoreError when the store cannot be read or its copy is not the one made active."""
    record = get_active()
    run = active_run(record)
    checkpoint = served_checkpoint(record)
    if run is None or checkpoint is None:
        return None
    return run, checkpoint, record.get("sha256", "")


def active_run(record: dict | None = None) -> RunDir | None:
    """The active model's run, from `record` when the caller has just read it, else from the store."""
    record = record if record is not None else active_record()
    if not record:
        return None
    try:
        run = resolve_run(record["run_id"])
    except FileNotFoundError:
        return None
    return run if run.checkpoint.is_file() else None
