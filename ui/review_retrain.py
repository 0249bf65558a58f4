"""Review's corrections: inspectors' proposed labels to accept or reject, and the retrain that learns from every
confirmed correction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from defect_model.access.accounts import Actor
from defect_model.workflows.review import (ReviewData, ReviewError, decide_inspection, decision_counts,
                                           inspection_corrections, latest_decisions, plain_records,
                                           retrain_with_corrections)
from defect_model.runs.folders import RunDir
from defect_model.runs.store import InspectionStore
from ui.job_events import job_progress_ui
from ui.review_cards import FLASH, photo_image, show_image
from ui.text import md


# -- inspector corrections ---------------------------------------------------------------------
def _decide_inspection(store: InspectionStore, data: ReviewData, correction: dict, accept: bool, actor: Actor) -> None:
    try:
        decide_inspection(store, data, correction, accept, actor)
    except (ReviewError, PermissionError) as exc:
        st.session_state[FLASH] = {"card": f"inspection:{correction['id']}", "kind": "error", "text": md(exc)}
        return
    st.session_state[FLASH] = {"card": "inspection", "kind": "success",
                               "text": f"Inspector correction #{correction['id']} "
                                       f"{'confirmed' if accept else 'rejected'}."}


def inspected_names(store: InspectionStore, corrections: list[dict]) -> dict[int, str]:
    """Correction id -> the file name the photo was uploaded under (the stored copy is named by its hash; that
    name is the fallback when the inspection is not in the log)."""
    ids = [int(c["inspection_id"]) for c in corrections if c.get("inspection_id") is not None]
    log = store.inspections_by_id(ids) if ids else None
    uploaded = dict(zip(log["id"], log["file_name"])) if log is not None else {}
    return {c["id"]: uploaded.get(c.get("inspection_id")) or Path(c["photo_path"]).name for c in corrections}


def proposal_text(record: dict, name: str) -> str:
    """"ana proposes to relabel **scratch-07.png** as **pit** (the model said ok, run …), 2026-11-30 14:02 UTC"."""
    proposal = (f"relabel **{md(name)}** as **{md(record['new_label'])}**" if record["action"] == "relabel" else
                f"mark **{md(name)}** **unusable**" if record["action"] == "unusable" else
                f"confirm **{md(name)}** as **{md(record['new_label'] or record['original_label'])}**")
    return (f"{md(record['who'] or 'An inspector')} proposes to {proposal} (the model said "
            f"{md(record['model_label'] or '?')}, run {md(record['run_id'] or '?')}), "
            f"{str(record['time'])[:16].replace('T', ' ')} UTC")


def inspection_ui(data: ReviewData, store: InspectionStore, actor: Actor) -> int:
    """Inspectors' proposals from the Inspect page, for the engineer to confirm or reject; returns how many wait."""
    pending = inspection_corrections(store, data)
    flash = st.session_state.get(FLASH) or {}
    if flash.get("card") == "inspection":
        st.success(flash["text"])
    if pending.empty:
        st.info("No inspector corrections are waiting for this dataset. Inspectors propose them on the Inspect "
                "page when the model got a photo wrong.")
        return 0
    st.markdown(f"**{len(pending)} inspector correction(s) waiting for confirmation**")
    records = plain_records(pending.head(20))
    names = inspected_names(store, records)
    for record in records:
        with st.container(border=True, key=f"proposal-{record['id']}"):
            photo_col, text_col, buttons = st.columns([1, 2.4, 1])
            show_image(photo_col, photo_image("", record["photo_path"]), "")  # stored inspection photos: own path
            text_col.markdown(proposal_text(record, names[record["id"]]),
                              help=f"Stored copy: {md(record['photo_path'])}")
            if record.get("note"):
                text_col.text(f"Note: {record['note']}")
            if flash.get("card") == f"inspection:{record['id']}":
                text_col.error(flash["text"])
            buttons.button("Confirm", key=f"inspection:{record['id']}:yes", on_click=_decide_inspection,
                           args=(store, data, record, True, actor), disabled=not actor.may("confirm"), type="primary")
            buttons.button("Reject", key=f"inspection:{record['id']}:no", on_click=_decide_inspection,
                           args=(store, data, record, False, actor), disabled=not actor.may("confirm"))
    return len(pending)


# -- retrain -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrainPlan:
    """What "Retrain with corrections" will start, for the confirmation: settings, photos and the time."""
    config: object  # TrainConfig of the retrain
    corrections: int
    train_photos: int
    val_photos: int
    seconds: float  # expected wall time: the estimate, capped by the time budget

    def text(self) -> str:
        from defect_model.train.timing import format_duration

        cfg = self.config
        budget = f" (its time budget: at most {cfg.time_budget_min:g} min)" if cfg.time_budget_min else ""
        return (f"About **{format_duration(self.seconds)}** of training on this machine{budget}: "
                f"{cfg.backbone} at {cfg.image_size} px, up to {cfg.epochs} epoch(s) over {self.train_photos} "
                f"training photos ({self.val_photos} for validation), starting from this run's weights with "
                f"{self.corrections} correction(s) applied.")


