"""The inspection log on the Inspect page: filters (date, verdict, class, inspector), table and CSV export; and
the page's batch read back from the log after a reload."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import streamlit as st

from defect_model.access.accounts import Actor
from defect_model.photos.images import ImageError, load_image
from defect_model.workflows.inspection import THUMBNAIL_SIDE, FileResult
from defect_model.serve.verdicts import VERDICTS, VERDICT_LABELS
from defect_model.runs.store import InspectionStore
from ui.text import code

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
    where = f" in {code(store.path)}" if actor.may("train") else ""  # a server path is the engineer's business
    st.caption(f"Every inspection is kept{where} with a copy of its photo. Corrections go to the engineer's review.")
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


# -- the batch in the address: survives a reload ---------------------------------------------
# The page's batch lives in the browser session, which a reload ends. Its inspection ids go into the address
# (?batch=12-15,18), so the reloaded page reads the same results back from the log: nothing new is stored, the
# address can be bookmarked, and a restarted server loses nothing either. Only the signed-in inspector's own
# inspections with the active model are read back (a batch belongs to one model).
def encode_ids(ids) -> str:
    """Inspection ids as runs: [12, 13, 14, 15, 18] -> "12-15,18"."""
    ids = sorted({int(i) for i in ids})
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def decode_ids(text: str, limit: int = 5000) -> list[int]:
    """The inverse of encode_ids; anything malformed is left out (an address can be edited by hand)."""
    ids: list[int] = []
    for part in str(text or "").split(","):
        first, _, last = part.strip().partition("-")
        try:
            a, b = int(first), int(last or first)
        except ValueError:
            continue
        if 0 < a <= b:
            ids.extend(range(a, min(b, a + limit) + 1))
        if len(ids) >= limit:
            break
    return sorted(set(ids))[:limit]


def restore_batch(store: InspectionStore, ids: list[int], inspector: str, model) -> tuple[list[FileResult], str]:
    """The logged inspections `ids` as the page's results (thumbnails and heatmaps recomputed from the stored photos
    with `model`, an ActiveModel), and a note on what could not be brought back ("" when everything was)."""
    log = store.inspections_by_id(ids)
    mine = log[log["inspector"] == inspector]
    same_model = mine[(mine["run_id"] == model.run.run_id) & (mine["model_sha256"].isin([model.sha256, ""]))]
    restored = [logged_result(row, position, model) for position, row in enumerate(same_model.to_dict("records"))]
    add_heatmaps([(result, array) for result, array in restored if array is not None], model.predictor)
    notes = []
    if len(mine) < len(ids):
        notes.append(f"{len(ids) - len(mine)} inspection(s) in the address are not yours or not in the log")
    if len(same_model) < len(mine):
        notes.append(f"{len(mine) - len(same_model)} were inspected with another model (they stay in the log)")
    return [result for result, _ in restored], "; ".join(notes)


def logged_result(row: dict, position: int, model) -> tuple[FileResult, np.ndarray | None]:
    """One log row as a page result, and its photo as the model sees it (None without a readable stored copy)."""
    probabilities = json.loads(row["probabilities"] or "{}")
    classes = list(model.classes)
    result = FileResult(index=position, name=row["file_name"], sha256=row["sha256"], time=row["time"],
                        model_id=row["run_id"], threshold=row["threshold"], verdict=row["verdict"], classes=classes,
                        error=row["error"] or "", photo_path=row["photo_path"],
                        resize_mode=model.predictor.preprocessing.resize_mode, inspection_id=int(row["id"]))
    if result.error:
        return result, None
    result.probabilities = np.asarray([probabilities.get(c, 0.0) for c in classes], dtype=np.float32)
    score = row.get("unfamiliar_score")
    if score is not None and score == score:  # NULL (pandas: NaN) for a model without the check
        result.unfamiliar_score, result.unfamiliar_threshold = float(score), model.predictor.unfamiliar_threshold
    try:
        photo = load_image(row["photo_path"], row["file_name"])
    except ImageError:
        removed = row.get("photo_removed") or ""
        result.notes.append(f"the stored copy of this photo was removed on {removed[:10]} (photo retention; the log "
                            "keeps its fingerprint): no picture or heatmap" if removed else
                            "the stored copy of this photo is gone: no picture or heatmap")
        return result, None
    result.photo_size = photo.size
    result.thumbnail = photo.copy()
    result.thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return result, model.predictor.prepare(photo, row["file_name"])


def add_heatmaps(items: list[tuple[FileResult, np.ndarray]], predictor, batch: int = 16) -> None:
    """Each result's predicted-class heatmap, as inspecting computed it (a few photos per pass)."""
    from defect_model.serve.explain import heatmaps

    for start in range(0, len(items), batch):
        part = items[start:start + batch]
        _, maps = heatmaps(predictor, [array for _, array in part], [result.predicted_index for result, _ in part])
        for (result, _), heat in zip(part, maps):
            result.heatmap = np.uint8(np.rint(np.clip(heat, 0, 1) * 255))
