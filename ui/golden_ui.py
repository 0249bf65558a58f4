"""The golden set on the pages: marking photos golden (Review) and, before activation, every golden verdict a
candidate would change against the active model (Models)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from defect_model.access.accounts import Actor, PermissionDenied
from defect_model.runs.folders import RunDir
from defect_model.runs.golden import GoldenSet
from defect_model.runs.store import InspectionStore
from defect_model.workflows.golden_check import compare_golden
from defect_model.workflows.review import ReviewData
from ui.text import code, md
from ui.resources import active_record


def golden_ack_key(run: RunDir) -> str:
    return f"golden_ack_{run.run_id}"


@st.cache_data(show_spinner="Running both models on the golden set…", max_entries=8)
def _comparison(run_path: str, checkpoint_mtime: float, active: str, golden: tuple) -> pd.DataFrame:
    return compare_golden(RunDir(Path(run_path)))


def golden_changes_ui(run: RunDir) -> int:
    """The candidate's verdicts on the golden set against the active model's; returns how many change (an
    acknowledgement checkbox is shown for them, read by golden_acknowledged)."""
    photos = GoldenSet().photos()
    if not photos:
        st.caption(":material/workspace_premium: The golden set is empty: mark the photos that matter most on the "
                   "Review page, and every candidate is checked on them before it goes live.")
        return 0
    record = active_record(run.path.parent) or {}
    try:
        table = _comparison(str(run.path), run.checkpoint.stat().st_mtime, str(record.get("sha256", "")),
                            tuple((p["photo_path"], p["label"]) for p in photos))
    except Exception as exc:  # a model that cannot be loaded: activation would fail the same way, with its message
        st.error(md(f"{run.path}: the golden set could not be checked ({type(exc).__name__}: {exc})."))
        return 0
    changed = table[table["changed"]]
    if changed.empty:
        st.success(f"Golden set: all {len(table)} verdict(s) stay as the active model gives them.",
                   icon=":material/workspace_premium:")
        return 0
    st.error(f"Golden set: {code(run.run_id)} changes {len(changed)} of {len(table)} golden verdict(s) against the "
             "active model.", icon=":material/workspace_premium:")
    shown = changed.assign(photo=changed["photo"].map(lambda p: Path(p).name))
    st.dataframe(shown[["photo", "label", "active_verdict", "candidate_verdict", "active_class", "candidate_class"]],
                 hide_index=True, key=f"golden_changes_{run.run_id}")
    st.checkbox(f"I have looked at the {len(changed)} changed golden verdict(s) and accept them (recorded in the "
                "audit trail)", key=golden_ack_key(run))
    return len(changed)


def golden_acknowledged(run: RunDir) -> bool:
    return bool(st.session_state.get(golden_ack_key(run)))


def mark_golden_ui(data: ReviewData, store: InspectionStore | None, actor: Actor) -> None:
    """Review page: mark validation photos, or photos whose label a person confirmed, as golden."""
    golden = GoldenSet()
    kept = golden.photos()
    st.caption("Golden photos are run through every model before it goes live; the Models page shows each verdict "
               "that would change, and activation with changes needs an explicit acknowledgement.")
    root = Path(data.dataset)
    val = data.predictions[["path", "true_label"]]
    # No "Select all": as the list's first option it marked 60 photos golden by accident.
    choice = st.multiselect("Validation photos", list(val["path"]), key="golden_val", select_all=False,
                            format_func=lambda p: f"{p} ({val.set_index('path').loc[p, 'true_label']})")
    confirmed = store.corrections(status="confirmed") if store is not None else pd.DataFrame()
    confirmed = confirmed[confirmed["new_label"].notna()] if len(confirmed) else confirmed
    fixed = st.multiselect("Photos with a confirmed label (corrections and inspections)",
                           list(confirmed["id"]) if len(confirmed) else [], key="golden_fixed", select_all=False,
                           format_func=lambda i: _correction_name(confirmed, i))
    if st.button("Mark as golden", key="golden_add", icon=":material/workspace_premium:",
                 disabled=not (choice or fixed)):
        try:
            added = 0
            for path in choice:
                label = val.set_index("path").loc[path, "true_label"]
                added += golden.add(actor, root / path, label, "validation")
            for row in confirmed[confirmed["id"].isin(fixed)].itertuples():
                source = "inspection" if pd.notna(row.inspection_id) else "correction"
                photo = Path(row.photo_path) if Path(row.photo_path).is_absolute() else root / row.photo_path
                added += golden.add(actor, photo, row.new_label, source, row.sha256)
            st.toast(f"{added} photo(s) marked golden.", icon=":material/workspace_premium:")
            st.rerun()
        except (PermissionDenied, ValueError, OSError) as exc:
            st.error(md(str(exc)), icon=":material/error:")
    if kept:
        st.markdown(f"**The golden set** ({len(kept)} photos)")
        st.dataframe(pd.DataFrame(kept)[["photo_path", "label", "source", "who", "time"]], hide_index=True,
                     key="golden_table")


def _correction_name(confirmed: pd.DataFrame, correction_id) -> str:
    row = confirmed[confirmed["id"] == correction_id].iloc[0]
    return f"{Path(row['photo_path']).name} → {row['new_label']} ({row['source']})"