def retrain_plan(data: ReviewData, corrections: int) -> RetrainPlan:
    """The retrain's settings as defect_model.workflows.review.retrain_with_corrections derives them, and its estimate."""
    from defect_model.train.timing import STARTUP_S, estimate_training_time
    from defect_model.train.presets import warm_retrain

    cfg = warm_retrain(data.config, data.run.path.resolve(), data.run.training_seconds(), corrections)
    val = len(data.predictions)
    try:
        split = pd.read_csv(data.run.split)
        train = int((split["split"] == "train").sum())
    except (OSError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError):
        train = val * 4  # no split file: the default 80/20 split
    estimate = estimate_training_time(cfg.backbone, cfg.image_size, cfg.epochs, cfg.epoch_images or train, val)
    seconds = estimate.seconds
    if cfg.time_budget_min:
        seconds = min(seconds, STARTUP_S + cfg.time_budget_min * 60)
    return RetrainPlan(cfg, corrections, train, val, seconds)


def _start_retrain(data: ReviewData, store: InspectionStore, actor: Actor) -> None:
    """The confirmation's button: start the job; what happened is shown on the page."""
    from defect_model.runs.jobs import JobError

    try:
        new_run = retrain_with_corrections(data.run, store, actor)
    except (ReviewError, JobError, PermissionError) as exc:
        st.session_state[FLASH] = {"card": "retrain", "kind": "error", "text": md(exc)}
        return
    st.session_state["retrain_started"] = new_run.run_id


@st.dialog("Start a retrain with corrections?", width="large")
def confirm_retrain_dialog(data: ReviewData, store: InspectionStore, actor: Actor, plan: RetrainPlan) -> None:
    st.markdown(plan.text())
    st.caption(f"A new run next to {md(data.run.run_id)}; the original photos and this run are not changed. The new "
               "model is not used for inspection until an admin makes it active on the Models page.")
    start_col, cancel_col = st.columns(2)
    if start_col.button("Start the retrain", type="primary", key="retrain_confirm", icon=":material/play_arrow:",
                        on_click=_start_retrain, args=(data, store, actor), width="stretch"):
        st.rerun()
    if cancel_col.button("Cancel", key="retrain_cancel", width="stretch"):
        st.rerun()


def retrain_ui(data: ReviewData, store: InspectionStore, actor: Actor) -> RunDir | None:
    """Confirmed decisions for this dataset and the button that retrains with them, after a confirmation that
    shows the time it will take; returns the new run."""
    from defect_model.runs.jobs import running_job

    counts = decision_counts(store, data.dataset)
    decided = latest_decisions(store, data.dataset)
    st.markdown(f"Confirmed decisions for {md(data.dataset)}: **{counts['relabel']} relabelled**, "
                f"**{counts['unusable']} unusable** (dropped), {counts['confirm']} label(s) confirmed as they were.")
    if decided:
        table = pd.DataFrame(decided.values())[["photo_path", "action", "original_label", "new_label", "source",
                                                "who", "decided_at"]]
        st.dataframe(table, hide_index=True)
    cfg = data.config
    st.caption(f"The retrain uses run {md(data.run.run_id)}'s settings ({cfg.backbone}, {cfg.image_size}px) and its "
               "train/val split, with these corrections applied, and starts from its weights. The original photos "
               "are never changed.")
    busy = running_job()
    if busy is not None:
        st.info(f"Training job {md(busy.run_id)} is running; a retrain can start when it has finished.")
    flash = st.session_state.get(FLASH) or {}
    if flash.get("card") == "retrain":
        st.error(flash["text"])
    if not decided:
        st.caption("Nothing to retrain with yet: relabel, keep or drop photos in the confusion matrix or under "
                   "Misclassified, or confirm inspector corrections.")
    if st.button("Retrain with corrections", type="primary", key="retrain", icon=":material/model_training:",
                 disabled=not actor.may("train") or not decided or busy is not None,
                 help="Shows how long it will take, then starts a background training job on your confirmation "
                      "(the Train page shows its progress)."):
        st.session_state.pop(FLASH, None)
        confirm_retrain_dialog(data, store, actor, retrain_plan(data, len(decided)))
    started = st.session_state.get("retrain_started")
    if started:
        retrain_status_ui(started)
    return None if not started else RunDir(data.run.path.parent / started)


@st.fragment(run_every=3)
def retrain_status_ui(run_id: str) -> None:
    from defect_model.runs.folders import resolve_run

    try:
        run = resolve_run(run_id)
    except FileNotFoundError:
        return
    state = run.status().get("state", "")
    message = f"Retrain {md(run_id)}: **{md(state)}**."
    if state == "done":
        st.success(message + " Compare it with this run on the Models page before making it active.")
        st.page_link("pages/models.py", label="Open Models", icon=":material/inventory_2:")
    elif state in ("failed", "cancelled"):
        st.error(message + f" {md(run.status().get('error', ''))} See {md(run.log)}.")
    else:
        job_progress_ui(run)
        st.info(message + " Follow it on the Train page.")
        st.page_link("pages/train.py", label="Open Train", icon=":material/model_training:")
