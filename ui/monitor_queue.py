"""'Label these next': the logged photos whose label would teach the model most, each with its heatmap, labelled
in place; a label becomes a correction of the model's dataset for its next retrain."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from defect_model.access.accounts import Actor
from defect_model.runs.folders import RunDir
from defect_model.runs.store import InspectionStore
from defect_model.workflows.monitor import MonitorError, label_from_queue, label_queue
from ui.monitor_widgets import LogView, csv_download_ui
from ui.resources import predictor_for
from ui.review_cards import photo_image, photo_overlays, show_image
from ui.text import md

SHOWN = 6
UNUSABLE = "photo unusable"
FLASH = "monitor_queue_flash"
QUEUE_COLUMNS = ["score", "reasons", "time", "file_name", "predicted", "confidence", "margin", "verdict", "inspector",
                 "source", "run_id", "id"]


def _label(store: InspectionStore, actor: Actor, row: dict, classes: list[str], dataset: str, key: str) -> None:
    """Button callback: the chosen label, filed through the engine (which checks the role again)."""
    choice = st.session_state.get(key)
    if choice is None:
        st.session_state[FLASH] = {"kind": "warning", "text": f"{md(row['file_name'])}: choose the class first; "
                                                              "nothing was saved."}
        return
    try:
        label_from_queue(store, actor, row, None if choice == UNUSABLE else choice, classes, dataset)
    except (MonitorError, PermissionError) as exc:
        st.session_state[FLASH] = {"kind": "error", "text": md(exc)}
        return
    st.session_state[FLASH] = {"kind": "success",
                               "text": f"{md(row['file_name'])} labelled **{md(choice)}**: a correction of "
                                       f"{md(dataset)}, applied by the next retrain (Review page)."}


def _heatmaps(run: RunDir, rows: pd.DataFrame, classes: list[str]) -> dict:
    """{inspection id: overlay of the predicted class's heatmap, or why there is none}."""
    try:
        predictor = predictor_for(run)
    except Exception as exc:  # a checkpoint that is gone or unreadable: the photos are still shown
        return {int(i): f"No heatmap: {exc}" for i in rows["id"]}
    index = {name: i for i, name in enumerate(predictor.classes)}
    items = tuple((str(row.photo_path), index[row.predicted]) for row in rows.itertuples() if row.predicted in index)
    drawn = photo_overlays(predictor, str(run.checkpoint), run.checkpoint.stat().st_mtime, "", items)
    by_path = dict(zip((path for path, _ in items), drawn))
    return {int(row.id): by_path.get(str(row.photo_path)) for row in rows.itertuples()}


def queue_ui(store: InspectionStore, view: LogView, actor: Actor) -> pd.DataFrame:
    """The queue of the model shown, most informative first; returns it."""
    if view.run is None:
        st.info("Choose one model version above: its photos are labelled for its own retrain.",
                icon=":material/filter_alt:")
        return pd.DataFrame()
    try:
        config = view.run.settings()
        classes = list((view.run.read_metrics() or {}).get("classes") or [])
    except (OSError, ValueError) as exc:
        st.error(md(f"{view.run.config}: cannot read the run's settings ({exc}); its photos cannot be labelled."))
        return pd.DataFrame()
    queue = label_queue(view.log, store.corrections())
    flash = st.session_state.pop(FLASH, None)  # a labelled photo leaves the queue: its outcome shows above it
    if flash:
        getattr(st, flash["kind"])(flash["text"])
    st.caption("Ranked by what a label would teach the model: an inspector's correction or a confirmed label the "
               "model disagrees with (2 each), its doubt (1 − the margin between its top two classes) and, where "
               "logged, how unfamiliar the photo is (its rank, 0–1). A label becomes a correction of "
               f"{md(config.data_dir)}: the next retrain of this model trains on the photo.")
    if queue.empty:
        st.success("Nothing to label: every photo of this selection is labelled or was not kept.",
                   icon=":material/task_alt:")
        return queue
    csv_download_ui(queue[[c for c in QUEUE_COLUMNS if c in queue.columns]], "label-queue", "monitor_queue_csv")
    shown = queue.head(SHOWN)
    cams = _heatmaps(view.run, shown, classes)
    for number, row in enumerate(shown.to_dict("records")):
        with st.container(border=True, key=f"queue-card-{number}"):
            st.markdown(f"**{md(row['file_name'])}** — predicted **{md(row['predicted'])}** "
                        f"({row['confidence']:.0%}), {md(row['verdict'])}, score {row['score']:.2f}")
            photo_col, heat_col, info_col = st.columns([1, 1, 1.6])
            show_image(photo_col, photo_image("", row["photo_path"]), "photo")
            show_image(heat_col, cams.get(int(row["id"])), f"Heatmap (Grad-CAM): {md(row['predicted'])}")
            info_col.caption(md(row["reasons"]))
            info_col.caption(f"{md(str(row['time'])[:16].replace('T', ' '))} UTC · {md(row['inspector'])} · "
                             f"{md(row['source'])} · stored as {md(Path(str(row['photo_path'])).name[:12])}…")
            label_ui(info_col, store, actor, row, classes, config.data_dir)
    if len(queue) > SHOWN:
        st.caption(f"{len(queue) - SHOWN} more in the queue (the CSV lists them); they move up as these are labelled.")
    return queue


def label_ui(column, store: InspectionStore, actor: Actor, row: dict, classes: list[str], dataset: str) -> None:
    """The correct class (or unusable) and the button that files it; disabled without the role to relabel."""
    disabled = not actor.may("relabel")
    key = f"queue:{row['id']}:label"
    column.selectbox("Correct class", [*classes, UNUSABLE], index=None, key=key, placeholder="choose the class",
                     disabled=disabled)
    column.button("Save label", key=f"queue:{row['id']}:save", icon=":material/save:", disabled=disabled,
                  on_click=_label, args=(store, actor, row, classes, dataset, key), width="stretch")
    if disabled:
        column.caption(":material/lock: An engineer labels photos.")
