"""The inspection log on the Inspect page: filters (date, verdict, class, inspector), table and CSV export."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from defect_model.accounts import Actor
from defect_model.inspection import VERDICT_LABELS, VERDICTS
from defect_model.store import InspectionStore

MAX_ROWS_SHOWN = 2000
COLUMNS = ["time", "inspector", "file_name", "verdict", "predicted", "confidence", "run_id", "threshold", "error",
           "sha256", "model_sha256", "photo_path", "probabilities", "id"]


def history_filters_ui(store: InspectionStore, classes: list[str], actor: Actor) -> dict:
    """The filter widgets; returns keyword arguments for InspectionStore.inspections. An inspector sees their own
    inspections only (the store is asked for no one else's)."""
    inspectors = store.distinct("inspector") if actor.may("read_all_logs") else [actor.name]
    known_classes = list(dict.fromkeys(list(classes) + store.distinct("predicted")))
    today = datetime.now(timezone.utc).date()  # the log's times are UTC
    days, verdict_col, class_col, who_col = st.columns([1.3, 1, 1, 1])
    span = days.date_input("Dates (UTC)", value=(today - timedelta(days=30), today), key="inspect_log_dates")
    verdicts = verdict_col.multiselect("Verdict", VERDICTS, format_func=VERDICT_LABELS.get, key="inspect_log_verdicts")
    chosen_classes = class_col.multiselect("Predicted class", known_classes, key="inspect_log_classes")
    chosen_inspectors = who_col.multiselect("Inspector", inspectors, key="inspect_log_inspectors",
                                            disabled=not actor.may("read_all_logs"))
    if not actor.may("read_all_logs"):
        chosen_inspectors = [actor.name]
    start, end = (tuple(span) + (None, None))[:2] if isinstance(span, (tuple, list)) else (span, span)
    return {
        "since": start.isoformat() if start else None,
        # ISO times compare as text; "T24" sorts after every time of that day.
        "until": f"{(end or start).isoformat()}T24" if (end or start) else None,
        "verdicts": verdicts, "classes": chosen_classes, "inspectors": chosen_inspectors,
    }


def history_ui(store: InspectionStore, classes: list[str], actor: Actor) -> pd.DataFrame:
    """Every inspection, newest first, filtered; returns the table shown."""
    st.caption(f"Every inspection is kept in `{store.path}` with a copy of its photo. Corrections go to the "
               "engineer's review.")
    filters = history_filters_ui(store, classes, actor)
    table = with_corrections(store.inspections(**filters)[COLUMNS], store)
    shown = table.head(MAX_ROWS_SHOWN)
    st.caption(f"{len(table)} inspections match" + (f"; the newest {MAX_ROWS_SHOWN} are shown, the CSV has all."
                                                     if len(table) > MAX_ROWS_SHOWN else "."))
    st.download_button("Download log CSV", lambda: table.to_csv(index=False).encode(),
                       file_name="inspection-log.csv", mime="text/csv", icon=":material/download:",
                       key="inspect_log_csv", on_click="ignore")
    shown = shown.assign(probabilities=shown["probabilities"].map(_short_probabilities))
    st.dataframe(shown, hide_index=True, key="inspect_log_table",
                 column_config={"confidence": st.column_config.NumberColumn(format="percent"),
                                "threshold": st.column_config.NumberColumn(format="percent"),
                                "sha256": st.column_config.TextColumn(width="small"),
                                "photo_path": None, "id": None})
    return table


def with_corrections(table: pd.DataFrame, store: InspectionStore) -> pd.DataFrame:
    """Add the inspector's latest correction of each inspection ("" when none)."""
    corrections = store.corrections()
    corrections = corrections[corrections["source"] == "inspection"].dropna(subset=["inspection_id"])
    latest = {int(row.inspection_id): ("photo unusable" if row.action == "unusable" else str(row.new_label))
              for row in corrections.itertuples()}
    position = table.columns.get_loc("predicted") + 1
    table = table.copy()
    table.insert(position, "correction", [latest.get(int(i), "") for i in table["id"]])
    return table


def _short_probabilities(text: str) -> str:
    try:
        probs = json.loads(text or "{}")
    except json.JSONDecodeError:
        return text
    return ", ".join(f"{name} {p:.0%}" for name, p in sorted(probs.items(), key=lambda kv: -kv[1]))
